//! Image entry: the arm64 Image header and the first instructions
//! (`entry.S`), and the per-CPU boot stacks that link.ld reserves.

/// Bytes of stack per secondary CPU (link.ld reserves `MAX_CPUS - 1`).
pub const STACK_SIZE: usize = 16 * 1024;
/// Physical CPUs the image can run on (stack slots in link.ld).
pub const MAX_CPUS: usize = 16;

core::arch::global_asm!(
    include_str!("entry.S"),
    STACK_SIZE = const STACK_SIZE,
);

unsafe extern "C" {
    static __stacks_start: u8;
    static __boot_stack_end: u8;
    static __image_start: u8;
    static __image_end: u8;
}

/// `[start, end)` of the loaded image including BSS and stacks.
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}

/// Top of CPU `cpu`'s stack (as entry.S sets it).
pub fn stack_top(cpu: usize) -> u64 {
    if cpu == 0 {
        core::ptr::addr_of!(__boot_stack_end) as u64
    } else {
        core::ptr::addr_of!(__stacks_start) as u64 + (cpu as u64 * STACK_SIZE as u64)
    }
}
