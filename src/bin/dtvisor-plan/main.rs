//! `dtvisor-plan [check] [--format text|json] FILE.dtb`: checks a system
//! device tree on the host, before deploying it, with the same parser the
//! hypervisor runs at boot. Prints the boot plan, or every error and
//! warning. Exit status: 0 valid, 1 invalid, 2 unreadable or bad usage.
//!
//! The text output is the image's boot output, byte for byte (the QEMU
//! tests compare them); on a terminal only, `error`/`warning` are coloured.
//! The JSON document is docs/plan-json.md. Each subcommand is a variant of
//! `Command` and a function; `check` is also the default when only a file
//! is given.

use clap::builder::styling::AnsiColor;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dtvisor::config::{self, render};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use dtvisor_plan::{esp, mkboot, preflight};

const EXAMPLES: &str = "\
Examples:
  dtvisor-plan system.dtb                  print the boot plan, or every error
  dtvisor-plan check system.dtb            the same (check is the default)
  dtvisor-plan --format json system.dtb    the same as JSON (docs/plan-json.md)
  dtvisor-plan system.dtb --esp ESP/EFI/BOOT  a UEFI deployment: xen,uefi-binary sizes from the ESP
  dtvisor-plan board.dtb --script boot.cmd --files DIR
                                           the pre-flight check of a U-Boot script
  dtvisor-plan system.dtb --module /chosen/domU1/dt=rtc.dtb
                                           also read a module's contents (partial
                                           device trees: devices are checked)
  scripts/plan system.dts                  compile a .dts with dtc, then check it

Exit status: 0 valid, 1 invalid, 2 unreadable (or bad usage).
Colour only on a terminal; NO_COLOR=1 turns it off.";

/// The command line. `about` is the short help (`-h`), `long_about` `--help`'s.
#[derive(Parser)]
#[command(
    name = "dtvisor-plan",
    version,
    about = "Checks a system device tree (dom0less or hyperlaunch) before deployment",
    long_about = "Checks a dom0less or hyperlaunch system DTB on the host with dtvisor's \
own parser and prints the boot plan the hypervisor would follow (the text it \
prints at boot), or every error and warning with its node path and property.",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    // `check`'s arguments, for the form without a subcommand.
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check a system DTB and print its boot plan (the default)
    #[command(after_help = EXAMPLES)]
    Check(CheckArgs),
    /// Write a U-Boot boot script (boot.cmd, boot.scr) from an ImageBuilder-style config
    #[command(after_help = MKBOOT_EXAMPLES)]
    Mkboot(MkbootArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The system device tree blob (scripts/plan also takes a .dts)
    #[arg(value_name = "FILE.dtb", required = true)]
    file: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The file the bootloader loads as the module at node NODE (repeat
    /// for more): its contents are checked as the hypervisor checks them
    /// at boot (a partial device tree's devices, against this DTB).
    #[arg(long = "module", value_name = "NODE=FILE", value_parser = module_arg)]
    modules: Vec<(String, PathBuf)>,
    /// A U-Boot boot script (boot.cmd, or a boot.scr image): FILE.dtb is
    /// the board's DTB, edited by the script's fdt commands as U-Boot
    /// would before the plan is made (the pre-flight check)
    #[arg(long, value_name = "SCRIPT")]
    script: Option<PathBuf>,
    /// Where the files the script loads are (their sizes set ${filesize}
    /// and are checked against the modules' reg)
    #[arg(long, value_name = "DIR", requires = "script")]
    files: Option<PathBuf>,
    /// UEFI boot: the directory on the ESP beside the image, where the
    /// files the DTB names with xen,uefi-binary are (their sizes become
    /// the modules' reg, as the EFI stub will write it)
    #[arg(long, value_name = "DIR", conflicts_with = "script")]
    esp: Option<PathBuf>,
    /// A U-Boot environment variable the script uses (repeat for more)
    #[arg(long = "env", value_name = "NAME=VALUE", requires = "script", value_parser = env_arg)]
    env: Vec<(String, String)>,
}

fn env_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE, e.g. fdt_addr=0x44000000".into()),
    }
}

fn module_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((node, file)) if node.starts_with('/') && !file.is_empty() => {
            Ok((node.to_string(), PathBuf::from(file)))
        }
        _ => Err("expected NODE=FILE, e.g. /chosen/domU1/dt=partial.dtb".into()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The boot plan and diagnostics as the image prints them at boot
    Text,
    /// One JSON document (schema "dtvisor-plan/1")
    Json,
}

const MKBOOT_EXAMPLES: &str = "\
Config (ImageBuilder's uboot-script-gen format; files relative to the config):
  MEMORY_START=0x40000000          the board's RAM
  MEMORY_END=0xc0000000
  LOAD_CMD=\"load virtio 0:1\"      or \"fatload mmc 0:1\", \"tftpb\"
  DEVICE_TREE=board.dtb
  XEN=dtvisor.bin                  the hypervisor image (DTVISOR= also works)
  XEN_CMD=\"loglvl=info\"            its command line (optional)
  NUM_DOMUS=2
  DOMU_KERNEL[0]=Image             per domain: kernel (required), ramdisk,
  DOMU_RAMDISK[0]=initramfs.cpio.gz  partial DTB, memory in MiB (512),
  DOMU_PASSTHROUGH_DTB[0]=rtc.dtb    vCPUs (1), command line, vpl011 (on)
  DOMU_MEM[0]=256
  DOMU_VCPUS[0]=2
  DOMU_CMD[0]=\"console=ttyAMA0\"
  DOMU_STATIC_MEM[0]=\"0x60000000 0x10000000\"  DOMU_DIRECT_MAP[0]=y
  DTVISOR_FORM=hyperlaunch         the /chosen/hypervisor form (default dom0less)

Examples:
  dtvisor-plan mkboot config               writes boot.cmd and boot.scr beside config
  dtvisor-plan mkboot config --disk sd.img also a FAT disk image with every file";

#[derive(Args)]
struct MkbootArgs {
    /// The config file
    #[arg(value_name = "CONFIG")]
    config: PathBuf,
    /// Output directory for boot.cmd and boot.scr (default: the config's)
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also write a disk image (MBR, one FAT32 partition) with every file
    /// and boot.scr, for QEMU's virtio disk or an SD card
    #[arg(long, value_name = "IMG")]
    disk: Option<PathBuf>,
}

fn mkboot(args: MkbootArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dtvisor-plan: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let base = args
        .config
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let cfg = match mkboot::Config::parse(&text, &base) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dtvisor-plan: {}: {e}", args.config.display());
            return ExitCode::from(1);
        }
    };
    let name = args.config.display().to_string();
    for k in cfg.unused() {
        eprintln!("warning: {name}: {k} is not used by dtvisor-plan mkboot, ignored");
    }
    let g = match mkboot::generate(&cfg, &name) {
        Ok(g) => g,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {name}: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let out = args.out.unwrap_or(base);
    let cmd = out.join(cfg.file("UBOOT_SOURCE", "boot.cmd"));
    let scr = out.join(cfg.file("UBOOT_SCRIPT", "boot.scr"));
    let wrote = std::fs::create_dir_all(&out)
        .and_then(|()| std::fs::write(&cmd, &g.script))
        .map_err(|e| format!("{}: {e}", cmd.display()))
        .and_then(|()| mkboot::mkimage(&cmd, &scr));
    if let Err(e) = wrote {
        eprintln!("dtvisor-plan: {e}");
        return ExitCode::from(2);
    }
    for it in &g.items {
        println!(
            "  0x{:08x} {:>10} bytes  {:<24} {}",
            it.addr, it.size, it.what, it.name
        );
    }
    println!("wrote {} and {}", cmd.display(), scr.display());
    if let Some(img) = args.disk {
        let mut files: Vec<(String, PathBuf)> = g
            .items
            .iter()
            .map(|i| (i.name.clone(), i.path.clone()))
            .collect();
        files.dedup_by(|a, b| a.0 == b.0);
        for f in [&scr, &cmd] {
            let n = f.file_name().map(|n| n.to_string_lossy().into_owned());
            files.push((n.unwrap_or_default(), f.clone()));
        }
        if let Err(e) = mkboot::fat_disk(&img, &files) {
            eprintln!("dtvisor-plan: {e}");
            return ExitCode::from(2);
        }
        println!(
            "wrote {} (FAT32 partition 1: {} files)",
            img.display(),
            files.len()
        );
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => check(args),
        Some(Command::Mkboot(args)) => mkboot(args),
        None => check(cli.check),
    }
}

/// Exit status: 0 valid, 1 invalid, 2 unreadable.
fn check(args: CheckArgs) -> ExitCode {
    let file = args.file.clone().expect("clap requires FILE");
    let blob = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dtvisor-plan: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let mut files = Vec::new();
    for (node, path) in &args.modules {
        match std::fs::read(path) {
            Ok(b) => files.push((node.clone(), b)),
            Err(e) => {
                eprintln!("dtvisor-plan: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    if let Some(script) = &args.script {
        return check_script(&args, &blob, script, &files);
    }
    if let Some(dir) = &args.esp {
        return check_esp(&args, &blob, dir);
    }
    // What the hypervisor reads: the first `reg`-size bytes of the file.
    let contents = |node: &str, r: dtvisor::mm::Range, visit: &mut dyn FnMut(&[u8])| {
        let Some((_, b)) = files.iter().find(|(n, _)| n == node) else {
            return false;
        };
        visit(&b[..b.len().min(r.size() as usize)]);
        true
    };
    let report = config::parse_blob_with(&blob, Some(&contents));
    let unreadable = report
        .diagnostics
        .iter()
        .any(|d| d.kind == config::Kind::InvalidFdt);
    let diagnostics = || render::Diagnostics(&report.diagnostics).to_string();
    let written = match args.format {
        Format::Json => {
            let doc = serde_json::to_string(&render::Document::new(&report))
                .expect("the document serialises");
            emit(&mut std::io::stdout(), &format!("{doc}\n"))
        }
        // Not a device tree: the reason, on stderr, after the file name.
        Format::Text if unreadable => {
            let text = paint(&diagnostics(), colour(&std::io::stderr()));
            emit(
                &mut std::io::stderr(),
                &format!("{}: {text}", file.display()),
            )
        }
        Format::Text => {
            let plan = report.plan.as_ref().map(ToString::to_string);
            let text = paint(&diagnostics(), colour(&std::io::stdout()));
            emit(&mut std::io::stdout(), &(plan.unwrap_or_default() + &text))
        }
    };
    if unreadable || !written {
        ExitCode::from(2)
    } else if report.plan.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The pre-flight check of a boot script (`--script`): the plan, or every
/// error, each diagnostic followed by the script line behind it.
fn check_script(
    args: &CheckArgs,
    board: &[u8],
    script: &std::path::Path,
    modules: &[(String, Vec<u8>)],
) -> ExitCode {
    let text = match std::fs::read(script)
        .map_err(|e| e.to_string())
        .and_then(|b| preflight::script_text(&b))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dtvisor-plan: {}: {e}", script.display());
            return ExitCode::from(2);
        }
    };
    let name = script
        .file_name()
        .map_or("script".into(), |n| n.to_string_lossy().into_owned());
    let c = match preflight::check(
        board,
        &text,
        &name,
        args.files.as_deref(),
        &args.env,
        modules,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dtvisor-plan: {e}");
            return ExitCode::from(2);
        }
    };
    let mut diag = String::new();
    for e in &c.script_errors {
        diag += &format!("error: {e}\n");
    }
    for sev in [config::Severity::Error, config::Severity::Warning] {
        for (d, line) in c.report.diagnostics.iter().zip(&c.lines) {
            if d.severity != sev {
                continue;
            }
            diag += &d.to_string();
            if let Some(l) = line {
                diag += &format!(" ({l})");
            }
            diag += "\n";
        }
    }
    for w in &c.script_warnings {
        diag += &format!("warning: {w}\n");
    }
    print_report(args.format, &c.report, &diag, c.script_errors.is_empty())
}

/// Prints a check's outcome: the JSON document, or the plan (if any)
/// followed by `diag` (already rendered diagnostics). Exit status: 0
/// valid (a plan and `ok`), 1 invalid, 2 output lost.
fn print_report(format: Format, report: &config::Report, diag: &str, ok: bool) -> ExitCode {
    let written = match format {
        Format::Json => {
            let doc = serde_json::to_string(&render::Document::new(report))
                .expect("the document serialises");
            emit(&mut std::io::stdout(), &format!("{doc}\n"))
        }
        Format::Text => {
            let plan = report.plan.as_ref().map(ToString::to_string);
            let text = plan.unwrap_or_default() + &paint(diag, colour(&std::io::stdout()));
            emit(&mut std::io::stdout(), &text)
        }
    };
    if !written {
        ExitCode::from(2)
    } else if report.plan.is_some() && ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The UEFI check (`--esp`): the plan with the modules the EFI stub will
/// load from the ESP, or every error.
fn check_esp(args: &CheckArgs, blob: &[u8], dir: &std::path::Path) -> ExitCode {
    let c = match esp::check(blob, dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dtvisor-plan: {e}");
            return ExitCode::from(2);
        }
    };
    let mut diag: String = c.errors.iter().map(|e| format!("error: {e}\n")).collect();
    // A module whose file is missing has no reg: the parser's complaint
    // about that would only repeat the error above.
    let rest: Vec<_> = c
        .report
        .diagnostics
        .iter()
        .filter(|d| {
            d.property.as_deref() != Some("xen,uefi-binary")
                || !c
                    .errors
                    .iter()
                    .any(|e| e.starts_with(&format!("{}: ", d.path)))
        })
        .cloned()
        .collect();
    diag += &render::Diagnostics(&rest).to_string();
    print_report(args.format, &c.report, &diag, c.errors.is_empty())
}

/// Writes all of `text`; false if the stream is gone (a closed pipe).
fn emit(stream: &mut impl Write, text: &str) -> bool {
    stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush())
        .is_ok()
}

/// Whether to colour what goes to `stream`: a terminal that supports it,
/// without NO_COLOR (anstream's rules, which clap's help follows too).
fn colour(stream: &impl anstream::stream::RawStream) -> bool {
    anstream::AutoStream::choice(stream) != anstream::ColorChoice::Never
}

/// Diagnostics text with each line's `error` in red and `warning` in
/// yellow; unchanged when `on` is false.
fn paint(text: &str, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    let styles = [
        ("error:", AnsiColor::Red.on_default().bold()),
        ("warning:", AnsiColor::Yellow.on_default().bold()),
    ];
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        match styles.iter().find(|(p, _)| line.starts_with(p)) {
            Some((prefix, style)) => {
                let (word, rest) = line.split_at(prefix.len() - 1);
                out += &format!("{style}{word}{style:#}{rest}");
            }
            None => out += line,
        }
    }
    out
}
