//! Every EL2 control register the hypervisor writes, from the CPU's
//! features (`cpufeat`), portable: nothing is inherited from firmware, and
//! every choice is written down here and tested on the host, one test per
//! feature. The image writes exactly these values (a register the CPU
//! lacks is `None` and never touched).
//!
//! The choices, for a hypervisor that pins each vCPU to its own pCPU and
//! runs guests at EL1 with E2H = 0:
//!
//! - HCR_EL2: stage 2 on (VM), set/way invalidation upgraded (SWIO),
//!   physical IRQ, FIQ and SError to EL2 (IMO, FMO, AMO), SMC trapped (TSC,
//!   PSCI over SMC is emulated), AArch64 EL1 (RW); IMPLEMENTATION DEFINED
//!   registers trapped (TIDCP: UNDEF) and ACTLR_EL1 trapped (TACR: read
//!   only); pointer authentication and MTE tags not trapped where the CPU
//!   has them (APK, API, ATA); with RAS, error records trapped (TERR:
//!   RAZ/WI) and synchronous external aborts routed to EL2 (TEA).
//! - HCRX_EL2: only what enables a feature the guest sees in its ID
//!   registers (MSCEn with MOPS, TCR2En, SCTLR2En); nothing trapped.
//! - Fine-grained traps: nothing trapped. Every positive trap bit is 0;
//!   each negative-polarity bit (0 traps) is 1 exactly where the CPU has
//!   the feature, RES0 otherwise. FEAT_FGT2's registers are not written
//!   (their reset value traps nothing the guests use).
//! - MDCR_EL2: the guest owns the PMU (TPM, TPMCR clear; HPMN = every
//!   counter), and counts nothing the hypervisor does (HPMD with
//!   PMUv3p1, HCCD with PMUv3p5); it owns breakpoints and watchpoints (TDA,
//!   TDOSA, TDRA clear). Both are cleared between its lives. Statistical
//!   profiling (TPMS, E2PB = EL2's), self-hosted trace filtering (TTRF) and
//!   the trace buffer (E2TB = EL2's) are trapped: guests get UNDEF.
//! - CPTR_EL2: FP/SIMD, SVE and SME not trapped; trace registers (TTA) and
//!   activity monitors (TAM, with AMU) trapped.
//! - MPAM2_EL2: guests' MPAM registers trapped (UNDEF).
//! - PMSCR_EL2, TRFCR_EL2: no profiling or trace of EL2.
//! - ZCR_EL2, SMCR_EL2: the largest vector lengths; FA64 and ZT0 (EZT0,
//!   SME2) where offered.
//! - SCTLR_EL2: MMU, caches, SP alignment check, WXN; IESB with FEAT_IESB;
//!   ITFSB with MTE; little-endian; all RES1 bits.

use super::cpufeat::{Features, PMUV3P1, PMUV3P5};

pub const HCR_VM: u64 = 1 << 0;
pub const HCR_SWIO: u64 = 1 << 1;
pub const HCR_FMO: u64 = 1 << 3;
pub const HCR_IMO: u64 = 1 << 4;
pub const HCR_AMO: u64 = 1 << 5;
pub const HCR_TSC: u64 = 1 << 19;
pub const HCR_TIDCP: u64 = 1 << 20;
pub const HCR_TACR: u64 = 1 << 21;
pub const HCR_RW: u64 = 1 << 31;
pub const HCR_TERR: u64 = 1 << 36;
pub const HCR_TEA: u64 = 1 << 37;
pub const HCR_APK: u64 = 1 << 40;
pub const HCR_API: u64 = 1 << 41;
pub const HCR_ATA: u64 = 1 << 56;
/// What every guest runs with, whatever the CPU.
pub const HCR_BASE: u64 =
    HCR_VM | HCR_SWIO | HCR_FMO | HCR_IMO | HCR_AMO | HCR_TSC | HCR_TIDCP | HCR_TACR | HCR_RW;

const HCRX_MSCEN: u64 = 1 << 11;
const HCRX_TCR2EN: u64 = 1 << 14;
const HCRX_SCTLR2EN: u64 = 1 << 15;

const MDCR_TPMS: u64 = 1 << 14;
const MDCR_HPMD: u64 = 1 << 17;
const MDCR_TTRF: u64 = 1 << 19;
const MDCR_HCCD: u64 = 1 << 23;

/// CPTR_EL2 (E2H = 0): RES1 bits 13, 9, 7:0; TZ (8) and TSM (12) are
/// RES1 where SVE and SME are absent (and left clear, not trapping, where
/// present).
const CPTR_RES1: u64 = 0x22ff;
const CPTR_TZ: u64 = 1 << 8;
const CPTR_TSM: u64 = 1 << 12;
const CPTR_TTA: u64 = 1 << 20;
const CPTR_TAM: u64 = 1 << 30;

const MPAM2_TRAPMPAM1EL1: u64 = 1 << 48;
const MPAM2_TRAPMPAM0EL1: u64 = 1 << 49;

/// SCTLR_EL2 (E2H = 0): RES1 bits 4, 5, 11, 16, 18, 22, 23, 28, 29.
const SCTLR_RES1: u64 = 0x30c5_0830;
pub const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_SA: u64 = 1 << 3;
const SCTLR_I: u64 = 1 << 12;
pub const SCTLR_WXN: u64 = 1 << 19;
const SCTLR_IESB: u64 = 1 << 21;
const SCTLR_ITFSB: u64 = 1 << 37;

/// The fine-grained trap registers (FEAT_FGT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fgt {
    pub hfgrtr: u64,
    pub hfgwtr: u64,
    pub hfgitr: u64,
    pub hdfgrtr: u64,
    pub hdfgwtr: u64,
    /// HAFGRTR_EL2, with AMU only.
    pub hafgrtr: Option<u64>,
}

/// The EL2 control registers for running guests on a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El2Config {
    pub hcr: u64,
    pub hcrx: Option<u64>,
    pub fgt: Option<Fgt>,
    pub mdcr: u64,
    pub cptr: u64,
    pub mpam2: Option<u64>,
    pub pmscr: Option<u64>,
    pub trfcr: Option<u64>,
    pub zcr: Option<u64>,
    pub smcr: Option<u64>,
}

/// The configuration for a CPU with features `f` whose PMU has
/// `pmu_counters` event counters (PMCR_EL0.N; None without a PMU).
pub fn guest_config(f: &Features, pmu_counters: Option<u64>) -> El2Config {
    El2Config {
        hcr: hcr(f),
        hcrx: f.hcx.then(|| hcrx(f)),
        fgt: f.fgt.then(|| fgt(f)),
        mdcr: mdcr(f, pmu_counters),
        cptr: cptr(f),
        mpam2: f.mpam.then_some(MPAM2_TRAPMPAM1EL1 | MPAM2_TRAPMPAM0EL1),
        pmscr: (f.spe_ver != 0).then_some(0),
        trfcr: f.trf.then_some(0),
        zcr: f.sve.then_some(0xf),
        smcr: f
            .sme
            .then_some(0xf | ((f.sme_fa64 as u64) << 31) | ((f.sme2 as u64) << 30)),
    }
}

fn hcr(f: &Features) -> u64 {
    let mut hcr = HCR_BASE;
    if f.pauth {
        hcr |= HCR_APK | HCR_API;
    }
    if f.mte2 {
        hcr |= HCR_ATA;
    }
    if f.ras {
        hcr |= HCR_TERR | HCR_TEA;
    }
    hcr
}

fn hcrx(f: &Features) -> u64 {
    let mut v = 0;
    if f.mops {
        v |= HCRX_MSCEN;
    }
    if f.tcr2 {
        v |= HCRX_TCR2EN;
    }
    if f.sctlr2 {
        v |= HCRX_SCTLR2EN;
    }
    v
}

/// Negative-polarity bits set where their feature exists: nothing trapped.
fn fgt(f: &Features) -> Fgt {
    let on = |b: bool, bits: u64| if b { bits } else { 0 };
    // HFGRTR_EL2/HFGWTR_EL2 share the n-bit layout.
    let regs = on(f.aie, (1 << 63) | (1 << 62))
        | on(f.s2poe, 1 << 61)
        | on(f.s1poe, (1 << 60) | (1 << 59))
        | on(f.s1pie, (1 << 58) | (1 << 57))
        | on(f.the, 1 << 56)
        | on(f.sme, (1 << 55) | (1 << 54))
        | on(f.gcs, (1 << 53) | (1 << 52));
    let hfgitr = on(f.gcs, (1 << 59) | (1 << 58) | (1 << 57)) | on(f.brbe, (1 << 56) | (1 << 55));
    let brbe_r = on(f.brbe, (1 << 61) | (1 << 60) | (1 << 59));
    let brbe_w = on(f.brbe, (1 << 61) | (1 << 60));
    let spe_nevfr = on(f.spe_ver >= 3, 1 << 62);
    Fgt {
        hfgrtr: regs,
        hfgwtr: regs,
        hfgitr,
        hdfgrtr: spe_nevfr | brbe_r,
        hdfgwtr: spe_nevfr | brbe_w,
        hafgrtr: f.amu.then_some(0),
    }
}

fn mdcr(f: &Features, pmu_counters: Option<u64>) -> u64 {
    let mut v = 0;
    if f.pmu() {
        // HPMN = N: every event counter is the guest's. (HPMN = 0 is
        // UNPREDICTABLE without FEAT_HPMN0, so a PMU with no event
        // counters keeps 0 only then.)
        v |= pmu_counters.unwrap_or(0) & 0x1f;
        if f.pmuver >= PMUV3P1 {
            v |= MDCR_HPMD;
        }
        if f.pmuver >= PMUV3P5 {
            v |= MDCR_HCCD;
        }
    }
    if f.spe_ver != 0 {
        v |= MDCR_TPMS; // E2PB (13:12) = 0: the buffer is EL2's
    }
    if f.trf {
        v |= MDCR_TTRF;
    }
    // E2TB (25:24) = 0 with TRBE: the trace buffer is EL2's.
    v
}

fn cptr(f: &Features) -> u64 {
    let mut v = CPTR_RES1 | CPTR_TTA;
    if !f.sve {
        v |= CPTR_TZ;
    }
    if !f.sme {
        v |= CPTR_TSM;
    }
    if f.amu {
        v |= CPTR_TAM;
    }
    v
}

/// SCTLR_EL2 with the MMU on (`mmu_on`: false before it is enabled).
pub fn sctlr_el2(f: &Features, mmu_on: bool) -> u64 {
    let mut v = SCTLR_RES1 | SCTLR_SA;
    if mmu_on {
        v |= SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_WXN;
    }
    if f.iesb {
        v |= SCTLR_IESB;
    }
    if f.mte {
        v |= SCTLR_ITFSB;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::cpufeat::IdRegs;

    /// QEMU's cortex-a57 (v8.0: PMUv3 with 6 counters, nothing newer).
    fn a57() -> Features {
        Features::from_ids(&IdRegs {
            pfr0: 0x2222,
            dfr0: 0x1030_5106,
            mmfr0: 0x1124,
            ..IdRegs::default()
        })
    }

    #[test]
    fn cortex_a57() {
        let c = guest_config(&a57(), Some(6));
        assert_eq!(c.hcr, HCR_BASE);
        assert_eq!(c.hcr, 0x8038_003b);
        assert_eq!(
            c.mdcr, 6,
            "HPMN = 6, nothing trapped, PMUv3 (not p1): no HPMD"
        );
        assert_eq!(c.cptr, 0x22ff | CPTR_TZ | CPTR_TSM | CPTR_TTA);
        assert_eq!(
            (c.hcrx, c.fgt, c.mpam2, c.pmscr, c.trfcr, c.zcr, c.smcr),
            (None, None, None, None, None, None, None),
            "registers a v8.0 CPU lacks are never written"
        );
        assert_eq!(
            sctlr_el2(&a57(), true),
            0x30c5_0830 | 0b1101 | (1 << 12) | (1 << 19)
        );
        assert_eq!(sctlr_el2(&a57(), false) & SCTLR_M, 0);
    }

    #[test]
    fn pointer_authentication() {
        let f = Features {
            pauth: true,
            ..a57()
        };
        assert_eq!(guest_config(&f, None).hcr, HCR_BASE | HCR_APK | HCR_API);
    }

    #[test]
    fn mte() {
        let f = Features {
            mte: true,
            mte2: true,
            ..a57()
        };
        assert_eq!(guest_config(&f, None).hcr, HCR_BASE | HCR_ATA);
        assert_eq!(sctlr_el2(&f, true) & SCTLR_ITFSB, SCTLR_ITFSB);
        // MTE without tag storage: tags not enabled for guests.
        let f = Features {
            mte: true,
            mte2: false,
            ..a57()
        };
        assert_eq!(guest_config(&f, None).hcr, HCR_BASE);
    }

    #[test]
    fn ras() {
        let f = Features { ras: true, ..a57() };
        assert_eq!(guest_config(&f, None).hcr, HCR_BASE | HCR_TERR | HCR_TEA);
    }

    #[test]
    fn sve_and_sme() {
        let f = Features { sve: true, ..a57() };
        let c = guest_config(&f, None);
        assert_eq!((c.cptr & CPTR_TZ, c.zcr, c.smcr), (0, Some(0xf), None));
        let f = Features {
            sme: true,
            sme_fa64: true,
            ..a57()
        };
        let c = guest_config(&f, None);
        assert_eq!((c.cptr & CPTR_TSM, c.smcr), (0, Some(0xf | (1 << 31))));
        let f = Features {
            sme: true,
            sme2: true,
            ..a57()
        };
        assert_eq!(
            guest_config(&f, None).smcr,
            Some(0xf | (1 << 30)),
            "EZT0 with SME2"
        );
    }

    #[test]
    fn pmu_versions() {
        let p1 = Features {
            pmuver: PMUV3P1,
            ..a57()
        };
        assert_eq!(guest_config(&p1, Some(4)).mdcr, 4 | MDCR_HPMD);
        let p5 = Features {
            pmuver: PMUV3P5,
            ..a57()
        };
        assert_eq!(guest_config(&p5, Some(20)).mdcr, 20 | MDCR_HPMD | MDCR_HCCD);
        let none = Features { pmuver: 0, ..a57() };
        assert_eq!(guest_config(&none, None).mdcr, 0);
    }

    #[test]
    fn profiling_and_trace_are_trapped() {
        let f = Features {
            spe_ver: 1,
            trf: true,
            trbe: true,
            ..a57()
        };
        let c = guest_config(&f, Some(6));
        assert_eq!(c.mdcr, 6 | MDCR_TPMS | MDCR_TTRF);
        assert_eq!((c.pmscr, c.trfcr), (Some(0), Some(0)));
    }

    #[test]
    fn amu_and_mpam() {
        let f = Features {
            amu: true,
            mpam: true,
            ..a57()
        };
        let c = guest_config(&f, None);
        assert_eq!(c.cptr & CPTR_TAM, CPTR_TAM);
        assert_eq!(c.mpam2, Some(MPAM2_TRAPMPAM1EL1 | MPAM2_TRAPMPAM0EL1));
    }

    #[test]
    fn hcrx_enables_only_what_exists() {
        let f = Features { hcx: true, ..a57() };
        assert_eq!(guest_config(&f, None).hcrx, Some(0));
        let f = Features {
            hcx: true,
            mops: true,
            tcr2: true,
            sctlr2: true,
            ..a57()
        };
        assert_eq!(
            guest_config(&f, None).hcrx,
            Some(HCRX_MSCEN | HCRX_TCR2EN | HCRX_SCTLR2EN)
        );
    }

    #[test]
    fn fine_grained_traps_trap_nothing() {
        let f = Features { fgt: true, ..a57() };
        assert_eq!(
            guest_config(&f, None).fgt,
            Some(Fgt::default()),
            "no feature: every n-bit RES0"
        );
        let f = Features {
            fgt: true,
            sme: true,
            amu: true,
            ..a57()
        };
        let g = guest_config(&f, None).fgt.unwrap();
        assert_eq!(g.hfgrtr, (1 << 55) | (1 << 54), "nTPIDR2_EL0, nSMPRI_EL1");
        assert_eq!(g.hfgwtr, g.hfgrtr);
        assert_eq!(g.hafgrtr, Some(0));
        let f = Features {
            fgt: true,
            brbe: true,
            gcs: true,
            spe_ver: 3,
            ..a57()
        };
        let g = guest_config(&f, None).fgt.unwrap();
        assert_eq!(g.hfgitr, 0x0f80_0000_0000_0000);
        assert_eq!(g.hdfgrtr, 0x7800_0000_0000_0000);
        assert_eq!(g.hdfgwtr, 0x7000_0000_0000_0000);
        assert_eq!(g.hfgrtr, (1 << 53) | (1 << 52));
        // Every feature: exactly the n-masks Arm's layout gives.
        let all = Features {
            fgt: true,
            aie: true,
            s2poe: true,
            s1poe: true,
            s1pie: true,
            the: true,
            sme: true,
            gcs: true,
            ..a57()
        };
        assert_eq!(
            guest_config(&all, None).fgt.unwrap().hfgrtr,
            0xfff0_0000_0000_0000
        );
    }

    #[test]
    fn iesb_where_offered() {
        let f = Features {
            iesb: true,
            ..a57()
        };
        assert_eq!(sctlr_el2(&f, true) & SCTLR_IESB, SCTLR_IESB);
    }
}
