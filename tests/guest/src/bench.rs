//! `bench`: micro-benchmarks of what a hypervisor does for its guest,
//! each the mean over many iterations, timed with the virtual counter
//! (CNTVCT_EL0, `isb` before each read) and printed in nanoseconds from
//! CNTFRQ_EL0. Relies only on the DTB (GIC, /timer PPIs, /psci method, the
//! UART), PSCI and the GIC, so the same image compares hypervisors.
//!
//! On the boot CPU, with the other CPUs off or idle: `hvc` (PSCI_VERSION,
//! call to return), `mmio-uart` (a 32-bit read of the UART's UARTFR),
//! `mmio-gicd` (a 32-bit read of GICD_TYPER), `eoi` (with IRQs masked: an
//! SGI to itself, acknowledged by polling the IAR, then only the EOI is
//! timed), `timer` (the virtual timer's CVAL = now + 10 us, waiting in
//! `wfi`: the handler's stamp - CVAL). "The handler's stamp" is CNTVCT
//! right after it acknowledged the interrupt (irq::stamp). Then with the
//! first secondary CPU (slot 1) `sgi` and `sgi-wfi`: the boot CPU sends it
//! an SGI (stamp - the counter just before the send) while it waits
//! spinning with IRQs unmasked, then in `wfi`; it answers each with an
//! SGI back. Before each SGI the boot CPU waits 20 us in `wfi` so the
//! receiver is in its wait; for `sgi` it first sends an
//! SGI that moves the receiver from `wfi` to spinning (spinning all along
//! would starve the boot CPU under single-threaded emulation, QEMU's
//! icount, where an SGI to another CPU does not preempt the sender). The
//! boot CPU goes from the send straight into `wfi`: there, the receiver
//! runs only once it does, so that path is in the figure.
//!
//! Every wait is bounded: spins by the counter, `wfi` waits also by the
//! physical timer as a watchdog (irq::wait_wfi_bounded).

use core::fmt::Write;
use core::ptr::read_volatile;

use crate::irq::{self, count, freq, get, now, put};
use crate::{fdt, psci, read_mpidr, Console, CPU_OFF, CPU_ON, ONLINE, PSCI_VERSION};

const N_HVC: u32 = 10_000;
const N_MMIO: u32 = 10_000;
const N_EOI: u32 = 10_000;
const N_TIMER: u32 = 1_000;
/// SGIs to the secondary in each of its two waits (spinning, `wfi`).
const N_SGI: u32 = 1_000;
/// How far ahead `timer` sets the deadline, in microseconds.
const TIMER_DELTA_US: u64 = 10;
/// How long the boot CPU waits before each SGI, in microseconds.
const SETTLE_US: u64 = 20;
const SGI_SELF: u64 = 4;
const SGI_PING: u64 = 5;
const SGI_PONG: u64 = 6;
/// `sgi`: the secondary should leave its `wfi` and spin for the next SGI.
const SGI_GO: u64 = 7;
/// The secondary's stack slot (the first other CPU in the DTB).
const SLOT: u64 = 1;

/// The slot that runs `secondary` (set by the boot CPU before it starts,
/// releases or kicks that CPU).
static mut BENCH_SLOT: u64 = 0;
/// Secondary: 1 = its GIC interface is set up, 2 = it could not be.
static mut READY: u64 = 0;
/// Boot CPU: the secondary should stop waiting (it gave up).
static mut QUIT: u64 = 0;

/// Whether the secondary in `slot` should run `secondary`.
pub fn is_bench_slot(slot: u64) -> bool {
    slot != 0 && get(&raw const BENCH_SLOT) == slot
}

/// Counter ticks in `us` microseconds (at least 1).
fn us_ticks(us: u64) -> u64 {
    (freq().saturating_mul(us) / 1_000_000).max(1)
}

/// `guest: bench <name> n=<n> mean=<ns>.<tenth>ns` for `ticks` in all.
fn report(name: &str, n: u32, ticks: u64) {
    let div = freq() as u128 * n.max(1) as u128;
    let tenths = (ticks as u128 * 10_000_000_000 + div / 2) / div;
    say!(
        "guest: bench {name} n={n} mean={}.{}ns",
        tenths / 10,
        tenths % 10
    );
}

fn skipped(name: &str, why: &str) {
    say!("guest: bench {name} skipped ({why})");
}

/// Spends `k % 16` more instructions (a jump into a run of nops): the
/// iteration-dependent skew that makes a short timed window start at every
/// phase of the counter's tick when the counter is an instruction count
/// (QEMU icount: 16 instructions a tick at 62.5 MHz). Without it the
/// window's phase repeats and its mean is a multiple of the tick, 0 or 16 ns.
fn skew(k: u32) {
    // SAFETY: a PC-relative jump forward into the nops right after it.
    unsafe {
        core::arch::asm!(
            "adr {t}, 2f",
            "add {t}, {t}, {k}, lsl #2",
            "br {t}",
            "2:",
            ".rept 16",
            "nop",
            ".endr",
            t = out(reg) _,
            k = in(reg) (k % 16) as u64,
        );
    }
}

/// Times `n` calls of `op` in one go, after `n / 100` untimed ones.
fn loop_mean(name: &str, n: u32, mut op: impl FnMut()) {
    for _ in 0..n / 100 {
        op();
    }
    let t0 = now();
    for _ in 0..n {
        op();
    }
    let t1 = now();
    report(name, n, t1.wrapping_sub(t0));
}

/// The `bench` word, on the boot CPU after the summary (and `irqs`).
pub fn run(info: &fdt::Info, entry: u64) {
    say!("guest: bench start cntfrq={}", freq());
    // SAFETY: written once by the boot CPU before the checks.
    if unsafe { read_volatile(&raw const crate::USE_SMC) } {
        skipped("hvc", "psci method is smc");
    } else {
        loop_mean("hvc", N_HVC, || {
            psci(PSCI_VERSION, 0, 0, 0);
        });
    }
    let fr = crate::uart() + 0x18;
    loop_mean("mmio-uart", N_MMIO, || {
        // SAFETY: the DTB's UART: UARTFR, read-only status.
        unsafe { crate::mmio_read32(fr) };
    });
    let gic = irq::setup(info);
    match gic {
        Ok(g) => {
            let typer = g.dist + 0x4;
            loop_mean("mmio-gicd", N_MMIO, || {
                // SAFETY: the DTB's GIC distributor: GICD_TYPER, read-only.
                unsafe { crate::mmio_read32(typer) };
            });
            eoi();
            timer();
            sgi(info, entry);
        }
        Err(e) => {
            for name in ["mmio-gicd", "eoi", "timer", "sgi", "sgi-wfi"] {
                skipped(name, e);
            }
        }
    }
    say!("guest: bench done");
}

/// `eoi`: SGIs to itself with IRQs masked, each acknowledged by polling
/// the IAR; only the EOI (and the `isb` after it) is timed.
fn eoi() {
    let me = irq::target(0);
    let mut ticks = 0u64;
    for i in 0..N_EOI {
        irq::send_sgi(SGI_SELF, me);
        let end = now().saturating_add(freq());
        let iar = loop {
            let (iar, intid) = irq::ack();
            if intid == SGI_SELF {
                break iar;
            }
            if !(1020..=1023).contains(&intid) {
                // Something else: ended, untimed.
                irq::eoi(iar);
            }
            if now() > end {
                say!("guest: FAIL bench eoi (SGI {SGI_SELF} not pending after 1 s, {i} of {N_EOI} done)");
                return;
            }
        };
        skew(i);
        let t0 = now();
        irq::eoi(iar);
        ticks += now().wrapping_sub(t0);
    }
    report("eoi", N_EOI, ticks);
}

fn vtimer_off() {
    // SAFETY: the guest's own virtual timer, off.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb") };
}

/// `timer`: CVAL = now + TIMER_DELTA_US, waiting in `wfi`; the latency is
/// the handler's stamp (after it acknowledged the interrupt) - CVAL. The watchdog is armed before CVAL is
/// set, so its cost (a trap under some hypervisors) is not in the window.
fn timer() {
    let vt = irq::vtimer();
    let delta = us_ticks(TIMER_DELTA_US);
    let base = count(0, vt);
    let (mut ticks, mut early) = (0u64, 0u32);
    for i in 1..=N_TIMER {
        irq::watchdog(freq());
        let cval = now() + delta;
        // SAFETY: the guest's own virtual timer: deadline, enabled, unmasked.
        unsafe {
            core::arch::asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
                in(reg) cval, in(reg) 1u64);
        }
        let ok = irq::wait_wfi(|| count(0, vt).wrapping_sub(base) >= i, freq());
        irq::watchdog_off();
        if !ok {
            vtimer_off();
            say!(
                "guest: FAIL bench timer (no INTID {vt} within 1 s, {} of {N_TIMER} done)",
                i - 1
            );
            return;
        }
        let t = irq::stamp(0, vt);
        if t < cval {
            early += 1;
        } else {
            ticks += t - cval;
        }
    }
    if early != 0 {
        say!("guest: FAIL bench timer ({early} of {N_TIMER} handled before the deadline)");
    }
    report("timer", N_TIMER, ticks);
}

/// Waits `SETTLE_US` in `wfi` on the virtual timer.
fn settle() -> bool {
    let vt = irq::vtimer();
    let base = count(0, vt);
    irq::watchdog(freq());
    // SAFETY: the guest's own virtual timer: relative deadline, enabled,
    // unmasked.
    unsafe {
        core::arch::asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
            in(reg) us_ticks(SETTLE_US), in(reg) 1u64);
    }
    let ok = irq::wait_wfi(|| count(0, vt) != base, freq());
    irq::watchdog_off();
    if !ok {
        vtimer_off();
    }
    ok
}

/// Gets the secondary in SLOT into `secondary`: CPU_ON, or a `hold` CPU
/// spinning in secondary_main, or `irqs`' parked one kicked with an SGI.
fn start_peer(peer: u64, entry: u64) -> Result<(), &'static str> {
    let s = SLOT as usize;
    put(&raw mut BENCH_SLOT, SLOT);
    // SAFETY: written by the boot CPU before the checks / by the
    // secondary when it came online.
    let held = unsafe {
        read_volatile(&raw const crate::HOLD) != 0 && read_volatile(&raw const ONLINE[s]) != 0
    };
    if irq::parked(SLOT) {
        irq::send_sgi(irq::SGI_KICK, irq::target(s));
    } else if irq::is_irq_slot(SLOT) {
        return Err("busy since irqs");
    } else if !held && psci(CPU_ON, peer, entry, SLOT) != 0 {
        return Err("cpu_on failed");
    }
    Ok(())
}

/// `sgi` and `sgi-wfi`, with the secondary in SLOT.
fn sgi(info: &fdt::Info, entry: u64) {
    let me = read_mpidr();
    let Some(&peer) = info.cpus().iter().find(|&&m| m != me) else {
        skipped("sgi", "1 cpu");
        skipped("sgi-wfi", "1 cpu");
        return;
    };
    let pongs = || count(0, SGI_PONG);
    let base = pongs();
    // The secondary answers its setup with a first SGI back.
    let ready = start_peer(peer, entry).and_then(|()| {
        let up = irq::wait_wfi_bounded(|| pongs() != base, freq());
        match get(&raw const READY) {
            1 if up => Ok(()),
            2 => Err("gic setup failed"),
            _ => Err("not ready within 1 s"),
        }
    });
    if let Err(e) = ready {
        say!("guest: FAIL bench sgi (cpu {peer:#x}: {e})");
        put(&raw mut QUIT, 1);
        return;
    }
    let to = irq::target(SLOT as usize);
    let mut answered = 1;
    for name in ["sgi", "sgi-wfi"] {
        let mut ticks = 0u64;
        let mut early = 0;
        for i in 0..N_SGI {
            if name == "sgi" {
                irq::send_sgi(SGI_GO, to);
            }
            let sent = if settle() {
                // Straight from the send into `wfi` (the watchdog armed
                // first): under single-threaded emulation the receiver
                // runs only once the sender waits.
                irq::watchdog(freq());
                skew(i);
                let t0 = now();
                irq::send_sgi(SGI_PING, to);
                let back = irq::wait_wfi(|| pongs().wrapping_sub(base) > answered, freq());
                irq::watchdog_off();
                if back {
                    Ok(t0)
                } else {
                    Err("no answer within 1 s")
                }
            } else {
                Err("timer wait failed")
            };
            let t0 = match sent {
                Ok(t0) => t0,
                Err(why) => {
                    say!("guest: FAIL bench {name} ({why}, {i} of {N_SGI} done)");
                    put(&raw mut QUIT, 1);
                    irq::send_sgi(irq::SGI_KICK, to);
                    return;
                }
            };
            answered += 1;
            let t = irq::stamp(SLOT as usize, SGI_PING);
            if t < t0 {
                early += 1;
            } else {
                ticks += t - t0;
            }
        }
        if early != 0 {
            say!("guest: FAIL bench {name} ({early} of {N_SGI} handled before the send)");
        }
        report(name, N_SGI, ticks);
    }
}

/// The secondary: its own GIC interface, an SGI back to say so, then for
/// each SGI from the boot CPU one back: N_SGI waiting spinning with IRQs
/// unmasked, N_SGI waiting in `wfi`. Then CPU_OFF.
pub fn secondary(slot: u64) -> ! {
    let s = slot as usize;
    if irq::init_cpu(s).is_err() {
        put(&raw mut READY, 2);
    } else {
        put(&raw mut READY, 1);
        let to_boot = irq::target(0);
        irq::send_sgi(SGI_PONG, to_boot);
        let base = count(s, SGI_PING);
        let go = count(s, SGI_GO);
        for i in 1..=2 * N_SGI {
            let quit = || get(&raw const QUIT) != 0;
            let got = || count(s, SGI_PING).wrapping_sub(base) >= i || quit();
            let ok = if i <= N_SGI {
                // Idle until told to spin: a spinning CPU would hold up
                // the boot CPU under single-threaded emulation (an SGI
                // to another CPU does not preempt the sender there).
                let told = || count(s, SGI_GO).wrapping_sub(go) >= i || quit();
                irq::wait_wfi_bounded(told, irq::five_seconds())
                    && !quit()
                    && irq::wait_spin(got, irq::five_seconds())
            } else {
                irq::wait_wfi_bounded(got, irq::five_seconds())
            };
            if !ok || get(&raw const QUIT) != 0 {
                break;
            }
            irq::send_sgi(SGI_PONG, to_boot);
        }
    }
    psci(CPU_OFF, 0, 0, 0);
    say!("guest: FAIL cpu_off returned");
    crate::halt()
}
