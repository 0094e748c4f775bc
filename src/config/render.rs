//! The canonical renderings of a plan and of diagnostics: text (stable
//! order, one fact per line, sizes in KiB/MiB/GiB, ranges as
//! `[start, end)`), printed by the image at boot and by `dtvisor-plan`, and
//! JSON for tools.

use super::model::*;
use super::{Diagnostic, Report, Severity};
use crate::mm::range::Size;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

fn roles(c: Caps) -> String {
    let mut v = Vec::new();
    if c.0 & Caps::CONTROL != 0 {
        v.push("control");
    }
    if c.0 & Caps::HARDWARE != 0 {
        v.push("hardware");
    }
    if c.0 & Caps::XENSTORE != 0 {
        v.push("xenstore");
    }
    if v.is_empty() {
        String::from("none")
    } else {
        v.join(", ")
    }
}

fn origin(o: Origin) -> &'static str {
    match o {
        Origin::LegacyDom0 => "legacy dom0",
        Origin::Dom0less => "dom0less",
        Origin::Hyperlaunch => "hyperlaunch",
    }
}

fn container(c: Container) -> &'static str {
    match c {
        Container::Dom0less => "dom0less",
        Container::Hyperlaunch => "hyperlaunch",
        Container::Legacy => "legacy dom0",
    }
}

fn module_line(f: &mut fmt::Formatter<'_>, indent: &str, m: &Module) -> fmt::Result {
    writeln!(
        f,
        "{indent}{} {} {} ({})",
        m.kind.name(),
        m.range,
        Size(m.range.size()),
        m.path
    )
}

impl fmt::Display for BootPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.domains.len();
        writeln!(
            f,
            "boot plan: {n} domain{} ({})",
            if n == 1 { "" } else { "s" },
            container(self.container)
        )?;
        if let Some(c) = &self.hyp_cmdline {
            writeln!(f, "hypervisor command line \"{c}\"")?;
        }
        for m in &self.hyp_modules {
            module_line(f, "hypervisor module ", m)?;
        }
        for d in &self.domains {
            writeln!(f, "domain {} ({})", d.name, d.path)?;
            writeln!(f, "  id {}", d.domid)?;
            writeln!(f, "  origin {}", origin(d.origin))?;
            writeln!(f, "  roles {}", roles(d.caps))?;
            writeln!(
                f,
                "  console-io {}",
                if d.console_io { "yes" } else { "no" }
            )?;
            writeln!(f, "  vcpus {}", d.vcpus)?;
            writeln!(f, "  memory {}", Size(d.memory_kib << 10))?;
            if let Some(m) = d.mem_min_kib {
                writeln!(f, "  memory-min {}", Size(m << 10))?;
            }
            if let Some(m) = d.mem_max_kib {
                writeln!(f, "  memory-max {}", Size(m << 10))?;
            }
            writeln!(f, "  vpl011 {}", if d.vpl011 { "yes" } else { "no" })?;
            match d.enhanced {
                Enhanced::Disabled => {}
                Enhanced::Enabled => writeln!(f, "  xen,enhanced enabled (not provided)")?,
                Enhanced::Legacy => writeln!(f, "  xen,enhanced legacy (not provided)")?,
                Enhanced::NoXenstore => writeln!(f, "  xen,enhanced no-xenstore (not provided)")?,
            }
            if let Some(m) = d.mode {
                writeln!(f, "  mode {m:#x}")?;
            }
            if let Some(u) = d.uuid {
                let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(f, "  uuid {hex}")?;
            }
            if let Some(s) = &d.security_id {
                writeln!(f, "  security-id \"{s}\"")?;
            }
            if let Some(n) = d.nr_spis {
                writeln!(f, "  nr_spis {n}")?;
            }
            if !d.trap_unmapped {
                writeln!(f, "  trap-unmapped-accesses 0")?;
            }
            if let Some(v) = d.max_grant_version {
                writeln!(f, "  max_grant_version {v}")?;
            }
            if let Some(v) = d.max_grant_frames {
                writeln!(f, "  max_grant_frames {v}")?;
            }
            if let Some(v) = d.max_maptrack_frames {
                writeln!(f, "  max_maptrack_frames {v}")?;
            }
            if let Some(v) = d.p2m_mem_mb {
                writeln!(f, "  p2m-mem {v} MiB")?;
            }
            module_line(f, "  ", &d.kernel)?;
            if let Some(r) = &d.ramdisk {
                module_line(f, "  ", r)?;
            }
            match &d.cmdline {
                Some(c) => writeln!(f, "  command line \"{c}\"")?,
                None => writeln!(f, "  command line none")?,
            }
        }
        Ok(())
    }
}

/// All diagnostics, errors first, one per line.
pub struct Diagnostics<'a>(pub &'a [Diagnostic]);

impl fmt::Display for Diagnostics<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for sev in [Severity::Error, Severity::Warning] {
            for d in self.0.iter().filter(|d| d.severity == sev) {
                writeln!(f, "{d}")?;
            }
        }
        Ok(())
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn json_module(out: &mut String, m: &Module) {
    out.push_str("{\"kind\":");
    json_str(out, m.kind.name());
    let _ = write!(
        out,
        ",\"start\":{},\"size\":{},\"path\":",
        m.range.start,
        m.range.size()
    );
    json_str(out, &m.path);
    out.push_str(",\"bootargs\":");
    json_opt_str(out, m.bootargs.as_deref());
    out.push('}');
}

fn json_opt_u64(v: Option<u64>) -> String {
    v.map_or(String::from("null"), |x| format!("{x}"))
}

/// The report as one JSON object: `valid`, `plan` (or null), `diagnostics`.
pub fn to_json(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(o, "{{\"valid\":{},\"plan\":", r.plan.is_some());
    match &r.plan {
        None => o.push_str("null"),
        Some(p) => {
            o.push_str("{\"container\":");
            json_str(&mut o, container(p.container));
            o.push_str(",\"hypervisor_cmdline\":");
            json_opt_str(&mut o, p.hyp_cmdline.as_deref());
            o.push_str(",\"hypervisor_modules\":[");
            for (i, m) in p.hyp_modules.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                json_module(&mut o, m);
            }
            o.push_str("],\"domains\":[");
            for (i, d) in p.domains.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                o.push_str("{\"name\":");
                json_str(&mut o, &d.name);
                o.push_str(",\"path\":");
                json_str(&mut o, &d.path);
                o.push_str(",\"origin\":");
                json_str(&mut o, origin(d.origin));
                let _ = write!(
                    o,
                    ",\"id\":{},\"capabilities\":{},\"console_io\":{},\"vcpus\":{},\"memory_kib\":{},\"memory_min_kib\":{},\"memory_max_kib\":{},\"vpl011\":{},\"mode\":{}",
                    d.domid,
                    d.caps.0,
                    d.console_io,
                    d.vcpus,
                    d.memory_kib,
                    json_opt_u64(d.mem_min_kib),
                    json_opt_u64(d.mem_max_kib),
                    d.vpl011,
                    json_opt_u64(d.mode.map(u64::from)),
                );
                o.push_str(",\"uuid\":");
                let uuid = d
                    .uuid
                    .map(|u| u.iter().map(|b| format!("{b:02x}")).collect::<String>());
                json_opt_str(&mut o, uuid.as_deref());
                o.push_str(",\"security_id\":");
                json_opt_str(&mut o, d.security_id.as_deref());
                o.push_str(",\"cmdline\":");
                json_opt_str(&mut o, d.cmdline.as_deref());
                o.push_str(",\"kernel\":");
                json_module(&mut o, &d.kernel);
                o.push_str(",\"ramdisk\":");
                match &d.ramdisk {
                    Some(m) => json_module(&mut o, m),
                    None => o.push_str("null"),
                }
                o.push('}');
            }
            o.push_str("]}");
        }
    }
    o.push_str(",\"diagnostics\":[");
    for (i, d) in r.diagnostics.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"severity\":");
        json_str(
            &mut o,
            if d.severity == Severity::Error {
                "error"
            } else {
                "warning"
            },
        );
        o.push_str(",\"path\":");
        json_str(&mut o, &d.path);
        o.push_str(",\"property\":");
        json_opt_str(&mut o, d.property.as_deref());
        o.push_str(",\"kind\":");
        json_str(&mut o, d.kind.name());
        o.push_str(",\"message\":");
        json_str(&mut o, &d.message);
        o.push('}');
    }
    o.push_str("]}");
    o
}
