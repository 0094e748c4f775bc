//! vCPU state at EL2: the hypervisor configuration register, the EL1
//! system registers of a guest CPU, and entering a guest.
//!
//! The EL2 control registers (HCR_EL2, MDCR_EL2, CPTR_EL2, the
//! fine-grained traps, ...) are decided in `dtvisor::hw::el2cfg` from the
//! CPU's ID registers and written here. TWI and TWE are clear: each vCPU
//! owns its pCPU (static partitioning), so a guest WFI idles the real CPU
//! directly. That still wakes correctly for virtual interrupts: a pending
//! list register wakes the WFI, and anything posted from elsewhere
//! arrives as a physical kick SGI, which wakes the CPU, traps to EL2 and
//! refills the list registers.
//!
//! The guest's registers stay live in the CPU between traps (nothing else
//! runs on its pCPU), so SVE/SME/FP state needs no switching: CPTR_EL2
//! traps none of it, and ZCR_EL2/SMCR_EL2 allow the largest vector length.

use super::exception::TrapFrame;
use core::arch::asm;
use dtvisor::emul::inject;
use dtvisor::hw::cpufeat::{Features, IdRegs};
use dtvisor::hw::el2cfg;

/// This CPU's ID registers, raw (decoded by `dtvisor::hw::cpufeat`).
pub fn id_regs() -> IdRegs {
    IdRegs {
        midr: sysreg!(read "midr_el1"),
        pfr0: sysreg!(read "id_aa64pfr0_el1"),
        pfr1: sysreg!(read "id_aa64pfr1_el1"),
        dfr0: sysreg!(read "id_aa64dfr0_el1"),
        isar1: sysreg!(read "id_aa64isar1_el1"),
        isar2: sysreg!(read "s3_0_c0_c6_2"), // ID_AA64ISAR2_EL1
        mmfr0: sysreg!(read "id_aa64mmfr0_el1"),
        mmfr1: sysreg!(read "id_aa64mmfr1_el1"),
        mmfr2: sysreg!(read "id_aa64mmfr2_el1"),
        mmfr3: sysreg!(read "s3_0_c0_c7_3"), // ID_AA64MMFR3_EL1
        smfr0: sysreg!(read "s3_0_c0_c4_5"), // ID_AA64SMFR0_EL1
    }
}

fn features() -> Features {
    Features::from_ids(&id_regs())
}

/// PMCR_EL0.N: the event counters of this CPU's PMUv3 (with one).
fn pmu_counters(f: &Features) -> Option<u64> {
    f.pmu().then(|| (sysreg!(read "pmcr_el0") >> 11) & 0x1f)
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

/// Clears what one life of a vCPU could leave in its pCPU for the next
/// (a domain's restart, a vCPU's CPU_ON after CPU_OFF): FP/SIMD and
/// FPCR/FPSR; SVE Z, P and FFR, ZCR_EL1; SME streaming mode, ZA and ZT0
/// (SMSTOP), SMCR_EL1, SMPRI_EL1, TPIDR2_EL0; pointer-authentication
/// keys; MTE's GCR, RGSR, TFSR and TFSRE0; the PMU's counters, their
/// configuration and enables; breakpoints, watchpoints and MDSCR_EL1;
/// SCXTNUM. The EL1 context proper is `El1Regs::reset`.
/// ACTLR_EL1 and the IMPLEMENTATION DEFINED registers hold no guest
/// state: HCR_EL2.TACR and TIDCP trap them (ACTLR_EL1 reads only, the
/// others UNDEF).
pub fn clear_cpu_state() {
    let f = features();
    if f.sme {
        clear_sme();
    }
    clear_fp_simd();
    if f.sve {
        clear_sve();
    }
    if f.pauth {
        clear_pauth_keys();
    }
    if f.mte2 {
        sysreg!(write "s3_0_c1_c0_6", 0); // GCR_EL1
        sysreg!(write "s3_0_c1_c0_5", 0); // RGSR_EL1
        sysreg!(write "s3_0_c5_c6_0", 0); // TFSR_EL1
        sysreg!(write "s3_0_c5_c6_1", 0); // TFSRE0_EL1
    }
    if f.scxtnum {
        sysreg!(write "s3_0_c13_c0_7", 0); // SCXTNUM_EL1
        sysreg!(write "s3_3_c13_c0_7", 0); // SCXTNUM_EL0
    }
    if let Some(n) = pmu_counters(&f) {
        // Counters reset (P, C), disabled; no overflow, interrupt or
        // EL0 access; every event type and filter cleared.
        sysreg!(write "pmcr_el0", 0b110);
        sysreg!(write "pmcntenclr_el0", !0);
        sysreg!(write "pmintenclr_el1", !0);
        sysreg!(write "pmovsclr_el0", !0);
        sysreg!(write "pmuserenr_el0", 0);
        sysreg!(write "pmccfiltr_el0", 0);
        for i in 0..n {
            sysreg!(write "pmselr_el0", i);
            sysreg!(write "pmxevtyper_el0", 0);
        }
        sysreg!(write "pmselr_el0", 0);
        sysreg!(write "pmcr_el0", 0);
    }
    clear_debug(f.brps, f.wrps);
}

/// SME: streaming mode off, ZA (and ZT0) disabled, SMCR_EL1, SMPRI_EL1,
/// TPIDR2_EL0 zeroed.
fn clear_sme() {
    // SAFETY: SMSTOP leaves streaming mode and disables ZA (and ZT0):
    // their contents are gone; the Advanced SIMD instructions below
    // are legal again.
    unsafe { asm!(".arch_extension sme", "smstop", options(nostack)) };
    sysreg!(write "s3_0_c1_c2_6", 0); // SMCR_EL1
    sysreg!(write "s3_0_c1_c2_4", 0); // SMPRI_EL1
    sysreg!(write "s3_3_c13_c0_5", 0); // TPIDR2_EL0
}

/// The FP/SIMD registers, FPCR and FPSR.
fn clear_fp_simd() {
    // SAFETY: EL2 may use FP/SIMD (CPTR_EL2.TFP clear); zeroing the
    // vector registers (and, with SVE, the Z registers' upper bits, which
    // an Advanced SIMD write zeroes) and the FP control and status.
    unsafe {
        asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "msr fpcr, xzr",
            "msr fpsr, xzr",
            "movi v0.16b, #0",
            "movi v1.16b, #0",
            "movi v2.16b, #0",
            "movi v3.16b, #0",
            "movi v4.16b, #0",
            "movi v5.16b, #0",
            "movi v6.16b, #0",
            "movi v7.16b, #0",
            "movi v8.16b, #0",
            "movi v9.16b, #0",
            "movi v10.16b, #0",
            "movi v11.16b, #0",
            "movi v12.16b, #0",
            "movi v13.16b, #0",
            "movi v14.16b, #0",
            "movi v15.16b, #0",
            "movi v16.16b, #0",
            "movi v17.16b, #0",
            "movi v18.16b, #0",
            "movi v19.16b, #0",
            "movi v20.16b, #0",
            "movi v21.16b, #0",
            "movi v22.16b, #0",
            "movi v23.16b, #0",
            "movi v24.16b, #0",
            "movi v25.16b, #0",
            "movi v26.16b, #0",
            "movi v27.16b, #0",
            "movi v28.16b, #0",
            "movi v29.16b, #0",
            "movi v30.16b, #0",
            "movi v31.16b, #0",
            options(nostack, nomem)
        )
    };
}

/// SVE: the predicate registers, FFR and ZCR_EL1 (the Z registers'
/// upper bits went with the SIMD registers).
fn clear_sve() {
    // SAFETY: SVE not trapped at EL2 (CPTR_EL2.TZ clear); the
    // predicate registers and FFR zeroed.
    unsafe {
        asm!(
            ".arch_extension sve",
            "pfalse p0.b",
            "wrffr p0.b",
            "pfalse p1.b",
            "pfalse p2.b",
            "pfalse p3.b",
            "pfalse p4.b",
            "pfalse p5.b",
            "pfalse p6.b",
            "pfalse p7.b",
            "pfalse p8.b",
            "pfalse p9.b",
            "pfalse p10.b",
            "pfalse p11.b",
            "pfalse p12.b",
            "pfalse p13.b",
            "pfalse p14.b",
            "pfalse p15.b",
            options(nostack, nomem)
        )
    };
    sysreg!(write "s3_0_c1_c2_0", 0); // ZCR_EL1
}

/// The pointer-authentication keys.
fn clear_pauth_keys() {
    sysreg!(write "s3_0_c2_c1_0", 0); // APIAKeyLo_EL1
    sysreg!(write "s3_0_c2_c1_1", 0);
    sysreg!(write "s3_0_c2_c1_2", 0); // APIBKey
    sysreg!(write "s3_0_c2_c1_3", 0);
    sysreg!(write "s3_0_c2_c2_0", 0); // APDAKey
    sysreg!(write "s3_0_c2_c2_1", 0);
    sysreg!(write "s3_0_c2_c2_2", 0); // APDBKey
    sysreg!(write "s3_0_c2_c2_3", 0);
    sysreg!(write "s3_0_c2_c3_0", 0); // APGAKey
    sysreg!(write "s3_0_c2_c3_1", 0);
}

/// Breakpoints and watchpoints (`brps`, `wrps` of them), MDSCR_EL1 and
/// the debug communications interrupt enable. (The claim tags are an
/// external debugger's, and QEMU does not implement them.)
fn clear_debug(brps: u8, wrps: u8) {
    // Each register by name (the encoding carries n): written directly.
    macro_rules! clear {
        ($count:expr, $ctl:literal, $val:literal, $($n:literal),*) => {$(
            if $n < $count {
                // SAFETY: a debug register of the guest's EL1 context.
                unsafe {
                    asm!(
                        concat!("msr ", $ctl, $n, "_el1, xzr"),
                        concat!("msr ", $val, $n, "_el1, xzr"),
                        options(nostack, nomem)
                    )
                };
            }
        )*};
    }
    clear!(brps, "dbgbcr", "dbgbvr", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    clear!(wrps, "dbgwcr", "dbgwvr", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    sysreg!(write "mdscr_el1", 0);
    sysreg!(write "mdccint_el1", 0);
}

/// Writes every EL2 control register `dtvisor::hw::el2cfg` decides for
/// this CPU (nothing is left as firmware set it). Each CPU does this at
/// boot, and again before each vCPU start.
pub fn write_el2_controls() {
    let f = features();
    let c = el2cfg::guest_config(&f, pmu_counters(&f));
    sysreg!(write "vpidr_el2", sysreg!(read "midr_el1"));
    sysreg!(write "cptr_el2", c.cptr);
    // SAFETY: a barrier, so ZCR/SMCR below are not trapped.
    unsafe { asm!("isb", options(nostack)) };
    if let Some(v) = c.zcr {
        sysreg!(write "s3_4_c1_c2_0", v); // ZCR_EL2
    }
    if let Some(v) = c.smcr {
        sysreg!(write "s3_4_c1_c2_6", v); // SMCR_EL2
    }
    sysreg!(write "mdcr_el2", c.mdcr);
    if let Some(v) = c.hcrx {
        sysreg!(write "s3_4_c1_c2_2", v); // HCRX_EL2
    }
    if let Some(g) = c.fgt {
        sysreg!(write "s3_4_c1_c1_4", g.hfgrtr); // HFGRTR_EL2
        sysreg!(write "s3_4_c1_c1_5", g.hfgwtr); // HFGWTR_EL2
        sysreg!(write "s3_4_c1_c1_6", g.hfgitr); // HFGITR_EL2
        sysreg!(write "s3_4_c3_c1_4", g.hdfgrtr); // HDFGRTR_EL2
        sysreg!(write "s3_4_c3_c1_5", g.hdfgwtr); // HDFGWTR_EL2
        if let Some(v) = g.hafgrtr {
            sysreg!(write "s3_4_c3_c1_6", v); // HAFGRTR_EL2
        }
    }
    if let Some(v) = c.mpam2 {
        sysreg!(write "s3_4_c10_c5_0", v); // MPAM2_EL2
    }
    if let Some(v) = c.pmscr {
        sysreg!(write "s3_4_c9_c9_0", v); // PMSCR_EL2
    }
    if let Some(v) = c.trfcr {
        sysreg!(write "s3_4_c1_c2_1", v); // TRFCR_EL2
    }
    timer_access_and_event_stream();
    sysreg!(write "hcr_el2", c.hcr);
    // SAFETY: a barrier: the new controls apply from here.
    unsafe { asm!("isb", options(nostack)) };
}

/// HCR_EL2.VI: a virtual IRQ pending for the guest on this CPU, whatever
/// the GIC signals (`Hw::set_virtual_irq`).
pub fn set_virtual_irq(on: bool) {
    const VI: u64 = 1 << 7;
    let hcr = sysreg!(read "hcr_el2");
    let want = if on { hcr | VI } else { hcr & !VI };
    if want != hcr {
        sysreg!(write "hcr_el2", want);
    }
}

/// EL2 settings for running guests on this CPU: the control registers
/// (`write_el2_controls`), and the domain's stage-2 (VTCR/VTTBR with its
/// VMID) and virtual counter offset `cntvoff`.
pub fn configure_el2(vtcr: u64, vttbr: u64, cntvoff: u64) {
    write_el2_controls();
    sysreg!(write "cntvoff_el2", cntvoff);
    sysreg!(write "vtcr_el2", vtcr);
    sysreg!(write "vttbr_el2", vttbr);
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
