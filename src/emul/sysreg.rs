//! A trapped system register access (ESR_EL2 EC 0x18), decoded from its
//! ISS, and the registers the hypervisor emulates.

/// One MSR/MRS the guest executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// General register (31 = xzr).
    pub rt: u8,
    /// MRS (a read) rather than MSR.
    pub read: bool,
}

/// The registers the hypervisor answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysReg {
    /// ICC_SGI1R_EL1: group 1 SGI, this security state.
    IccSgi1r,
    /// ICC_ASGI1R_EL1: group 1 SGI, the other security state.
    IccAsgi1r,
    /// ICC_SGI0R_EL1: group 0 SGI.
    IccSgi0r,
    /// ACTLR_EL1 (trapped by HCR_EL2.TACR): reads what the hardware holds
    /// (as KVM and Xen answer), writes are ignored, so no guest changes
    /// the CPU's IMPLEMENTATION DEFINED behaviour or leaves state in it.
    Actlr,
    /// The RAS error record registers (ERRIDR_EL1, ERRSELR_EL1, ERX*_EL1;
    /// trapped by HCR_EL2.TERR where the CPU has RAS): RAZ/WI, so a guest
    /// sees no error records (ERRIDR_EL1.NUM = 0).
    ErrorRecord,
    Other,
}

impl SysRegAccess {
    /// Decodes the ISS of an EC 0x18 syndrome.
    pub fn decode(esr: u64) -> SysRegAccess {
        SysRegAccess {
            op0: ((esr >> 20) & 3) as u8,
            op2: ((esr >> 17) & 7) as u8,
            op1: ((esr >> 14) & 7) as u8,
            crn: ((esr >> 10) & 0xf) as u8,
            rt: ((esr >> 5) & 0x1f) as u8,
            crm: ((esr >> 1) & 0xf) as u8,
            read: esr & 1 != 0,
        }
    }

    pub fn reg(&self) -> SysReg {
        match (self.op0, self.op1, self.crn, self.crm, self.op2) {
            (3, 0, 12, 11, 5) => SysReg::IccSgi1r,
            (3, 1, 12, 11, 6) => SysReg::IccAsgi1r,
            (3, 2, 12, 11, 7) => SysReg::IccSgi0r,
            (3, 0, 1, 0, 1) => SysReg::Actlr,
            (3, 0, 5, 3..=5, _) => SysReg::ErrorRecord,
            _ => SysReg::Other,
        }
    }
}

impl core::fmt::Display for SysRegAccess {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} S{}_{}_C{}_C{}_{}",
            if self.read { "mrs" } else { "msr" },
            self.op0,
            self.op1,
            self.crn,
            self.crm,
            self.op2
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ISS of `msr <reg>, x<rt>` (or mrs) as the architecture lays it out.
    fn iss(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64, rt: u64, read: bool) -> u64 {
        (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (rt << 5) | (crm << 1) | read as u64
    }

    #[test]
    fn actlr_and_error_records_decode() {
        let reg = |op0, op1, crn, crm, op2| {
            SysRegAccess::decode((0x18 << 26) | iss(op0, op1, crn, crm, op2, 0, true)).reg()
        };
        assert_eq!(reg(3, 0, 1, 0, 1), SysReg::Actlr);
        assert_eq!(reg(3, 0, 1, 0, 0), SysReg::Other, "SCTLR_EL1");
        assert_eq!(reg(3, 0, 5, 3, 0), SysReg::ErrorRecord, "ERRIDR_EL1");
        assert_eq!(reg(3, 0, 5, 3, 1), SysReg::ErrorRecord, "ERRSELR_EL1");
        assert_eq!(reg(3, 0, 5, 4, 2), SysReg::ErrorRecord, "ERXSTATUS_EL1");
        assert_eq!(reg(3, 0, 5, 5, 1), SysReg::ErrorRecord, "ERXMISC1_EL1");
        assert_eq!(reg(3, 0, 5, 2, 0), SysReg::Other, "ESR_EL1");
        assert_eq!(reg(3, 0, 5, 6, 0), SysReg::Other, "TFSR_EL1");
        // IMPLEMENTATION DEFINED (CRn 11, 15): not emulated (UNDEF).
        assert_eq!(reg(3, 1, 15, 2, 0), SysReg::Other);
    }

    #[test]
    fn sgi_registers_decode() {
        let a = SysRegAccess::decode((0x18 << 26) | iss(3, 0, 12, 11, 5, 7, false));
        assert_eq!(a.reg(), SysReg::IccSgi1r);
        assert_eq!((a.rt, a.read), (7, false));
        assert_eq!(
            SysRegAccess::decode(iss(3, 1, 12, 11, 6, 0, false)).reg(),
            SysReg::IccAsgi1r
        );
        assert_eq!(
            SysRegAccess::decode(iss(3, 2, 12, 11, 7, 0, false)).reg(),
            SysReg::IccSgi0r
        );
    }

    #[test]
    fn others_are_other_and_print_generically() {
        let a = SysRegAccess::decode(iss(3, 0, 12, 12, 5, 1, true)); // ICC_SRE_EL1
        assert_eq!(a.reg(), SysReg::Other);
        assert_eq!(a.to_string(), "mrs S3_0_C12_C12_5");
    }
}
