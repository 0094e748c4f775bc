//! Speculation side channels, portable: from a CPU's ID registers
//! (`cpufeat::IdRegs`: MIDR, ID_AA64PFR0/PFR1, ID_AA64MMFR1,
//! ID_AA64ISAR2) and what its firmware offers over SMCCC, what the hypervisor does on every entry from a guest
//! and what it answers a guest's SMCCC_ARCH_FEATURES for
//! ARCH_WORKAROUND_1/2/3.
//!
//! The CPU lists follow Arm's security advisories (Spectre-v2
//! CVE-2017-5715, Spectre-BHB CVE-2022-23960, Speculative Store Bypass
//! CVE-2018-3639) as Linux and KVM apply them: CPUs that report CSV2, or
//! are in-order designs (Cortex-A35/A53/A55), are not affected by
//! Spectre-v2; Spectre-BHB is mitigated by hardware (ECBHB, CSV2 3), by
//! the CLRBHB instruction, by a loop of k taken branches (k by core), or
//! by the firmware's ARCH_WORKAROUND_3.
//!
//! Decisions where the firmware offers no ARCH_WORKAROUND_1 (QEMU's own
//! PSCI, or old firmware): on a Cortex-A57/A72 the branch-history loop runs
//! at every guest exit and the guest is told Spectre-v2 is mitigated, as
//! Xen 4.17 does; the branch target buffer itself is not invalidated, and
//! the boot log says so. Without ARCH_WORKAROUND_2 a guest is told the
//! truth: nothing mitigates Speculative Store Bypass for it.

use super::cpufeat::{field, IdRegs};
use core::fmt;

pub const ARCH_WORKAROUND_1: u32 = 0x8000_8000;
pub const ARCH_WORKAROUND_2: u32 = 0x8000_7fff;
pub const ARCH_WORKAROUND_3: u32 = 0x8000_3fff;

/// Whether `fid` is one of the three workaround calls.
pub const fn is_workaround(fid: u32) -> bool {
    matches!(
        fid,
        ARCH_WORKAROUND_1 | ARCH_WORKAROUND_2 | ARCH_WORKAROUND_3
    )
}

/// SMCCC return values for the workaround discovery calls.
pub const SUCCESS: i64 = 0;
/// ARCH_WORKAROUND_1/3: this CPU is not affected.
pub const UNAFFECTED: i64 = 1;
pub const NOT_SUPPORTED: i64 = -1;
/// ARCH_WORKAROUND_2: no call is needed (not affected, or always on).
pub const NOT_REQUIRED: i64 = -2;

/// Which ARCH_WORKAROUND calls the firmware (EL3) implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Firmware {
    pub wa1: bool,
    pub wa2: bool,
    pub wa3: bool,
}

/// How one threat is handled on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The CPU is not affected.
    Unaffected,
    /// Mitigated by the hypervisor (or the firmware it calls).
    Mitigated,
    /// Nothing available mitigates it.
    Vulnerable,
}

/// What the hypervisor runs on every entry from a guest, in this order,
/// before any indirect branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Taken branches of the branch-history loop (0: none).
    pub bhb_loop: u8,
    /// CLRBHB (`hint #22`).
    pub clrbhb: bool,
    /// SMC ARCH_WORKAROUND_3 (firmware).
    pub fw_wa3: bool,
    /// SMC ARCH_WORKAROUND_1 (firmware).
    pub fw_wa1: bool,
}

impl Entry {
    /// The encoding the exception vectors read (one word per CPU): bits
    /// 7:0 the loop count, bit 8 CLRBHB, bit 9 SMC WA3, bit 10 SMC WA1.
    pub const fn bits(self) -> u32 {
        self.bhb_loop as u32
            | (self.clrbhb as u32) << 8
            | (self.fw_wa3 as u32) << 9
            | (self.fw_wa1 as u32) << 10
    }
}

/// The decision for one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub v2: State,
    pub bhb: State,
    pub ssb: State,
    pub entry: Entry,
    /// The firmware's ARCH_WORKAROUND_2 is to be enabled once per CPU at
    /// boot (SSBD always on: guests need no calls).
    pub ssbd_at_boot: bool,
    /// Spectre-v2 on a CPU whose branch target buffer only the firmware
    /// can invalidate, which offers no way to: the loop stands in.
    pub v2_loop_only: bool,
}

const ARM: u64 = 0x41;

fn part(midr: u64) -> Option<u64> {
    ((midr >> 24) & 0xff == ARM).then_some((midr >> 4) & 0xfff)
}

const A35: u64 = 0xd04;
const A53: u64 = 0xd03;
const A55: u64 = 0xd05;
const A57: u64 = 0xd07;
const A72: u64 = 0xd08;
const A73: u64 = 0xd09;
const A75: u64 = 0xd0a;
const A76: u64 = 0xd0b;
const N1: u64 = 0xd0c;
const A77: u64 = 0xd0d;
const V1: u64 = 0xd40;
const A78: u64 = 0xd41;
const X1: u64 = 0xd44;
const A710: u64 = 0xd47;
const X2: u64 = 0xd48;
const N2: u64 = 0xd49;
const A78C: u64 = 0xd4b;
const X3: u64 = 0xd4e;
const V2: u64 = 0xd4f;

/// In-order Arm cores: not affected by Spectre-v2 nor by SSB.
const IN_ORDER: [u64; 3] = [A35, A53, A55];

/// Spectre-BHB: the loop's k by core (Arm's advisory, as Linux's tables).
fn bhb_loop_k(p: u64) -> u8 {
    match p {
        A57 | A72 => 8,
        A76 | A77 | N1 => 24,
        A78 | A78C | X1 | A710 | X2 | N2 | V1 => 32,
        X3 | V2 => 132,
        _ => 0,
    }
}

/// Cores whose branch history only the firmware can clear (WA3).
const BHB_FIRMWARE: [u64; 2] = [A73, A75];

/// The plan for a CPU with `ids` whose firmware offers `fw`.
pub fn plan(ids: &IdRegs, fw: Firmware) -> Plan {
    let p = part(ids.midr);
    let in_order = p.is_some_and(|p| IN_ORDER.contains(&p));
    let csv2 = field(ids.pfr0, 56);
    let mut entry = Entry::default();

    // Spectre-BHB.
    let ecbhb = field(ids.mmfr1, 60) != 0;
    let clrbhb = field(ids.isar2, 28) != 0;
    let k = p.map_or(0, bhb_loop_k);
    let bhb = if in_order || csv2 >= 3 || ecbhb {
        State::Unaffected
    } else if clrbhb {
        entry.clrbhb = true;
        State::Mitigated
    } else if k != 0 {
        entry.bhb_loop = k;
        State::Mitigated
    } else if p.is_some_and(|p| BHB_FIRMWARE.contains(&p)) || fw.wa3 {
        entry.fw_wa3 = fw.wa3;
        if fw.wa3 {
            State::Mitigated
        } else {
            State::Vulnerable
        }
    } else {
        State::Unaffected
    };

    // Spectre-v2.
    let mut v2_loop_only = false;
    let v2 = if in_order || csv2 != 0 {
        State::Unaffected
    } else if fw.wa3 && entry.fw_wa3 {
        // ARCH_WORKAROUND_3 does what ARCH_WORKAROUND_1 does, and more.
        State::Mitigated
    } else if fw.wa1 {
        entry.fw_wa1 = true;
        State::Mitigated
    } else if entry.bhb_loop != 0 || entry.clrbhb {
        v2_loop_only = true;
        State::Mitigated
    } else {
        State::Vulnerable
    };

    // Speculative Store Bypass: SSBS lets the guest set PSTATE.SSBS itself.
    let ssbs = field(ids.pfr1, 4) != 0;
    let (ssb, ssbd_at_boot) = if in_order {
        (State::Unaffected, false)
    } else if ssbs {
        (State::Mitigated, false)
    } else if fw.wa2 {
        (State::Mitigated, true)
    } else {
        (State::Vulnerable, false)
    };
    Plan {
        v2,
        bhb,
        ssb,
        entry,
        ssbd_at_boot,
        v2_loop_only,
    }
}

impl Plan {
    /// The answer to a guest's SMCCC_ARCH_FEATURES(`fid`) for the three
    /// workarounds (None: not one of them). A guest whose CPU is mitigated
    /// by the hypervisor is told SUCCESS for WA1/WA3: its own calls are
    /// cheap (see `guest_call`).
    pub fn features(&self, fid: u32) -> Option<i64> {
        let wa13 = |s: State| match s {
            State::Unaffected => UNAFFECTED,
            State::Mitigated => SUCCESS,
            State::Vulnerable => NOT_SUPPORTED,
        };
        Some(match fid {
            ARCH_WORKAROUND_1 => wa13(self.v2),
            ARCH_WORKAROUND_3 => wa13(self.bhb),
            // Always on (firmware at boot) or not affected: no calls.
            // With SSBS the guest controls PSTATE.SSBS itself, as KVM
            // tells its guests.
            ARCH_WORKAROUND_2 => match self.ssb {
                State::Unaffected => NOT_REQUIRED,
                State::Mitigated if self.ssbd_at_boot => NOT_REQUIRED,
                _ => NOT_SUPPORTED,
            },
            _ => return None,
        })
    }

    /// A guest's call of a workaround (by HVC or SMC) needs nothing
    /// besides what every entry from a guest already ran: its answer.
    pub fn guest_call(&self, fid: u32) -> Option<i64> {
        let answer = self.features(fid)?;
        Some(if answer == SUCCESS {
            SUCCESS
        } else {
            NOT_SUPPORTED
        })
    }
}

/// A boot-log description: "Spectre-v2 mitigated (...), ...".
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |s: State| match s {
            State::Unaffected => "not affected",
            State::Mitigated => "mitigated",
            State::Vulnerable => "VULNERABLE",
        };
        write!(f, "Spectre-v2 {}", s(self.v2))?;
        if self.entry.fw_wa1 {
            f.write_str(" (firmware ARCH_WORKAROUND_1 at every guest exit)")?;
        } else if self.v2_loop_only {
            f.write_str(" (the branch-history clearing only: the firmware offers no ARCH_WORKAROUND_1 to invalidate the branch predictor)")?;
        }
        write!(f, ", Spectre-BHB {}", s(self.bhb))?;
        if self.entry.bhb_loop != 0 {
            write!(
                f,
                " (loop of {} branches at every guest exit)",
                self.entry.bhb_loop
            )?;
        } else if self.entry.clrbhb {
            f.write_str(" (CLRBHB at every guest exit)")?;
        } else if self.entry.fw_wa3 {
            f.write_str(" (firmware ARCH_WORKAROUND_3 at every guest exit)")?;
        }
        write!(f, ", Speculative Store Bypass {}", s(self.ssb))?;
        if self.ssbd_at_boot {
            f.write_str(" (firmware SSBD on for good)")?;
        } else if self.ssb == State::Mitigated {
            f.write_str(" (PSTATE.SSBS, the guests' own)")?;
        } else if self.ssb == State::Vulnerable {
            f.write_str(" (the firmware offers no ARCH_WORKAROUND_2)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    /// QEMU's cortex-a57 and cortex-a72 MIDRs; ID registers without CSV2,
    /// SSBS, ECBHB or CLRBHB.
    const QEMU_A57: u64 = 0x411f_d070;
    const QEMU_A72: u64 = 0x410f_d083;
    const QEMU_A53: u64 = 0x410f_d034;

    fn ids(midr: u64) -> IdRegs {
        IdRegs {
            midr,
            ..IdRegs::default()
        }
    }

    const NONE: Firmware = Firmware {
        wa1: false,
        wa2: false,
        wa3: false,
    };
    const ALL: Firmware = Firmware {
        wa1: true,
        wa2: true,
        wa3: true,
    };

    #[test]
    fn a72_and_a57_without_firmware_run_the_k8_loop() {
        for midr in [QEMU_A57, QEMU_A72] {
            let p = plan(&ids(midr), NONE);
            assert_eq!(p.entry.bits(), 8);
            assert_eq!(
                (p.v2, p.bhb, p.ssb),
                (State::Mitigated, State::Mitigated, State::Vulnerable)
            );
            assert!(p.v2_loop_only);
            assert_eq!(p.features(ARCH_WORKAROUND_1), Some(SUCCESS));
            assert_eq!(p.features(ARCH_WORKAROUND_3), Some(SUCCESS));
            assert_eq!(p.features(ARCH_WORKAROUND_2), Some(NOT_SUPPORTED));
            assert!(p.to_string().contains("offers no ARCH_WORKAROUND_1"), "{p}");
        }
    }

    #[test]
    fn a72_with_firmware_calls_wa1_and_turns_ssbd_on() {
        let p = plan(&ids(QEMU_A72), Firmware { wa3: false, ..ALL });
        assert_eq!(
            p.entry,
            Entry {
                bhb_loop: 8,
                clrbhb: false,
                fw_wa3: false,
                fw_wa1: true
            }
        );
        assert!(!p.v2_loop_only);
        assert!(p.ssbd_at_boot);
        assert_eq!(p.features(ARCH_WORKAROUND_2), Some(NOT_REQUIRED));
    }

    #[test]
    fn in_order_cores_are_not_affected() {
        let p = plan(&ids(QEMU_A53), ALL);
        assert_eq!(p.entry, Entry::default());
        assert_eq!(p.features(ARCH_WORKAROUND_1), Some(UNAFFECTED));
        assert_eq!(p.features(ARCH_WORKAROUND_3), Some(UNAFFECTED));
        assert_eq!(p.features(ARCH_WORKAROUND_2), Some(NOT_REQUIRED));
        assert!(!p.ssbd_at_boot);
    }

    #[test]
    fn a73_needs_the_firmware_for_bhb() {
        let a73 = ids(0x410f_d090);
        let p = plan(&a73, NONE);
        assert_eq!((p.v2, p.bhb), (State::Vulnerable, State::Vulnerable));
        assert_eq!(p.features(ARCH_WORKAROUND_1), Some(NOT_SUPPORTED));
        let p = plan(&a73, ALL);
        assert_eq!(
            p.entry,
            Entry {
                fw_wa3: true,
                ..Entry::default()
            }
        );
        assert_eq!((p.v2, p.bhb), (State::Mitigated, State::Mitigated));
    }

    #[test]
    fn csv2_ecbhb_clrbhb_and_ssbs_come_from_the_id_registers() {
        // Neoverse N1 with CSV2 = 1: v2 unaffected, BHB loop of 24.
        let n1 = IdRegs {
            midr: 0x413f_d0c1,
            pfr0: 1 << 56,
            ..IdRegs::default()
        };
        let p = plan(&n1, NONE);
        assert_eq!((p.v2, p.bhb), (State::Unaffected, State::Mitigated));
        assert_eq!(p.entry.bhb_loop, 24);
        // The same with ECBHB: nothing to do.
        let p = plan(
            &IdRegs {
                mmfr1: 1 << 60,
                ..n1
            },
            NONE,
        );
        assert_eq!((p.bhb, p.entry), (State::Unaffected, Entry::default()));
        // CLRBHB is preferred to the loop.
        let p = plan(
            &IdRegs {
                isar2: 1 << 28,
                ..n1
            },
            NONE,
        );
        assert_eq!(
            p.entry,
            Entry {
                clrbhb: true,
                ..Entry::default()
            }
        );
        // CSV2 = 3 means BHB too is handled by hardware.
        let p = plan(
            &IdRegs {
                pfr0: 3 << 56,
                ..n1
            },
            NONE,
        );
        assert_eq!(p.bhb, State::Unaffected);
        // SSBS: the guest sets PSTATE.SSBS itself; no firmware calls.
        let p = plan(&IdRegs { pfr1: 1 << 4, ..n1 }, ALL);
        assert_eq!((p.ssb, p.ssbd_at_boot), (State::Mitigated, false));
        assert_eq!(p.features(ARCH_WORKAROUND_2), Some(NOT_SUPPORTED));
    }

    #[test]
    fn other_implementers_and_unknown_parts_are_judged_by_id_registers_only() {
        // Not Arm's: no table applies; without CSV2, v2 needs the firmware.
        let other = ids(0x510f_8000);
        assert_eq!(plan(&other, NONE).v2, State::Vulnerable);
        assert_eq!(plan(&other, NONE).bhb, State::Unaffected);
        assert!(plan(&other, Firmware { wa1: true, ..NONE }).entry.fw_wa1);
        assert_eq!(
            plan(
                &IdRegs {
                    pfr0: 1 << 56,
                    ..other
                },
                NONE
            )
            .v2,
            State::Unaffected
        );
    }

    #[test]
    fn features_answers_only_the_workarounds() {
        let p = plan(&ids(QEMU_A72), NONE);
        assert_eq!(p.features(0x8000_0000), None);
        assert_eq!(p.guest_call(ARCH_WORKAROUND_1), Some(SUCCESS));
        assert_eq!(p.guest_call(ARCH_WORKAROUND_2), Some(NOT_SUPPORTED));
        assert_eq!(p.guest_call(0x8400_0000), None);
    }

    #[test]
    fn entry_bits() {
        let e = Entry {
            bhb_loop: 132,
            clrbhb: true,
            fw_wa3: true,
            fw_wa1: true,
        };
        assert_eq!(e.bits(), 132 | 0x700);
    }
}
