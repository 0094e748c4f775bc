//! `dtvisor-plan check BOARD.dtb --script boot.cmd [--files DIR]`: the
//! pre-flight check of a U-Boot boot script. The script's `fdt` commands
//! are applied to the board's DTB as U-Boot applies them
//! (`dtvisor::uboot`), each `load` takes its file's size from DIR, and the
//! edited DTB goes through the parser with what the image will know at
//! boot: the hypervisor's and the DTB's own ranges reserved, the loaded
//! files' contents for partial device trees. Diagnostics gain the script
//! line that caused them.

use crate::uboot::{self, Outcome};
use dtvisor::config::{self, Diagnostic, Kind, Report, Severity};
use dtvisor::fdt::Fdt;
use dtvisor::hw::{HostMemory, Reserved, ReservedKind};
use dtvisor::mm::Range;
use std::path::{Path, PathBuf};

/// What the check found: the parser's report on the edited DTB, plus the
/// script's own findings, each diagnostic with its script line.
pub struct Checked {
    pub report: Report,
    /// Script problems (line, text, message), errors first.
    pub script_errors: Vec<String>,
    pub script_warnings: Vec<String>,
    /// The script line behind each of `report.diagnostics` (same order).
    pub lines: Vec<Option<String>>,
}

/// The U-Boot environment a script starts with: `fdt_addr` and friends as
/// U-Boot's distro boot sets them on QEMU virt (harmless elsewhere: a
/// script that names addresses itself does not use them), then the
/// user's `--env` settings.
fn environment(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("fdt_addr", "40000000"),
        ("fdt_addr_r", "40000000"),
        ("kernel_addr_r", "40400000"),
        ("ramdisk_addr_r", "44000000"),
        ("scriptaddr", "40200000"),
        ("loadaddr", "40200000"),
        ("devtype", "virtio"),
        ("devnum", "0"),
        ("distro_bootpart", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// The script's text: a `boot.cmd` as is, or the script inside a
/// `boot.scr` (mkimage's legacy script image).
pub fn script_text(bytes: &[u8]) -> Result<String, String> {
    if bytes.starts_with(&[0x27, 0x05, 0x19, 0x56]) {
        uboot::script_of_scr(bytes)
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|_| "not a text file or a boot.scr image".into())
    }
}

pub fn check(
    board: &[u8],
    script: &str,
    script_name: &str,
    files: Option<&Path>,
    env: &[(String, String)],
    modules: &[(String, Vec<u8>)],
) -> Result<Checked, String> {
    let find = |name: &str| find_file(files?, name);
    let size = |name: &str| {
        find(name)
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
    };
    let env = environment(env);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out: Outcome = uboot::run(script, board, &size, &env_refs);
    let at = |line: usize| script_line(script, script_name, line);
    let mut script_errors = messages(&out.errors, &at);
    let mut script_warnings = messages(&out.warnings, &at);
    let Some(tree) = &out.tree else {
        script_errors.push(format!(
            "{script_name}: no `fdt addr`: the script never edits a device tree"
        ));
        return Ok(Checked::script_only(script_errors, script_warnings));
    };
    let dtb = tree.to_dtb()?;
    let fdt = Fdt::new(&dtb).map_err(|e| format!("the edited device tree does not parse: {e}"))?;
    let mut host = HostMemory::from_fdt(&fdt);
    reserve_boot(
        &out,
        &find,
        dtb.len() as u64,
        &mut host,
        &at,
        &mut script_warnings,
    );
    if out.boot.is_none() {
        script_warnings.push(format!(
            "{script_name}: no booti/bootm: the script never starts the hypervisor"
        ));
    }
    // A module's contents: `--module` first, else the file the script
    // loads at the module's address.
    let loads = &out.loads;
    let contents = |node: &str, r: Range, visit: &mut dyn FnMut(&[u8])| {
        if let Some((_, b)) = modules.iter().find(|(n, _)| n == node) {
            visit(&b[..b.len().min(r.size() as usize)]);
            return true;
        }
        let Some(l) = loads.iter().rev().find(|l| l.addr == r.start) else {
            return false;
        };
        let Some(b) = find(&l.file).and_then(|p| std::fs::read(p).ok()) else {
            return false;
        };
        visit(&b[..b.len().min(r.size() as usize)]);
        true
    };
    let mut report = config::parse_with(&fdt, &host, None, Some(&contents));
    module_sizes(&out, &mut report, &at);
    let lines = report
        .diagnostics
        .iter()
        .map(|d| out.line_of(&d.path, d.property.as_deref()).map(at))
        .collect();
    Ok(Checked {
        report,
        script_errors,
        script_warnings,
        lines,
    })
}

/// "boot.cmd line N: TEXT", the script's line `line` (from 1).
fn script_line(script: &str, script_name: &str, line: usize) -> String {
    let text = script
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim();
    format!("{script_name} line {line}: {text}")
}

impl Checked {
    /// A script that never got as far as a device tree: its own errors
    /// and warnings only.
    fn script_only(script_errors: Vec<String>, script_warnings: Vec<String>) -> Checked {
        Checked {
            report: Report {
                plan: None,
                diagnostics: Vec::new(),
            },
            script_errors,
            script_warnings,
            lines: Vec::new(),
        }
    }
}

/// The file the script names `name` in `dir`: at its path under `dir`,
/// else by its base name.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name.trim_start_matches('/'));
    if p.is_file() {
        return Some(p);
    }
    let base = Path::new(name).file_name()?;
    Some(dir.join(base)).filter(|p| p.is_file())
}

/// The interpreter's errors or warnings, each after its script line.
fn messages(list: &[uboot::ScriptError], at: &dyn Fn(usize) -> String) -> Vec<String> {
    list.iter()
        .map(|e| format!("{}: {}", at(e.line), e.message))
        .collect()
}

/// What the image adds at boot, reserved in `host`: its own range (the
/// file the script loads at the booted address, its image_size) and the
/// DTB's (`dtb_len` bytes at the address booti passes).
fn reserve_boot(
    out: &Outcome,
    find: &dyn Fn(&str) -> Option<PathBuf>,
    dtb_len: u64,
    host: &mut HostMemory,
    at: &dyn Fn(usize) -> String,
    warnings: &mut Vec<String>,
) {
    let Some(b) = &out.boot else { return };
    if let Some(l) = out.loads.iter().rev().find(|l| l.addr == b.kernel) {
        let len = find(&l.file)
            .and_then(|p| std::fs::read(p).ok())
            .map(|img| image_size(&img).max(img.len() as u64))
            .or(l.size);
        if let Some(r) = len.and_then(|n| Range::from_base_size(l.addr, n)) {
            host.reserved.push(Reserved {
                range: r,
                kind: ReservedKind::Image,
            });
        }
    } else {
        warnings.push(format!(
            "{}: nothing the script loads is at the booted address {:#x}",
            at(b.line),
            b.kernel
        ));
    }
    if let Some(r) = b.fdt.and_then(|a| Range::from_base_size(a, dtb_len)) {
        host.reserved.push(Reserved {
            range: r,
            kind: ReservedKind::Dtb,
        });
    }
}

/// A module's `reg` against the file the script loads at its address: a
/// `reg` shorter than the file cuts the module (an error), a longer one
/// covers bytes that are not the file (a warning).
fn module_sizes(out: &Outcome, report: &mut Report, at: &dyn Fn(usize) -> String) {
    let Some(plan) = report.plan.as_ref() else {
        return;
    };
    let mut found = Vec::new();
    for d in &plan.domains {
        let mods = std::iter::once(&d.kernel)
            .chain(&d.ramdisk)
            .chain(&d.device_tree);
        for m in mods {
            let Some(l) = out.loads.iter().rev().find(|l| l.addr == m.range.start) else {
                continue;
            };
            let Some(size) = l.size else { continue };
            let reg = m.range.size();
            if reg == size {
                continue;
            }
            let (severity, what) = if reg < size {
                (Severity::Error, "the module is cut short")
            } else {
                (
                    Severity::Warning,
                    "the module covers bytes that are not the file",
                )
            };
            found.push(Diagnostic {
                severity,
                path: m.path.clone(),
                property: Some("reg".into()),
                kind: Kind::BadModule,
                message: format!(
                    "{reg:#x} bytes, but the file loaded there, {}, is {size:#x} bytes ({}): {what}",
                    l.file,
                    at(l.line)
                ),
            });
        }
    }
    if found.iter().any(|d| d.severity == Severity::Error) {
        report.plan = None;
    }
    report.diagnostics.extend(found);
    report.diagnostics.sort_by_key(|d| d.severity);
}

/// The arm64 Image header's image_size (0 if not an Image).
fn image_size(b: &[u8]) -> u64 {
    dtvisor::vm::image::ImageHeader::parse(b).map_or(0, |h| h.image_size)
}
