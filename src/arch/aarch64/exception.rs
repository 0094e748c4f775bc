//! EL2 exception entry: the trap frame and the report of an unexpected
//! exception (class in words, ESR, ELR, FAR, SPSR), after which that CPU
//! halts instead of looping on the same fault.

use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2};
use core::fmt::Write;

core::arch::global_asm!(include_str!("vectors.S"));

/// Registers saved by `vectors.S` (layout shared with the asm).
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
    _pad2: [u64; 2],
}

const KINDS: [&str; 16] = [
    "synchronous (EL2, SP0)",
    "IRQ (EL2, SP0)",
    "FIQ (EL2, SP0)",
    "SError (EL2, SP0)",
    "synchronous (EL2)",
    "IRQ (EL2)",
    "FIQ (EL2)",
    "SError (EL2)",
    "synchronous (lower EL, AArch64)",
    "IRQ (lower EL, AArch64)",
    "FIQ (lower EL, AArch64)",
    "SError (lower EL, AArch64)",
    "synchronous (lower EL, AArch32)",
    "IRQ (lower EL, AArch32)",
    "FIQ (lower EL, AArch32)",
    "SError (lower EL, AArch32)",
];

/// The exception class of an ESR, in words.
pub fn exception_class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC from AArch64",
        0x16 => "HVC from AArch64",
        0x17 => "SMC from AArch64",
        0x18 => "trapped system register access",
        0x19 => "trapped SVE access",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort at the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort at the same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other",
    }
}

/// Called by the vectors for every exception taken to EL2.
#[unsafe(no_mangle)]
extern "C" fn el2_exception(kind: u64, frame: &mut TrapFrame) {
    if let Some(handled) = crate::trap::handle(kind, frame) {
        if handled {
            return;
        }
    }
    let esr = ESR_EL2.get();
    let ec = (esr >> 26) & 0x3f;
    let far = FAR_EL2.get();
    let mut out = crate::console::PanicWriter;
    let _ = writeln!(
        out,
        "\r\ndtvisor: unexpected exception: {} on CPU {}\r\n  class {:#04x}: {}\r\n  ESR_EL2 {:#018x}  ELR_EL2 {:#018x}\r\n  FAR_EL2 {:#018x}  SPSR_EL2 {:#018x}\r\n  this CPU halts",
        KINDS.get(kind as usize).copied().unwrap_or("?"),
        super::cpu_index(),
        ec,
        exception_class_name(ec),
        esr,
        frame.elr,
        far,
        frame.spsr
    );
    super::halt();
}
