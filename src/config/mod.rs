//! The shared boot-configuration parser: `/chosen/<name>` dom0less nodes
//! (compatible `xen,domain`), legacy dom0 modules directly under
//! `/chosen`, and the hyperlaunch container `/chosen/hypervisor`, all into
//! one `BootPlan`. `../shared/bindings.md` is the contract; its decisions
//! are implemented here and the conformance suite (`tests/conformance`)
//! pins them.
//!
//! `walk` is the outline of a parse; the steps live in `container.rs`
//! (the containers, and nodes no container reads), `parse.rs` and
//! `parse/domain.rs` (one module or domain node, driven by the tables in
//! `props.rs`), `legacy.rs` (/chosen itself: the legacy dom0 and the
//! command lines) and `across.rs` (the checks across domains).
//!
//! Every error is collected (not only the first), each naming node path,
//! property, what was expected and what was found. An invalid
//! configuration yields no plan: the hypervisor starts nothing.
//!
//! Partial device trees (passthrough) are read by `partial` and resolved
//! against the host device tree by `devices`, where the module's contents
//! are at hand (`parse_with`).
//!
//! What dtvisor does not offer (Xen PV interfaces, cpupools, vCPU
//! affinity, SVE, LLC colouring) is recognised and refused with "not
//! supported by dtvisor", never silently ignored.

mod across;
mod container;
mod devices;
pub mod diag;
pub mod hwdom;
pub mod hypopts;
mod legacy;
pub mod model;
mod parse;
pub mod partial;
pub mod props;
pub mod render;

pub use diag::{Diagnostic, Kind, Severity};
pub use model::*;
pub use parse::{parse_size_kib, MAX_CMDLINE, MAX_VCPUS};

use crate::fdt::{Fdt, Node};
use crate::hw::HostMemory;
use alloc::string::ToString;
use alloc::vec::Vec;
use diag::Diags;
use parse::Parser;

/// The parser's result: a plan when the configuration is valid, and
/// every diagnostic (errors and warnings) either way.
#[derive(Clone, Debug)]
pub struct Report {
    pub plan: Option<BootPlan>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}

/// Parses a raw blob (the fuzzer's and the CLI's entry): host memory comes
/// from the same blob.
pub fn parse_blob(blob: &[u8]) -> Report {
    parse_blob_with(blob, None)
}

/// `parse_blob`, with modules' contents where `contents` has them (the
/// host tool given module files; the conformance suite).
pub fn parse_blob_with(blob: &[u8], contents: Option<&Contents<'_>>) -> Report {
    match Fdt::new(blob) {
        Ok(fdt) => parse_with(&fdt, &HostMemory::from_fdt(&fdt), None, contents),
        Err(e) => Report {
            plan: None,
            diagnostics: alloc::vec![Diagnostic {
                severity: Severity::Error,
                path: "/".into(),
                property: None,
                kind: Kind::InvalidFdt,
                message: e.to_string(),
            }],
        },
    }
}

fn compat_has(n: &Node<'_>, c: &str) -> bool {
    n.is_compatible(c)
}

fn is_module_node(n: &Node<'_>) -> bool {
    n.prop("compatible").is_some_and(|p| {
        p.strings()
            .any(|s| props::GENERIC_MODULE.contains(&s) || s.starts_with("module,"))
    })
}

/// Parses the boot configuration of `fdt`. `host` gives RAM and every
/// reserved range (the image adds its own range and the DTB's).
pub fn parse(fdt: &Fdt<'_>, host: &HostMemory) -> Report {
    parse_with_memory(fdt, host, None)
}

/// XSM (FLASK) policy magic, the first word of a policy file.
pub const XSM_MAGIC: u32 = 0xf97c_ff8c;

/// `parse`, where module contents can be read (the image): `peek(pa)`
/// returns the little-endian word at `pa`. It lets a bare
/// `multiboot,module` under /chosen be recognised as an XSM policy by its
/// magic, as Xen does.
pub fn parse_with_memory(
    fdt: &Fdt<'_>,
    host: &HostMemory,
    peek: Option<&dyn Fn(u64) -> Option<u32>>,
) -> Report {
    parse_with(fdt, host, peek, None)
}

/// Reads a module's contents: `(node path, reg, visit)` calls `visit`
/// with the module's bytes and returns true, or returns false when they
/// are not at hand (the host tool without the file).
pub type Contents<'a> = dyn Fn(&str, crate::mm::Range, &mut dyn FnMut(&[u8])) -> bool + 'a;

/// `parse_with_memory`, also reading modules' contents where `contents`
/// gives them: partial device trees are checked and their devices
/// resolved against the host device tree.
pub fn parse_with<'a>(
    fdt: &Fdt<'_>,
    host: &'a HostMemory,
    peek: Option<&'a dyn Fn(u64) -> Option<u32>>,
    contents: Option<&'a Contents<'a>>,
) -> Report {
    let mut d = Diags::default();
    let plan = {
        let mut p = Parser {
            d: &mut d,
            host,
            peek,
            contents,
        };
        walk(fdt, &mut p)
    };
    let plan = if d.has_errors() { None } else { plan };
    let mut diagnostics = d.list;
    diagnostics.sort_by_key(|x| x.severity);
    Report { plan, diagnostics }
}

/// A parse, in outline: find the containers and parse each domain in
/// them, read /chosen itself (the legacy dom0 and the command lines), then
/// check across domains.
fn walk(fdt: &Fdt<'_>, p: &mut Parser<'_, '_>) -> Option<BootPlan> {
    let root = fdt.root();
    let chosen = root.children().find(|n| n.name() == "chosen");
    // Anything the containers do not cover: misplaced domains and modules.
    container::stray_nodes(&root, chosen.as_ref(), p);
    let Some(chosen) = chosen else {
        p.d.error(
            "/chosen",
            None,
            Kind::NoChosen,
            "no /chosen node: no domains configured".into(),
        );
        return None;
    };
    let found = container::read(root, chosen, p);
    let legacy = legacy::Chosen::read(root, chosen, p);
    let hyp_cmdline = legacy.hyp_cmdline(found.config_cmdline);
    let mut hyp_modules = found.hyp_modules;
    hyp_modules.extend(legacy.hyp_modules());
    legacy.check_duplicates(p);
    let mut domains = found.domains;
    if let Some(dom0) = legacy.dom0(hyp_cmdline.as_deref(), p) {
        if !domains.is_empty() || found.container == Container::Legacy {
            domains.insert(0, dom0);
        }
    }
    across::check(&mut domains, &hyp_modules, p);
    hwdom::resolve(&mut domains, fdt, p);
    devices::check(&domains, fdt, p);
    if domains.is_empty() && !p.d.has_errors() {
        p.d.error(
            "/chosen",
            None,
            Kind::NoDomains,
            "no domains configured".into(),
        );
    }
    Some(BootPlan {
        container: found.container,
        domains,
        hyp_cmdline,
        hyp_modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bindings #21/#22: the second bare module is the ramdisk, unless it
    /// carries the XSM magic (then it is the hypervisor's policy).
    #[test]
    fn xsm_magic_guess() {
        let src = r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
  memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
  chosen { #address-cells = <2>; #size-cells = <2>; xen,xen-bootargs = "dom0_mem=256M";
    module@50000000 { compatible = "multiboot,module"; reg = <0x0 0x50000000 0x0 0x200000>; };
    module@52000000 { compatible = "multiboot,module"; reg = <0x0 0x52000000 0x0 0x1000>; };
  };
};
"#;
        let blob = crate::fdt::tests::dtc(src);
        let fdt = Fdt::new(&blob).unwrap();
        let host = HostMemory::from_fdt(&fdt);
        let plain = parse(&fdt, &host).plan.unwrap();
        assert_eq!(
            plain.domains[0].ramdisk.as_ref().unwrap().range.start,
            0x5200_0000
        );
        assert!(plain.hyp_modules.is_empty());
        let peek = |a: u64| (a == 0x5200_0000).then_some(XSM_MAGIC);
        let with = parse_with_memory(&fdt, &host, Some(&peek)).plan.unwrap();
        assert!(with.domains[0].ramdisk.is_none());
        assert_eq!(with.hyp_modules[0].kind, ModuleKind::XsmPolicy);
    }
}
