//! The DTB conformance suite, one trial per case (libtest-mimic, so
//! `cargo test -p dtvisor-plan dl-basic` or `cargo test -p dtvisor-plan --test conformance -- --exact
//! dl-basic` runs one). Every directory under tests/conformance has an
//! `input.dts` (compiled with dtc here) and either `expected.plan` (the
//! exact plan text) or `expected.errors` (one `path property kind` line per
//! error, `-` for no property); `expected.warnings` lists warnings that must
//! be present. A failure names the case and shows the diff between the
//! expected and the actual plan or errors.
//!
//! Further trials: `json::CASE` compares the JSON document of a case with
//! the committed tests/plan-json/CASE.json (docs/plan-json.md);
//! `malformed::*` mutates valid blobs (the parser must refuse them without
//! panicking); `cli::*` runs the `dtvisor-plan` binary (text identical to
//! the library's rendering, exit status, subcommand, colour, help).
//!
//! `UPDATE_GOLDEN=1 cargo test -p dtvisor-plan --test conformance` rewrites expected.plan
//! and tests/plan-json/*.json files (an empty CASE.json adds a case).

use dtvisor::config::{self, Report, Severity};
use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let args = Arguments::from_args();
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let mut trials = vec![Trial::test("suite-size", suite_size)];
    for dir in cases() {
        let name = case_name(&dir);
        trials.push(Trial::test(name, move || Ok(check(&dir, update)?)));
    }
    trials.extend(json::trials(update));
    trials.extend(malformed::trials());
    trials.extend(cli::trials());
    libtest_mimic::run(&args, trials).exit();
}

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../tests/conformance")
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

fn case_name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

fn is_valid_case(dir: &Path) -> bool {
    dir.join("expected.plan").exists()
}

fn suite_size() -> Result<(), Failed> {
    let all = cases();
    let valid = all.iter().filter(|d| is_valid_case(d)).count();
    println!(
        "conformance: {} cases ({valid} valid, {} invalid)",
        all.len(),
        all.len() - valid
    );
    if all.len() < 100 {
        return Err(format!("the suite needs at least 100 cases, found {}", all.len()).into());
    }
    Ok(())
}

fn compile(dir: &Path) -> Result<Vec<u8>, String> {
    compile_file(&dir.join("input.dts"))
}

fn compile_file(file: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o", "-"])
        .arg(file)
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

/// A unified diff of `want` against `got`, line by line.
fn diff(want: &str, got: &str) -> String {
    similar::TextDiff::from_lines(want, got)
        .unified_diff()
        .header("expected", "actual")
        .to_string()
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

/// One line per element, sorted (a set as an expected.errors file).
fn set_text(s: &BTreeSet<String>) -> String {
    s.iter().map(|l| format!("{l}\n")).collect()
}

/// The contents of the case's partial device trees: `partial-DOMAIN.dts`
/// (compiled with dtc) is the contents of the device-tree module of the
/// domain named DOMAIN; `partial-DOMAIN.bin` is raw bytes.
fn partials(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("partial-") else {
            continue;
        };
        if let Some(dom) = rest.strip_suffix(".dts") {
            out.push((dom.to_string(), compile_file(&p)?));
        } else if let Some(dom) = rest.strip_suffix(".bin") {
            out.push((
                dom.to_string(),
                std::fs::read(&p).map_err(|e| e.to_string())?,
            ));
        }
    }
    Ok(out)
}

/// Parses a case as the image would: its partial device trees' contents
/// at hand.
fn parse_case(dir: &Path) -> Result<Report, String> {
    let blob = compile(dir)?;
    let parts = partials(dir)?;
    let contents = |path: &str, _r: dtvisor::mm::Range, visit: &mut dyn FnMut(&[u8])| {
        let found = parts
            .iter()
            .find(|(dom, _)| path.split('/').any(|seg| seg == dom));
        found.map(|(_, b)| visit(b)).is_some()
    };
    Ok(config::parse_blob_with(&blob, Some(&contents)))
}

fn check(dir: &Path, update: bool) -> Result<(), String> {
    let r = parse_case(dir)?;
    let shown = || {
        format!(
            "diagnostics:\n{}",
            config::render::Diagnostics(&r.diagnostics)
        )
    };
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
            return Err(format!("plan differs:\n{}", diff(&want, &text)));
        }
        return Ok(());
    }
    let want = lines(&dir.join("expected.errors"));
    let got = triples(&r, Severity::Error);
    if let Some(plan) = &r.plan {
        return Err(format!(
            "expected errors, got a valid plan:\n{}",
            diff(&set_text(&want), &plan.to_string())
        ));
    }
    if want != got {
        return Err(format!(
            "errors (path property kind) differ:\n{}{}",
            diff(&set_text(&want), &set_text(&got)),
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

/// The JSON document against the committed examples in tests/plan-json.
mod json {
    use super::*;
    use dtvisor::config::render::Document;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../tests/plan-json")
    }

    /// The document as the committed files hold it: pretty, one final
    /// newline (the tool prints the same document on one line).
    pub fn pretty(r: &Report) -> String {
        serde_json::to_string_pretty(&Document::new(r)).unwrap() + "\n"
    }

    pub fn trials(update: bool) -> Vec<Trial> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut v = vec![Trial::test("json::examples-exist", {
            let n = files.len();
            move || match n {
                0 => Err("no examples in tests/plan-json".into()),
                _ => Ok(()),
            }
        })];
        for file in files {
            let case = file.file_stem().unwrap().to_string_lossy().into_owned();
            v.push(Trial::test(format!("json::{case}"), move || {
                Ok(golden(&case, &file, update)?)
            }));
        }
        v
    }

    fn golden(case: &str, file: &Path, update: bool) -> Result<(), String> {
        let case_dir = suite().join(case);
        if !case_dir.join("input.dts").exists() {
            return Err(format!("{}: no conformance case {case}", file.display()));
        }
        let r = parse_case(&case_dir)?;
        let got = pretty(&r);
        if update {
            std::fs::write(file, &got).unwrap();
            return Ok(());
        }
        let want = std::fs::read_to_string(file).unwrap();
        if want != got {
            return Err(format!(
                "JSON differs from {}:\n{}",
                file.display(),
                diff(&want, &got)
            ));
        }
        let doc: serde_json::Value = serde_json::from_str(&want).unwrap();
        if doc["schema"] != config::render::JSON_SCHEMA {
            return Err(format!("schema is {}", doc["schema"]));
        }
        {
            // The tool prints the same document, on one line.
            let dtb = super::cli::dtb(&case_dir)?;
            let mut args = vec![
                "--format".to_string(),
                "json".into(),
                dtb.display().to_string(),
            ];
            args.extend(super::cli::module_args(&case_dir)?);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = super::cli::run(&args, &[]);
            let line = String::from_utf8(out.stdout).unwrap();
            if line.lines().count() != 1 || !line.ends_with('\n') {
                return Err(format!("dtvisor-plan --format json: not one line:\n{line}"));
            }
            let printed: serde_json::Value = serde_json::from_str(&line).unwrap();
            if printed != doc {
                return Err(format!(
                    "dtvisor-plan --format json prints another document:\n{}",
                    diff(
                        &want,
                        &(serde_json::to_string_pretty(&printed).unwrap() + "\n")
                    )
                ));
            }
        }
        Ok(())
    }
}

mod malformed {
    use super::*;

    pub fn trials() -> Vec<Trial> {
        let t = |name: &str, f: fn(&[u8])| {
            Trial::test(format!("malformed::{name}"), move || {
                let base = compile(&suite().join("dl-two-domains"))?;
                if config::parse_blob(&base).plan.is_none() {
                    return Err("dl-two-domains gives no plan".into());
                }
                f(&base);
                Ok(())
            })
        };
        vec![
            t("bad-magic", bad_magic),
            t("truncation", truncation),
            t("totalsize", totalsize),
            t("header-offsets", header_offsets),
            t("unterminated", unterminated),
            t("huge-lengths", huge_lengths),
            Trial::test("malformed::deep-nesting", deep_nesting),
            Trial::test("malformed::random-mutations", random_mutations),
        ]
    }

    fn be32(b: &[u8], o: usize) -> u32 {
        u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
    }

    fn set32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Asserts the parser refuses `blob` as an invalid FDT (or, where the
    /// mutation left a readable tree, returns some report) without
    /// panicking, and that the report renders.
    fn refused(blob: &[u8], what: &str) -> Report {
        let r = std::panic::catch_unwind(|| config::parse_blob(blob))
            .unwrap_or_else(|_| panic!("panic on {what}"));
        let _ = serde_json::to_string(&config::render::Document::new(&r)).unwrap();
        let _ = config::render::Diagnostics(&r.diagnostics).to_string();
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

    fn bad_magic(base: &[u8]) {
        let mut b = base.to_vec();
        b[0] ^= 0xff;
        assert!(invalid_fdt(&refused(&b, "bad magic")));
    }

    /// Truncation at every section boundary and every byte.
    fn truncation(base: &[u8]) {
        for len in 0..base.len() {
            let r = refused(&base[..len], "truncation");
            assert!(invalid_fdt(&r), "truncated to {len} bytes was not refused");
        }
    }

    /// totalsize past the buffer.
    fn totalsize(base: &[u8]) {
        let mut b = base.to_vec();
        set32(&mut b, 4, base.len() as u32 + 1);
        assert!(invalid_fdt(&refused(&b, "totalsize")));
    }

    /// Misaligned and out-of-range block offsets.
    fn header_offsets(base: &[u8]) {
        for (field, delta) in [
            (8usize, 1i64),
            (8, 2),
            (12, 1_000_000),
            (16, 3),
            (36, 1_000_000),
            (32, 1_000_000),
        ] {
            let mut b = base.to_vec();
            let v = be32(&b, field) as i64 + delta;
            set32(&mut b, field, v as u32);
            let r = refused(&b, "offsets");
            assert!(
                r.plan.is_none(),
                "header field {field} + {delta} still gave a plan"
            );
        }
    }

    /// Unterminated names and strings: overwrite every NUL in the
    /// structure and strings blocks, one at a time.
    fn unterminated(base: &[u8]) {
        let off_struct = be32(base, 8) as usize;
        let off_strings = be32(base, 12) as usize;
        let size_struct = be32(base, 36) as usize;
        for i in (off_struct..off_struct + size_struct).chain(off_strings..base.len()) {
            if base[i] == 0 {
                let mut b = base.to_vec();
                b[i] = b'x';
                refused(&b, "unterminated");
            }
        }
    }

    /// Huge property lengths: every FDT_PROP length field.
    fn huge_lengths(base: &[u8]) {
        let off_struct = be32(base, 8) as usize;
        let size_struct = be32(base, 36) as usize;
        let mut o = off_struct;
        while o + 4 <= off_struct + size_struct {
            if be32(base, o) == 3 {
                for len in [0xffff_ffffu32, 0x8000_0000, base.len() as u32] {
                    let mut b = base.to_vec();
                    set32(&mut b, o + 4, len);
                    assert!(refused(&b, "huge length").plan.is_none());
                }
            }
            o += 4;
        }
    }

    fn deep_nesting() -> Result<(), Failed> {
        let mut src = String::from("/dts-v1/;\n/ { chosen {");
        for i in 0..40 {
            src += &format!(" n{i} {{");
        }
        src += &"};".repeat(40);
        src += "}; };\n";
        let dir = std::env::temp_dir().join(format!("dtvisor-deep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("input.dts"), src).unwrap();
        let deep = compile(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(invalid_fdt(&refused(&deep?, "deep nesting")));
        Ok(())
    }

    /// Deterministic byte mutations of every valid case: thousands of blobs.
    fn random_mutations() -> Result<(), Failed> {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut n = 0;
        for case in cases().iter().filter(|d| is_valid_case(d)) {
            let blob = compile(case)?;
            for _ in 0..60 {
                let mut b = blob.clone();
                for _ in 0..4 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let i = (seed as usize) % b.len();
                    b[i] = (seed >> 32) as u8;
                }
                refused(&b, &format!("mutation of {}", case_name(case)));
                n += 1;
            }
        }
        println!("malformed blobs: {n} random mutations, no panic");
        Ok(())
    }
}

/// The `dtvisor-plan` binary.
mod cli {
    use super::*;
    use std::process::Output;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub fn trials() -> Vec<Trial> {
        vec![
            Trial::test("cli::text-is-the-library-rendering", text_output),
            Trial::test("cli::exit-status", exit_status),
            Trial::test("cli::invalid-fdt", invalid_fdt),
            Trial::test("cli::check-subcommand", check_subcommand),
            Trial::test("cli::colour", colour),
            Trial::test("cli::help-and-version", help_and_version),
        ]
    }

    /// Runs the tool with `env` set and colour variables otherwise unset
    /// (stdout and stderr are pipes, so no colour unless forced).
    pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dtvisor-plan"));
        c.args(args);
        for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE"] {
            c.env_remove(v);
        }
        c.envs(env.iter().copied());
        c.output().expect("runs dtvisor-plan")
    }

    /// The case compiled to a DTB file of its own (trials run in parallel)
    /// in the target's temporary directory.
    pub fn dtb(case_dir: &Path) -> Result<PathBuf, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-dtb");
        std::fs::create_dir_all(&dir).unwrap();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.dtb", case_name(case_dir)));
        std::fs::write(&path, compile(case_dir)?).unwrap();
        Ok(path)
    }

    /// `--module NODE=FILE` for each partial device tree of the case (the
    /// cases name that module `dt`, in a dom0less or hyperlaunch domain),
    /// each written to a file.
    pub fn module_args(case_dir: &Path) -> Result<Vec<String>, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-dtb");
        std::fs::create_dir_all(&dir).unwrap();
        let blob = compile(case_dir)?;
        let fdt = dtvisor::fdt::Fdt::new(&blob).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (dom, bytes) in partials(case_dir)? {
            let node = [
                format!("/chosen/{dom}/dt"),
                format!("/chosen/hypervisor/{dom}/dt"),
            ]
            .into_iter()
            .find(|p| fdt.find(p).is_some())
            .ok_or(format!("no module node dt in domain {dom}"))?;
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{}-{dom}-{n}.partial", case_name(case_dir)));
            std::fs::write(&path, bytes).unwrap();
            out.push("--module".into());
            out.push(format!("{node}={}", path.display()));
        }
        Ok(out)
    }

    fn case(name: &str) -> PathBuf {
        suite().join(name)
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn status(o: &Output) -> i32 {
        o.status.code().unwrap_or(-1)
    }

    /// For every case: stdout is the plan and the diagnostics exactly as
    /// the library renders them (what the image prints at boot), nothing on
    /// stderr, exit 0 for a plan and 1 for none.
    fn text_output() -> Result<(), Failed> {
        let mut failures = Vec::new();
        for dir in cases() {
            let dtb = dtb(&dir)?;
            let r = parse_case(&dir)?;
            let mut want = r.plan.as_ref().map(ToString::to_string).unwrap_or_default();
            want += &config::render::Diagnostics(&r.diagnostics).to_string();
            let mut args = vec![dtb.display().to_string()];
            args.extend(module_args(&dir)?);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args, &[]);
            let got = text(&out.stdout);
            let code = if r.plan.is_some() { 0 } else { 1 };
            if got != want || !out.stderr.is_empty() || status(&out) != code {
                failures.push(format!(
                    "{}: exit {} (want {code}), stderr {:?}\n{}",
                    case_name(&dir),
                    status(&out),
                    text(&out.stderr),
                    diff(&want, &got)
                ));
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(failures.join("\n").into()),
        }
    }

    fn exit_status() -> Result<(), Failed> {
        let valid = dtb(&case("dl-basic"))?;
        let invalid = dtb(&case("err-several-at-once"))?;
        let (valid, invalid) = (valid.to_str().unwrap(), invalid.to_str().unwrap());
        let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such.dtb");
        let missing = missing.to_str().unwrap();
        let cases: &[(&[&str], i32)] = &[
            (&[valid], 0),
            (&["--format", "json", valid], 0),
            (&[valid, "--format", "text"], 0),
            (&[invalid], 1),
            (&["--format", "json", invalid], 1),
            (&[missing], 2),
            (&["--format", "json", missing], 2),
            (&[], 2),
            (&["--format", "yaml", valid], 2),
            (&["--bogus", valid], 2),
            (&[valid, invalid], 2),
        ];
        for (args, want) in cases {
            let out = run(args, &[]);
            if status(&out) != *want {
                return Err(format!(
                    "dtvisor-plan {args:?}: exit {}, want {want}\n{}",
                    status(&out),
                    text(&out.stderr)
                )
                .into());
            }
        }
        let out = run(&[missing], &[]);
        let want = format!("dtvisor-plan: {missing}: No such file or directory (os error 2)\n");
        assert_eq!(text(&out.stderr), want);
        Ok(())
    }

    /// Not a DTB: the reason on stderr after the file name (text), or the
    /// document with `valid` false (JSON); exit 2 either way.
    fn invalid_fdt() -> Result<(), Failed> {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-dtb.dtb");
        std::fs::write(&path, b"not a dtb\n").unwrap();
        let p = path.to_str().unwrap();
        let out = run(&[p], &[]);
        assert_eq!(status(&out), 2);
        assert!(out.stdout.is_empty());
        assert_eq!(
            text(&out.stderr),
            format!("{p}: error: /: invalid FDT header: blob is 10 bytes, a header needs 40\n")
        );
        let out = run(&["--format", "json", p], &[]);
        assert_eq!(status(&out), 2);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["schema"], config::render::JSON_SCHEMA);
        assert_eq!(doc["valid"], false);
        assert!(doc["plan"].is_null());
        assert_eq!(doc["diagnostics"][0]["kind"], "invalid_fdt");
        Ok(())
    }

    /// `check FILE` is `FILE`.
    fn check_subcommand() -> Result<(), Failed> {
        for name in ["dl-enhanced-no-xenstore", "err-several-at-once"] {
            let dtb = dtb(&case(name))?;
            let dtb = dtb.to_str().unwrap();
            for format in ["text", "json"] {
                let plain = run(&["--format", format, dtb], &[]);
                let sub = run(&["check", "--format", format, dtb], &[]);
                assert_eq!(plain, sub, "{name}, {format}");
            }
        }
        Ok(())
    }

    /// Colour only when asked for (CLICOLOR_FORCE stands in for a
    /// terminal): `error` red, `warning` yellow, nothing else changed;
    /// NO_COLOR wins; JSON never.
    fn colour() -> Result<(), Failed> {
        let red = "\x1b[1m\x1b[31merror\x1b[0m:";
        let yellow = "\x1b[1m\x1b[33mwarning\x1b[0m:";
        let force = [("CLICOLOR_FORCE", "1")];
        for name in ["dl-enhanced-no-xenstore", "err-several-at-once"] {
            let dtb = dtb(&case(name))?;
            let dtb = dtb.to_str().unwrap();
            let plain = text(&run(&[dtb], &[]).stdout);
            let coloured = text(&run(&[dtb], &force).stdout);
            assert!(!plain.contains('\x1b'), "{name}: colour in a pipe");
            let want = plain
                .replace("\nerror:", &format!("\n{red}"))
                .replace("\nwarning:", &format!("\n{yellow}"));
            let want = match want.strip_prefix("error:") {
                Some(rest) => format!("{red}{rest}"),
                None => want,
            };
            assert_eq!(coloured, want, "{name}");
            assert!(
                coloured.contains(red) || coloured.contains(yellow),
                "{name}"
            );
            let no_color = [("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")];
            assert_eq!(text(&run(&[dtb], &no_color).stdout), plain, "{name}");
            let json = run(&["--format", "json", dtb], &force);
            assert!(!json.stdout.contains(&0x1b), "{name}: colour in JSON");
        }
        Ok(())
    }

    fn help_and_version() -> Result<(), Failed> {
        for flag in ["--help", "-h"] {
            let out = run(&[flag], &[]);
            assert_eq!(status(&out), 0);
            let help = text(&out.stdout);
            for want in ["Usage:", "check", "--format", "Examples:", "Exit status"] {
                assert!(help.contains(want), "{flag} lacks {want:?}:\n{help}");
            }
        }
        let out = run(&["check", "--help"], &[]);
        assert_eq!(status(&out), 0);
        assert!(text(&out.stdout).contains("Usage: dtvisor-plan check"));
        let out = run(&["--version"], &[]);
        assert_eq!(status(&out), 0);
        assert_eq!(
            text(&out.stdout),
            format!("dtvisor-plan {}\n", env!("CARGO_PKG_VERSION"))
        );
        Ok(())
    }
}
