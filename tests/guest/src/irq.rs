//! `irqs`: counts interrupts taken through the GIC the DTB describes
//! (GICv3 or GICv2): the EL1 virtual timer on the boot CPU, then SGIs from
//! the boot CPU to the first secondary and back. PSTATE.I is clear only
//! while a CPU waits for an interrupt, so the rest of the guest runs as
//! without `irqs`.
//!
//! The MMU is off, so every data access is Device-nGnRnE: no atomics. Each
//! shared word has a single writer (a counter belongs to the CPU whose
//! handler bumps it; a flag to the CPU that sets it), and a `dsb sy`
//! orders a write before the flag that publishes it.
//!
//! `bench` (bench.rs) uses the same setup, handler and helpers.

use core::fmt::Write;
use core::ptr::{read_volatile, write_volatile};

use crate::fdt::{self, GicVersion};
use crate::{psci, read_mpidr, Checks, Console, CPU_ON, ONLINE, SLOTS};

const SLOTS_US: usize = SLOTS as usize;
/// The EL1 virtual and non-secure physical timers' PPIs when the DTB's
/// /timer node does not say (or names no PPI).
const VTIMER_DEFAULT: u64 = 27;
const PTIMER_DEFAULT: u64 = 30;
const SGI_TO_SECONDARY: u64 = 1;
const SGI_TO_BOOT: u64 = 2;
/// Wakes the secondary from its wait when the boot CPU gives up early.
pub const SGI_KICK: u64 = 3;
/// INTIDs 0..32 (SGIs, PPIs) are counted each; anything else here.
const OTHER: usize = 32;
const PRIORITIES: u32 = 0xa0a0_a0a0;
const GICR_STRIDE: u64 = 0x2_0000;

/// 0 until the boot CPU has found the GIC, then 2 or 3.
static mut VERSION: u64 = 0;
/// The boot CPU's GIC setup: 0 not tried, 1 done, 2 failed (SETUP_ERR).
static mut SETUP: u64 = 0;
static mut SETUP_ERR: &str = "";
/// The timers' INTIDs (from the DTB, set with VERSION).
static mut VTIMER: u64 = VTIMER_DEFAULT;
static mut PTIMER: u64 = PTIMER_DEFAULT;
static mut GICD: usize = 0;
/// GICv3: the redistributor region; GICv2: the CPU interface.
static mut GICC: usize = 0;
static mut GICR_SIZE: u64 = 0;
/// IRQs taken, per CPU slot and INTID; written only by that CPU's handler.
static mut COUNTS: [[u32; OTHER + 1]; SLOTS_US] = [[0; OTHER + 1]; SLOTS_US];
/// CNTVCT right after the handler acknowledged the last IRQ of each INTID
/// (after, not at entry: what was pending at entry may not be what it
/// acknowledges), per CPU slot; written (before the count) only by that
/// CPU's handler.
static mut STAMPS: [[u64; OTHER + 1]; SLOTS_US] = [[0; OTHER + 1]; SLOTS_US];
/// Each CPU's SGI target (GICv3: its MPIDR; GICv2: its CPU interface
/// mask), written by that CPU before it reports ready.
static mut TARGET: [u64; SLOTS_US] = [0; SLOTS_US];
/// The slot that runs the SGI test instead of the normal secondary flow.
static mut IRQ_SLOT: u64 = 0;
static mut SGI_M: u32 = 0;
/// Boot CPU: the secondary should stop waiting for SGIs (it gave up).
static mut ABORT: u64 = 0;
/// Secondary: 1 = its GIC interface is set up, 2 = it could not be.
static mut READY: u64 = 0;
/// Secondary: it has sent its SGIs.
static mut DONE: u64 = 0;

pub fn dsb() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb sy") };
}

/// A shared word's read (callers pass the address of a static).
pub fn get<T: Copy>(p: *const T) -> T {
    // SAFETY: callers pass the address of a static of this program.
    unsafe { read_volatile(p) }
}

/// A shared word's write, then a barrier so a later flag is seen after it.
pub fn put<T>(p: *mut T, v: T) {
    // SAFETY: callers pass the address of a static of this program, of
    // which this CPU is the only writer.
    unsafe { write_volatile(p, v) };
    dsb();
}

/// IRQs of `intid` the CPU in `slot` has taken.
pub fn count(slot: usize, intid: u64) -> u32 {
    let i = (intid as usize).min(OTHER);
    // SAFETY: in-bounds element of COUNTS (indices clamped).
    get(unsafe { &raw const COUNTS[slot % SLOTS_US][i] })
}

/// CNTVCT when the CPU in `slot` last acknowledged `intid` in its handler.
pub fn stamp(slot: usize, intid: u64) -> u64 {
    let i = (intid as usize).min(OTHER);
    // SAFETY: in-bounds element of STAMPS (indices clamped).
    get(unsafe { &raw const STAMPS[slot % SLOTS_US][i] })
}

/// The EL1 virtual timer's INTID.
pub fn vtimer() -> u64 {
    get(&raw const VTIMER)
}

/// The EL1 non-secure physical timer's INTID.
pub fn ptimer() -> u64 {
    get(&raw const PTIMER)
}

/// SGIs 0-15 and the two timers' PPIs.
fn enables() -> u32 {
    0xffff | 1 << (vtimer() % 32) | 1 << (ptimer() % 32)
}

fn rd32(a: usize) -> u32 {
    // SAFETY: a GIC register inside a region the DTB gave.
    unsafe { crate::mmio_read32(a) }
}

fn wr32(a: usize, v: u32) {
    // SAFETY: as in rd32.
    unsafe { crate::mmio_write32(a, v) }
}

fn rd64(a: usize) -> u64 {
    // SAFETY: as in rd32 (8-byte aligned: redistributor frames are).
    unsafe { crate::mmio_read64(a) }
}

pub fn now() -> u64 {
    let v: u64;
    // SAFETY: reading the virtual counter (isb: not ahead of older code).
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v) };
    v
}

pub fn freq() -> u64 {
    let v: u64;
    // SAFETY: reading the counter frequency.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v) };
    v.max(1)
}

/// Counter ticks in 5 s: the bound on every wait for another CPU.
pub fn five_seconds() -> u64 {
    freq().saturating_mul(5)
}

/// Waits in `wfi` until `done()`, checked with IRQs masked: an IRQ that
/// comes after a check still ends the `wfi` (a pending interrupt does,
/// masked or not) and is taken between the `daifclr` and `daifset`. Gives
/// up after `ticks` (only noticed when something wakes the `wfi`).
pub fn wait_wfi(done: impl Fn() -> bool, ticks: u64) -> bool {
    let end = now().saturating_add(ticks);
    loop {
        if done() {
            return true;
        }
        if now() > end {
            return false;
        }
        // SAFETY: waiting, then taking pending IRQs (the handler saves
        // what it clobbers); IRQs are masked again after.
        unsafe { core::arch::asm!("wfi", "msr daifclr, #2", "isb", "msr daifset, #2") };
    }
}

/// Arms the EL1 physical timer as a watchdog for a `wait_wfi(_, ticks)`
/// about to start: it fires a little after that wait's own deadline, so
/// the `wfi` wakes and the wait gives up even if nothing else comes.
pub fn watchdog(ticks: u64) {
    let t = ticks.saturating_add(ticks / 8).saturating_add(1);
    // SAFETY: the guest's own physical timer: relative deadline, enabled,
    // unmasked (the handler masks it when it fires).
    unsafe {
        core::arch::asm!("msr cntp_tval_el0, {}", "msr cntp_ctl_el0, {}", "isb",
            in(reg) t, in(reg) 1u64);
    }
}

pub fn watchdog_off() {
    // SAFETY: the guest's own physical timer, off.
    unsafe { core::arch::asm!("msr cntp_ctl_el0, xzr", "isb") };
}

/// `wait_wfi` with a `watchdog`: bounded whatever happens.
pub fn wait_wfi_bounded(done: impl Fn() -> bool, ticks: u64) -> bool {
    watchdog(ticks);
    let ok = wait_wfi(done, ticks);
    watchdog_off();
    ok
}

/// Waits in `wfe` until `done()` or `ticks` pass, with IRQs unmasked if
/// `irqs` (an IRQ ends the `wfe`; so does the event stream each CPU turns
/// on, crate::event_stream, within 128 counter ticks). For waits on
/// another CPU: where CPUs take turns on one host thread (QEMU's icount)
/// or vCPUs share a pCPU, a spinning waiter holds up the CPU it waits for,
/// while `wfe` yields (QEMU) or traps (hypervisors that trap it yield).
pub fn wait_wfe(done: impl FnMut() -> bool, ticks: u64, irqs: bool) -> bool {
    wait(done, ticks, irqs, || {
        // SAFETY: waiting for an event has no memory effects.
        unsafe { core::arch::asm!("wfe") }
    })
}

/// Spins with IRQs unmasked until `done()` or `ticks` pass.
pub fn wait_spin(done: impl FnMut() -> bool, ticks: u64) -> bool {
    wait(done, ticks, true, core::hint::spin_loop)
}

/// Until `done()` or `ticks` pass, `pause()` between looks; IRQs unmasked
/// meanwhile if `irqs`, masked after.
fn wait(mut done: impl FnMut() -> bool, ticks: u64, irqs: bool, pause: impl Fn()) -> bool {
    let end = now().saturating_add(ticks);
    if irqs {
        // SAFETY: the IRQ handler saves what it clobbers.
        unsafe { core::arch::asm!("msr daifclr, #2", "isb") };
    }
    let ok = loop {
        if done() {
            break true;
        }
        if now() > end {
            break false;
        }
        pause();
    };
    // SAFETY: masking IRQs again.
    unsafe { core::arch::asm!("msr daifset, #2") };
    ok
}

pub fn version() -> u64 {
    get(&raw const VERSION)
}

pub fn gicd() -> usize {
    get(&raw const GICD)
}

fn gicc() -> usize {
    get(&raw const GICC)
}

/// Polls `reg` until `bit` is clear, for at most 1 s.
fn wait_clear(reg: usize, bit: u32) -> bool {
    let end = now().saturating_add(freq());
    while rd32(reg) & bit != 0 {
        if now() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The boot CPU's distributor setup.
fn init_dist() -> Result<(), &'static str> {
    let d = gicd();
    if version() == 3 {
        // ARE first (changing it with a group enabled is UNPREDICTABLE),
        // then both groups (DS=1 under a hypervisor: bit 0 is group 0).
        wr32(d, 1 << 4);
        if !wait_clear(d, 1 << 31) {
            return Err("GICD_CTLR.RWP stuck");
        }
        wr32(d, 1 << 4 | 1 << 1 | 1);
        if !wait_clear(d, 1 << 31) {
            return Err("GICD_CTLR.RWP stuck");
        }
    } else {
        wr32(d, 1);
    }
    Ok(())
}

/// The redistributor whose GICR_TYPER affinity is `mpidr`'s.
fn find_redist(mpidr: u64) -> Option<usize> {
    let aff = (mpidr >> 32 & 0xff) << 24 | (mpidr & 0xff_ffff);
    let size = get(&raw const GICR_SIZE);
    let mut off = 0u64;
    while off.checked_add(GICR_STRIDE)? <= size {
        let rd = gicc().checked_add(off as usize)?;
        let typer = rd64(rd + 0x8);
        if typer >> 32 == aff {
            return Some(rd);
        }
        if typer & 1 << 4 != 0 {
            return None;
        }
        off += GICR_STRIDE;
    }
    None
}

/// This CPU's own GIC interface: GICv3 redistributor and ICC registers,
/// or GICv2 banked distributor registers and CPU interface. Publishes the
/// CPU's SGI target in TARGET[slot].
pub fn init_cpu(slot: usize) -> Result<(), &'static str> {
    // SAFETY: TPIDR_EL1 is the guest's own: the IRQ handler's CPU slot.
    unsafe { core::arch::asm!("msr tpidr_el1, {}", in(reg) slot as u64) };
    let target = if version() == 3 {
        let mpidr = read_mpidr();
        let rd = find_redist(mpidr).ok_or("no redistributor for this mpidr")?;
        let waker = rd + 0x14;
        wr32(waker, rd32(waker) & !(1 << 1));
        if !wait_clear(waker, 1 << 2) {
            return Err("GICR_WAKER.ChildrenAsleep stuck");
        }
        let sgi = rd + 0x1_0000;
        wr32(sgi + 0x80, !0);
        for i in 0..8 {
            wr32(sgi + 0x400 + 4 * i, PRIORITIES);
        }
        wr32(sgi + 0x100, enables());
        // SAFETY: the GICv3 CPU interface: system registers on, all
        // priorities unmasked, no preemption grouping, EOImode 0, group 1
        // on.
        unsafe {
            core::arch::asm!(
                "mrs {t}, icc_sre_el1",
                "orr {t}, {t}, #1",
                "msr icc_sre_el1, {t}",
                "isb",
                "mov {t}, #0xff",
                "msr icc_pmr_el1, {t}",
                "msr icc_bpr1_el1, xzr",
                "msr icc_ctlr_el1, xzr",
                "mov {t}, #1",
                "msr icc_igrpen1_el1, {t}",
                "isb",
                t = out(reg) _,
            );
        }
        mpidr
    } else {
        let d = gicd();
        for i in 0..8 {
            wr32(d + 0x400 + 4 * i, PRIORITIES);
        }
        wr32(d + 0x100, enables());
        wr32(gicc() + 0x4, 0xff);
        wr32(gicc(), 1);
        // GICD_ITARGETSR0's bytes read as this CPU's own interface mask
        // (RAZ on a uniprocessor GIC: then guess from the slot).
        let mask = rd32(d + 0x800) & 0xff;
        if mask != 0 {
            mask as u64
        } else {
            1 << (slot % 8)
        }
    };
    // SAFETY: this CPU's own element.
    put(unsafe { &raw mut TARGET[slot % SLOTS_US] }, target);
    Ok(())
}

/// The SGI target the CPU in `slot` published in `init_cpu`.
pub fn target(slot: usize) -> u64 {
    // SAFETY: in-bounds element of TARGET.
    get(unsafe { &raw const TARGET[slot % SLOTS_US] })
}

/// Sends SGI `sgi` to the CPU whose TARGET is `target`.
pub fn send_sgi(sgi: u64, target: u64) {
    // Earlier writes (a flag the receiver reads) first.
    dsb();
    if version() == 3 {
        let aff0 = target & 0xff;
        let v = (target >> 32 & 0xff) << 48
            | (aff0 >> 4) << 44
            | (target >> 16 & 0xff) << 32
            | sgi << 24
            | (target >> 8 & 0xff) << 16
            | 1 << (aff0 & 0xf);
        // SAFETY: generating a group 1 SGI.
        unsafe { core::arch::asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) v) };
    } else {
        wr32(gicd() + 0xf00, ((target as u32 & 0xff) << 16) | sgi as u32);
    }
}

/// Acknowledges the highest-priority pending interrupt: (the IAR value
/// to EOI, its INTID; 1020-1023 when nothing is). Only once `setup` found
/// a GIC.
pub fn ack() -> (u64, u64) {
    if version() == 3 {
        let iar: u64;
        // SAFETY: acknowledging the highest-priority group 1 interrupt.
        unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", "dsb sy", out(reg) iar) };
        (iar, iar & 0xff_ffff)
    } else {
        let iar = rd32(gicc() + 0xc) as u64;
        (iar, iar & 0x3ff)
    }
}

/// EOImode 0: priority drop and deactivation of what `ack` returned.
pub fn eoi(iar: u64) {
    if version() == 3 {
        // SAFETY: ending an interrupt this CPU acknowledged.
        unsafe { core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar) };
    } else {
        wr32(gicc() + 0x10, iar as u32);
    }
}

/// IRQ vector (entry.S): acknowledge, timestamp, handle, EOI, count.
#[unsafe(no_mangle)]
extern "C" fn on_irq() {
    let slot: u64;
    // SAFETY: reading this CPU's slot (init_cpu set it).
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) slot) };
    if version() == 0 {
        say!("guest: unexpected irq (no GIC set up)");
        crate::halt()
    }
    let (iar, intid) = ack();
    let t = now();
    if (1020..=1023).contains(&intid) {
        // Spurious (or special): nothing to EOI.
        return;
    }
    // A timer's interrupt is a level: masked and disabled, so it drops
    // before the EOI.
    if intid == vtimer() {
        // SAFETY: the guest's own virtual timer.
        unsafe { core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) 2u64) };
    } else if intid == ptimer() {
        // SAFETY: the guest's own physical timer (a wait's watchdog).
        unsafe { core::arch::asm!("msr cntp_ctl_el0, {}", "isb", in(reg) 2u64) };
    }
    eoi(iar);
    let slot = slot as usize % SLOTS_US;
    let i = (intid as usize).min(OTHER);
    // SAFETY: this CPU's own stamp and counter (only its handler writes
    // them); the stamp first, so whoever sees the count sees its stamp.
    unsafe {
        put(&raw mut STAMPS[slot][i], t);
        put(&raw mut COUNTS[slot][i], count(slot, intid).wrapping_add(1));
    }
}

fn dec(s: Option<&str>, default: u32) -> u32 {
    s.and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Whether the secondary in `slot` should run `secondary` (set by the boot
/// CPU before it starts or releases that CPU for the SGI test).
pub fn is_irq_slot(slot: u64) -> bool {
    slot != 0 && get(&raw const IRQ_SLOT) == slot
}

/// Whether the SGI test's secondary in `slot` is done and idles in `wfi`
/// with IRQs unmasked (where an SGI_KICK makes it look at `bench`).
pub fn parked(slot: u64) -> bool {
    is_irq_slot(slot) && get(&raw const DONE) != 0
}

/// A timer INTID from the DTB if it is a PPI, else `default`.
fn ppi_or(v: Option<u32>, default: u64) -> u64 {
    v.filter(|i| (16..32).contains(i))
        .map_or(default, u64::from)
}

/// On the boot CPU, once: the GIC from the DTB, its distributor and the
/// boot CPU's interface (slot 0). Later calls return the first result.
pub fn setup(info: &fdt::Info) -> Result<fdt::Gic, &'static str> {
    let g = info.gic.ok_or("no GIC in the DTB")?;
    if get(&raw const SETUP) == 0 {
        put(&raw mut GICD, g.dist);
        put(&raw mut GICC, g.cpu);
        put(&raw mut GICR_SIZE, g.cpu_size);
        put(&raw mut VTIMER, ppi_or(info.timer[2], VTIMER_DEFAULT));
        put(&raw mut PTIMER, ppi_or(info.timer[1], PTIMER_DEFAULT));
        let v = match g.version {
            GicVersion::V3 => 3,
            GicVersion::V2 => 2,
        };
        put(&raw mut VERSION, v);
        match init_dist().and_then(|()| init_cpu(0)) {
            Ok(()) => put(&raw mut SETUP, 1),
            Err(e) => {
                put(&raw mut SETUP_ERR, e);
                put(&raw mut SETUP, 2);
            }
        }
    }
    match get(&raw const SETUP) {
        1 => Ok(g),
        _ => Err(get(&raw const SETUP_ERR)),
    }
}

/// The `irqs` word, on the boot CPU after the summary line.
pub fn run(info: &fdt::Info, args: &str, hold: bool, entry: u64) {
    let n = dec(crate::word_value(args, "timer"), 10);
    let m = dec(crate::word_value(args, "sgi"), 10);
    let mut c = Checks { pass: 0, fail: 0 };
    match info.gic {
        None => c.check(false, format_args!("irq-gic (no GIC in the DTB)")),
        Some(g) => {
            let (v, cpu) = match g.version {
                GicVersion::V3 => (3, "gicr"),
                GicVersion::V2 => (2, "gicc"),
            };
            say!("guest: irqs gic=v{v} gicd={:#x} {cpu}={:#x}", g.dist, g.cpu);
            match setup(info) {
                Err(e) => c.check(false, format_args!("irq-gic ({e})")),
                Ok(_) => {
                    timer_test(n, &mut c);
                    sgi_test(info, m, hold, entry, &mut c);
                }
            }
        }
    }
    say!("guest: irqs summary pass={} fail={}", c.pass, c.fail);
    say!("guest: irqs done");
}

fn timer_test(n: u32, c: &mut Checks) {
    let delay = (freq() / 1000).max(1);
    let base = count(0, vtimer());
    for i in 1..=n {
        // SAFETY: arming the guest's own virtual timer: enabled, unmasked.
        unsafe {
            core::arch::asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
                in(reg) delay, in(reg) 1u64);
        }
        let taken = || count(0, vtimer()).wrapping_sub(base) >= i;
        if !wait_wfi(taken, five_seconds()) {
            break;
        }
    }
    // SAFETY: the timer off again (the handler already did, unless a wait
    // gave up).
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb") };
    let got = count(0, vtimer()).wrapping_sub(base);
    say!("guest: irqs timer={got} expected={n}");
    c.check(got == n, format_args!("irq-timer {n}"));
}

/// The `timer-off` word: for the virtual and the physical timer, and for
/// each way to stop one (disable, IMASK), with IRQs masked: fire it, read
/// its pending state (set), stop it, read it again (clear), then unmask
/// IRQs for 5 ms: its interrupt must not arrive.
pub fn timer_off(info: &fdt::Info) {
    let mut c = Checks { pass: 0, fail: 0 };
    if let Err(e) = setup(info) {
        c.check(false, format_args!("timer-off gic ({e})"));
    } else {
        for (name, intid) in [("virtual", vtimer()), ("physical", ptimer())] {
            for (how, ctl) in [("disabled", 0u64), ("masked", 3u64)] {
                timer_off_case(name, intid, how, ctl, &mut c);
            }
        }
    }
    say!("guest: timer-off summary pass={} fail={}", c.pass, c.fail);
}

/// This CPU's view of GICR_ISPENDR0 (GICv3) or the banked GICD_ISPENDR0.
fn private_pending() -> u32 {
    if version() == 3 {
        match find_redist(read_mpidr()) {
            Some(rd) => rd32(rd + 0x1_0000 + 0x200),
            None => 0,
        }
    } else {
        rd32(gicd() + 0x200)
    }
}

fn set_timer_ctl(intid: u64, ctl: u64) {
    if intid == vtimer() {
        // SAFETY: the guest's own virtual timer.
        unsafe { core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) ctl) };
    } else {
        // SAFETY: the guest's own physical timer.
        unsafe { core::arch::asm!("msr cntp_ctl_el0, {}", "isb", in(reg) ctl) };
    }
}

fn timer_ctl(intid: u64) -> u64 {
    let v: u64;
    if intid == vtimer() {
        // SAFETY: reading the guest's own timer control.
        unsafe { core::arch::asm!("mrs {}, cntv_ctl_el0", out(reg) v) };
    } else {
        // SAFETY: as above.
        unsafe { core::arch::asm!("mrs {}, cntp_ctl_el0", out(reg) v) };
    }
    v
}

fn timer_off_case(name: &str, intid: u64, how: &str, stop: u64, c: &mut Checks) {
    let bit = 1u32 << intid;
    let base = count(0, intid);
    // IRQs are masked (PSTATE.I) outside waits: fire the timer now.
    if intid == vtimer() {
        // SAFETY: the guest's own virtual timer, due at once.
        unsafe { core::arch::asm!("msr cntv_tval_el0, xzr", "isb") };
    } else {
        // SAFETY: the guest's own physical timer, due at once.
        unsafe { core::arch::asm!("msr cntp_tval_el0, xzr", "isb") };
    }
    set_timer_ctl(intid, 1);
    let firing = wait(|| timer_ctl(intid) & 4 != 0, five_seconds(), false, || {});
    // Let the physical interrupt reach the hypervisor (1 ms).
    let t = now();
    wait(|| now() > t + freq() / 1000, five_seconds(), false, || {});
    let before = private_pending() & bit != 0;
    c.check(
        firing && before,
        format_args!("timer-off {name} pending while firing"),
    );
    set_timer_ctl(intid, stop);
    let after = private_pending() & bit != 0;
    c.check(
        !after,
        format_args!("timer-off {name} {how}: pending clear"),
    );
    let t = now();
    wait(|| count(0, intid) != base, freq() / 200, true, || {});
    let got = count(0, intid).wrapping_sub(base);
    c.check(
        got == 0,
        format_args!(
            "timer-off {name} {how}: no interrupt after ({got} taken, waited {} ticks)",
            now() - t
        ),
    );
    set_timer_ctl(intid, 0);
}

fn sgi_test(info: &fdt::Info, m: u32, hold: bool, entry: u64, c: &mut Checks) {
    let me = read_mpidr();
    let Some(&peer) = info.cpus().iter().find(|&&x| x != me) else {
        say!("guest: irqs sgi skipped (1 cpu)");
        return;
    };
    let slot = 1u64;
    let s = slot as usize;
    put(&raw mut SGI_M, m);
    put(&raw mut IRQ_SLOT, slot);
    // SAFETY: written by the secondary when it came online.
    let spinning = hold && get(unsafe { &raw const ONLINE[s] }) != 0;
    if !spinning {
        // It did CPU_OFF in the checks above; start it again.
        let r = psci(CPU_ON, peer, entry, slot);
        if r != 0 {
            c.check(false, format_args!("irq-sgi (cpu_on {peer:#x}: psci {r})"));
            return;
        }
    }
    let ready = wait_wfe(|| get(&raw const READY) != 0, five_seconds(), true);
    dsb();
    if !ready || get(&raw const READY) != 1 {
        let why = if ready {
            "gic setup failed"
        } else {
            "not ready"
        };
        c.check(false, format_args!("irq-sgi (cpu {peer:#x} {why})"));
        return;
    }
    // SAFETY: published by the secondary before READY.
    let to_secondary = get(unsafe { &raw const TARGET[s] });
    let mut ok = true;
    for i in 1..=m {
        send_sgi(SGI_TO_SECONDARY, to_secondary);
        if !wait_wfe(|| count(s, SGI_TO_SECONDARY) >= i, five_seconds(), true) {
            ok = false;
            break;
        }
    }
    if !ok {
        put(&raw mut ABORT, 1);
        send_sgi(SGI_KICK, to_secondary);
    }
    // The secondary sends its SGIs now: wait until it is done, giving up
    // after 5 s without progress.
    let mut seen = count(0, SGI_TO_BOOT);
    loop {
        let progress = || get(&raw const DONE) != 0 || count(0, SGI_TO_BOOT) != seen;
        if !wait_wfe(progress, five_seconds(), true) {
            ok = false;
            break;
        }
        if get(&raw const DONE) != 0 {
            break;
        }
        seen = count(0, SGI_TO_BOOT);
    }
    let a = count(s, SGI_TO_SECONDARY);
    let b = count(0, SGI_TO_BOOT);
    say!("guest: irqs sgi={a}+{b} expected={m}+{m}");
    c.check(ok && a == m && b == m, format_args!("irq-sgi {m}+{m}"));
}

/// The SGI test's secondary: its own GIC interface, then SGI 1s from the
/// boot CPU (taken in a `wfi` loop), then SGI 2s to it; then it idles in
/// `wfi` with IRQs unmasked.
pub fn secondary(slot: u64) -> ! {
    let s = slot as usize % SLOTS_US;
    if init_cpu(s).is_err() {
        put(&raw mut READY, 2);
        crate::halt()
    }
    put(&raw mut READY, 1);
    let m = get(&raw const SGI_M);
    let got_all = || count(s, SGI_TO_SECONDARY) >= m || get(&raw const ABORT) != 0;
    wait_wfi(got_all, u64::MAX);
    // SAFETY: published by the boot CPU before it started this one.
    let to_boot = get(unsafe { &raw const TARGET[0] });
    for i in 1..=m {
        send_sgi(SGI_TO_BOOT, to_boot);
        if !wait_wfe(|| count(0, SGI_TO_BOOT) >= i, five_seconds(), true) {
            break;
        }
    }
    put(&raw mut DONE, 1);
    // SAFETY: idling; the handler saves what it clobbers.
    unsafe { core::arch::asm!("msr daifclr, #2") };
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfi") };
        if crate::bench::is_bench_slot(slot) {
            // `bench` after `irqs`: it kicked this CPU with an SGI.
            // SAFETY: IRQs masked again, as bench::secondary expects.
            unsafe { core::arch::asm!("msr daifset, #2") };
            crate::bench::secondary(slot)
        }
    }
}
