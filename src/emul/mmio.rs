//! A data abort with a valid syndrome, decoded into an MMIO access.

/// One trapped load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Guest-physical address.
    pub ipa: u64,
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    pub write: bool,
    /// Register number (31 = xzr/wzr).
    pub reg: u8,
    /// Sign-extend a load.
    pub sign_extend: bool,
    /// 64-bit destination register (else 32-bit: zero-extend into x).
    pub sixty_four: bool,
}

/// The guest-physical address of a stage-2 fault: the page from
/// HPFAR_EL2.FIPA, the offset in it from FAR_EL2.
pub fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) & 0xff_ffff_ffff) << 12 | (far & 0xfff)
}

/// Whether a stage-2 data abort may be emulated as a device access: a
/// translation, access-flag or permission fault (ESR DFSC) of the access
/// itself, not of the guest's own stage-1 table walk (S1PTW). An external
/// abort, a TLB conflict, an alignment or address-size fault, or a walk
/// that touched a device address is never a device access: the guest gets
/// the abort.
pub fn emulable(esr: u64) -> bool {
    let s1ptw = esr & (1 << 7) != 0;
    let dfsc = esr & 0x3f;
    let kind = dfsc >> 2;
    // 0b0001xx translation, 0b0010xx access flag (xx = level; 00 is
    // reserved there), 0b0011xx permission.
    !s1ptw && (kind == 1 || ((kind == 2 || kind == 3) && dfsc & 3 != 0))
}

impl Access {
    /// Decodes the ISS of a data abort (ESR_EL2 EC 0x24). None without a
    /// valid syndrome (ISV clear: e.g. load/store pair, post-index), which
    /// the caller must not emulate.
    pub fn decode(esr: u64, hpfar: u64, far: u64) -> Option<Access> {
        if esr & (1 << 24) == 0 {
            return None;
        }
        let ipa = fault_ipa(hpfar, far);
        Some(Access {
            ipa,
            size: 1 << ((esr >> 22) & 3),
            write: esr & (1 << 6) != 0,
            reg: ((esr >> 16) & 0x1f) as u8,
            sign_extend: esr & (1 << 21) != 0,
            sixty_four: esr & (1 << 15) != 0,
        })
    }

    /// The value a load puts into the destination register.
    pub fn load_value(&self, raw: u64) -> u64 {
        let bits = self.size as u32 * 8;
        let mut v = if bits == 64 {
            raw
        } else {
            raw & ((1u64 << bits) - 1)
        };
        if self.sign_extend && bits < 64 && v & (1 << (bits - 1)) != 0 {
            v |= !0u64 << bits;
        }
        if !self.sixty_four {
            v &= 0xffff_ffff;
        }
        v
    }

    /// The bytes a store writes, from the source register value.
    pub fn store_value(&self, reg: u64) -> u64 {
        let bits = self.size as u32 * 8;
        if bits == 64 {
            reg
        } else {
            reg & ((1u64 << bits) - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stage2_faults_of_the_access_itself_are_emulable() {
        let dabt = (0x24 << 26) | (1 << 24);
        for dfsc in 0x04..=0x07 {
            assert!(emulable(dabt | dfsc), "translation fault {dfsc:#x}");
        }
        for dfsc in [0x09, 0x0a, 0x0b, 0x0d, 0x0e, 0x0f] {
            assert!(emulable(dabt | dfsc), "access flag or permission {dfsc:#x}");
        }
        // Address size, external aborts, alignment, TLB conflict, reserved.
        for dfsc in [
            0x00, 0x03, 0x08, 0x0c, 0x10, 0x11, 0x14, 0x18, 0x21, 0x30, 0x3f,
        ] {
            assert!(!emulable(dabt | dfsc), "{dfsc:#x} is not a device access");
        }
        // The guest's stage-1 walk hit the address: never emulated.
        assert!(!emulable(dabt | (1 << 7) | 0x07));
    }

    #[test]
    fn decodes_ldr_w_and_strb() {
        // ldr w3, [x0] at IPA 0x22000018: ISV, SAS=2 (4 bytes), SRT=3, read.
        let esr = (0x24 << 26) | (1 << 24) | (2 << 22) | (3 << 16);
        let a = Access::decode(esr, 0x22000 << 4, 0x18).unwrap();
        assert_eq!((a.ipa, a.size, a.write, a.reg), (0x2200_0018, 4, false, 3));
        assert_eq!(a.load_value(0xdead_beef_1234_5678), 0x1234_5678);
        // strb w1: SAS=0, WnR.
        let esr = (0x24 << 26) | (1 << 24) | (1 << 16) | (1 << 6);
        let a = Access::decode(esr, 0x22000 << 4, 0).unwrap();
        assert!(a.write);
        assert_eq!(a.store_value(0x1ff), 0xff);
        assert!(Access::decode(0x24 << 26, 0, 0).is_none());
    }

    /// What a load of `size` bytes with these flags puts in the register,
    /// by the architecture's definition (LDR/LDRB/LDRH zero-extend,
    /// LDRS* sign-extend to W or X; a W destination clears bits 63:32),
    /// written with Rust's integer casts, independently of `load_value`.
    fn reference_load(raw: u64, size: u8, sign: bool, x: bool) -> u64 {
        let v = match (size, sign) {
            (1, false) => raw as u8 as u64,
            (2, false) => raw as u16 as u64,
            (4, false) => raw as u32 as u64,
            (1, true) => raw as u8 as i8 as i64 as u64,
            (2, true) => raw as u16 as i16 as i64 as u64,
            (4, true) => raw as u32 as i32 as i64 as u64,
            _ => raw,
        };
        if x {
            v
        } else {
            v as u32 as u64
        }
    }

    proptest::proptest! {
        /// Any syndrome: None exactly when ISV is clear; otherwise each
        /// field from its bits, the address from HPFAR and FAR, and the
        /// values loaded and stored as the architecture defines them.
        #[test]
        fn decode_any_syndrome(esr: u64, hpfar: u64, far: u64, raw: u64, reg_value: u64) {
            let got = Access::decode(esr, hpfar, far);
            proptest::prop_assert_eq!(got.is_some(), esr & (1 << 24) != 0);
            if let Some(a) = got {
                let size = 1u8 << ((esr >> 22) & 3);
                proptest::prop_assert_eq!(a.size, size);
                proptest::prop_assert_eq!(a.write, esr & (1 << 6) != 0);
                proptest::prop_assert_eq!(a.reg as u64, (esr >> 16) & 0x1f);
                proptest::prop_assert_eq!(a.ipa, ((hpfar >> 4) & 0xff_ffff_ffff) << 12 | (far & 0xfff));
                proptest::prop_assert!(a.ipa < 1 << 52);
                let sign = esr & (1 << 21) != 0;
                let x = esr & (1 << 15) != 0;
                proptest::prop_assert_eq!(a.load_value(raw), reference_load(raw, size, sign, x));
                let mask = if size == 8 { !0 } else { (1u64 << (8 * size as u32)) - 1 };
                proptest::prop_assert_eq!(a.store_value(reg_value), reg_value & mask);
            }
        }
    }

    #[test]
    fn sign_extension() {
        let esr = (1 << 24) | (1 << 21) | (1 << 15); // ldrsb x0
        let a = Access::decode(esr, 0, 0).unwrap();
        assert_eq!(a.load_value(0x80), 0xffff_ffff_ffff_ff80);
        let esr = (1 << 24) | (1 << 21); // ldrsb w0
        assert_eq!(
            Access::decode(esr, 0, 0).unwrap().load_value(0x80),
            0xffff_ff80
        );
    }
}
