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

use core::fmt::Write;
use core::ptr::{read_volatile, write_volatile};

use crate::fdt::{self, GicVersion};
use crate::{psci, read_mpidr, Checks, Console, CPU_ON, ONLINE, SLOTS};

const SLOTS_US: usize = SLOTS as usize;
/// The EL1 virtual timer's PPI.
const TIMER_INTID: usize = 27;
const SGI_TO_SECONDARY: u64 = 1;
const SGI_TO_BOOT: u64 = 2;
/// Wakes the secondary from its wait when the boot CPU gives up early.
const SGI_KICK: u64 = 3;
/// INTIDs 0..32 (SGIs, PPIs) are counted each; anything else here.
const OTHER: usize = 32;
const PRIORITIES: u32 = 0xa0a0_a0a0;
/// SGIs 0-15 and the virtual timer's PPI.
const ENABLES: u32 = 0xffff | 1 << TIMER_INTID;
const GICR_STRIDE: u64 = 0x2_0000;

/// 0 until the boot CPU has found the GIC, then 2 or 3.
static mut VERSION: u64 = 0;
static mut GICD: usize = 0;
/// GICv3: the redistributor region; GICv2: the CPU interface.
static mut GICC: usize = 0;
static mut GICR_SIZE: u64 = 0;
/// IRQs taken, per CPU slot and INTID; written only by that CPU's handler.
static mut COUNTS: [[u32; OTHER + 1]; SLOTS_US] = [[0; OTHER + 1]; SLOTS_US];
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

fn dsb() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb sy") };
}

fn get<T: Copy>(p: *const T) -> T {
    // SAFETY: callers pass the address of one of the statics above.
    unsafe { read_volatile(p) }
}

/// A shared word's write, then a barrier so a later flag is seen after it.
fn put<T>(p: *mut T, v: T) {
    // SAFETY: callers pass the address of one of the statics above, of
    // which this CPU is the only writer.
    unsafe { write_volatile(p, v) };
    dsb();
}

fn count(slot: usize, intid: usize) -> u32 {
    // SAFETY: in-bounds element of COUNTS (indices clamped).
    get(unsafe { &raw const COUNTS[slot % SLOTS_US][intid.min(OTHER)] })
}

fn rd32(a: usize) -> u32 {
    // SAFETY: a GIC register inside a region the DTB gave.
    unsafe { read_volatile(a as *const u32) }
}

fn wr32(a: usize, v: u32) {
    // SAFETY: as in rd32.
    unsafe { write_volatile(a as *mut u32, v) }
}

fn rd64(a: usize) -> u64 {
    // SAFETY: as in rd32 (8-byte aligned: redistributor frames are).
    unsafe { read_volatile(a as *const u64) }
}

fn now() -> u64 {
    let v: u64;
    // SAFETY: reading the virtual counter (isb: not ahead of older code).
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v) };
    v
}

fn freq() -> u64 {
    let v: u64;
    // SAFETY: reading the counter frequency.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v) };
    v.max(1)
}

/// Counter ticks in 5 s: the bound on every wait for another CPU.
fn five_seconds() -> u64 {
    freq().saturating_mul(5)
}

/// Waits in `wfi` until `done()`, checked with IRQs masked: an IRQ that
/// comes after a check still ends the `wfi` (a pending interrupt does,
/// masked or not) and is taken between the `daifclr` and `daifset`. Gives
/// up after `ticks` (only noticed when something wakes the `wfi`).
fn wait_wfi(done: impl Fn() -> bool, ticks: u64) -> bool {
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

/// Spins with IRQs unmasked until `done()` or `ticks` pass.
fn wait_spin(done: impl Fn() -> bool, ticks: u64) -> bool {
    let end = now().saturating_add(ticks);
    // SAFETY: the IRQ handler saves what it clobbers.
    unsafe { core::arch::asm!("msr daifclr, #2", "isb") };
    let ok = loop {
        if done() {
            break true;
        }
        if now() > end {
            break false;
        }
        core::hint::spin_loop();
    };
    // SAFETY: masking IRQs again.
    unsafe { core::arch::asm!("msr daifset, #2") };
    ok
}

fn version() -> u64 {
    get(&raw const VERSION)
}

fn gicd() -> usize {
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
fn init_cpu(slot: usize) -> Result<(), &'static str> {
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
        wr32(sgi + 0x100, ENABLES);
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
        wr32(d + 0x100, ENABLES);
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

/// Sends SGI `sgi` to the CPU whose TARGET is `target`.
fn send_sgi(sgi: u64, target: u64) {
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

/// IRQ vector (entry.S): acknowledge, handle, EOI, count.
#[unsafe(no_mangle)]
extern "C" fn on_irq() {
    let slot: u64;
    // SAFETY: reading this CPU's slot (init_cpu set it).
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) slot) };
    let v = version();
    let (iar, intid) = if v == 3 {
        let iar: u64;
        // SAFETY: acknowledging the highest-priority group 1 interrupt.
        unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", "dsb sy", out(reg) iar) };
        (iar, (iar & 0xff_ffff) as usize)
    } else if v == 2 {
        let iar = rd32(gicc() + 0xc) as u64;
        (iar, (iar & 0x3ff) as usize)
    } else {
        say!("guest: unexpected irq (no GIC set up)");
        crate::halt()
    };
    if (1020..=1023).contains(&intid) {
        // Spurious (or special): nothing to EOI.
        return;
    }
    if intid == TIMER_INTID {
        // Masked and disabled, so the level interrupt drops before the EOI.
        // SAFETY: the guest's own virtual timer.
        unsafe { core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) 2u64) };
    }
    if v == 3 {
        // SAFETY: EOImode 0: priority drop and deactivation.
        unsafe { core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar) };
    } else {
        wr32(gicc() + 0x10, iar as u32);
    }
    let slot = slot as usize % SLOTS_US;
    let i = intid.min(OTHER);
    // SAFETY: this CPU's own counter (only its handler writes it).
    put(
        unsafe { &raw mut COUNTS[slot][i] },
        count(slot, i).wrapping_add(1),
    );
}

fn dec(s: Option<&str>, default: u32) -> u32 {
    s.and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Whether the secondary in `slot` should run `secondary` (set by the boot
/// CPU before it starts or releases that CPU for the SGI test).
pub fn is_irq_slot(slot: u64) -> bool {
    slot != 0 && get(&raw const IRQ_SLOT) == slot
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
            put(&raw mut GICD, g.dist);
            put(&raw mut GICC, g.cpu);
            put(&raw mut GICR_SIZE, g.cpu_size);
            put(&raw mut VERSION, v);
            match init_dist().and_then(|()| init_cpu(0)) {
                Err(e) => c.check(false, format_args!("irq-gic ({e})")),
                Ok(()) => {
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
    let base = count(0, TIMER_INTID);
    for i in 1..=n {
        // SAFETY: arming the guest's own virtual timer: enabled, unmasked.
        unsafe {
            core::arch::asm!("msr cntv_tval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
                in(reg) delay, in(reg) 1u64);
        }
        let taken = || count(0, TIMER_INTID).wrapping_sub(base) >= i;
        if !wait_wfi(taken, five_seconds()) {
            break;
        }
    }
    // SAFETY: the timer off again (the handler already did, unless a wait
    // gave up).
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb") };
    let got = count(0, TIMER_INTID).wrapping_sub(base);
    say!("guest: irqs timer={got} expected={n}");
    c.check(got == n, format_args!("irq-timer {n}"));
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
    let ready = wait_spin(|| get(&raw const READY) != 0, five_seconds());
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
        if !wait_spin(|| count(s, SGI_TO_SECONDARY as usize) >= i, five_seconds()) {
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
    let mut seen = count(0, SGI_TO_BOOT as usize);
    loop {
        let progress = || get(&raw const DONE) != 0 || count(0, SGI_TO_BOOT as usize) != seen;
        if !wait_spin(progress, five_seconds()) {
            ok = false;
            break;
        }
        if get(&raw const DONE) != 0 {
            break;
        }
        seen = count(0, SGI_TO_BOOT as usize);
    }
    let a = count(s, SGI_TO_SECONDARY as usize);
    let b = count(0, SGI_TO_BOOT as usize);
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
    let got_all = || count(s, SGI_TO_SECONDARY as usize) >= m || get(&raw const ABORT) != 0;
    wait_wfi(got_all, u64::MAX);
    // SAFETY: published by the boot CPU before it started this one.
    let to_boot = get(unsafe { &raw const TARGET[0] });
    for i in 1..=m {
        send_sgi(SGI_TO_BOOT, to_boot);
        if !wait_spin(|| count(0, SGI_TO_BOOT as usize) >= i, five_seconds()) {
            break;
        }
    }
    put(&raw mut DONE, 1);
    // SAFETY: idling; the handler saves what it clobbers.
    unsafe { core::arch::asm!("msr daifclr, #2") };
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfi") };
    }
}
