//! Does the GIC's virtual CPU interface reach the CPU? A probe at boot:
//! with one list register pending and the virtual interface open, a few
//! instructions run at EL1 with IRQs unmasked; either the virtual IRQ is
//! taken (its vector calls `hvc #0xd1`) or the loop ends (`hvc #0xd0`).
//!
//! Why: a GIC whose virtual IRQ output is not wired to the CPU never
//! interrupts a guest, and nothing else says so (QEMU 10.0.2's
//! `imx8mp-evk` is built that way; QEMU 10.0.3 wires it). Such a machine
//! still runs guests if the hypervisor raises the virtual IRQ itself with
//! HCR_EL2.VI while a list register is pending (the run-time's
//! `Settings::virq_by_hcr`). Written in assembly because it leaves EL2
//! and comes back through a vector table of its own: no crate does this.

use aarch64_cpu::registers::{Readable, HCR_EL2};

core::arch::global_asm!(
    r#"
.section .text.virq_probe, "ax"
.balign 2048
virq_probe_el1_vectors:
// IRQ entries (SP0 and SPx, current EL): 0xd1; anything else: 0xdf.
.org virq_probe_el1_vectors + 0x000
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x080
    hvc     #0xd1
    b       .
.org virq_probe_el1_vectors + 0x100
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x180
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x200
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x280
    hvc     #0xd1
    b       .
.org virq_probe_el1_vectors + 0x300
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x380
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x400
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x480
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x500
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x580
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x600
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x680
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x700
    hvc     #0xdf
    b       .
.org virq_probe_el1_vectors + 0x780
    hvc     #0xdf
    b       .

.balign 2048
virq_probe_el2_vectors:
// The lower-EL synchronous entry records ESR_EL2; any other: no answer.
.org virq_probe_el2_vectors + 0x000
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x080
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x100
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x180
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x200
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x280
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x300
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x380
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x400    // synchronous, from EL1 (AArch64)
    mrs     x0, esr_el2
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x480
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x500
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x580
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x600
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x680
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x700
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x780
    mov     x0, xzr
    b       virq_probe_back
.org virq_probe_el2_vectors + 0x800

virq_probe_el1_code:
    msr     daifclr, #2
    isb
    mov     x1, #4096
1:  subs    x1, x1, #1
    b.ne    1b
    hvc     #0xd0
    b       .

// x0: HCR_EL2 for the probe. Returns ESR_EL2 of the call that ended it
// (0: an exception that was not an HVC).
.global dtv_virq_probe
dtv_virq_probe:
    stp     x29, x30, [sp, #-112]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    mrs     x9, vbar_el2
    mrs     x10, hcr_el2
    stp     x9, x10, [sp, #96]
    mov     x9, sp
    msr     tpidrro_el0, x9             // the way back (EL1 cannot write it)
    msr     hcr_el2, x0
    ldr     x9, =0x30d00800             // SCTLR_EL1: MMU and caches off
    msr     sctlr_el1, x9
    adr     x9, virq_probe_el2_vectors
    msr     vbar_el2, x9
    adr     x9, virq_probe_el1_vectors
    msr     vbar_el1, x9
    adr     x9, virq_probe_el1_code
    msr     elr_el2, x9
    mov     x9, #0x3c5                  // EL1h, DAIF masked
    msr     spsr_el2, x9
    isb
    eret

virq_probe_back:
    mrs     x9, tpidrro_el0
    mov     sp, x9
    msr     tpidrro_el0, xzr
    ldp     x9, x10, [sp, #96]
    msr     vbar_el2, x9
    msr     hcr_el2, x10
    isb
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #112
    ret
.ltorg
.section .text
"#
);

unsafe extern "C" {
    fn dtv_virq_probe(hcr: u64) -> u64;
}

/// What the probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virq {
    /// The pending list register interrupted EL1.
    Wired,
    /// EL1 ran on with IRQs unmasked and was never interrupted.
    NotWired,
    /// Something else ended the probe (a physical interrupt): unknown.
    Unknown,
}

/// Runs the probe on this pCPU. The caller has made one list register
/// pending and opened the virtual interface; it resets the interface
/// afterwards. EL1's SCTLR and VBAR are left for the next vCPU start to
/// load.
pub fn probe() -> Virq {
    const VM: u64 = 1 << 0;
    const FMO: u64 = 1 << 3;
    const IMO: u64 = 1 << 4;
    const AMO: u64 = 1 << 5;
    const VI: u64 = 1 << 7;
    const RW: u64 = 1 << 31;
    // EL1 in AArch64, no stage 2 (EL1 runs the image's own code, MMU
    // off), physical interrupts to EL2, no virtual IRQ forced.
    let hcr = (HCR_EL2.get() & !(VM | VI)) | FMO | IMO | AMO | RW;
    // SAFETY: the probe leaves EL2 for a few instructions of its own at
    // EL1 and comes back through its own vectors, restoring SP, VBAR_EL2,
    // HCR_EL2 and the callee-saved registers; DAIF at EL2 is masked
    // throughout (the EL2 vectors only record ESR).
    let esr = unsafe { dtv_virq_probe(hcr) };
    const EC_HVC64: u64 = 0x16;
    if (esr >> 26) & 0x3f != EC_HVC64 {
        return Virq::Unknown;
    }
    match esr & 0xffff {
        0xd1 => Virq::Wired,
        0xd0 => Virq::NotWired,
        _ => Virq::Unknown,
    }
}
