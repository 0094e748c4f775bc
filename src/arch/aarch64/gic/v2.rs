//! The physical GICv2 (GIC-400) at EL2: the distributor through
//! Google's `arm-gic` (setup, enables, kicks), and the per-CPU banked
//! frames by hand: GICC (acknowledge, priority drop, deactivate, with
//! EOImode set) and GICH, the virtual interface control frame with the
//! list registers. arm-gic has no GICH support, and its GICC methods sit behind
//! the driver, which would serialise every acknowledge of every CPU on one
//! lock; the banked registers here are per CPU and need none.

use super::{Acked, Driver, Lr, LrState};
use crate::arch::Mutex;
use arm_gic::gicv2::{GicV2, SgiTarget, SgiTargetListFilter};
use arm_gic::{IntId, Trigger};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use dtvisor::hw::GicVersion;
use dtvisor::vgic;

struct Gic(GicV2<'static>);

// SAFETY: the driver holds MMIO pointers; every use is under GIC's lock.
unsafe impl Send for Gic {}

static GIC: Mutex<Option<Gic>> = Mutex::new(None);
static GICD: AtomicU64 = AtomicU64::new(0);
static GICC: AtomicU64 = AtomicU64::new(0);
static GICH: AtomicU64 = AtomicU64::new(0);
/// Per pCPU: its CPU interface bit (GICD_ITARGETSR0 as it reads it).
static IFACE: [AtomicU8; crate::arch::boot::MAX_CPUS] =
    [const { AtomicU8::new(0) }; crate::arch::boot::MAX_CPUS];

const GICC_CTLR: u64 = 0x0;
const GICC_PMR: u64 = 0x4;
const GICC_IAR: u64 = 0xc;
const GICC_EOIR: u64 = 0x10;
const GICC_DIR: u64 = 0x1000;
const GICD_ITARGETSR0: u64 = 0x800;
const GICD_ICACTIVER0: u64 = 0x380;
const GICH_HCR: u64 = 0x0;
const GICH_VTR: u64 = 0x4;
const GICH_VMCR: u64 = 0x8;
const GICH_APR: u64 = 0xf0;
const GICH_LR0: u64 = 0x100;

fn rd(base: &AtomicU64, off: u64) -> u32 {
    let b = base.load(Ordering::Relaxed);
    if b == 0 {
        return 0;
    }
    // SAFETY: a register of a GIC frame the DTB names, identity mapped
    // as Device memory.
    unsafe { core::ptr::read_volatile((b + off) as *const u32) }
}

fn wr(base: &AtomicU64, off: u64, v: u32) {
    let b = base.load(Ordering::Relaxed);
    if b == 0 {
        return;
    }
    // SAFETY: as in `rd`.
    unsafe { core::ptr::write_volatile((b + off) as *mut u32, v) };
}

/// This CPU's interface: enabled, EOImode 1 (bit 9: EOImodeNS in the
/// non-secure view, the only EOImode without security extensions), all
/// priorities; its private interrupts enabled; its interface bit noted.
fn cpu_setup(g: &mut GicV2<'static>, cpu: usize, maintenance: u32) {
    for id in [
        super::KICK,
        maintenance,
        dtvisor::rt::hw::VTIMER,
        dtvisor::rt::hw::PTIMER,
    ] {
        let intid = if id < 16 {
            IntId::sgi(id)
        } else {
            IntId::ppi(id - 16)
        };
        if id >= 16 {
            g.set_trigger(intid, Trigger::Level);
        }
        let _ = g.enable_interrupt(intid, true);
    }
    wr(&GICC, GICC_PMR, 0xff);
    wr(&GICC, GICC_CTLR, 0b11 | (1 << 9));
    let me = rd(&GICD, GICD_ITARGETSR0) as u8;
    if let Some(i) = IFACE.get(cpu) {
        i.store(me, Ordering::Relaxed);
    }
}

/// The boot CPU's setup: distributor, its CPU interface, and the console
/// SPI routed here. False without usable GICC and GICH frames.
pub fn init_boot(
    gicd: u64,
    gicc: u64,
    gich: u64,
    maintenance: u32,
    console_irq: Option<u32>,
) -> bool {
    if gicd == 0 || gicc == 0 || gich == 0 {
        return false;
    }
    GICD.store(gicd, Ordering::Relaxed);
    GICC.store(gicc, Ordering::Relaxed);
    GICH.store(gich, Ordering::Relaxed);
    // SAFETY: the DTB's distributor and CPU interface, identity mapped as
    // Device memory; only this module touches them.
    let mut g = unsafe { GicV2::new(gicd as *mut _, gicc as *mut _) };
    g.setup();
    cpu_setup(&mut g, 0, maintenance);
    if let Some(id) = console_irq.filter(|&i| (32..1020).contains(&i)) {
        let intid = IntId::spi(id - 32);
        g.set_trigger(intid, Trigger::Level);
        // ITARGETSR of the SPI: this CPU's interface.
        let me = IFACE[0].load(Ordering::Relaxed);
        // SAFETY: a byte of GICD_ITARGETSR<n> for this SPI.
        unsafe { core::ptr::write_volatile((gicd + GICD_ITARGETSR0 + id as u64) as *mut u8, me) };
        let _ = g.enable_interrupt(intid, true);
    }
    *GIC.lock() = Some(Gic(g));
    MAINT.store(maintenance as u8, Ordering::Relaxed);
    true
}

static MAINT: AtomicU8 = AtomicU8::new(25);

/// Per-CPU setup on secondary pCPU `cpu`.
fn init_secondary(cpu: usize) -> bool {
    let mut guard = GIC.lock();
    let Some(Gic(g)) = guard.as_mut() else {
        return false;
    };
    cpu_setup(g, cpu, MAINT.load(Ordering::Relaxed) as u32);
    true
}

/// The distributor's base (0: none).
fn gicd() -> u64 {
    GICD.load(Ordering::Relaxed)
}

/// An assigned device's SPI: trigger, target pCPU `cpu`, enabled.
fn assign_spi(id: u32, trigger: Trigger, cpu: usize) {
    if !(32..1020).contains(&id) {
        return;
    }
    if let Some(Gic(g)) = GIC.lock().as_mut() {
        let intid = IntId::spi(id - 32);
        g.set_trigger(intid, trigger);
        route_spi(id, cpu);
        let _ = g.enable_interrupt(intid, true);
    }
}

/// GICD_ITARGETSR of SPI `id`: pCPU `cpu`'s interface.
fn route_spi(id: u32, cpu: usize) {
    let me = IFACE.get(cpu).map_or(0, |i| i.load(Ordering::Relaxed));
    let gicd = GICD.load(Ordering::Relaxed);
    if me == 0 || gicd == 0 || !(32..1020).contains(&id) {
        return;
    }
    // SAFETY: the byte of GICD_ITARGETSR<n> for this SPI (byte accesses
    // are architected for ITARGETSR); the SPI is an assigned device's.
    unsafe { core::ptr::write_volatile((gicd + GICD_ITARGETSR0 + id as u64) as *mut u8, me) };
}

/// SGI `KICK` to pCPU `cpu` (GICD_SGIR with its interface bit).
fn kick(cpu: usize) {
    let t = IFACE.get(cpu).map_or(0, |i| i.load(Ordering::Relaxed));
    if t == 0 {
        return;
    }
    if let Some(Gic(g)) = GIC.lock().as_mut() {
        g.send_sgi(
            IntId::sgi(super::KICK),
            SgiTarget::List {
                target_list_filter: SgiTargetListFilter::CPUTargetList,
                target_list: t as u16,
            },
        );
    }
}

/// GICC_IAR: the raw value (SGIs carry the source CPU) if not spurious.
fn ack() -> Option<u32> {
    let raw = rd(&GICC, GICC_IAR);
    ((raw & 0x3ff) < 1020).then_some(raw)
}

fn eoi(raw: u32) {
    wr(&GICC, GICC_EOIR, raw);
}

fn deactivate(raw: u32) {
    wr(&GICC, GICC_DIR, raw);
}

/// Clears the active state of this CPU's private interrupts `mask`
/// (GICD_ICACTIVER0 is banked per CPU).
fn clear_active_private(mask: u32) {
    if mask != 0 {
        wr(&GICD, GICD_ICACTIVER0, mask);
    }
}

fn nr_lrs() -> usize {
    ((rd(&GICH, GICH_VTR) & 0x3f) + 1) as usize
}

fn read_lr(n: usize) -> u32 {
    rd(&GICH, GICH_LR0 + 4 * n as u64)
}

fn write_lr(n: usize, v: u32) {
    wr(&GICH, GICH_LR0 + 4 * n as u64, v);
}

fn write_hcr(v: u32) {
    wr(&GICH, GICH_HCR, v);
}

/// A fresh virtual CPU interface for a vCPU about to start.
fn reset_virtual_interface() {
    for n in 0..nr_lrs() {
        write_lr(n, 0);
    }
    wr(&GICH, GICH_APR, 0);
    wr(&GICH, GICH_VMCR, 0);
    write_hcr(1);
}

/// The GICv2 driver (its state is this module's statics).
pub struct V2;

impl Driver for V2 {
    fn version(&self) -> GicVersion {
        GicVersion::V2
    }
    fn init_secondary(&self, cpu: usize, _mpidr: u64, _cpus: usize) -> bool {
        init_secondary(cpu)
    }
    fn assign_spi(&self, id: u32, trigger: Trigger, cpu: usize, _mpidr: u64) {
        assign_spi(id, trigger, cpu);
    }
    fn route_spi(&self, id: u32, cpu: usize, _mpidr: u64) {
        route_spi(id, cpu);
    }
    fn gicd(&self) -> u64 {
        gicd()
    }
    fn kick(&self, cpu: usize, _mpidr: u64) {
        kick(cpu);
    }
    fn ack(&self) -> Option<Acked> {
        ack().map(|raw| Acked {
            raw,
            id: raw & 0x3ff,
        })
    }
    fn eoi(&self, a: Acked) {
        eoi(a.raw);
    }
    fn deactivate(&self, a: Acked) {
        deactivate(a.raw);
    }
    fn clear_active_private(&self, _cpu: usize, mask: u32) {
        clear_active_private(mask);
    }
    fn nr_lrs(&self) -> usize {
        nr_lrs()
    }
    fn lr_state(&self, n: usize) -> LrState {
        vgic::v2::lr_state(read_lr(n))
    }
    fn set_lr(&self, n: usize, lr: &Lr) {
        write_lr(n, vgic::v2::encode_lr(lr));
    }
    fn clear_lr(&self, n: usize) {
        write_lr(n, 0);
    }
    fn write_hcr(&self, v: u64) {
        write_hcr(v as u32);
    }
    fn reset_virtual_interface(&self) {
        reset_virtual_interface();
    }
    fn open_virtual_interface(&self) {
        // GICH_VMCR: VMPriMask 0x1f, VMGrp1En and VMGrp0En.
        wr(&GICH, GICH_VMCR, (0x1f << 27) | 0b11);
    }
}
