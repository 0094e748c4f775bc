//! AArch64 glue: exception vectors, EL2 MMU, CPU identity, timing.
pub mod boot;
pub mod exception;
pub mod gic;
pub mod mmu;
pub mod smp;
pub mod spectre;
pub mod stage2;
pub mod vcpu;
pub mod virq;

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

/// The spin lock every CPU shares: while it waits, it yields (`Yield`).
pub type Mutex<T> = spin::mutex::Mutex<T, Yield>;

/// A lock taken in turn (first come, first served): for what every domain
/// shares and holds for a while, the console's output, so one domain
/// printing without pause cannot keep another waiting for more than one
/// line of each other waiter.
pub type FairMutex<T> = spin::mutex::TicketMutex<T, Yield>;

/// How a CPU waits for another: the YIELD hint. On hardware it only hints
/// (SMT siblings). Under QEMU's one-thread TCG (icount) it ends this CPU's
/// turn, so the CPU it waits for runs. With ISB, which
/// `core::hint::spin_loop` emits, a waiter could keep the host thread for
/// its whole turn (up to about 2 s of virtual time with no timer due),
/// turn after turn, while the holder stayed stopped mid-line: a console
/// silent for 30 s and more, measured.
pub struct Yield;

impl spin::relax::RelaxStrategy for Yield {
    fn relax() {
        relax();
    }
}

/// One turn of a wait for another CPU (see `Yield`).
pub fn relax() {
    // SAFETY: YIELD is a hint without effects on memory or registers.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Stops this CPU for good (interrupts masked).
pub fn halt() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting has no memory effects.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi") };
    }
}
