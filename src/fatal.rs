//! When the hypervisor cannot go on: a fatal error said on the console
//! (without its lock: the holder may be the code that failed), or, with
//! nothing to run, staying up and answering on the console.

use core::fmt::Write;

/// A fatal error, possibly before the console's lock works: say it if
/// there is a console, then halt this CPU.
pub fn fatal(msg: &str) -> ! {
    let _ = writeln!(crate::console::PanicWriter, "\ndtvisor: fatal: {msg}");
    crate::arch::halt()
}

/// Nothing to run: the hypervisor stays up and answers on its console.
/// Each byte of input repeats why nothing started, so whoever attaches to
/// the console later (the errors scrolled by before it was opened) learns
/// what is wrong and that the machine is not hung.
pub fn stay_up(why: &str) -> ! {
    log::error!("{why}: no domain started; dtvisor stays up on its console");
    // This CPU takes the receive side for good (a CPU still polling finds
    // it held and leaves input alone); the UART's interrupt is not used.
    // Its event stream wakes `wfe` below to poll the UART: one register
    // read per turn (under QEMU each device access takes the lock its I/O
    // thread needs to deliver input).
    let rx = loop {
        if let Some(rx) = crate::console::try_rx() {
            break rx;
        }
        crate::arch::relax();
    };
    rx.set_irq(false);
    crate::arch::vcpu::timer_access_and_event_stream();
    loop {
        if rx.getc().is_some() {
            // Whatever else was typed with it is answered by one line.
            while rx.getc().is_some() {}
            log::error!("{why}: no domain started (the errors are above; any key repeats this)");
        }
        // SAFETY: waiting for an event has no memory effects.
        unsafe { core::arch::asm!("wfe") };
    }
}
