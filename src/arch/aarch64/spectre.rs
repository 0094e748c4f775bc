//! Speculation mitigations on this CPU: reads its ID registers, asks the
//! firmware (once, on the boot CPU) which ARCH_WORKAROUND calls it has,
//! and publishes the plan (`dtvisor::hw::spectre`) for the exception
//! vectors, which run it at every entry from a guest before any indirect
//! branch, and for the guests' SMCCC_ARCH_FEATURES answers.

use core::sync::atomic::{AtomicU32, Ordering};
use dtvisor::hw::spectre::{self, Firmware, Plan};
use smccc::Smc;
use spin::Once;

use super::boot::MAX_CPUS;

/// What the vectors run on an entry from a guest, one word per CPU
/// (`spectre::Entry::bits`); read by vectors.S with this CPU's index.
#[unsafe(no_mangle)]
static SPECTRE_ENTRY: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Each CPU's plan, set once by that CPU.
static PLANS: [Once<Plan>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// What the firmware offers: the same for every CPU, asked once.
static FIRMWARE: Once<Firmware> = Once::new();

/// Asks the firmware over SMC (only where PSCI says it answers SMCs):
/// PSCI_FEATURES(SMCCC_VERSION), SMCCC_VERSION >= 1.1, then
/// SMCCC_ARCH_FEATURES of each workaround.
fn probe_firmware(smc: bool) -> Firmware {
    if !smc || smccc::psci::psci_features::<Smc>(smccc::arch::SMCCC_VERSION).is_err() {
        return Firmware::default();
    }
    match smccc::arch::version::<Smc>() {
        Ok(v) if (v.major, v.minor) >= (1, 1) => {}
        _ => return Firmware::default(),
    }
    let has = |fid| smccc::arch::features::<Smc>(fid) == Ok(0);
    Firmware {
        wa1: has(spectre::ARCH_WORKAROUND_1),
        wa2: has(spectre::ARCH_WORKAROUND_2),
        wa3: has(spectre::ARCH_WORKAROUND_3),
    }
}

/// Decides and installs this CPU's mitigations; `smc`: the firmware
/// answers SMCs (PSCI's conduit). Returns the plan, for the boot log.
pub fn init_this_cpu(cpu: usize, smc: bool) -> Plan {
    let fw = *FIRMWARE.call_once(|| probe_firmware(smc));
    let plan = *PLANS[cpu].call_once(|| spectre::plan(&super::vcpu::id_regs(), fw));
    if plan.ssbd_at_boot {
        let _ = smccc::arch::arch_workaround_2::<Smc>(true);
    }
    SPECTRE_ENTRY[cpu].store(plan.entry.bits(), Ordering::Release);
    plan
}

/// The plan of the CPU running this (None before `init_this_cpu`).
pub fn plan_here() -> Option<&'static Plan> {
    PLANS.get(super::cpu_index())?.get()
}

/// A secondary CPU's mitigations (the firmware was asked by the boot
/// CPU); said on the console only where they differ from the boot CPU's
/// (big.LITTLE systems).
pub fn init_secondary(cpu: usize) {
    let plan = init_this_cpu(cpu, false);
    if PLANS[0].get().is_some_and(|p| *p != plan) {
        log::info!("speculation on pCPU {cpu}: {plan}");
    }
}
