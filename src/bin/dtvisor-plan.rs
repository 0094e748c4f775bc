//! `dtvisor-plan [--format text|json] FILE.dtb`: checks a system device
//! tree on the host, before deploying it, with the same parser the
//! hypervisor runs at boot. Prints the boot plan, or every error and
//! warning. Exit status: 0 valid, 1 invalid, 2 unreadable or bad usage.

use dtvisor::config::{self, render};
use std::process::ExitCode;

const USAGE: &str = "usage: dtvisor-plan [--format text|json] FILE.dtb";

fn main() -> ExitCode {
    let mut format = "text".to_string();
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--format" => match args.next().as_deref() {
                Some(f @ ("text" | "json")) => format = f.to_string(),
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}\nChecks a dom0less or hyperlaunch system DTB and prints dtvisor's boot plan.\nExit status: 0 valid, 1 invalid, 2 unreadable.");
                return ExitCode::SUCCESS;
            }
            _ if file.is_none() && !a.starts_with('-') => file = Some(a),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(file) = file else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let blob = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dtvisor-plan: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let report = config::parse_blob(&blob);
    if report
        .diagnostics
        .iter()
        .any(|d| d.kind == config::Kind::InvalidFdt)
    {
        if format == "json" {
            println!("{}", render::to_json(&report));
        } else {
            eprint!("{file}: {}", render::Diagnostics(&report.diagnostics));
        }
        return ExitCode::from(2);
    }
    if format == "json" {
        println!("{}", render::to_json(&report));
    } else {
        if let Some(plan) = &report.plan {
            print!("{plan}");
        }
        print!("{}", render::Diagnostics(&report.diagnostics));
    }
    if report.plan.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
