//! Guard rails over the source tree: no new static with mutable state.
//!
//! The run-time's state is one object (`dtvisor::rt::Runtime`) kept in a
//! single static by the image; what else is static is hardware and
//! service state (drivers, console, heap). This test is a ratchet: a static that
//! is not listed below fails it (put the state in a structure that is
//! passed down, or, if it must be a static, list it here with the reason),
//! and so does a listed one that no longer exists (the list only shrinks).
//! Constant tables (`static NAME: [T; N] = ...` of plain data) are listed
//! too: the scanner does not tell them apart, and they cost nothing to
//! name.

use std::collections::BTreeSet;
mod common;

use common::rust_files;
use std::path::Path;

/// `file:NAME` of every static allowed today.
const ALLOWED: &[&str] = &[
    // Constant tables of the parser.
    "src/config/props.rs:PROPS",
    "src/config/props.rs:DOM0LESS",
    "src/config/props.rs:HYPERLAUNCH",
    "src/config/props.rs:MODULE_KINDS",
    "src/config/props.rs:UNSUPPORTED_CHILDREN",
    // The EFI stub's state while firmware runs it.
    "src/efi.rs:ACTIVE",
    // Per-CPU and boot-time hardware state (set once, read by every CPU).
    "src/arch/aarch64/mmu.rs:POOL",
    "src/arch/aarch64/smp.rs:MMU",
    // The spin-table entry finds its index here with the MMU off.
    "src/arch/aarch64/smp.rs:SPIN_MPIDRS",
    // Each secondary says it runs, so a silent one is reported.
    "src/arch/aarch64/smp.rs:ARRIVED",
    "src/arch/aarch64/spectre.rs:SPECTRE_ENTRY",
    "src/arch/aarch64/spectre.rs:PLANS",
    "src/arch/aarch64/spectre.rs:FIRMWARE",
    "src/arch/aarch64/exception.rs:IN_TRAP",
    "src/arch/aarch64/exception.rs:TRAP_ALLOCS",
    "src/arch/aarch64/exception.rs:LAST_ALLOC",
    "src/arch/aarch64/exception.rs:REPORTED",
    "src/arch/aarch64/gic/v2.rs:GIC",
    "src/arch/aarch64/gic/v2.rs:GICD",
    "src/arch/aarch64/gic/v2.rs:GICC",
    "src/arch/aarch64/gic/v2.rs:GICH",
    "src/arch/aarch64/gic/v2.rs:IFACE",
    "src/arch/aarch64/gic/v2.rs:MAINT",
    "src/arch/aarch64/gic/v3.rs:GIC",
    "src/arch/aarch64/gic/v3.rs:SGI_FRAME",
    "src/arch/aarch64/gic/v3.rs:GICR_BASE",
    "src/arch/aarch64/gic/v3.rs:GICD_BASE",
    "src/arch/aarch64/gic/v3.rs:REDISTS",
    // Services: console, heap, time.
    "src/console.rs:CONSOLE",
    "src/console.rs:LOCK",
    "src/console.rs:RX",
    "src/console.rs:LOCKS_OK",
    "src/console.rs:STAMPS",
    "src/console.rs:STAMPER",
    "src/console.rs:BEFORE_LINE",
    "src/console.rs:LOGGER",
    "src/heap.rs:HEAP",
    "src/heap.rs:SPARE",
    "src/heap.rs:SELFTEST_HEAP",
    "src/heap.rs:PEAK",
    "src/heap.rs:ALLOC",
    "src/time.rs:T_ENTRY",
    // The run-time object (one `Once`, built at boot, read by every CPU).
    "src/vmm.rs:RT",
];

/// `file:NAME` of every `static` item in `src/` outside tests (a line
/// starting with `static`, `pub static` or `pub(crate) static`).
fn statics() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut found = BTreeSet::new();
    for f in files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests sit at the end of a file, or in files of their own.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        if rel.ends_with("/tests.rs") || rel.contains("/tests_") || rel.contains("/tests/") {
            continue;
        }
        // Statics declared in `extern "C"` blocks are the linker's
        // symbols, not state.
        let mut in_extern = false;
        for line in code.lines() {
            let t = line.trim_start();
            if t.contains("extern \"C\" {") {
                in_extern = true;
                continue;
            }
            if in_extern {
                in_extern = t != "}";
                continue;
            }
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            let Some(rest) = t.strip_prefix("static ") else {
                continue;
            };
            let rest = rest.strip_prefix("mut ").unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(format!("{rel}:{name}"));
            }
        }
    }
    found
}

#[test]
fn no_new_static_outside_the_allowed_list() {
    let allowed: BTreeSet<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = statics().difference(&allowed).cloned().collect();
    assert!(
        new.is_empty(),
        "statics not in tests/guard_rails.rs's allowed list: {new:?}"
    );
}

#[test]
fn the_allowed_list_names_only_statics_that_exist() {
    let allowed: BTreeSet<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    let gone: Vec<_> = allowed.difference(&statics()).cloned().collect();
    assert!(
        gone.is_empty(),
        "listed statics that are gone (remove them from the list): {gone:?}"
    );
}

#[test]
fn no_static_mut() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            assert!(
                !(t.starts_with("static mut ") || t.starts_with("pub static mut ")),
                "{}:{}: `static mut` (use an atomic, a lock or a Once)",
                f.display(),
                n + 1
            );
        }
    }
}
