//! Guest PSCI 1.1 and SMCCC emulation, portable: decoding a call from the
//! guest's registers, and the per-domain vCPU power states that CPU_ON,
//! CPU_OFF and AFFINITY_INFO act on. The image applies the outcome
//! (starting a vCPU, stopping or restarting a domain).

use crate::mm::Range;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON_32: u32 = 0x8400_0003;
pub const CPU_ON_64: u32 = 0xc400_0003;
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;
pub const PSCI_FEATURES: u32 = 0x8400_000a;
pub const SMCCC_VERSION: u32 = 0x8000_0000;
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
pub const DENIED: i64 = -3;
pub const ALREADY_ON: i64 = -4;
pub const ON_PENDING: i64 = -5;
pub const INVALID_ADDRESS: i64 = -9;

/// PSCI 1.1.
pub const VERSION_1_1: i64 = 0x0001_0001;
/// SMCCC 1.1 (ARCH_FEATURES is implemented; it answers for the speculation
/// workarounds as `hw::spectre` decides).
pub const SMCCC_1_1: i64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE: no Trusted OS present.
pub const MIGRATE_NONE: i64 = 2;

/// What a guest's HVC or SMC asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Version,
    Features(u32),
    CpuSuspend,
    CpuOn {
        target: u64,
        entry: u64,
        context: u64,
    },
    CpuOff,
    AffinityInfo {
        target: u64,
        level: u64,
    },
    MigrateInfoType,
    SystemOff,
    SystemReset,
    SmcccVersion,
    ArchFeatures(u32),
    /// Anything else (TRNG, vendor hypervisor ids, ...): NOT_SUPPORTED.
    Unknown(u32),
}

impl Call {
    /// Decodes x0..x3 of an SMCCC call. 32-bit calling convention
    /// arguments are truncated to 32 bits, as SMCCC requires.
    pub fn decode(x: [u64; 4]) -> Call {
        let fid = x[0] as u32;
        let w = |v: u64| {
            if fid & 0x4000_0000 == 0 {
                v & 0xffff_ffff
            } else {
                v
            }
        };
        match fid {
            PSCI_VERSION => Call::Version,
            PSCI_FEATURES => Call::Features(x[1] as u32),
            CPU_SUSPEND_32 | CPU_SUSPEND_64 => Call::CpuSuspend,
            CPU_ON_32 | CPU_ON_64 => Call::CpuOn {
                target: w(x[1]),
                entry: w(x[2]),
                context: w(x[3]),
            },
            CPU_OFF => Call::CpuOff,
            AFFINITY_INFO_32 | AFFINITY_INFO_64 => Call::AffinityInfo {
                target: w(x[1]),
                level: w(x[2]),
            },
            MIGRATE_INFO_TYPE => Call::MigrateInfoType,
            SYSTEM_OFF => Call::SystemOff,
            SYSTEM_RESET => Call::SystemReset,
            SMCCC_VERSION => Call::SmcccVersion,
            SMCCC_ARCH_FEATURES => Call::ArchFeatures(x[1] as u32),
            other => Call::Unknown(other),
        }
    }
}

/// PSCI_FEATURES: which function ids are implemented.
pub fn features(fid: u32) -> i64 {
    match fid {
        PSCI_VERSION | CPU_OFF | CPU_ON_32 | CPU_ON_64 | AFFINITY_INFO_32 | AFFINITY_INFO_64
        | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET | PSCI_FEATURES | SMCCC_VERSION => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

pub use crate::vm::lifecycle::Power;

/// One vCPU's power state and its CPU_ON arguments, shared between the
/// pCPU that runs it and the vCPUs of its domain that power it on.
pub struct VcpuPower {
    pub mpidr: u64,
    state: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
}

impl VcpuPower {
    pub const fn new(mpidr: u64) -> Self {
        VcpuPower {
            mpidr,
            state: AtomicU8::new(Power::Off as u8),
            entry: AtomicU64::new(0),
            context: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> Power {
        match self.state.load(Ordering::SeqCst) {
            0 => Power::Off,
            1 => Power::Pending,
            2 => Power::On,
            _ => Power::Stopped,
        }
    }

    pub fn set(&self, p: Power) {
        self.state.store(p as u8, Ordering::SeqCst);
    }

    /// Marks the vCPU as to be started at `entry` with `context` in x0.
    pub fn start(&self, entry: u64, context: u64) {
        self.entry.store(entry, Ordering::Relaxed);
        self.context.store(context, Ordering::Relaxed);
        self.set(Power::Pending);
    }

    /// The CPU_ON entry point and context id, once the vCPU is entered
    /// (`vm::lifecycle::try_enter` returned `Run`).
    pub fn entry(&self) -> (u64, u64) {
        (
            self.entry.load(Ordering::Relaxed),
            self.context.load(Ordering::Relaxed),
        )
    }
}

/// The lifecycle's view of a vCPU's power byte. Sequentially consistent,
/// as its stop protocol requires.
impl crate::vm::lifecycle::PowerCell for VcpuPower {
    fn state(&self) -> Power {
        VcpuPower::state(self)
    }
    fn set(&self, p: Power) {
        VcpuPower::set(self, p)
    }
    fn cas(&self, from: Power, to: Power) -> Result<(), Power> {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(|_| VcpuPower::state(self))
    }
}

impl AsRef<VcpuPower> for VcpuPower {
    fn as_ref(&self) -> &VcpuPower {
        self
    }
}

/// MPIDR affinity bits that identify a CPU.
pub const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

/// CPU_ON on behalf of a vCPU of the domain whose vCPUs are `vcpus` and
/// whose RAM (guest-physical) is `ram`.
pub fn cpu_on<V: AsRef<VcpuPower>>(
    vcpus: &[V],
    ram: &[Range],
    target: u64,
    entry: u64,
    context: u64,
) -> i64 {
    let Some(v) = vcpus
        .iter()
        .map(AsRef::as_ref)
        .find(|v| v.mpidr == target & MPIDR_AFF_MASK)
    else {
        return INVALID_PARAMETERS;
    };
    if !ram.iter().any(|r| r.contains(entry)) || !entry.is_multiple_of(4) {
        return INVALID_ADDRESS;
    }
    let won = v.state.compare_exchange(
        Power::Off as u8,
        Power::Stopped as u8,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    match won {
        Ok(_) => {
            v.start(entry, context);
            SUCCESS
        }
        Err(s) if s == Power::Pending as u8 => ON_PENDING,
        Err(s) if s == Power::On as u8 => ALREADY_ON,
        Err(_) => DENIED,
    }
}

/// AFFINITY_INFO for level 0: 0 on, 1 off, 2 on pending.
pub fn affinity_info<V: AsRef<VcpuPower>>(vcpus: &[V], target: u64, level: u64) -> i64 {
    if level != 0 {
        return INVALID_PARAMETERS;
    }
    match vcpus
        .iter()
        .map(AsRef::as_ref)
        .find(|v| v.mpidr == target & MPIDR_AFF_MASK)
        .map(|v| v.state())
    {
        None => INVALID_PARAMETERS,
        Some(Power::On) => 0,
        Some(Power::Off) | Some(Power::Stopped) => 1,
        Some(Power::Pending) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpus() -> [VcpuPower; 2] {
        [VcpuPower::new(0), VcpuPower::new(1)]
    }

    #[test]
    fn decode_truncates_smc32_arguments() {
        let c = Call::decode([CPU_ON_32 as u64, 0xffff_ffff_0000_0001, 0x1_4000_0000, 7]);
        assert_eq!(
            c,
            Call::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context: 7
            }
        );
        let c = Call::decode([CPU_ON_64 as u64, 1, 0x1_4000_0000, 7]);
        assert_eq!(
            c,
            Call::CpuOn {
                target: 1,
                entry: 0x1_4000_0000,
                context: 7
            }
        );
        assert_eq!(
            Call::decode([0x8400_0050, 0, 0, 0]),
            Call::Unknown(0x8400_0050)
        );
        assert_eq!(
            Call::decode([0x8600_ff01, 0, 0, 0]),
            Call::Unknown(0x8600_ff01)
        );
    }

    #[test]
    fn cpu_on_rules() {
        let v = vcpus();
        v[0].set(Power::On);
        let ram = [Range::new(0x4000_0000, 0x5000_0000)];
        assert_eq!(cpu_on(&v, &ram, 5, 0x4000_0000, 0), INVALID_PARAMETERS);
        assert_eq!(cpu_on(&v, &ram, 1, 0x1000, 0), INVALID_ADDRESS);
        assert_eq!(cpu_on(&v, &ram, 0, 0x4000_0000, 0), ALREADY_ON);
        assert_eq!(affinity_info(&v, 1, 0), 1);
        assert_eq!(cpu_on(&v, &ram, 1, 0x4008_0000, 42), SUCCESS);
        assert_eq!(affinity_info(&v, 1, 0), 2);
        assert_eq!(cpu_on(&v, &ram, 1, 0x4008_0000, 42), ON_PENDING);
        let life = crate::vm::lifecycle::Lifecycle::new();
        assert!(life.loaded());
        assert_eq!(
            crate::vm::lifecycle::try_enter(&life, &v[1]),
            crate::vm::lifecycle::Entry::Run
        );
        assert_eq!(v[1].entry(), (0x4008_0000, 42));
        assert_eq!(affinity_info(&v, 1, 0), 0);
        assert_eq!(cpu_on(&v, &ram, 1, 0x4008_0000, 42), ALREADY_ON);
        assert_eq!(affinity_info(&v, 1, 1), INVALID_PARAMETERS);
        assert_eq!(affinity_info(&v, 9, 0), INVALID_PARAMETERS);
    }

    #[test]
    fn features_list() {
        assert_eq!(features(CPU_ON_64), SUCCESS);
        assert_eq!(features(SYSTEM_RESET), SUCCESS);
        assert_eq!(features(0x8400_0050), NOT_SUPPORTED);
    }
}
