//! Image entry: the arm64 Image header and the first instructions
//! (`entry.S`), and the per-CPU boot stacks that link.ld reserves.

/// Bytes of stack per secondary CPU (link.ld reserves `MAX_CPUS - 1`).
pub const STACK_SIZE: usize = 16 * 1024;
/// Physical CPUs the image can run on (stack slots in link.ld): the
/// run-time's.
pub const MAX_CPUS: usize = dtvisor::rt::MAX_CPUS;

core::arch::global_asm!(
    include_str!("entry.S"),
    STACK_SIZE = const STACK_SIZE,
    MAX_CPUS = const MAX_CPUS,
);

unsafe extern "C" {
    static __boot_stack_start: u8;
    static __stacks_start: u8;
    static __boot_stack_end: u8;
    static __image_start: u8;
    static __image_end: u8;
    static __text_end: u8;
    static __data_start: u8;
}

/// The image's parts by permission: `(text_end, data_start)`, where
/// `[image start, text_end)` is code, `[text_end, data_start)` read-only
/// data (relocated before the MMU is on), and the rest writable data.
pub fn image_parts() -> (u64, u64) {
    (
        core::ptr::addr_of!(__text_end) as u64,
        core::ptr::addr_of!(__data_start) as u64,
    )
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

/// Written at the lowest word of every stack; a stack that overflows
/// overwrites it before it reaches anything else (BSS, another stack).
const CANARY: u64 = 0x5354_4143_4b21_2121;

fn stack_bottom(cpu: usize) -> *mut u64 {
    if cpu == 0 {
        core::ptr::addr_of!(__boot_stack_start) as *mut u64
    } else {
        (core::ptr::addr_of!(__stacks_start) as u64 + ((cpu as u64 - 1) * STACK_SIZE as u64))
            as *mut u64
    }
}

/// Paints every stack's canary (boot CPU, before the others start).
pub fn paint_canaries() {
    for cpu in 0..MAX_CPUS {
        // SAFETY: the lowest word of a stack slot link.ld reserves; no CPU
        // but the boot CPU runs yet, and its stack is far above.
        unsafe { stack_bottom(cpu).write_volatile(CANARY) };
    }
}

/// Whether CPU `cpu`'s stack has not overflowed.
pub fn stack_intact(cpu: usize) -> bool {
    // SAFETY: reading the canary word of a reserved stack slot.
    cpu >= MAX_CPUS || unsafe { stack_bottom(cpu).read_volatile() } == CANARY
}
