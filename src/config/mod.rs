//! The shared boot-configuration parser: `/chosen/<name>` dom0less nodes
//! (compatible `xen,domain`), legacy dom0 modules directly under
//! `/chosen`, and the hyperlaunch container `/chosen/hypervisor`, all into
//! one `BootPlan`. `../shared/bindings.md` is the contract; its decisions
//! are implemented here and the conformance suite (`tests/conformance`)
//! pins them.
//!
//! Every error is collected (not only the first), each naming node path,
//! property, what was expected and what was found. An invalid
//! configuration yields no plan: the hypervisor starts nothing.
//!
//! What dtvisor does not offer (Xen PV interfaces, static memory,
//! passthrough, cpupools, vCPU affinity, SVE, LLC colouring) is recognised
//! and refused with "not supported by dtvisor", never silently ignored.

pub mod diag;
pub mod model;
mod parse;
pub mod props;
pub mod render;

pub use diag::{Diagnostic, Kind, Severity};
pub use model::*;
pub use parse::{parse_size_kib, MAX_CMDLINE, MAX_VCPUS};

use crate::fdt::{Fdt, Node};
use crate::hw::HostMemory;
use alloc::format;
use alloc::string::{String, ToString};
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
    match Fdt::new(blob) {
        Ok(fdt) => parse(&fdt, &HostMemory::from_fdt(&fdt)),
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
        p.strings().any(|s| {
            s == "multiboot,module" || s == "xen,multiboot-module" || s.starts_with("module,")
        })
    })
}

/// `key=value` from a command line.
fn cmdline_value<'s>(cmdline: &'s str, key: &str) -> Option<&'s str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
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
    let mut d = Diags::default();
    let plan = {
        let mut p = Parser {
            d: &mut d,
            host,
            peek,
        };
        walk(fdt, &mut p)
    };
    let plan = if d.has_errors() { None } else { plan };
    let mut diagnostics = d.list;
    diagnostics.sort_by_key(|x| x.severity);
    Report { plan, diagnostics }
}

fn walk(fdt: &Fdt<'_>, p: &mut Parser<'_, '_>) -> Option<BootPlan> {
    let root = fdt.root();
    let chosen = root.children().find(|n| n.name() == "chosen");
    // Anything the containers do not cover: misplaced domains and modules.
    stray_nodes(&root, chosen.as_ref(), p);
    let Some(chosen) = chosen else {
        p.d.error(
            "/chosen",
            None,
            Kind::NoChosen,
            "no /chosen node: no domains configured".into(),
        );
        return None;
    };
    let hyp = chosen.children().find(|n| n.name() == "hypervisor");
    let domu_nodes: Vec<Node<'_>> = chosen
        .children()
        .filter(|n| compat_has(n, "xen,domain"))
        .collect();
    let mut domains = Vec::new();
    let mut hyp_modules = Vec::new();
    let mut hyp_cmdline_cfg: Option<String> = None;
    let container;
    let anc = [root, chosen];
    if let Some(h) = hyp {
        container = Container::Hyperlaunch;
        if let Some(first) = domu_nodes.first() {
            p.d.error(
                "/chosen/hypervisor",
                None,
                Kind::BothContainers,
                format!(
                    "both /chosen/hypervisor and dom0less domain /chosen/{} are present: use one container",
                    first.name()
                ),
            );
        }
        let ok_compat = compat_has(&h, "hypervisor,xen") || compat_has(&h, "hypervisor,dtvisor");
        if !ok_compat {
            let found = h
                .prop("compatible")
                .map_or("no compatible".to_string(), |c| parse::describe(&c));
            p.d.error(
                "/chosen/hypervisor",
                Some("compatible"),
                Kind::BadContainer,
                format!("expected \"hypervisor,xen\" or \"hypervisor,dtvisor\", found {found}"),
            );
        }
        let hanc = [root, chosen, h];
        for c in h.children() {
            let path = format!("/chosen/hypervisor/{}", c.name());
            let is_config = c.name() == "config"
                || c.prop("compatible")
                    .is_some_and(|x| x.strings().any(|s| s.ends_with(",config")));
            if is_config {
                if let Some(b) = c.prop("bootargs") {
                    hyp_cmdline_cfg = p.string(&path, &b);
                }
                let ccells = parse::cells_for_children(&hanc, &c);
                for m in c.children() {
                    let mpath = format!("{path}/{}", m.name());
                    if let Some(m) = p.module(&m, &mpath, ccells, true, None) {
                        if matches!(
                            m.kind,
                            ModuleKind::Kernel | ModuleKind::Ramdisk | ModuleKind::DeviceTree
                        ) {
                            p.d.error(&mpath, Some("compatible"), Kind::ModuleKind, format!("a {} module belongs to a domain, not to the hypervisor's config", m.kind.name()));
                        } else {
                            hyp_modules.push(m);
                        }
                    }
                }
            } else if compat_has(&c, "xen,domain") {
                if !c.is_enabled() {
                    p.d.warn(
                        &path,
                        Some("status"),
                        Kind::Disabled,
                        "status is not \"okay\": domain skipped".into(),
                    );
                    continue;
                }
                if let Some(dom) = p.domain(&c, &path, &hanc, Origin::Hyperlaunch) {
                    domains.push(dom);
                }
            } else if is_module_node(&c) {
                p.d.error(
                    &path,
                    None,
                    Kind::ModuleDepth,
                    "modules of /chosen/hypervisor belong in its config node or in a domain".into(),
                );
            } else {
                p.d.warn(
                    &path,
                    None,
                    Kind::UnknownNode,
                    "not a domain (compatible \"xen,domain\") nor the config node: ignored".into(),
                );
            }
        }
    } else {
        container = if domu_nodes.is_empty() {
            Container::Legacy
        } else {
            Container::Dom0less
        };
        for n in &domu_nodes {
            let path = format!("/chosen/{}", n.name());
            if !n.is_enabled() {
                p.d.warn(&path, Some("status"), Kind::Disabled, "status is not \"okay\": domain skipped (Xen ignores status; dtvisor honours it)".into());
                continue;
            }
            if let Some(dom) = p.domain(n, &path, &anc, Origin::Dom0less) {
                domains.push(dom);
            }
        }
    }

    // /chosen itself: legacy dom0 modules and the command lines.
    let ccells = parse::cells_for_children(&[root], &chosen);
    let mut legacy: Vec<Module> = Vec::new();
    let mut bare = 0;
    for c in chosen.children().filter(is_module_node) {
        let path = format!("/chosen/{}", c.name());
        let generic_only = c.prop("compatible").is_some_and(|x| {
            x.strings()
                .all(|s| s == "multiboot,module" || s == "xen,multiboot-module")
        });
        let guess = if generic_only {
            bare += 1;
            // Xen's rule (bindings 1.3): 1st kernel, 2nd ramdisk; from the
            // 2nd on, a module starting with the XSM magic is the policy.
            let start = c.prop("reg").and_then(|r| r.read_cells(0, ccells.0));
            let xsm = bare >= 2 && start.zip(p.peek).and_then(|(a, f)| f(a)) == Some(XSM_MAGIC);
            match bare {
                _ if xsm => Some(ModuleKind::XsmPolicy),
                1 => Some(ModuleKind::Kernel),
                2 => Some(ModuleKind::Ramdisk),
                _ => None,
            }
        } else {
            None
        };
        if let Some(m) = p.module(&c, &path, ccells, false, guess) {
            legacy.push(m);
        }
    }
    let str_prop = |p: &mut Parser<'_, '_>, name: &str| {
        chosen.prop(name).and_then(|x| p.string("/chosen", &x))
    };
    let xen_bootargs = str_prop(p, "xen,xen-bootargs");
    let dom0_bootargs = str_prop(p, "xen,dom0-bootargs");
    let bootargs = str_prop(p, "bootargs");
    // linux,initrd-start/end: a dom0 ramdisk.
    let initrd = match (
        chosen.prop("linux,initrd-start"),
        chosen.prop("linux,initrd-end"),
    ) {
        (None, None) => None,
        (Some(s), Some(e)) => {
            let rd = |x: &crate::fdt::Prop<'_>| match x.value.len() {
                4 => x.u32().map(u64::from),
                8 => x.u64(),
                _ => None,
            };
            match (rd(&s), rd(&e)) {
                (Some(a), Some(b)) if a < b => Some(Module {
                    kind: ModuleKind::Ramdisk,
                    range: crate::mm::Range::new(a, b),
                    bootargs: None,
                    path: "/chosen".into(),
                }),
                (Some(_), Some(_)) => {
                    p.d.error(
                        "/chosen",
                        Some("linux,initrd-end"),
                        Kind::BadValue,
                        "expected linux,initrd-start below linux,initrd-end".into(),
                    );
                    None
                }
                _ => {
                    p.d.error(
                        "/chosen",
                        Some("linux,initrd-start"),
                        Kind::BadLength,
                        "expected 1 or 2 cells for linux,initrd-start and -end".into(),
                    );
                    None
                }
            }
        }
        (Some(_), None) => {
            p.d.error(
                "/chosen",
                Some("linux,initrd-end"),
                Kind::Missing,
                "linux,initrd-start is present but linux,initrd-end is not".into(),
            );
            None
        }
        (None, Some(_)) => {
            p.d.error(
                "/chosen",
                Some("linux,initrd-start"),
                Kind::Missing,
                "linux,initrd-end is present but linux,initrd-start is not".into(),
            );
            None
        }
    };
    let kernels: Vec<&Module> = legacy
        .iter()
        .filter(|m| m.kind == ModuleKind::Kernel)
        .collect();
    let kernel_args_nonempty = kernels
        .first()
        .and_then(|k| k.bootargs.as_deref())
        .is_some_and(|s| !s.is_empty());
    // Xen's rule for which command line `bootargs` is (bindings 1.2).
    let bootargs_is_xen =
        xen_bootargs.is_none() && (dom0_bootargs.is_some() || kernel_args_nonempty);
    let hyp_cmdline = xen_bootargs
        .clone()
        .or(if bootargs_is_xen {
            bootargs.clone()
        } else {
            None
        })
        .or(hyp_cmdline_cfg)
        .or(if kernels.is_empty() {
            bootargs.clone()
        } else {
            None
        });
    for m in &legacy {
        if matches!(
            m.kind,
            ModuleKind::XsmPolicy | ModuleKind::Microcode | ModuleKind::Config
        ) {
            hyp_modules.push(m.clone());
        }
    }
    if kernels.len() > 1 {
        p.d.error(
            &kernels[1].path,
            Some("compatible"),
            Kind::DuplicateModule,
            format!("a second dom0 kernel; the first is {}", kernels[0].path),
        );
    }
    let ramdisks: Vec<&Module> = legacy
        .iter()
        .filter(|m| m.kind == ModuleKind::Ramdisk)
        .collect();
    if ramdisks.len() > 1 {
        p.d.error(
            &ramdisks[1].path,
            Some("compatible"),
            Kind::DuplicateModule,
            format!("a second dom0 ramdisk; the first is {}", ramdisks[0].path),
        );
    }
    if let Some(k) = kernels.first() {
        // dom0_mem / dom0_max_vcpus come from the hypervisor's command line.
        let xa = hyp_cmdline.as_deref().unwrap_or("");
        let cmd_prop = if xen_bootargs.is_some() || !bootargs_is_xen {
            "xen,xen-bootargs"
        } else {
            "bootargs"
        };
        let vcpus = match cmdline_value(xa, "dom0_max_vcpus") {
            Some(v) => match v.split('-').next_back().and_then(|x| x.parse::<u32>().ok()) {
                Some(n) if (1..=parse::MAX_VCPUS).contains(&n) => n,
                _ => {
                    p.d.error(
                        "/chosen",
                        Some(cmd_prop),
                        Kind::BadValue,
                        format!(
                            "dom0_max_vcpus: expected 1 to {}, found \"{v}\"",
                            parse::MAX_VCPUS
                        ),
                    );
                    1
                }
            },
            None => 1,
        };
        let mem = cmdline_value(xa, "dom0_mem").map(|v| {
            let size = v
                .split(',')
                .find(|x| !x.starts_with("min:") && !x.starts_with("max:"));
            (v, size.and_then(parse_size_kib))
        });
        let memory_kib = match mem {
            Some((_, Some(kib))) if kib > 0 && kib % 4 == 0 => kib,
            Some((v, _)) => {
                p.d.error(
                    "/chosen",
                    Some(cmd_prop),
                    Kind::BadValue,
                    format!("dom0_mem: expected a size such as 512M, found \"{v}\""),
                );
                0
            }
            None => {
                p.d.error(
                    "/chosen",
                    Some("xen,xen-bootargs"),
                    Kind::Missing,
                    "a legacy dom0 kernel is present: give its memory with dom0_mem=<size> in xen,xen-bootargs".into(),
                );
                0
            }
        };
        let cmdline = dom0_bootargs
            .clone()
            .or_else(|| k.bootargs.clone())
            .or(if bootargs_is_xen {
                None
            } else {
                bootargs.clone()
            });
        let ramdisk = ramdisks.first().map(|m| (*m).clone()).or(initrd);
        if !domains.is_empty() || container == Container::Legacy {
            domains.insert(
                0,
                Domain {
                    caps: Caps(Caps::CONTROL | Caps::HARDWARE),
                    vcpus,
                    memory_kib,
                    cmdline,
                    ramdisk,
                    ..Domain::new(
                        "dom0".into(),
                        "/chosen".into(),
                        Origin::LegacyDom0,
                        (*k).clone(),
                    )
                },
            );
        }
    } else if let Some(r) = ramdisks.first() {
        p.d.error(
            &r.path,
            Some("compatible"),
            Kind::NoKernel,
            "a dom0 ramdisk without a dom0 kernel module".into(),
        );
    }

    // Domain ids: explicit ones first, then the lowest free from 1.
    let mut used: Vec<(u16, String)> = Vec::new();
    for dom in &domains {
        if dom.domid != u16::MAX {
            if let Some((_, other)) = used.iter().find(|(id, _)| *id == dom.domid) {
                p.d.error(
                    &dom.path,
                    Some("domid"),
                    Kind::Duplicate,
                    format!("domain id {} is also given to {other}", dom.domid),
                );
            } else {
                used.push((dom.domid, dom.path.clone()));
            }
        }
    }
    let mut next = 1u16;
    for dom in domains.iter_mut().filter(|d| d.domid == u16::MAX) {
        while used.iter().any(|(id, _)| *id == next) {
            next += 1;
        }
        dom.domid = next;
        used.push((next, dom.path.clone()));
    }
    // One hardware domain, one xenstore domain; unique names.
    for (bit, what) in [(Caps::HARDWARE, "hardware"), (Caps::XENSTORE, "xenstore")] {
        let with: Vec<&Domain> = domains.iter().filter(|d| d.caps.0 & bit != 0).collect();
        if with.len() > 1 {
            let prop = if with[1].origin == Origin::Hyperlaunch && with[1].caps.0 == Caps::ALL {
                "role"
            } else {
                "capabilities"
            };
            p.d.error(
                &with[1].path,
                Some(prop),
                Kind::Conflict,
                format!(
                    "only one {what} domain is allowed; {} is one already",
                    with[0].path
                ),
            );
        }
    }
    // xen,enhanced "enabled"/"legacy" needs a xenstore domain (or a dom0).
    let has_xenstore = domains
        .iter()
        .any(|d| d.caps.0 & Caps::XENSTORE != 0 || d.origin == Origin::LegacyDom0);
    for dom in domains
        .iter()
        .filter(|d| matches!(d.enhanced, Enhanced::Enabled | Enhanced::Legacy))
    {
        if !has_xenstore {
            p.d.error(
                &dom.path,
                Some("xen,enhanced"),
                Kind::Conflict,
                "xenstore requested, but no domain has the xenstore role (capabilities 0x4) and there is no dom0: use \"no-xenstore\"".into(),
            );
        }
    }
    for (i, dom) in domains.iter().enumerate() {
        if let Some(o) = domains[..i].iter().find(|o| o.name == dom.name) {
            p.d.error(
                &dom.path,
                None,
                Kind::DuplicateName,
                format!("domain name {} is also used by {}", dom.name, o.path),
            );
        }
    }
    let mods: Vec<&Module> = domains
        .iter()
        .flat_map(|d| core::iter::once(&d.kernel).chain(d.ramdisk.as_ref()))
        .chain(hyp_modules.iter())
        .collect();
    let mut dedup: Vec<&Module> = Vec::new();
    for m in mods {
        if !dedup.iter().any(|o| o.path == m.path && o.range == m.range) {
            dedup.push(m);
        }
    }
    p.check_modules(&dedup);
    if domains.is_empty() && !p.d.has_errors() {
        p.d.error(
            "/chosen",
            None,
            Kind::NoDomains,
            "no domains configured".into(),
        );
    }
    Some(BootPlan {
        container,
        domains,
        hyp_cmdline,
        hyp_modules,
    })
}

/// Reports domain and module nodes where no container reads them: one
/// pre-order pass over the tree, keeping the ancestors on a stack.
fn stray_nodes(root: &Node<'_>, chosen: Option<&Node<'_>>, p: &mut Parser<'_, '_>) {
    struct Anc<'t> {
        name: &'t str,
        module: bool,
        domain: bool,
    }
    let chosen_off = chosen.map(|c| c.offset());
    let mut stack: Vec<Anc<'_>> = Vec::new();
    let mut in_chosen_depth: Option<usize> = None;
    let path = |stack: &[Anc<'_>], last: &str| {
        let mut s = String::new();
        for c in stack.iter().map(|a| a.name).chain(core::iter::once(last)) {
            s.push('/');
            s.push_str(c);
        }
        s
    };
    for c in root.descendants() {
        let depth = c.depth();
        stack.truncate(depth - 1);
        if in_chosen_depth.is_some_and(|d| depth <= d) {
            in_chosen_depth = None;
        }
        if Some(c.offset()) == chosen_off {
            in_chosen_depth = Some(depth);
        }
        let module = is_module_node(&c);
        let domain = !module && compat_has(&c, "xen,domain");
        let name = c.name();
        if in_chosen_depth.is_none() {
            if module || domain {
                let cpath = path(&stack, name);
                let what = if module {
                    "boot module"
                } else {
                    "xen,domain node"
                };
                let hint = if cpath.starts_with("/chosen") {
                    " (it is not under /chosen)"
                } else {
                    ""
                };
                p.d.warn(
                    &cpath,
                    None,
                    Kind::ModuleOutside,
                    format!("{what} outside /chosen is ignored{hint}"),
                );
            }
        } else if depth >= 3 && (module || domain) {
            let parent = &stack[depth - 2];
            let bad = if domain {
                // Only /chosen/hypervisor/<domain> nests a domain deeper.
                !(parent.domain || depth == 3 && parent.name == "hypervisor")
            } else {
                let read = parent.domain
                    || parent.module
                    || depth == 4 && parent.name == "config"
                    || depth == 3 && parent.name == "hypervisor";
                !read
            };
            if bad {
                let cpath = path(&stack, name);
                if domain {
                    p.d.error(
                        &cpath,
                        None,
                        Kind::Nesting,
                        "a domain must be a direct child of /chosen or /chosen/hypervisor".into(),
                    );
                } else {
                    p.d.error(
                        &cpath,
                        None,
                        Kind::ModuleDepth,
                        "module nested where no domain or config node reads it".into(),
                    );
                }
            }
        }
        stack.push(Anc {
            name,
            module,
            domain,
        });
    }
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
