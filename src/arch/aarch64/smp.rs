//! Secondary pCPUs: started with PSCI CPU_ON over the conduit the host DTB
//! names, or released from the firmware's spin-table (the arm64 boot
//! protocol: the entry point written to the CPU's `cpu-release-addr`,
//! cleaned to the point of coherency, then SEV). Each enters
//! `secondary_entry` (entry.S) with its index, turns on the same EL2
//! translation as the boot CPU (`secondary_setup`), says it arrived, and
//! idles until its vCPU is powered on. A spin-table CPU is never given
//! back to the firmware: a guest's CPU_OFF or reset parks it at EL2.

use super::boot::MAX_CPUS;
use super::mmu::{self, El2Mmu};
use aarch64_cpu::registers::{Writeable, TPIDR_EL2};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use dtvisor::hw::platform::EnableMethod;
use dtvisor::hw::Conduit;
use smccc::{Hvc, Smc};
use spin::Once;

static MMU: Once<El2Mmu> = Once::new();

/// The MPIDR affinity of each pCPU released from a spin-table, by index
/// (u64::MAX: none), for `spin_entry`, which runs with the MMU off.
#[unsafe(no_mangle)]
static SPIN_MPIDRS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// Set by each secondary pCPU once it runs with the EL2 translation on.
static ARRIVED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

unsafe extern "C" {
    fn secondary_entry();
    fn spin_entry();
}

/// Records the boot CPU's EL2 translation for the secondaries.
pub fn publish_mmu(m: El2Mmu) {
    MMU.call_once(|| m);
}

/// Why a secondary pCPU did not start.
#[derive(Debug)]
pub enum StartError {
    /// The firmware refused CPU_ON.
    Psci(smccc::psci::Error),
    /// It has no PSCI conduit or no usable enable-method (why).
    Unusable,
    /// Released, it did not arrive within the wait.
    Silent,
}

/// Starts pCPU `idx` (MPIDR `mpidr`) the way its node says, and waits
/// until it runs (`wait_ticks` of the system counter at most).
pub fn start_cpu(
    how: &EnableMethod,
    conduit: Option<Conduit>,
    idx: usize,
    mpidr: u64,
    wait_ticks: u64,
) -> Result<(), StartError> {
    if idx >= MAX_CPUS {
        return Err(StartError::Unusable);
    }
    // Secondaries read the tables, MMU settings and code with the MMU off.
    let (start, end) = super::boot::image_range();
    match *how {
        EnableMethod::Psci => {
            mmu::clean_dcache_range(start, end);
            let entry = secondary_entry as *const () as u64;
            match conduit {
                Some(Conduit::Smc) => smccc::psci::cpu_on::<Smc>(mpidr, entry, idx as u64),
                Some(Conduit::Hvc) => smccc::psci::cpu_on::<Hvc>(mpidr, entry, idx as u64),
                None => return Err(StartError::Unusable),
            }
            .map_err(StartError::Psci)?;
        }
        EnableMethod::SpinTable { release } => {
            SPIN_MPIDRS[idx].store(mpidr, Ordering::Relaxed);
            mmu::clean_dcache_range(start, end);
            let entry = spin_entry as *const () as u64;
            // SAFETY: the release address is an aligned word of RAM
            // (checked at discovery), identity mapped, reserved from
            // every guest and the heap; the firmware's waiting CPU reads
            // it with its MMU off, hence the clean to the point of
            // coherency before the event.
            unsafe {
                core::ptr::write_volatile(release as *mut u64, entry);
                mmu::clean_dcache_range(release, release + 8);
                core::arch::asm!("dsb sy", "sev", options(nostack));
            }
        }
        EnableMethod::Unusable(_) => return Err(StartError::Unusable),
    }
    let t0 = super::counter();
    while !ARRIVED[idx].load(Ordering::Acquire) {
        if super::counter().wrapping_sub(t0) > wait_ticks {
            return Err(StartError::Silent);
        }
        // YIELD, not the ISB spin_loop() emits: a hint on hardware, and
        // under QEMU's round-robin TCG (icount) it hands the host thread
        // to the CPU being started instead of spinning out a whole time
        // slice (20 ms of virtual time per CPU on raspi4b).
        // SAFETY: a hint instruction; no memory or register effects.
        unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
    Ok(())
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
    if let Some(a) = ARRIVED.get(idx as usize) {
        a.store(true, Ordering::Release);
    }
}
