//! vCPU state at EL2: the hypervisor configuration register, the EL1
//! system registers of a guest CPU, and entering a guest.
//!
//! HCR_EL2 choices: VM (stage 2 on), SWIO, FMO/IMO/AMO (physical
//! interrupts and SErrors come to EL2; guests see the virtual ones), TSC
//! (SMC traps, so PSCI over SMC is emulated too), RW (AArch64 EL1), and
//! APK/API (pointer authentication) and ATA (MTE tags) where the CPU has
//! them, so a guest can use every feature its ID registers advertise.
//! TWI and TWE are clear: each vCPU owns its pCPU (static partitioning),
//! so a guest WFI idles the real CPU directly. That still wakes correctly
//! for virtual interrupts: a pending list register wakes the WFI, and
//! anything posted from elsewhere arrives as a physical kick SGI, which
//! wakes the CPU, traps to EL2 and refills the list registers.
//!
//! The guest's registers stay live in the CPU between traps (nothing else
//! runs on its pCPU), so SVE/SME/FP state needs no switching: CPTR_EL2
//! traps none of it, and ZCR_EL2/SMCR_EL2 allow the largest vector length.

use super::exception::TrapFrame;
use core::arch::asm;
use dtvisor::emul::inject;

pub const HCR_VM: u64 = 1 << 0;
pub const HCR_SWIO: u64 = 1 << 1;
pub const HCR_FMO: u64 = 1 << 3;
pub const HCR_IMO: u64 = 1 << 4;
pub const HCR_AMO: u64 = 1 << 5;
pub const HCR_TSC: u64 = 1 << 19;
pub const HCR_RW: u64 = 1 << 31;
pub const HCR_APK: u64 = 1 << 40;
pub const HCR_API: u64 = 1 << 41;
pub const HCR_ATA: u64 = 1 << 56;
pub const HCR_GUEST: u64 = HCR_VM | HCR_SWIO | HCR_FMO | HCR_IMO | HCR_AMO | HCR_TSC | HCR_RW;

/// Feature fields of the ID registers that decide trap settings.
struct Features {
    sve: bool,
    sme: bool,
    sme_fa64: bool,
    pauth: bool,
    mte2: bool,
    pmu_counters: Option<u64>,
}

fn features() -> Features {
    let pfr0 = sysreg!(read "id_aa64pfr0_el1");
    let pfr1 = sysreg!(read "id_aa64pfr1_el1");
    let isar1 = sysreg!(read "id_aa64isar1_el1");
    let isar2 = sysreg!(read "s3_0_c0_c6_2"); // ID_AA64ISAR2_EL1
    let dfr0 = sysreg!(read "id_aa64dfr0_el1");
    let sme = (pfr1 >> 24) & 0xf != 0;
    let pmuver = (dfr0 >> 8) & 0xf;
    Features {
        sve: (pfr0 >> 32) & 0xf != 0,
        sme,
        sme_fa64: sme && sysreg!(read "s3_0_c0_c4_5") >> 63 != 0, // ID_AA64SMFR0_EL1.FA64
        // ISAR1 APA, API, GPA, GPI; ISAR2 GPA3, APA3.
        pauth: isar1 & 0xff00_0ff0 != 0 || isar2 & 0xff00 != 0,
        mte2: (pfr1 >> 8) & 0xf >= 2,
        // PMUv3 implemented (not 0, not IMPLEMENTATION DEFINED 0xf): PMCR_EL0.N.
        pmu_counters: (pmuver != 0 && pmuver != 0xf)
            .then(|| (sysreg!(read "pmcr_el0") >> 11) & 0x1f),
    }
}

/// SPSR for entering EL1h with D, A, I, F masked (Linux boot protocol).
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

macro_rules! sysreg {
    (read $r:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
        v
    }};
    (write $r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: EL1/EL2 context registers of the guest being (re)loaded
        // on this CPU; none affects the hypervisor's own EL2 translation.
        unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), in(reg) v, options(nomem, nostack)) };
    }};
}
pub(crate) use sysreg;

/// CNTHCTL_EL2: the EL1 physical counter and timer not trapped; an event
/// stream from counter bit 15 (about 0.5 ms at 62.5 MHz) wakes idle WFE
/// loops.
pub fn timer_access_and_event_stream() {
    sysreg!(write "cnthctl_el2", 3 | (1 << 2) | (15 << 4));
}

/// CNTV_CTL_EL0 and CNTP_CTL_EL0 of the vCPU this pCPU runs (its EL1
/// timers stay live in the CPU between traps).
pub fn timer_controls() -> (u64, u64) {
    (sysreg!(read "cntv_ctl_el0"), sysreg!(read "cntp_ctl_el0"))
}

/// The EL1 (and EL0) system registers of one vCPU.
#[derive(Clone, Copy, Default)]
pub struct El1Regs {
    pub sctlr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
    pub mair: u64,
    pub amair: u64,
    pub vbar: u64,
    pub contextidr: u64,
    pub tpidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0: u64,
    pub afsr1: u64,
    pub par: u64,
    pub cpacr: u64,
    pub csselr: u64,
    pub cntkctl: u64,
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
    pub cntp_ctl: u64,
    pub cntp_cval: u64,
    pub vmpidr: u64,
}

impl El1Regs {
    /// Architectural reset values for a CPU entered per the Linux boot
    /// protocol: MMU and caches off, FP allowed, timer disabled.
    pub fn reset(vmpidr: u64) -> Self {
        El1Regs {
            sctlr: 0x30d0_0800, // RES1 bits; M, C, I clear
            cpacr: 3 << 20,     // FP/SIMD not trapped
            vmpidr,
            ..Default::default()
        }
    }

    /// Loads this context into the CPU's EL1 registers.
    pub fn load(&self) {
        sysreg!(write "sctlr_el1", self.sctlr);
        sysreg!(write "ttbr0_el1", self.ttbr0);
        sysreg!(write "ttbr1_el1", self.ttbr1);
        sysreg!(write "tcr_el1", self.tcr);
        sysreg!(write "mair_el1", self.mair);
        sysreg!(write "amair_el1", self.amair);
        sysreg!(write "vbar_el1", self.vbar);
        sysreg!(write "contextidr_el1", self.contextidr);
        sysreg!(write "tpidr_el1", self.tpidr_el1);
        sysreg!(write "tpidr_el0", self.tpidr_el0);
        sysreg!(write "tpidrro_el0", self.tpidrro_el0);
        sysreg!(write "sp_el0", self.sp_el0);
        sysreg!(write "sp_el1", self.sp_el1);
        sysreg!(write "elr_el1", self.elr_el1);
        sysreg!(write "spsr_el1", self.spsr_el1);
        sysreg!(write "esr_el1", self.esr_el1);
        sysreg!(write "far_el1", self.far_el1);
        sysreg!(write "afsr0_el1", self.afsr0);
        sysreg!(write "afsr1_el1", self.afsr1);
        sysreg!(write "par_el1", self.par);
        sysreg!(write "cpacr_el1", self.cpacr);
        sysreg!(write "csselr_el1", self.csselr);
        sysreg!(write "cntkctl_el1", self.cntkctl);
        sysreg!(write "cntv_cval_el0", self.cntv_cval);
        sysreg!(write "cntv_ctl_el0", self.cntv_ctl);
        sysreg!(write "cntp_cval_el0", self.cntp_cval);
        sysreg!(write "cntp_ctl_el0", self.cntp_ctl);
        sysreg!(write "vmpidr_el2", self.vmpidr);
    }

    /// Saves the CPU's EL1 registers (for a future scheduler or migration).
    #[allow(dead_code)]
    pub fn save(&mut self) {
        self.sctlr = sysreg!(read "sctlr_el1");
        self.ttbr0 = sysreg!(read "ttbr0_el1");
        self.ttbr1 = sysreg!(read "ttbr1_el1");
        self.tcr = sysreg!(read "tcr_el1");
        self.mair = sysreg!(read "mair_el1");
        self.amair = sysreg!(read "amair_el1");
        self.vbar = sysreg!(read "vbar_el1");
        self.contextidr = sysreg!(read "contextidr_el1");
        self.tpidr_el1 = sysreg!(read "tpidr_el1");
        self.tpidr_el0 = sysreg!(read "tpidr_el0");
        self.tpidrro_el0 = sysreg!(read "tpidrro_el0");
        self.sp_el0 = sysreg!(read "sp_el0");
        self.sp_el1 = sysreg!(read "sp_el1");
        self.elr_el1 = sysreg!(read "elr_el1");
        self.spsr_el1 = sysreg!(read "spsr_el1");
        self.esr_el1 = sysreg!(read "esr_el1");
        self.far_el1 = sysreg!(read "far_el1");
        self.afsr0 = sysreg!(read "afsr0_el1");
        self.afsr1 = sysreg!(read "afsr1_el1");
        self.par = sysreg!(read "par_el1");
        self.cpacr = sysreg!(read "cpacr_el1");
        self.csselr = sysreg!(read "csselr_el1");
        self.cntkctl = sysreg!(read "cntkctl_el1");
        self.cntv_ctl = sysreg!(read "cntv_ctl_el0");
        self.cntp_cval = sysreg!(read "cntp_cval_el0");
        self.cntp_ctl = sysreg!(read "cntp_ctl_el0");
        self.cntv_cval = sysreg!(read "cntv_cval_el0");
        self.vmpidr = sysreg!(read "vmpidr_el2");
    }
}

/// EL2 settings for running guests on this CPU: trap configuration,
/// timers, and the domain's stage-2 (VTCR/VTTBR with its VMID).
/// `cntvoff` is the domain's virtual counter offset.
pub fn configure_el2(vtcr: u64, vttbr: u64, cntvoff: u64) {
    let f = features();
    sysreg!(write "vpidr_el2", sysreg!(read "midr_el1"));
    // CPTR_EL2 (no VHE): RES1 bits 0-7, 9, 13; TZ (8) and TSM (12) are
    // RES1 too where SVE or SME is absent, and clear (no trap) otherwise.
    // TFP, TTA, TAM, TCPAC clear: FP/SIMD, trace, AMU, CPACR not trapped.
    let cptr = 0x22ff | ((!f.sve as u64) << 8) | ((!f.sme as u64) << 12);
    sysreg!(write "cptr_el2", cptr);
    // SAFETY: a barrier, so ZCR/SMCR below are not trapped.
    unsafe { asm!("isb", options(nostack)) };
    if f.sve {
        sysreg!(write "s3_4_c1_c2_0", 0xf); // ZCR_EL2.LEN: the largest vector length
    }
    if f.sme {
        // SMCR_EL2: the largest streaming vector length; FA64 where offered.
        sysreg!(write "s3_4_c1_c2_6", 0xf | ((f.sme_fa64 as u64) << 31));
    }
    // MDCR_EL2.HPMN = every counter to EL1 (HPMN = 0 is UNPREDICTABLE
    // without FEAT_HPMN0); no debug or PMU traps.
    sysreg!(write "mdcr_el2", f.pmu_counters.unwrap_or(0));
    timer_access_and_event_stream();
    sysreg!(write "cntvoff_el2", cntvoff);
    sysreg!(write "vtcr_el2", vtcr);
    sysreg!(write "vttbr_el2", vttbr);
    let mut hcr = HCR_GUEST;
    if f.pauth {
        hcr |= HCR_APK | HCR_API;
    }
    if f.mte2 {
        hcr |= HCR_ATA;
    }
    sysreg!(write "hcr_el2", hcr);
    // SAFETY: barriers and invalidation of this VMID's stage-1+2 TLB
    // entries (VTTBR selects the VMID) have no memory effects.
    unsafe { asm!("isb", "tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
}

unsafe extern "C" {
    fn enter_guest(frame: *const TrapFrame) -> !;
}

/// Enters the guest at `entry` (EL1h, MMU off, DAIF masked) with
/// `x0 = arg`. The frame is built at the top of this CPU's stack.
pub fn run(entry: u64, arg: u64, stack_top: u64) -> ! {
    let frame_addr = (stack_top - core::mem::size_of::<TrapFrame>() as u64) & !15;
    let frame = frame_addr as *mut TrapFrame;
    // SAFETY: the top of this CPU's own stack is unused once we switch to
    // it in enter_guest; the frame is fully written before the eret.
    unsafe {
        core::ptr::write_bytes(frame, 0, 1);
        (*frame).x[0] = arg;
        (*frame).elr = entry;
        (*frame).spsr = SPSR_EL1H_MASKED;
        enter_guest(frame)
    }
}

/// Makes the guest take a synchronous exception to its EL1 vector: `esr`
/// and `far` as given, ELR/SPSR the interrupted state in `frame`, and the
/// PSTATE the architecture gives on entry (`emul::inject`).
pub fn inject_sync(frame: &mut TrapFrame, esr: u64, far: u64) {
    let vbar = sysreg!(read "vbar_el1");
    let sctlr = sysreg!(read "sctlr_el1");
    let mte = (sysreg!(read "id_aa64pfr1_el1") >> 8) & 0xf != 0;
    sysreg!(write "elr_el1", frame.elr);
    sysreg!(write "spsr_el1", frame.spsr);
    sysreg!(write "esr_el1", esr);
    sysreg!(write "far_el1", far);
    frame.elr = vbar + inject::sync_vector(frame.spsr);
    frame.spsr = inject::entry_pstate(frame.spsr, sctlr, mte);
}

/// Whether the trapped instruction came from guest EL1 (else EL0).
pub fn from_el1(frame: &TrapFrame) -> bool {
    (frame.spsr >> 2) & 3 == 1
}
