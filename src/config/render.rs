//! The canonical renderings of a plan and of diagnostics: text (stable
//! order, one fact per line, sizes in KiB/MiB/GiB, ranges as
//! `[start, end)`), printed by the image at boot and by `dtvisor-plan`, and
//! the JSON document for tools (`Document`, serialised with the `serde`
//! feature; docs/plan-json.md).

use super::model::*;
use super::{Diagnostic, Report, Severity};
use crate::mm::range::Size;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

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
            for r in &d.static_mem {
                writeln!(f, "  static memory {r} {}", Size(r.size()))?;
            }
            if d.direct_map {
                writeln!(f, "  direct-map yes (guest addresses are host addresses)")?;
            }
            module_line(f, "  ", &d.kernel)?;
            if let Some(r) = &d.ramdisk {
                module_line(f, "  ", r)?;
            }
            if let Some(m) = &d.device_tree {
                module_line(f, "  ", m)?;
                if !d.devices_read {
                    writeln!(f, "    contents not read: devices unknown")?;
                }
            }
            for dev in &d.devices {
                devices_lines(f, dev)?;
            }
            for r in &d.reserved_memory {
                writeln!(f, "  reserved memory {r} {} mapped 1:1", Size(r.size()))?;
            }
            for r in &d.removed {
                writeln!(f, "  not given {} ({})", r.node, r.why)?;
            }
            match &d.cmdline {
                Some(c) => writeln!(f, "  command line \"{c}\"")?,
                None => writeln!(f, "  command line none")?,
            }
        }
        Ok(())
    }
}

fn devices_lines(f: &mut fmt::Formatter<'_>, dev: &Device) -> fmt::Result {
    match &dev.host_path {
        // The hardware domain's: the host node itself.
        Some(h) if *h == dev.node => writeln!(f, "  device {h}")?,
        Some(h) => writeln!(f, "  device {} (host {h})", dev.node)?,
        None => writeln!(f, "  device {} (no host node)", dev.node)?,
    }
    for r in &dev.regions {
        writeln!(
            f,
            "    mmio host {} {} at guest {:#x}",
            r.host,
            Size(r.host.size()),
            r.guest
        )?;
    }
    for i in &dev.irqs {
        writeln!(
            f,
            "    irq {} (SPI {}, {})",
            i.intid,
            i.intid - 32,
            if i.edge { "edge" } else { "level" }
        )?;
    }
    Ok(())
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

/// The version of the JSON document's shape (docs/plan-json.md): bumped
/// when a field is removed, renamed or changes meaning; fields may be added
/// within a version.
pub const JSON_SCHEMA: &str = "dtvisor-plan/1";

/// The report as the JSON document `dtvisor-plan --format json` prints:
/// `schema`, `valid`, `plan` (or null) and `diagnostics` (in the order the
/// parser found them). With the `serde` feature it is `Serialize`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Document<'a> {
    pub schema: &'static str,
    pub valid: bool,
    pub plan: Option<&'a BootPlan>,
    pub diagnostics: &'a [Diagnostic],
}

impl<'a> Document<'a> {
    pub fn new(r: &'a Report) -> Document<'a> {
        Document {
            schema: JSON_SCHEMA,
            valid: r.plan.is_some(),
            plan: r.plan.as_ref(),
            diagnostics: &r.diagnostics,
        }
    }
}

#[cfg(all(test, json))]
mod tests {
    use super::*;
    use crate::config::Kind;
    use serde::Serialize;

    fn name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v).unwrap().as_str().unwrap().into()
    }

    /// The JSON names are the stable names the text uses.
    #[test]
    fn json_names_are_the_text_names() {
        for &k in Kind::ALL {
            assert_eq!(name(k), k.name());
        }
        use ModuleKind::*;
        for k in [Kernel, Ramdisk, DeviceTree, XsmPolicy, Microcode, Config] {
            assert_eq!(name(k), k.name());
        }
        for c in [
            Container::Dom0less,
            Container::Hyperlaunch,
            Container::Legacy,
        ] {
            assert_eq!(name(c), container(c));
        }
        for o in [Origin::LegacyDom0, Origin::Dom0less, Origin::Hyperlaunch] {
            assert_eq!(name(o), origin(o));
        }
        assert_eq!(name(Severity::Error), "error");
        assert_eq!(name(Severity::Warning), "warning");
        assert_eq!(name(Enhanced::NoXenstore), "no-xenstore");
        assert_eq!(name(Enhanced::Disabled), "disabled");
    }

    /// Layout ranges are `{"start", "end"}`; module ranges `start`, `size`.
    #[test]
    fn range_shapes() {
        use crate::mm::Range;
        use crate::placement::{DomainLayout, Layout, RamMap};
        let r = |s, e| Range::new(s, e);
        let l = Layout {
            domains: alloc::vec![DomainLayout {
                name: "d".into(),
                ram: alloc::vec![RamMap {
                    ipa: r(0x4000_0000, 0x4800_0000),
                    pa: 0x8000_0000
                }],
                banks: alloc::vec![r(0x4000_0000, 0x4800_0000)],
                kernel_ipa: r(0x4020_0000, 0x4040_0000),
                initrd_ipa: None,
                dtb_ipa: r(0x4700_0000, 0x4720_0000),
                pristine: alloc::vec![],
                pcpus: alloc::vec![1],
                vmid: 1,
            }],
            kept: alloc::vec![],
            free: alloc::vec![r(0x9000_0000, 0xa000_0000)],
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(
            v["domains"][0]["ram"][0],
            serde_json::json!({"ipa": {"start": 0x4000_0000u64, "end": 0x4800_0000u64}, "pa": 0x8000_0000u64})
        );
        assert!(v["domains"][0]["initrd_ipa"].is_null());
        assert_eq!(v["free"][0]["end"], 0xa000_0000u64);
        let m = Module {
            kind: ModuleKind::DeviceTree,
            range: r(0x5000_0000, 0x5000_1000),
            path: "/chosen/d/dt".into(),
            bootargs: None,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"kind": "device-tree", "start": 0x5000_0000u64, "size": 0x1000, "path": "/chosen/d/dt", "bootargs": null})
        );
    }

    #[test]
    fn document_shape() {
        let r = Report {
            plan: None,
            diagnostics: alloc::vec![],
        };
        let v = serde_json::to_value(Document::new(&r)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema": JSON_SCHEMA, "valid": false, "plan": null, "diagnostics": []})
        );
    }
}
