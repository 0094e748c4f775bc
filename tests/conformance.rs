//! The DTB conformance suite: every directory under tests/conformance has
//! an `input.dts` (compiled with dtc here) and either `expected.plan` (the
//! exact plan text) or `expected.errors` (one `path property kind` line per
//! error, `-` for no property); `expected.warnings` lists warnings that must
//! be present. `UPDATE_GOLDEN=1 cargo test --test conformance` rewrites
//! expected.plan files. Malformed blobs are generated from valid cases.

use dtvisor::config::{self, Report, Severity};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(suite())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.dts").exists())
        .collect();
    v.sort();
    v
}

fn compile(dir: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o", "-"])
        .arg(dir.join("input.dts"))
        .output()
        .map_err(|e| format!("dtc: {e} (run scripts/setup)"))?;
    if !out.status.success() {
        return Err(format!(
            "dtc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn triples(r: &Report, sev: Severity) -> BTreeSet<String> {
    r.diagnostics
        .iter()
        .filter(|d| d.severity == sev)
        .map(|d| {
            format!(
                "{} {} {}",
                d.path,
                d.property.as_deref().unwrap_or("-"),
                d.kind.name()
            )
        })
        .collect()
}

fn lines(p: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn check(dir: &Path, update: bool) -> Result<(), String> {
    let blob = compile(dir)?;
    let r = config::parse_blob(&blob);
    let shown = || format!("{}", config::render::Diagnostics(&r.diagnostics));
    let want_warn = lines(&dir.join("expected.warnings"));
    let got_warn = triples(&r, Severity::Warning);
    let missing_warn: Vec<_> = want_warn.difference(&got_warn).collect();
    if !missing_warn.is_empty() {
        return Err(format!("warnings missing: {missing_warn:?}\n{}", shown()));
    }
    let plan_file = dir.join("expected.plan");
    if plan_file.exists() {
        let Some(plan) = &r.plan else {
            return Err(format!("expected a valid plan, got:\n{}", shown()));
        };
        let text = plan.to_string();
        if update {
            std::fs::write(&plan_file, &text).unwrap();
            return Ok(());
        }
        let want = std::fs::read_to_string(&plan_file).unwrap();
        if want != text {
            return Err(format!(
                "plan differs.\n--- expected\n{want}--- got\n{text}"
            ));
        }
        return Ok(());
    }
    let want = lines(&dir.join("expected.errors"));
    let got = triples(&r, Severity::Error);
    if r.plan.is_some() {
        return Err(format!("expected errors {want:?}, got a valid plan"));
    }
    if want != got {
        return Err(format!(
            "errors differ.\n  expected: {want:?}\n  got:      {got:?}\n{}",
            shown()
        ));
    }
    // Every error must name a path and say what was expected/found.
    for d in r.errors() {
        if d.path.is_empty() || d.message.len() < 10 {
            return Err(format!("uninformative error: {d}"));
        }
    }
    Ok(())
}

#[test]
fn conformance_cases() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let all = cases();
    assert!(
        all.len() >= 100,
        "the suite needs at least 100 cases, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    for dir in &all {
        if let Err(e) = check(dir, update) {
            failures.push(format!(
                "{}: {e}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let valid = all
        .iter()
        .filter(|d| d.join("expected.plan").exists())
        .count();
    println!(
        "conformance: {} cases ({valid} valid, {} invalid), {} failed",
        all.len(),
        all.len() - valid,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

fn set32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

/// Asserts the parser refuses `blob` as an invalid FDT (or, where the
/// mutation left a readable tree, returns some report) without panicking.
fn refused(blob: &[u8], what: &str) -> Report {
    let r = std::panic::catch_unwind(|| config::parse_blob(blob))
        .unwrap_or_else(|_| panic!("panic on {what}"));
    let _ = config::render::to_json(&r);
    if let Some(p) = &r.plan {
        let _ = p.to_string();
    }
    r
}

fn invalid_fdt(r: &Report) -> bool {
    r.plan.is_none()
        && r.diagnostics
            .iter()
            .any(|d| d.kind == config::Kind::InvalidFdt)
}

#[test]
fn malformed_blobs() {
    let base = compile(&suite().join("dl-two-domains")).unwrap();
    assert!(config::parse_blob(&base).plan.is_some());
    let off_struct = be32(&base, 8) as usize;
    let off_strings = be32(&base, 12) as usize;
    let size_struct = be32(&base, 36) as usize;

    let mut b = base.clone();
    b[0] ^= 0xff;
    assert!(invalid_fdt(&refused(&b, "bad magic")));
    // Truncation at every section boundary and every byte.
    for len in 0..base.len() {
        let r = refused(&base[..len], "truncation");
        assert!(invalid_fdt(&r), "truncated to {len} bytes was not refused");
    }
    // totalsize past the buffer.
    let mut b = base.clone();
    set32(&mut b, 4, base.len() as u32 + 1);
    assert!(invalid_fdt(&refused(&b, "totalsize")));
    // Misaligned and out-of-range block offsets.
    for (field, delta) in [
        (8usize, 1i64),
        (8, 2),
        (12, 1_000_000),
        (16, 3),
        (36, 1_000_000),
        (32, 1_000_000),
    ] {
        let mut b = base.clone();
        let v = be32(&b, field) as i64 + delta;
        set32(&mut b, field, v as u32);
        let r = refused(&b, "offsets");
        assert!(
            r.plan.is_none(),
            "header field {field} + {delta} still gave a plan"
        );
    }
    // Unterminated names and strings: overwrite every NUL in the structure
    // and strings blocks, one at a time.
    for i in (off_struct..off_struct + size_struct).chain(off_strings..base.len()) {
        if base[i] == 0 {
            let mut b = base.clone();
            b[i] = b'x';
            refused(&b, "unterminated");
        }
    }
    // Huge property lengths: every FDT_PROP length field.
    let mut o = off_struct;
    while o + 4 <= off_struct + size_struct {
        if be32(&base, o) == 3 {
            for len in [0xffff_ffffu32, 0x8000_0000, base.len() as u32] {
                let mut b = base.clone();
                set32(&mut b, o + 4, len);
                assert!(refused(&b, "huge length").plan.is_none());
            }
        }
        o += 4;
    }
    // Deep nesting.
    let mut src = String::from("/dts-v1/;\n/ { chosen {");
    for i in 0..40 {
        src += &format!(" n{i} {{");
    }
    src += &"};".repeat(40);
    src += "}; };\n";
    let dir = std::env::temp_dir().join(format!("dtvisor-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("input.dts"), src).unwrap();
    let deep = compile(&dir).unwrap();
    assert!(invalid_fdt(&refused(&deep, "deep nesting")));
    // Deterministic byte mutations of every valid case: thousands of blobs.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut n = 0;
    for case in cases().iter().filter(|d| d.join("expected.plan").exists()) {
        let blob = compile(case).unwrap();
        for _ in 0..60 {
            let mut b = blob.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % b.len();
                b[i] = (seed >> 32) as u8;
            }
            refused(&b, "mutation");
            n += 1;
        }
    }
    println!("malformed blobs: {n} random mutations plus every truncation and field corruption, no panic");
}
