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
