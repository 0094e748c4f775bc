//! AArch64 glue: exception vectors, EL2 MMU, CPU identity, timing.
pub mod exception;
pub mod gic;
pub mod gicv2;
pub mod mmu;
pub mod smp;
pub mod stage2;
pub mod vcpu;

use aarch64_cpu::registers::{CurrentEL, Readable, CNTFRQ_EL0, CNTPCT_EL0, MPIDR_EL1, TPIDR_EL2};

/// CurrentEL as the register holds it (the level in bits 3:2).
pub fn current_el() -> u64 {
    CurrentEL.get()
}

/// This CPU's index (0 = boot CPU), kept in TPIDR_EL2.
pub fn cpu_index() -> usize {
    TPIDR_EL2.get() as usize
}

/// This CPU's MPIDR affinity fields.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// System counter now, and its frequency in Hz.
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

pub fn counter_freq() -> u64 {
    CNTFRQ_EL0.get()
}

/// Stops this CPU for good (interrupts masked).
pub fn halt() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting has no memory effects.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi") };
    }
}

/// A fatal error before the console may exist: say it if possible, halt.
pub fn early_fatal(msg: &str) -> ! {
    use core::fmt::Write;
    let _ = writeln!(crate::console::PanicWriter, "\ndtvisor: fatal: {msg}");
    halt()
}
