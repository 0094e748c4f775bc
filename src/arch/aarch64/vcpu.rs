//! vCPU state at EL2: the hypervisor configuration register, the EL1
//! system registers of a guest CPU, and entering a guest.
//!
//! HCR_EL2 choices: VM (stage 2 on), SWIO, FMO/IMO/AMO (physical
//! interrupts and SErrors come to EL2; guests see the virtual ones), TSC
//! (SMC traps, so PSCI over SMC is emulated too), RW (AArch64 EL1). TWI and
//! TWE are clear: each vCPU owns its pCPU (static partitioning), so a guest
//! WFI idles the real CPU directly, with no trap on the way.

use super::exception::TrapFrame;
use core::arch::asm;

pub const HCR_VM: u64 = 1 << 0;
pub const HCR_SWIO: u64 = 1 << 1;
pub const HCR_FMO: u64 = 1 << 3;
pub const HCR_IMO: u64 = 1 << 4;
pub const HCR_AMO: u64 = 1 << 5;
pub const HCR_TSC: u64 = 1 << 19;
pub const HCR_RW: u64 = 1 << 31;
pub const HCR_GUEST: u64 = HCR_VM | HCR_SWIO | HCR_FMO | HCR_IMO | HCR_AMO | HCR_TSC | HCR_RW;

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
        self.cntv_cval = sysreg!(read "cntv_cval_el0");
        self.vmpidr = sysreg!(read "vmpidr_el2");
    }
}

/// EL2 settings for running guests on this CPU: trap configuration,
/// timers, and the domain's stage-2 (VTCR/VTTBR with its VMID).
pub fn configure_el2(vtcr: u64, vttbr: u64) {
    sysreg!(write "vpidr_el2", sysreg!(read "midr_el1"));
    sysreg!(write "cptr_el2", 0x33ff); // RES1 bits only: no FP/SIMD traps
    sysreg!(write "mdcr_el2", 0);
    // EL1 physical counter and timer not trapped; an event stream from
    // counter bit 15 (about 0.5 ms at 62.5 MHz) wakes idle WFE loops.
    sysreg!(write "cnthctl_el2", 3 | (1 << 2) | (15 << 4));
    sysreg!(write "cntvoff_el2", 0);
    sysreg!(write "vtcr_el2", vtcr);
    sysreg!(write "vttbr_el2", vttbr);
    sysreg!(write "hcr_el2", HCR_GUEST);
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
/// and `far` as given, ELR/SPSR the interrupted state in `frame`.
pub fn inject_sync(frame: &mut TrapFrame, esr: u64, far: u64) {
    let vbar = sysreg!(read "vbar_el1");
    let mode = frame.spsr & 0xf;
    let offset = match mode {
        0b0101 => 0x200, // EL1h: current EL with SP_ELx
        0b0100 => 0x000, // EL1t: current EL with SP_EL0
        _ => 0x400,      // EL0: lower EL, AArch64
    };
    sysreg!(write "elr_el1", frame.elr);
    sysreg!(write "spsr_el1", frame.spsr);
    sysreg!(write "esr_el1", esr);
    sysreg!(write "far_el1", far);
    frame.elr = vbar + offset;
    frame.spsr = SPSR_EL1H_MASKED;
}

/// Whether the trapped instruction came from guest EL1 (else EL0).
pub fn from_el1(frame: &TrapFrame) -> bool {
    (frame.spsr >> 2) & 3 == 1
}
