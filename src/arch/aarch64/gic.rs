//! The physical GICv3, through Google's `arm-gic`: only what the
//! hypervisor needs before the vGIC exists, a "kick" SGI that makes another
//! pCPU leave its guest (so SYSTEM_OFF and SYSTEM_RESET stop every vCPU of
//! a domain promptly, even one spinning or idling in WFI without traps).
//! With HCR_EL2.IMO set, the SGI arrives at EL2 while the guest runs.

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, InterruptGroup};
use core::ptr::NonNull;
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

const KICK: IntId = IntId::sgi(0);

struct Gic(GicV3<'static>);

// SAFETY: the driver holds MMIO pointers; every use is under GIC's lock.
unsafe impl Send for Gic {}

static GIC: Mutex<Option<Gic>> = Mutex::new(None);

fn cpu_interface_on() {
    GicCpuInterface::enable_system_register_el2(true);
}

/// Sets the GIC up from the boot CPU (pCPU 0). False if it cannot be used.
pub fn init_boot(gicd: u64, gicr: u64, cpus: usize, redist: usize) -> bool {
    let (Some(d), Some(r)) = (
        NonNull::new(gicd as *mut Gicd),
        NonNull::new(gicr as *mut GicrSgi),
    ) else {
        return false;
    };
    cpu_interface_on();
    // SAFETY: the DTB's distributor and redistributor frames, identity
    // mapped as Device memory; only this driver touches them.
    let g = unsafe { GicV3::new(UniqueMmioPointer::new(d), r, cpus) };
    let Ok(mut g) = g else { return false };
    g.setup(redist);
    let ok = g.enable_interrupt(KICK, Some(redist), true).is_ok();
    GicCpuInterface::set_priority_mask(0xff);
    *GIC.lock() = Some(Gic(g));
    ok
}

/// Per-CPU setup on secondary pCPU `cpu` (its redistributor index).
pub fn init_secondary(cpu: usize) {
    // Only where init_boot found a GICv3: on a GICv2 the ICC_* system
    // registers do not exist (their access is UNDEFINED).
    if let Some(Gic(g)) = GIC.lock().as_mut() {
        cpu_interface_on();
        g.init_cpu(cpu);
        let _ = g.enable_interrupt(KICK, Some(cpu), true);
        GicCpuInterface::enable_group1(true);
        GicCpuInterface::set_priority_mask(0xff);
    }
}

/// Makes the pCPU with affinity `mpidr` take an interrupt to EL2.
pub fn kick(mpidr: u64) {
    if GIC.lock().is_none() {
        return;
    }
    let target = SgiTarget::List {
        affinity3: (mpidr >> 32) as u8,
        affinity2: (mpidr >> 16) as u8,
        affinity1: (mpidr >> 8) as u8,
        target_list: 1 << (mpidr & 0xf),
    };
    let _ = GicCpuInterface::send_sgi(KICK, target, SgiTargetGroup::CurrentGroup1);
}

/// Acknowledges and completes whatever interrupt brought us to EL2.
pub fn ack() {
    if let Some(id) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) {
        GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
    }
}
