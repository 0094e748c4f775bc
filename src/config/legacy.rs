//! `/chosen` itself: legacy dom0 modules, Xen's command lines,
//! `linux,initrd-start/end`, and the dom0 they describe (bindings 1.2,
//! 1.3).

use super::diag::Kind;
use super::model::*;
use super::parse::{self, parse_size_kib, Parser};
use super::props::GENERIC_MODULE;
use super::{is_module_node, XSM_MAGIC};
use crate::fdt::{Node, Prop};
use crate::mm::Range;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// What `/chosen` holds outside the containers.
pub(super) struct Chosen {
    modules: Vec<Module>,
    xen_bootargs: Option<String>,
    dom0_bootargs: Option<String>,
    bootargs: Option<String>,
    initrd: Option<Module>,
}

/// `key=value` from a command line.
fn cmdline_value<'s>(cmdline: &'s str, key: &str) -> Option<&'s str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

impl Chosen {
    pub fn read(root: Node<'_>, chosen: Node<'_>, p: &mut Parser<'_, '_>) -> Chosen {
        let modules = legacy_modules(root, chosen, p);
        let mut str_prop = |name: &str| chosen.prop(name).and_then(|x| p.string("/chosen", &x));
        let xen_bootargs = str_prop("xen,xen-bootargs");
        let dom0_bootargs = str_prop("xen,dom0-bootargs");
        let bootargs = str_prop("bootargs");
        let initrd = initrd(&chosen, p);
        Chosen {
            modules,
            xen_bootargs,
            dom0_bootargs,
            bootargs,
            initrd,
        }
    }

    fn of_kind(&self, kind: ModuleKind) -> Vec<&Module> {
        self.modules.iter().filter(|m| m.kind == kind).collect()
    }

    /// Xen's rule for which command line `bootargs` is (bindings 1.2).
    fn bootargs_is_xen(&self) -> bool {
        let kernel_args_nonempty = self
            .of_kind(ModuleKind::Kernel)
            .first()
            .and_then(|k| k.bootargs.as_deref())
            .is_some_and(|s| !s.is_empty());
        self.xen_bootargs.is_none() && (self.dom0_bootargs.is_some() || kernel_args_nonempty)
    }

    /// The hypervisor's command line: `xen,xen-bootargs`, else `bootargs`
    /// when it is Xen's, else the hyperlaunch config's, else `bootargs`
    /// when there is no dom0 kernel.
    pub fn hyp_cmdline(&self, config: Option<String>) -> Option<String> {
        let bootargs_if = |c: bool| if c { self.bootargs.clone() } else { None };
        self.xen_bootargs
            .clone()
            .or(bootargs_if(self.bootargs_is_xen()))
            .or(config)
            .or(bootargs_if(self.of_kind(ModuleKind::Kernel).is_empty()))
    }

    /// The hypervisor's own modules among them.
    pub fn hyp_modules(&self) -> impl Iterator<Item = Module> + '_ {
        self.modules
            .iter()
            .filter(|m| {
                matches!(
                    m.kind,
                    ModuleKind::XsmPolicy | ModuleKind::Microcode | ModuleKind::Config
                )
            })
            .cloned()
    }

    /// One dom0 kernel, one dom0 ramdisk.
    pub fn check_duplicates(&self, p: &mut Parser<'_, '_>) {
        for kind in [ModuleKind::Kernel, ModuleKind::Ramdisk] {
            let mods = self.of_kind(kind);
            if mods.len() > 1 {
                p.d.error(
                    &mods[1].path,
                    Some("compatible"),
                    Kind::DuplicateModule,
                    format!(
                        "a second dom0 {}; the first is {}",
                        kind.name(),
                        mods[0].path
                    ),
                );
            }
        }
    }

    /// The legacy dom0, when there is a dom0 kernel module: its vCPUs and
    /// memory from `hyp_cmdline`, its command line and ramdisk.
    pub fn dom0(&self, hyp_cmdline: Option<&str>, p: &mut Parser<'_, '_>) -> Option<Domain> {
        let ramdisks = self.of_kind(ModuleKind::Ramdisk);
        let Some(k) = self.of_kind(ModuleKind::Kernel).first().copied() else {
            if let Some(r) = ramdisks.first() {
                p.d.error(
                    &r.path,
                    Some("compatible"),
                    Kind::NoKernel,
                    "a dom0 ramdisk without a dom0 kernel module".into(),
                );
            }
            return None;
        };
        let bootargs_is_xen = self.bootargs_is_xen();
        // dom0_mem / dom0_max_vcpus come from the hypervisor's command line.
        let xa = hyp_cmdline.unwrap_or("");
        let cmd_prop = if self.xen_bootargs.is_some() || !bootargs_is_xen {
            "xen,xen-bootargs"
        } else {
            "bootargs"
        };
        let vcpus = dom0_vcpus(xa, cmd_prop, p);
        let memory_kib = dom0_memory(xa, cmd_prop, p);
        let cmdline = self
            .dom0_bootargs
            .clone()
            .or_else(|| k.bootargs.clone())
            .or(if bootargs_is_xen {
                None
            } else {
                self.bootargs.clone()
            });
        let ramdisk = ramdisks
            .first()
            .map(|m| (*m).clone())
            .or(self.initrd.clone());
        Some(Domain {
            caps: Caps(Caps::CONTROL | Caps::HARDWARE),
            vcpus,
            memory_kib,
            cmdline,
            ramdisk,
            ..Domain::new(
                "dom0".into(),
                "/chosen".into(),
                Origin::LegacyDom0,
                k.clone(),
            )
        })
    }
}

/// The modules directly under /chosen. Those with only a generic
/// compatible get a kind by position (`bare_kind`).
fn legacy_modules(root: Node<'_>, chosen: Node<'_>, p: &mut Parser<'_, '_>) -> Vec<Module> {
    let ccells = parse::cells_for_children(&[root], &chosen);
    let mut modules = Vec::new();
    let mut bare = 0;
    for c in chosen.children().filter(is_module_node) {
        let path = format!("/chosen/{}", c.name());
        let generic_only = c
            .prop("compatible")
            .is_some_and(|x| x.strings().all(|s| GENERIC_MODULE.contains(&s)));
        let guess = if generic_only {
            bare += 1;
            bare_kind(&c, bare, ccells, p)
        } else {
            None
        };
        modules.extend(p.module(&c, &path, ccells, false, guess));
    }
    modules
}

/// Xen's rule (bindings 1.3) for the `nth` bare module: 1st kernel, 2nd
/// ramdisk; from the 2nd on, a module starting with the XSM magic is the
/// policy.
fn bare_kind(
    c: &Node<'_>,
    nth: usize,
    cells: (u32, u32),
    p: &Parser<'_, '_>,
) -> Option<ModuleKind> {
    let start = c.prop("reg").and_then(|r| r.read_cells(0, cells.0));
    let xsm = nth >= 2 && start.zip(p.peek).and_then(|(a, f)| f(a)) == Some(XSM_MAGIC);
    match nth {
        _ if xsm => Some(ModuleKind::XsmPolicy),
        1 => Some(ModuleKind::Kernel),
        2 => Some(ModuleKind::Ramdisk),
        _ => None,
    }
}

/// `linux,initrd-start/end`: a dom0 ramdisk.
fn initrd(chosen: &Node<'_>, p: &mut Parser<'_, '_>) -> Option<Module> {
    let missing = |p: &mut Parser<'_, '_>, prop: &str, msg: &str| {
        p.d.error("/chosen", Some(prop), Kind::Missing, msg.into());
        None
    };
    match (
        chosen.prop("linux,initrd-start"),
        chosen.prop("linux,initrd-end"),
    ) {
        (None, None) => None,
        (Some(s), Some(e)) => initrd_range(&s, &e, p),
        (Some(_), None) => missing(
            p,
            "linux,initrd-end",
            "linux,initrd-start is present but linux,initrd-end is not",
        ),
        (None, Some(_)) => missing(
            p,
            "linux,initrd-start",
            "linux,initrd-end is present but linux,initrd-start is not",
        ),
    }
}

fn initrd_range(s: &Prop<'_>, e: &Prop<'_>, p: &mut Parser<'_, '_>) -> Option<Module> {
    let rd = |x: &Prop<'_>| match x.value.len() {
        4 => x.u32().map(u64::from),
        8 => x.u64(),
        _ => None,
    };
    match (rd(s), rd(e)) {
        (Some(a), Some(b)) if a < b => Some(Module {
            kind: ModuleKind::Ramdisk,
            range: Range::new(a, b),
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

/// `dom0_max_vcpus=` (a range `min-max` gives max); 1 when absent.
fn dom0_vcpus(xa: &str, cmd_prop: &str, p: &mut Parser<'_, '_>) -> u32 {
    let Some(v) = cmdline_value(xa, "dom0_max_vcpus") else {
        return 1;
    };
    match v.split('-').next_back().and_then(|x| x.parse::<u32>().ok()) {
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
    }
}

/// `dom0_mem=<size>`, as Xen on Arm takes it (one size; the x86 forms
/// with `min:` and `max:` are refused, as Xen on Arm refuses them):
/// required (Xen defaults to 512 MiB with a warning; dtvisor asks).
fn dom0_memory(xa: &str, cmd_prop: &str, p: &mut Parser<'_, '_>) -> u64 {
    let Some(v) = cmdline_value(xa, "dom0_mem") else {
        p.d.error(
            "/chosen",
            Some("xen,xen-bootargs"),
            Kind::Missing,
            "a legacy dom0 kernel is present: give its memory with dom0_mem=<size> in xen,xen-bootargs".into(),
        );
        return 0;
    };
    if v.contains("min:") || v.contains("max:") {
        p.d.error(
            "/chosen",
            Some(cmd_prop),
            Kind::Unsupported,
            format!("dom0_mem: \"{v}\": min: and max: are x86 forms; on Arm (Xen's and dtvisor) dom0_mem is one size such as 512M"),
        );
        return 0;
    }
    match parse_size_kib(v) {
        Some(kib) if kib > 0 && kib % 4 == 0 => kib,
        _ => {
            p.d.error(
                "/chosen",
                Some(cmd_prop),
                Kind::BadValue,
                format!("dom0_mem: expected a size such as 512M, found \"{v}\""),
            );
            0
        }
    }
}
