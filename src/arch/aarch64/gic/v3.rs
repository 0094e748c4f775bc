//! The physical GICv3 at EL2, through Google's `arm-gic`: distributor and
//! redistributor setup, and on every pCPU its CPU interface with split
//! priority drop and deactivation (`ICC_CTLR_EL1.EOImode = 1`), so a
//! virtual interrupt linked to a physical one (the timers) is deactivated
//! by the guest. Each pCPU finds its redistributor by the affinity in
//! `GICR_TYPER`. Enabled at EL2: the kick SGI, the maintenance interrupt,
//! the EL1 virtual and physical timers, and the console's RX interrupt.
//! With HCR_EL2.IMO set they all arrive at EL2 while a guest runs.
//!
//! Also the virtual CPU interface registers (ICH_*_EL2) the vGIC uses.

use super::{Acked, ICH_HCR_EN, KICK, MAINTENANCE, PTIMER, VTIMER};
use super::{Driver, Lr, LrState};
use crate::arch::Mutex;
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3};
use arm_gic::{IntId, Trigger};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use dtvisor::hw::GicVersion;
use dtvisor::vgic;
use safe_mmio::UniqueMmioPointer;

/// INTIDs 1020..1023 are special (1023: nothing pending).
const SPURIOUS: u32 = 1020;

struct Gic(GicV3<'static>);

// SAFETY: the driver holds MMIO pointers; every use is under GIC's lock.
unsafe impl Send for Gic {}

static GIC: Mutex<Option<Gic>> = Mutex::new(None);
/// Per pCPU: its redistributor's SGI frame (0 = none).
static SGI_FRAME: [AtomicU64; crate::arch::boot::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::arch::boot::MAX_CPUS];
static GICR_BASE: AtomicU64 = AtomicU64::new(0);
static GICD_BASE: AtomicU64 = AtomicU64::new(0);
/// Redistributor frames present (counted at boot, at most the CPU count).
static REDISTS: AtomicUsize = AtomicUsize::new(0);

/// GIC CPU interface and virtual interface registers: `vcpu::sysreg!`,
/// each write followed by an ISB, so the next access sees its effect.
macro_rules! icc {
    (read $r:literal) => {
        crate::arch::vcpu::sysreg!(read $r)
    };
    (write $r:literal, $v:expr) => {{
        crate::arch::vcpu::sysreg!(write $r, $v);
        // SAFETY: a context synchronization barrier has no memory effects.
        unsafe { core::arch::asm!("isb", options(nomem, nostack)) };
    }};
}

/// The redistributor whose GICR_TYPER affinity is `mpidr`.
fn find_redistributor(g: &mut GicV3<'static>, cpus: usize, mpidr: u64) -> Option<usize> {
    (0..cpus).find(|&i| {
        g.gicr_typer(i)
            .is_ok_and(|t| t.core_mpidr() & 0xff_00ff_ffff == mpidr)
    })
}

/// This pCPU's CPU interface and private interrupts.
fn cpu_setup(g: &mut GicV3<'static>, redist: usize) {
    GicCpuInterface::enable_system_register_el2(true);
    g.init_cpu(redist);
    // EOImode 1: EOIR only drops priority, DIR deactivates.
    icc!(write "icc_ctlr_el1", 1 << 1);
    for id in [KICK, MAINTENANCE, VTIMER, PTIMER] {
        let intid = if id < 16 {
            IntId::sgi(id)
        } else {
            IntId::ppi(id - 16)
        };
        if id >= 16 {
            let _ = g.set_trigger(intid, Some(redist), Trigger::Level);
        }
        let _ = g.enable_interrupt(intid, Some(redist), true);
    }
    GicCpuInterface::enable_group1(true);
    GicCpuInterface::set_priority_mask(0xff);
}

fn record_frame(cpu: usize, redist: usize) {
    // GICv3 redistributors: RD_base and SGI_base frames, 64 KiB each.
    let frame = GICR_BASE.load(Ordering::Relaxed) + redist as u64 * 0x2_0000 + 0x1_0000;
    if let Some(f) = SGI_FRAME.get(cpu) {
        f.store(frame, Ordering::Relaxed);
    }
}

/// How many redistributor frames there are at `gicr` (at most `max`):
/// up to and including the first whose GICR_TYPER has Last (bit 4) set.
fn present_redistributors(gicr: u64, max: usize) -> usize {
    for i in 0..max {
        let typer = (gicr + i as u64 * 0x2_0000 + 8) as *const u64;
        // SAFETY: frame i exists (frame i - 1 was not the last, or i is
        // 0); the region is identity mapped as Device memory, and reading
        // GICR_TYPER has no side effects.
        if unsafe { typer.read_volatile() } & (1 << 4) != 0 {
            return i + 1;
        }
    }
    max
}

/// Sets the GIC up from the boot CPU (pCPU 0, affinity `mpidr`): the
/// distributor, every redistributor, and this CPU's interface; routes
/// `console_irq` (an SPI) here. Returns this CPU's redistributor index,
/// None if the GIC cannot be used.
pub fn init_boot(
    gicd: u64,
    gicr: u64,
    cpus: usize,
    mpidr: u64,
    console_irq: Option<u32>,
) -> Option<usize> {
    let d = NonNull::new(gicd as *mut Gicd)?;
    let r = NonNull::new(gicr as *mut GicrSgi)?;
    // A device tree may list more CPUs than the machine has redistributors
    // (a DTB dumped for another CPU count): arm-gic would read the frames
    // past the last one and take an abort at EL2. Count the frames the
    // hardware has (GICR_TYPER.Last marks the last) and use only those.
    let frames = present_redistributors(gicr, cpus);
    if frames < cpus {
        log::warn!(
            "GICv3: {frames} redistributors at {gicr:#x} but {cpus} CPUs in the device tree: \
             the CPUs without one are not used"
        );
    }
    let cpus = frames;
    REDISTS.store(frames, Ordering::Relaxed);
    GicCpuInterface::enable_system_register_el2(true);
    // SAFETY: the DTB's distributor and redistributor frames, identity
    // mapped as Device memory; only this driver touches them.
    let mut g = unsafe { GicV3::new(UniqueMmioPointer::new(d), r, cpus) }.ok()?;
    GICR_BASE.store(gicr, Ordering::Relaxed);
    GICD_BASE.store(gicd, Ordering::Relaxed);
    let redist = find_redistributor(&mut g, cpus, mpidr)?;
    g.setup(redist);
    cpu_setup(&mut g, redist);
    record_frame(0, redist);
    if let Some(id) = console_irq.filter(|&i| (32..1020).contains(&i)) {
        let intid = IntId::spi(id - 32);
        let _ = g.distributor().set_routing(intid, Some(mpidr));
        let _ = g.set_trigger(intid, None, Trigger::Level);
        let _ = g.enable_interrupt(intid, None, true);
    }
    *GIC.lock() = Some(Gic(g));
    Some(redist)
}

/// Per-CPU setup on secondary pCPU `cpu` (affinity `mpidr`). False if
/// there is no GICv3 or no redistributor has this affinity.
fn v3_init_secondary(cpu: usize, mpidr: u64, cpus: usize) -> bool {
    // Only where init_boot found a GICv3: on a GICv2 the ICC_* system
    // registers do not exist (their access is UNDEFINED).
    let mut guard = GIC.lock();
    let Some(Gic(g)) = guard.as_mut() else {
        return false;
    };
    let Some(redist) = find_redistributor(g, cpus.min(REDISTS.load(Ordering::Relaxed)), mpidr)
    else {
        return false;
    };
    cpu_setup(g, redist);
    record_frame(cpu, redist);
    true
}

/// Makes the pCPU with affinity `mpidr` take an interrupt to EL2.
/// (`ICC_SGI1R_EL1` is written directly: arm-gic's `SgiTarget` has no
/// range selector, so it cannot reach Aff0 values of 16 and above.)
fn v3_kick(mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let v = (((mpidr >> 32) & 0xff) << 48)
        | ((aff0 >> 4) << 44)
        | (((mpidr >> 16) & 0xff) << 32)
        | ((KICK as u64) << 24)
        | (((mpidr >> 8) & 0xff) << 16)
        | (1 << (aff0 & 0xf));
    // SAFETY: generating an SGI has no memory effects on this CPU.
    unsafe { core::arch::asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) v) };
}

/// Acknowledges the highest-priority pending interrupt, if any.
fn v3_ack() -> Option<u32> {
    let id = icc!(read "icc_iar1_el1") as u32 & 0xff_ffff;
    (id < SPURIOUS).then_some(id)
}

/// Drops the running priority (EOImode 1: the interrupt stays active).
fn v3_eoi(id: u32) {
    icc!(write "icc_eoir1_el1", id as u64);
}

/// Deactivates an interrupt this CPU acknowledged.
fn v3_deactivate(id: u32) {
    icc!(write "icc_dir_el1", id as u64);
}

/// Clears the active state of private interrupts `mask` (bit n = INTID n)
/// in this pCPU's redistributor, whether or not they are active (a
/// deactivation through the CPU interface needs an active interrupt).
fn v3_clear_active_private(cpu: usize, mask: u32) {
    let frame = SGI_FRAME.get(cpu).map_or(0, |f| f.load(Ordering::Relaxed));
    if frame == 0 || mask == 0 {
        return;
    }
    // SAFETY: GICR_ICACTIVER0 of this CPU's own redistributor (identity
    // mapped Device memory); writing ones only clears active states.
    unsafe { core::ptr::write_volatile((frame + 0x380) as *mut u32, mask) };
}

// ---- the virtual CPU interface (ICH_*_EL2) -------------------------------

/// Number of list registers this CPU implements.
fn v3_nr_lrs() -> usize {
    ((icc!(read "ich_vtr_el2") & 0x1f) + 1) as usize
}

/// Reads list register `n`.
fn v3_read_lr(n: usize) -> u64 {
    match n {
        0 => icc!(read "ich_lr0_el2"),
        1 => icc!(read "ich_lr1_el2"),
        2 => icc!(read "ich_lr2_el2"),
        3 => icc!(read "ich_lr3_el2"),
        4 => icc!(read "ich_lr4_el2"),
        5 => icc!(read "ich_lr5_el2"),
        6 => icc!(read "ich_lr6_el2"),
        7 => icc!(read "ich_lr7_el2"),
        8 => icc!(read "ich_lr8_el2"),
        9 => icc!(read "ich_lr9_el2"),
        10 => icc!(read "ich_lr10_el2"),
        11 => icc!(read "ich_lr11_el2"),
        12 => icc!(read "ich_lr12_el2"),
        13 => icc!(read "ich_lr13_el2"),
        14 => icc!(read "ich_lr14_el2"),
        15 => icc!(read "ich_lr15_el2"),
        _ => 0,
    }
}

/// Writes list register `n`.
fn v3_write_lr(n: usize, v: u64) {
    match n {
        0 => icc!(write "ich_lr0_el2", v),
        1 => icc!(write "ich_lr1_el2", v),
        2 => icc!(write "ich_lr2_el2", v),
        3 => icc!(write "ich_lr3_el2", v),
        4 => icc!(write "ich_lr4_el2", v),
        5 => icc!(write "ich_lr5_el2", v),
        6 => icc!(write "ich_lr6_el2", v),
        7 => icc!(write "ich_lr7_el2", v),
        8 => icc!(write "ich_lr8_el2", v),
        9 => icc!(write "ich_lr9_el2", v),
        10 => icc!(write "ich_lr10_el2", v),
        11 => icc!(write "ich_lr11_el2", v),
        12 => icc!(write "ich_lr12_el2", v),
        13 => icc!(write "ich_lr13_el2", v),
        14 => icc!(write "ich_lr14_el2", v),
        15 => icc!(write "ich_lr15_el2", v),
        _ => {}
    }
}

fn v3_write_hcr(v: u64) {
    icc!(write "ich_hcr_el2", v);
}

/// A fresh virtual CPU interface for a vCPU about to start: no list
/// register in use, no active priorities, the guest's CPU interface
/// state (ICH_VMCR_EL2) at reset, system register access for the guest.
fn v3_reset_virtual_interface() {
    for n in 0..v3_nr_lrs() {
        v3_write_lr(n, 0);
    }
    icc!(write "ich_ap0r0_el2", 0);
    icc!(write "ich_ap1r0_el2", 0);
    icc!(write "ich_vmcr_el2", 0);
    // SRE (system registers), DFB and DIB (FIQ and IRQ bypass disabled).
    icc!(write "icc_sre_el1", 0x7);
    v3_write_hcr(ICH_HCR_EN);
}

// ---- the driver -------------------------------------------------------------

/// The GICv3 driver (its state is this module's statics).
pub struct V3;

impl Driver for V3 {
    fn version(&self) -> GicVersion {
        GicVersion::V3
    }
    fn init_secondary(&self, cpu: usize, mpidr: u64, cpus: usize) -> bool {
        v3_init_secondary(cpu, mpidr, cpus)
    }
    fn assign_spi(&self, id: u32, trigger: Trigger, _cpu: usize, mpidr: u64) {
        if !(32..1020).contains(&id) {
            return;
        }
        if let Some(Gic(g)) = GIC.lock().as_mut() {
            let intid = IntId::spi(id - 32);
            let _ = g.set_trigger(intid, None, trigger);
            let _ = g.distributor().set_routing(intid, Some(mpidr));
            let _ = g.enable_interrupt(intid, None, true);
        }
    }
    fn route_spi(&self, id: u32, _cpu: usize, mpidr: u64) {
        if !(32..1020).contains(&id) {
            return;
        }
        if let Some(Gic(g)) = GIC.lock().as_mut() {
            let _ = g
                .distributor()
                .set_routing(IntId::spi(id - 32), Some(mpidr));
        }
    }
    fn gicd(&self) -> u64 {
        GICD_BASE.load(Ordering::Relaxed)
    }
    fn kick(&self, _cpu: usize, mpidr: u64) {
        v3_kick(mpidr);
    }
    fn ack(&self) -> Option<Acked> {
        v3_ack().map(|id| Acked { raw: id, id })
    }
    fn eoi(&self, a: Acked) {
        v3_eoi(a.raw);
    }
    fn deactivate(&self, a: Acked) {
        v3_deactivate(a.raw);
    }
    fn clear_active_private(&self, cpu: usize, mask: u32) {
        v3_clear_active_private(cpu, mask);
    }
    fn nr_lrs(&self) -> usize {
        v3_nr_lrs()
    }
    fn lr_state(&self, n: usize) -> LrState {
        vgic::v3::lr_state(v3_read_lr(n))
    }
    fn set_lr(&self, n: usize, lr: &Lr) {
        v3_write_lr(n, vgic::v3::encode_lr(lr));
    }
    fn clear_lr(&self, n: usize) {
        v3_write_lr(n, 0);
    }
    fn write_hcr(&self, v: u64) {
        v3_write_hcr(v);
    }
    fn reset_virtual_interface(&self) {
        v3_reset_virtual_interface();
    }
    fn open_virtual_interface(&self) {
        // ICH_VMCR_EL2: VPMR 0xff, VENG1 and VENG0.
        icc!(write "ich_vmcr_el2", (0xff << 24) | 0b11);
    }
}
