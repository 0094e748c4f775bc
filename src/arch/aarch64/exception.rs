//! EL2 exception entry: the vectors (`vectors.S`, which call the
//! `el2_exception` the trap layer defines), the trap frame, the count of
//! heap allocations on guest trap paths, and the report of an unexpected
//! exception (class in words, ESR, ELR, FAR, SPSR).

use super::boot::MAX_CPUS;
use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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

/// Whether each CPU is handling a guest's trap: the heap counts what is
/// allocated meanwhile (`trap_allocations`), which must be nothing. Set
/// and cleared by the CPU itself; a trap that does not return (the vCPU
/// stops) is ended by `idle`, through `trap_done`.
static IN_TRAP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Heap allocations made while some CPU handled a guest's trap.
static TRAP_ALLOCS: AtomicU32 = AtomicU32::new(0);

/// The trap (ESR_EL2, FAR_EL2) and size of the last allocation counted.
static LAST_ALLOC: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Counts a heap allocation of `size` bytes (the global allocator calls
/// this).
pub fn count_allocation(size: usize) {
    let cpu = super::cpu_index();
    if IN_TRAP.get(cpu).is_some_and(|t| t.load(Ordering::Relaxed)) {
        LAST_ALLOC[0].store(ESR_EL2.get(), Ordering::Relaxed);
        LAST_ALLOC[1].store(FAR_EL2.get(), Ordering::Relaxed);
        LAST_ALLOC[2].store(size as u64, Ordering::Relaxed);
        TRAP_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// This CPU no longer handles a guest's trap.
pub fn trap_done() {
    if let Some(t) = IN_TRAP.get(super::cpu_index()) {
        t.store(false, Ordering::Relaxed);
    }
}

/// Says so (rate limited: at 1, 2, 4, ...) when a trap path allocated.
fn report_trap_allocations() {
    static REPORTED: AtomicU32 = AtomicU32::new(0);
    let n = TRAP_ALLOCS.load(Ordering::Relaxed);
    if n == 0 {
        return;
    }
    let before = REPORTED.fetch_max(n, Ordering::Relaxed);
    if n > before && (before == 0 || n.ilog2() > before.ilog2()) {
        let [esr, far, size] = LAST_ALLOC.each_ref().map(|a| a.load(Ordering::Relaxed));
        log::error!(
            "{n} heap allocations on guest trap paths so far (a trap must not allocate: a bug); the last of {size} B in a trap with ESR_EL2 {esr:#x} FAR_EL2 {far:#x}"
        );
    }
}

/// A guest's trap (exception `kind` of the vectors' 16) begins on this
/// CPU: heap allocations from now to `trap_done` are counted.
pub fn trap_begins(kind: u64) {
    if (8..16).contains(&kind) {
        if let Some(t) = IN_TRAP.get(super::cpu_index()) {
            t.store(true, Ordering::Relaxed);
        }
    }
}

/// A guest's trap ended (it returns to the guest): the allocations it
/// made, if any, are reported.
pub fn trap_ends(kind: u64) {
    if (8..16).contains(&kind) {
        trap_done();
        report_trap_allocations();
    }
}

/// The report of an exception nothing handled: its kind, class, ESR_EL2,
/// ELR_EL2, FAR_EL2 and SPSR_EL2 (the caller writes it and halts).
pub struct Unexpected<'a> {
    pub kind: u64,
    pub frame: &'a TrapFrame,
}

impl core::fmt::Display for Unexpected<'_> {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let esr = ESR_EL2.get();
        let ec = (esr >> 26) & 0x3f;
        write!(
            out,
            "\r\ndtvisor: unexpected exception: {} on CPU {}\r\n  class {:#04x}: {}\r\n  ESR_EL2 {:#018x}  ELR_EL2 {:#018x}\r\n  FAR_EL2 {:#018x}  SPSR_EL2 {:#018x}\r\n  this CPU halts",
            KINDS.get(self.kind as usize).copied().unwrap_or("?"),
            super::cpu_index(),
            ec,
            exception_class_name(ec),
            esr,
            self.frame.elr,
            FAR_EL2.get(),
            self.frame.spsr
        )
    }
}
