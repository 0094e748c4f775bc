//! The CPU's features as its ID registers give them, portable: what the
//! image decides its EL2 configuration and a vCPU's reset from. The image
//! reads the raw registers (`IdRegs`); everything else is here, tested on
//! the host.

/// Raw ID register values of one CPU (zero where the register is absent or
/// reads as zero on older CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdRegs {
    pub midr: u64,
    pub pfr0: u64,
    pub pfr1: u64,
    pub dfr0: u64,
    pub isar1: u64,
    pub isar2: u64,
    pub mmfr0: u64,
    pub mmfr1: u64,
    pub mmfr2: u64,
    pub mmfr3: u64,
    pub smfr0: u64,
}

/// The features the hypervisor's configuration depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub sve: bool,
    pub sme: bool,
    /// SME2 (ZT0).
    pub sme2: bool,
    pub sme_fa64: bool,
    /// Pointer authentication (any algorithm).
    pub pauth: bool,
    /// FEAT_MTE (PSTATE.TCO) and FEAT_MTE2 (tag storage, GCR/RGSR/TFSR).
    pub mte: bool,
    pub mte2: bool,
    /// PMUv3 version field (0: none; 0xf, IMPLEMENTATION DEFINED, counts
    /// as none).
    pub pmuver: u8,
    /// Breakpoints and watchpoints implemented (1..=16 each).
    pub brps: u8,
    pub wrps: u8,
    pub ras: bool,
    pub amu: bool,
    pub spe: bool,
    /// Self-hosted trace filtering (TRFCR).
    pub trf: bool,
    pub mpam: bool,
    /// Fine-grained traps (HFGRTR_EL2 and friends).
    pub fgt: bool,
    /// HCRX_EL2.
    pub hcx: bool,
    pub pan: bool,
    /// SCXTNUM_ELx (CSV2 2 and above).
    pub scxtnum: bool,
    /// The SPE version field (3: v1p2, with PMSNEVFR_EL1).
    pub spe_ver: u8,
    /// Trace buffer (TRBE).
    pub trbe: bool,
    /// Branch record buffer (BRBE).
    pub brbe: bool,
    /// Implicit error synchronization (SCTLR_EL2.IESB).
    pub iesb: bool,
    /// Memory copy and set instructions (HCRX_EL2.MSCEn).
    pub mops: bool,
    /// TCR2_ELx and SCTLR2_ELx (HCRX_EL2.TCR2En, SCTLR2En).
    pub tcr2: bool,
    pub sctlr2: bool,
    /// Permission indirection and overlays, attribute indexing
    /// extension, guarded control stacks, translation hardening: the
    /// registers fine-grained traps name with negative polarity.
    pub s1pie: bool,
    pub s1poe: bool,
    pub s2poe: bool,
    pub aie: bool,
    pub gcs: bool,
    pub the: bool,
}

/// The 4-bit ID register field at `shift`.
pub fn field(reg: u64, shift: u32) -> u8 {
    ((reg >> shift) & 0xf) as u8
}

/// PMUv3 version values of ID_AA64DFR0_EL1.PMUVer.
pub const PMUV3P1: u8 = 4;
pub const PMUV3P5: u8 = 6;

impl Features {
    pub fn from_ids(r: &IdRegs) -> Features {
        let sme = field(r.pfr1, 24) != 0;
        let pmuver = match field(r.dfr0, 8) {
            0xf => 0,
            v => v,
        };
        let mpam = field(r.pfr0, 40) != 0 || field(r.pfr1, 16) != 0;
        Features {
            sve: field(r.pfr0, 32) != 0,
            sme,
            sme2: sme && field(r.pfr1, 24) >= 2,
            sme_fa64: sme && r.smfr0 >> 63 != 0,
            // ISAR1 APA, API, GPA, GPI; ISAR2 GPA3, APA3.
            pauth: r.isar1 & 0xff00_0ff0 != 0 || r.isar2 & 0xff00 != 0,
            mte: field(r.pfr1, 8) >= 1,
            mte2: field(r.pfr1, 8) >= 2,
            pmuver,
            brps: field(r.dfr0, 12) + 1,
            wrps: field(r.dfr0, 20) + 1,
            ras: field(r.pfr0, 28) != 0,
            amu: field(r.pfr0, 44) != 0,
            spe: field(r.dfr0, 32) != 0,
            trf: field(r.dfr0, 40) != 0,
            mpam,
            fgt: field(r.mmfr0, 56) != 0,
            hcx: field(r.mmfr1, 40) != 0,
            pan: field(r.mmfr1, 20) != 0,
            scxtnum: field(r.pfr0, 56) >= 2,
            spe_ver: field(r.dfr0, 32),
            trbe: field(r.dfr0, 44) != 0,
            brbe: field(r.dfr0, 52) != 0,
            iesb: field(r.mmfr2, 12) != 0,
            mops: field(r.isar2, 16) != 0,
            tcr2: field(r.mmfr3, 0) != 0,
            sctlr2: field(r.mmfr3, 4) != 0,
            s1pie: field(r.mmfr3, 8) != 0,
            s1poe: field(r.mmfr3, 16) != 0,
            s2poe: field(r.mmfr3, 20) != 0,
            aie: field(r.mmfr3, 24) != 0,
            gcs: field(r.pfr1, 44) != 0,
            the: field(r.pfr1, 48) != 0,
        }
    }

    /// A PMUv3 the guest may use.
    pub fn pmu(&self) -> bool {
        self.pmuver != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's cortex-a57: FP/AdvSIMD, PMUv3, 6 breakpoints and 4
    /// watchpoints, nothing newer.
    const A57: IdRegs = IdRegs {
        midr: 0x411f_d070,
        pfr0: 0x0000_0000_0000_2222,
        pfr1: 0,
        dfr0: 0x0000_0000_1030_5106,
        isar1: 0,
        isar2: 0,
        mmfr0: 0x0000_0000_0000_1124,
        mmfr1: 0,
        mmfr2: 0,
        mmfr3: 0,
        smfr0: 0,
    };

    #[test]
    fn cortex_a57_has_pmu_and_debug_but_nothing_newer() {
        let f = Features::from_ids(&A57);
        assert_eq!((f.pmuver, f.brps, f.wrps), (1, 6, 4));
        assert!(f.pmu());
        assert!(!(f.sve || f.sme || f.pauth || f.mte || f.ras || f.fgt || f.hcx || f.pan));
    }

    #[test]
    fn each_field_from_its_bits() {
        let r = IdRegs {
            midr: 0,
            pfr0: (1 << 32) | (1 << 28) | (1 << 44) | (2 << 56) | (1 << 40),
            pfr1: (2 << 24) | (2 << 8),
            dfr0: (6 << 8) | (15 << 12) | (15 << 20) | (1 << 32) | (1 << 40),
            isar1: 1 << 4,
            isar2: 0,
            mmfr0: 1 << 56,
            mmfr1: (1 << 40) | (1 << 20),
            mmfr2: 0,
            mmfr3: 0,
            smfr0: 1 << 63,
        };
        let f = Features::from_ids(&r);
        assert!(f.sve && f.ras && f.amu && f.scxtnum && f.mpam);
        assert!(f.sme && f.sme2 && f.sme_fa64);
        assert!(f.mte && f.mte2 && f.pauth);
        assert_eq!((f.pmuver, f.brps, f.wrps), (PMUV3P5, 16, 16));
        assert!(f.spe && f.trf && f.fgt && f.hcx && f.pan);
    }

    #[test]
    fn an_implementation_defined_pmu_is_none() {
        let f = Features::from_ids(&IdRegs {
            dfr0: 0xf << 8,
            ..A57
        });
        assert!(!f.pmu());
    }

    #[test]
    fn mte_without_tag_storage() {
        let f = Features::from_ids(&IdRegs {
            pfr1: 1 << 8,
            ..A57
        });
        assert!(f.mte && !f.mte2);
    }
}
