//! The physical GIC at EL2: one [`Driver`], GICv3 ([`v3`]) or GICv2
//! ([`v2`]), chosen once when the boot CPU sets the GIC up ([`init_boot`]:
//! a [`Gic`] value) and kept by the run-time's machine (`vmm::ImageHw`).
//! Enabled at EL2 on every pCPU: the kick SGI, the maintenance interrupt,
//! the EL1 virtual and physical timers, and the console's RX interrupt; with HCR_EL2.IMO set they all
//! arrive at EL2 while a guest runs. Split priority drop and deactivation
//! (EOImode 1), so a virtual interrupt linked to a physical one (a timer,
//! an assigned device's SPI) is deactivated by the guest.

pub mod v2;
pub mod v3;

use arm_gic::Trigger;
use dtvisor::hw::GicVersion;
pub use dtvisor::rt::hw::{Acked, ICH_HCR_EN, KICK, MAINTENANCE, PTIMER, VTIMER};
use dtvisor::vgic::{Lr, LrState, MAX_LRS};

/// What the hypervisor does with the host's GIC, whatever its version.
/// Each method acts on the calling pCPU's interface unless it names a CPU.
pub trait Driver: Sync {
    fn version(&self) -> GicVersion;
    /// Per-CPU setup on secondary pCPU `cpu` (affinity `mpidr`, `cpus` in
    /// the DTB). False if it has no interface.
    fn init_secondary(&self, cpu: usize, mpidr: u64, cpus: usize) -> bool;
    /// An assigned device's SPI: trigger, routed to pCPU `cpu`, enabled.
    fn assign_spi(&self, id: u32, trigger: Trigger, cpu: usize, mpidr: u64);
    /// Routes SPI `id` to pCPU `cpu` (affinity `mpidr`).
    fn route_spi(&self, id: u32, cpu: usize, mpidr: u64);
    /// The distributor's base (0: none).
    fn gicd(&self) -> u64;
    /// Makes pCPU `cpu` (affinity `mpidr`) take an interrupt to EL2.
    fn kick(&self, cpu: usize, mpidr: u64);
    fn ack(&self) -> Option<Acked>;
    /// Drops the running priority (the interrupt stays active).
    fn eoi(&self, a: Acked);
    fn deactivate(&self, a: Acked);
    /// Clears the active state of private interrupts `mask` of pCPU `cpu`
    /// (the calling one).
    fn clear_active_private(&self, cpu: usize, mask: u32);
    /// List registers this CPU implements.
    fn nr_lrs(&self) -> usize;
    fn lr_state(&self, n: usize) -> LrState;
    fn set_lr(&self, n: usize, lr: &Lr);
    fn clear_lr(&self, n: usize);
    /// ICH_HCR_EL2 / GICH_HCR (En, UIE, NPIE sit at the same places).
    fn write_hcr(&self, v: u64);
    /// A fresh virtual CPU interface for a vCPU about to start.
    fn reset_virtual_interface(&self);
    /// The virtual CPU interface as a guest that enabled both groups and
    /// opened its priority mask has it (for the boot probe).
    fn open_virtual_interface(&self);
}

/// The GIC the host has, as the device tree describes it.
#[derive(Clone, Copy)]
pub enum Host {
    V3 {
        gicd: u64,
        gicr: u64,
        cpus: usize,
    },
    V2 {
        gicd: u64,
        gicc: u64,
        gich: u64,
        maintenance: u32,
    },
}

/// The host's GIC as chosen at init: a [`Driver`] by static dispatch, so
/// the trap path's GIC accesses inline (a trait object cost 2 to 6% on
/// the interrupt and MMIO micro-benchmarks, measured under icount).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    V2,
    V3,
}

/// `$e` with `$d` bound to the chosen version's driver.
macro_rules! on {
    ($s:expr, $d:ident => $e:expr) => {
        match $s {
            Gic::V2 => {
                let $d = &v2::V2;
                $e
            }
            Gic::V3 => {
                let $d = &v3::V3;
                $e
            }
        }
    };
}

impl Driver for Gic {
    fn version(&self) -> GicVersion {
        on!(self, d => d.version())
    }
    fn init_secondary(&self, cpu: usize, mpidr: u64, cpus: usize) -> bool {
        on!(self, d => d.init_secondary(cpu, mpidr, cpus))
    }
    fn assign_spi(&self, id: u32, trigger: Trigger, cpu: usize, mpidr: u64) {
        on!(self, d => d.assign_spi(id, trigger, cpu, mpidr))
    }
    fn route_spi(&self, id: u32, cpu: usize, mpidr: u64) {
        on!(self, d => d.route_spi(id, cpu, mpidr))
    }
    fn gicd(&self) -> u64 {
        on!(self, d => d.gicd())
    }
    fn kick(&self, cpu: usize, mpidr: u64) {
        on!(self, d => d.kick(cpu, mpidr))
    }
    fn ack(&self) -> Option<Acked> {
        on!(self, d => d.ack())
    }
    fn eoi(&self, a: Acked) {
        on!(self, d => d.eoi(a))
    }
    fn deactivate(&self, a: Acked) {
        on!(self, d => d.deactivate(a))
    }
    fn clear_active_private(&self, cpu: usize, mask: u32) {
        on!(self, d => d.clear_active_private(cpu, mask))
    }
    fn nr_lrs(&self) -> usize {
        on!(self, d => d.nr_lrs())
    }
    fn lr_state(&self, n: usize) -> LrState {
        on!(self, d => d.lr_state(n))
    }
    fn set_lr(&self, n: usize, lr: &Lr) {
        on!(self, d => d.set_lr(n, lr))
    }
    fn clear_lr(&self, n: usize) {
        on!(self, d => d.clear_lr(n))
    }
    fn write_hcr(&self, v: u64) {
        on!(self, d => d.write_hcr(v))
    }
    fn reset_virtual_interface(&self) {
        on!(self, d => d.reset_virtual_interface())
    }
    fn open_virtual_interface(&self) {
        on!(self, d => d.open_virtual_interface())
    }
}

/// Whether a pending list register interrupts EL1 on this pCPU: the probe
/// of `super::virq`, with the virtual interface reset before and after.
pub fn probe_virq(g: &Gic) -> super::virq::Virq {
    g.reset_virtual_interface();
    g.open_virtual_interface();
    let lr = Lr {
        intid: 5,
        pintid: None,
        priority: 0,
        group1: true,
        state: LrState::Pending,
        eoi_maintenance: false,
        source: 0,
    };
    g.set_lr(0, &lr);
    g.write_hcr(ICH_HCR_EN);
    let seen = super::virq::probe();
    g.reset_virtual_interface();
    seen
}

/// Sets the GIC up from the boot CPU (affinity `mpidr`) and routes
/// `console_irq` to it; the one driver from now on. None if it cannot be
/// used.
pub fn init_boot(host: Host, mpidr: u64, console_irq: Option<u32>) -> Option<Gic> {
    match host {
        Host::V3 { gicd, gicr, cpus } => {
            v3::init_boot(gicd, gicr, cpus, mpidr, console_irq)?;
            Some(Gic::V3)
        }
        Host::V2 {
            gicd,
            gicc,
            gich,
            maintenance,
        } => v2::init_boot(gicd, gicc, gich, maintenance, console_irq).then_some(Gic::V2),
    }
}

/// List registers this CPU implements, at most the vGIC core's.
pub fn nr_lrs(d: &impl Driver) -> usize {
    d.nr_lrs().min(MAX_LRS)
}

/// Writes a one for SPI `id` to the distributor's set/clear register bank
/// at `bank` (GICD_ISENABLER 0x100, GICD_ICENABLER 0x180, GICD_ICACTIVER
/// 0x380; the same offsets on GICv2). Write-one registers: no read,
/// modify and write, so no lock is needed and any pCPU may do it.
pub fn spi_bit(d: &impl Driver, bank: u64, id: u32) {
    let gicd = d.gicd();
    if gicd == 0 || !(32..1020).contains(&id) {
        return;
    }
    let reg = gicd + bank + 4 * (id as u64 / 32);
    // SAFETY: a set/clear register of the distributor the DTB names
    // (identity mapped Device memory); writing a one changes only that
    // SPI's bit, and callers pass an SPI the hypervisor owns or assigned.
    unsafe { core::ptr::write_volatile(reg as *mut u32, 1 << (id % 32)) };
}
