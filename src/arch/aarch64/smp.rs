//! Secondary pCPUs: started with PSCI CPU_ON over the conduit the host DTB
//! names, each enters `secondary_entry` (entry.S) with its index,
//! turns on the same EL2 translation as the boot CPU (`secondary_setup`),
//! and idles until its vCPU is powered on.

use super::mmu::{self, El2Mmu};
use aarch64_cpu::registers::{Writeable, TPIDR_EL2};
use dtvisor::hw::Conduit;
use smccc::{Hvc, Smc};
use spin::Once;

static MMU: Once<El2Mmu> = Once::new();

unsafe extern "C" {
    fn secondary_entry();
}

/// Records the boot CPU's EL2 translation for the secondaries.
pub fn publish_mmu(m: El2Mmu) {
    MMU.call_once(|| m);
}

/// Starts pCPU `idx` (MPIDR `mpidr`). Returns the PSCI error, if any.
pub fn start_cpu(conduit: Conduit, idx: usize, mpidr: u64) -> Result<(), smccc::psci::Error> {
    // Secondaries read the tables, MMU settings and code with the MMU off.
    let (start, end) = super::boot::image_range();
    mmu::clean_dcache_range(start, end);
    let entry = secondary_entry as *const () as u64;
    match conduit {
        Conduit::Smc => smccc::psci::cpu_on::<Smc>(mpidr, entry, idx as u64),
        Conduit::Hvc => smccc::psci::cpu_on::<Hvc>(mpidr, entry, idx as u64),
    }
}

/// A secondary pCPU's own setup (its index in TPIDR_EL2, the boot CPU's
/// EL2 translation, the EL2 controls, its speculation mitigations), from
/// the start layer's `secondary_main`.
pub fn secondary_setup(idx: u64) {
    TPIDR_EL2.set(idx);
    match MMU.get() {
        Some(m) => mmu::enable(m, false),
        None => super::halt(),
    }
    super::vcpu::write_el2_controls();
    super::spectre::init_secondary(idx as usize);
}
