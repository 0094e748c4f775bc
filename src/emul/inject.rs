//! An exception the hypervisor makes a guest take at its EL1 (an abort
//! or an undefined instruction), portable: which vector it enters and the
//! PSTATE it enters with, as the architecture gives them for an exception
//! taken to AArch64 EL1 (Arm ARM D1.3, "PSTATE on taking an exception").

/// SPSR/PSTATE bits (AArch64 view).
const M_EL1H: u64 = 0b0101;
const F: u64 = 1 << 6;
const I: u64 = 1 << 7;
const A: u64 = 1 << 8;
const D: u64 = 1 << 9;
const SSBS: u64 = 1 << 12;
const PAN: u64 = 1 << 22;
const DIT: u64 = 1 << 24;
const TCO: u64 = 1 << 25;
const NZCV: u64 = 0xf << 28;
/// An AArch32 SPSR (M[4] set) keeps DIT at bit 21 and PAN at bit 22.
const M_AARCH32: u64 = 1 << 4;
const DIT_AARCH32: u64 = 1 << 21;

/// SCTLR_EL1 bits that decide it.
const SCTLR_SPAN: u64 = 1 << 23;
const SCTLR_DSSBS: u64 = 1 << 44;

/// Exception classes (ESR_EL2.EC) of the traps a guest causes.
const EC_UNKNOWN: u64 = 0x00;
const EC_WFX: u64 = 0x01;
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_SYSREG: u64 = 0x18;
const EC_IABT_LOW: u64 = 0x20;
const EC_IABT_CUR: u64 = 0x21;
const EC_DABT_LOW: u64 = 0x24;
const EC_DABT_CUR: u64 = 0x25;
/// ESR.IL: a 32-bit instruction.
const IL: u64 = 1 << 25;
/// DFSC/IFSC: synchronous external abort, not on a table walk.
const FSC_EXTERNAL: u64 = 0x10;
/// ESR.WnR of a data abort.
const WNR: u64 = 1 << 6;

/// What a guest's synchronous trap is, from ESR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    Hvc,
    /// SMC (trapped by HCR_EL2.TSC: the preferred return is the SMC).
    Smc,
    Wfx,
    SysReg,
    /// A stage-2 instruction abort from the guest.
    InstAbort,
    /// A stage-2 data abort from the guest.
    DataAbort,
    /// Anything else, by class.
    Other(u64),
}

impl Trap {
    pub fn of(esr: u64) -> Trap {
        match esr >> 26 {
            EC_HVC64 => Trap::Hvc,
            EC_SMC64 => Trap::Smc,
            EC_WFX => Trap::Wfx,
            EC_SYSREG => Trap::SysReg,
            EC_IABT_LOW => Trap::InstAbort,
            EC_DABT_LOW => Trap::DataAbort,
            ec => Trap::Other(ec),
        }
    }
}

/// ESR_EL1 of an undefined instruction injected into the guest.
pub fn undefined_esr() -> u64 {
    (EC_UNKNOWN << 26) | IL
}

/// ESR_EL1 of a synchronous external abort injected into the guest for
/// its access: an instruction fetch, or a data access (`wnr`: a write),
/// from EL1 (`from_el1`) or EL0.
pub fn external_abort_esr(fetch: bool, from_el1: bool, wnr: bool) -> u64 {
    let ec = match (fetch, from_el1) {
        (true, true) => EC_IABT_CUR,
        (true, false) => EC_IABT_LOW,
        (false, true) => EC_DABT_CUR,
        (false, false) => EC_DABT_LOW,
    };
    let wnr = if !fetch && wnr { WNR } else { 0 };
    (ec << 26) | IL | wnr | FSC_EXTERNAL
}

/// Whether a data abort's syndrome says it was a write.
pub fn is_write(esr: u64) -> bool {
    esr & WNR != 0
}

/// The offset in VBAR_EL1 of the synchronous vector for an exception
/// from the state `spsr` (the interrupted PSTATE): current EL with SP_EL0
/// or SP_EL1, or a lower EL in AArch64 or AArch32.
pub fn sync_vector(spsr: u64) -> u64 {
    if spsr & M_AARCH32 != 0 {
        return 0x600;
    }
    match spsr & 0xf {
        0b0101 => 0x200, // EL1h
        0b0100 => 0x000, // EL1t
        _ => 0x400,      // EL0
    }
}

/// PSTATE on entry to EL1h for an exception from the state `spsr`, with
/// the guest's SCTLR_EL1 `sctlr` (`mte`: the CPU has FEAT_MTE):
/// D, A, I, F set; SS, IL, UAO, BTYPE clear; NZCV and DIT kept; PAN kept,
/// and set when SCTLR_EL1.SPAN is 0 (a CPU without FEAT_PAN has SPAN
/// RES1); SSBS from SCTLR_EL1.DSSBS (RES0 without FEAT_SSBS); TCO set
/// with MTE.
pub fn entry_pstate(spsr: u64, sctlr: u64, mte: bool) -> u64 {
    let mut p = M_EL1H | D | A | I | F;
    p |= spsr & NZCV;
    if spsr & M_AARCH32 != 0 {
        if spsr & DIT_AARCH32 != 0 {
            p |= DIT;
        }
    } else {
        p |= spsr & DIT;
    }
    p |= spsr & PAN;
    if sctlr & SCTLR_SPAN == 0 {
        p |= PAN;
    }
    if sctlr & SCTLR_DSSBS != 0 {
        p |= SSBS;
    }
    if mte {
        p |= TCO;
    }
    p
}

#[cfg(test)]
mod tests {
    #[test]
    fn trap_classes() {
        assert_eq!(Trap::of(0x5a00_0000), Trap::Hvc);
        assert_eq!(Trap::of(0x5e00_0000), Trap::Smc);
        assert_eq!(Trap::of(0x0600_0001), Trap::Wfx);
        assert_eq!(Trap::of(0x6200_0000), Trap::SysReg);
        assert_eq!(Trap::of(0x8200_0000), Trap::InstAbort);
        assert_eq!(Trap::of(0x9200_0000), Trap::DataAbort);
        assert_eq!(Trap::of(0x2 << 26), Trap::Other(2));
    }

    #[test]
    fn injected_syndromes() {
        assert_eq!(undefined_esr(), 0x0200_0000);
        // Data abort from EL1, a write: EC 0x25, IL, WnR, FSC 0x10.
        assert_eq!(external_abort_esr(false, true, true), 0x9600_0050);
        // From EL0, a read: EC 0x24.
        assert_eq!(external_abort_esr(false, false, false), 0x9200_0010);
        // Instruction aborts carry no WnR.
        assert_eq!(external_abort_esr(true, true, true), 0x8600_0010);
        assert_eq!(external_abort_esr(true, false, false), 0x8200_0010);
        assert!(is_write(0x9600_0050) && !is_write(0x9200_0010));
    }

    use super::*;

    /// SCTLR_EL1 of a v8.0 CPU with SPAN RES1, DSSBS RES0.
    const V80: u64 = SCTLR_SPAN;

    #[test]
    fn vectors_by_where_it_came_from() {
        assert_eq!(sync_vector(0x3c5), 0x200);
        assert_eq!(sync_vector(0x3c4), 0x000);
        assert_eq!(sync_vector(0x0), 0x400);
        assert_eq!(sync_vector(0x10), 0x600, "AArch32 EL0 (usr)");
    }

    #[test]
    fn masks_set_mode_el1h_flags_kept() {
        let p = entry_pstate(NZCV | M_EL1H, V80, false);
        assert_eq!(p, NZCV | D | A | I | F | M_EL1H);
        // Single step, illegal state, BTYPE, UAO do not survive.
        let junk = (1 << 21) | (1 << 20) | (3 << 10) | (1 << 23);
        assert_eq!(entry_pstate(junk, V80, false), D | A | I | F | M_EL1H);
    }

    #[test]
    fn pan_set_when_span_is_clear_and_kept_otherwise() {
        assert_eq!(entry_pstate(0, 0, false) & PAN, PAN);
        assert_eq!(entry_pstate(0, SCTLR_SPAN, false) & PAN, 0);
        assert_eq!(entry_pstate(PAN, SCTLR_SPAN, false) & PAN, PAN);
    }

    #[test]
    fn ssbs_follows_dssbs() {
        assert_eq!(entry_pstate(SSBS, V80, false) & SSBS, 0);
        assert_eq!(entry_pstate(0, V80 | SCTLR_DSSBS, false) & SSBS, SSBS);
    }

    #[test]
    fn tco_only_with_mte() {
        assert_eq!(entry_pstate(0, V80, true) & TCO, TCO);
        assert_eq!(entry_pstate(TCO, V80, false) & TCO, 0);
    }

    #[test]
    fn dit_kept_from_either_register_width() {
        assert_eq!(entry_pstate(DIT, V80, false) & DIT, DIT);
        assert_eq!(entry_pstate(M_AARCH32 | DIT_AARCH32, V80, false) & DIT, DIT);
        // Bit 24 of an AArch32 SPSR is J, not DIT.
        assert_eq!(entry_pstate(M_AARCH32 | DIT, V80, false) & DIT, 0);
    }

    #[test]
    fn the_old_fixed_value_for_a_v80_guest_that_uses_none_of_it() {
        // 0x3c5 (EL1h, DAIF masked) is what a v8.0 guest without PAN,
        // SSBS or MTE got before; it still does.
        assert_eq!(entry_pstate(0, V80, false), 0x3c5);
    }
}
