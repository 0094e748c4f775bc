//! The trapped-access decoders (src/emul/mmio.rs, src/emul/sysreg.rs) on
//! any ESR_EL2, HPFAR_EL2 and FAR_EL2 values: nothing may panic, and what
//! comes out is what the syndrome says.
//!
//! - `fault_ipa`: the page from HPFAR_EL2.FIPA (bits 43:4, so below
//!   2^52), the byte in it from FAR_EL2.
//! - `Access::decode`: None exactly when ISV (bit 24) is clear; else the
//!   width is 1 << SAS (1, 2, 4 or 8), the register SRT (0..=31, 31 being
//!   xzr), write = WnR, sign extension = SSE, 64-bit = SF, and the IPA is
//!   `fault_ipa`'s.
//! - `load_value`: the access's low bytes of the raw value, sign-extended
//!   if SSE, cut to 32 bits for a W register; `store_value`: the low
//!   bytes of the register.
//! - `emulable`: only stage-2 translation, access-flag and permission
//!   faults of the access itself (S1PTW clear).
//! - `SysRegAccess::decode` (EC 0x18): each field from its bits, and
//!   `reg` names the SGI registers, ACTLR_EL1 and the RAS error records
//!   only for their encodings.
//!
//! Input: ESR, HPFAR, FAR and a raw value, each 8 bytes little-endian
//! (missing bytes are zero).
#![no_main]

use dtvisor::emul::mmio::{emulable, fault_ipa, Access};
use dtvisor::emul::sysreg::{SysReg, SysRegAccess};
use libfuzzer_sys::fuzz_target;

fn word(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (n, x) in b.iter_mut().enumerate() {
        *x = data.get(i * 8 + n).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// Mask of the low `bytes` bytes.
fn mask(bytes: u8) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * bytes as u32)) - 1
    }
}

fuzz_target!(|data: &[u8]| {
    let (esr, hpfar, far, raw) = (word(data, 0), word(data, 1), word(data, 2), word(data, 3));

    let ipa = fault_ipa(hpfar, far);
    assert_eq!(ipa & 0xfff, far & 0xfff, "page offset from FAR");
    assert_eq!(ipa >> 12, (hpfar >> 4) & 0xff_ffff_ffff, "page from FIPA");
    assert!(ipa < 1 << 52, "IPA {ipa:#x} beyond 52 bits");

    // Emulable: a stage-2 translation, access-flag or permission fault
    // (DFSC 0b0001xx, 0b0010xx or 0b0011xx, level bits not 00 for the
    // last two) of the access itself (S1PTW clear).
    let dfsc = esr & 0x3f;
    let kind_ok = match dfsc >> 2 {
        1 => true,
        2 | 3 => dfsc & 3 != 0,
        _ => false,
    };
    assert_eq!(
        emulable(esr),
        kind_ok && esr & (1 << 7) == 0,
        "emulable: esr {esr:#x}"
    );

    let decoded = Access::decode(esr, hpfar, far);
    let isv = esr & (1 << 24) != 0;
    assert_eq!(decoded.is_some(), isv, "decoded iff ISV: esr {esr:#x}");
    if let Some(a) = decoded {
        assert!(matches!(a.size, 1 | 2 | 4 | 8), "width {}", a.size);
        assert_eq!(a.size, 1 << ((esr >> 22) & 3), "width from SAS");
        assert!(a.reg <= 31, "register {}", a.reg);
        assert_eq!(a.reg as u64, (esr >> 16) & 0x1f, "register from SRT");
        assert_eq!(a.write, esr & (1 << 6) != 0, "WnR");
        assert_eq!(a.sign_extend, esr & (1 << 21) != 0, "SSE");
        assert_eq!(a.sixty_four, esr & (1 << 15) != 0, "SF");
        assert_eq!(a.ipa, ipa, "the IPA is fault_ipa's");

        let bits = 8 * a.size as u32;
        let low = raw & mask(a.size);
        let v = a.load_value(raw);
        let reg_mask = if a.sixty_four { u64::MAX } else { 0xffff_ffff };
        assert_eq!(v & !reg_mask, 0, "a W register is zero-extended: {v:#x}");
        if bits < 64 && a.sign_extend && low >> (bits - 1) & 1 != 0 {
            assert_eq!(v, (low | !mask(a.size)) & reg_mask, "sign-extended");
        } else {
            assert_eq!(v, low & reg_mask, "zero-extended");
        }
        assert_eq!(a.store_value(raw), low, "a store writes the low bytes");
    }

    let s = SysRegAccess::decode(esr);
    assert_eq!(s.op0 as u64, (esr >> 20) & 3);
    assert_eq!(s.op2 as u64, (esr >> 17) & 7);
    assert_eq!(s.op1 as u64, (esr >> 14) & 7);
    assert_eq!(s.crn as u64, (esr >> 10) & 0xf);
    assert_eq!(s.rt as u64, (esr >> 5) & 0x1f);
    assert_eq!(s.crm as u64, (esr >> 1) & 0xf);
    assert_eq!(s.read, esr & 1 != 0);
    let want = match (s.op0, s.op1, s.crn, s.crm, s.op2) {
        (3, 0, 12, 11, 5) => SysReg::IccSgi1r,
        (3, 1, 12, 11, 6) => SysReg::IccAsgi1r,
        (3, 2, 12, 11, 7) => SysReg::IccSgi0r,
        (3, 0, 1, 0, 1) => SysReg::Actlr,
        (3, 0, 5, 3..=5, _) => SysReg::ErrorRecord,
        _ => SysReg::Other,
    };
    assert_eq!(s.reg(), want);
    let _ = s.to_string();
});
