//! The shared parser. Both containers hand every domain node to
//! `Parser::domain`; what differs between the bindings is the table in
//! `props.rs` (names, encodings, where each is allowed), not code paths.

use super::diag::{Diags, Kind};
use super::model::*;
use super::props::{self, Field, Scope, PROPS};
use crate::fdt::{Node, Prop};
use crate::hw::{HostMemory, ReservedKind};
use crate::mm::range::Size;
use crate::mm::Range;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Longest module command line accepted (Xen: 1024).
pub const MAX_CMDLINE: usize = 4096;
/// Most vCPUs per domain (Xen's guest limit and the guest GICR region).
pub const MAX_VCPUS: u32 = 128;
/// Largest guest memory: Xen's guest RAM0 + RAM1 banks.
pub const MAX_MEMORY_KIB: u64 = 1019 << 20;
/// First reserved domain id.
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

pub(crate) struct Parser<'a, 'd> {
    pub d: &'d mut Diags,
    pub host: &'a HostMemory,
    /// Reads the first 32-bit word of a module, where memory is at hand.
    pub peek: Option<&'a dyn Fn(u64) -> Option<u32>>,
}

/// Renders a value for "found ..." in messages.
pub fn describe(p: &Prop<'_>) -> String {
    let v = p.value;
    if v.is_empty() {
        return "an empty value".into();
    }
    if let Some(s) = p.str() {
        if s.bytes().all(|c| (0x20..0x7f).contains(&c))
            && (!v.len().is_multiple_of(4) || !s.is_empty())
        {
            return format!("a string \"{s}\"");
        }
    }
    if let Some(cells) = p.cells() {
        let cells: Vec<String> = cells.take(6).map(|c| format!("{c:#x}")).collect();
        let n = v.len() / 4;
        let more = if n > 6 { " ..." } else { "" };
        return format!(
            "{n} cell{} ({}{more})",
            if n == 1 { "" } else { "s" },
            cells.join(" ")
        );
    }
    format!("{} bytes", v.len())
}

/// The cells that govern the `reg` of `node`'s children: the node's own
/// `#address-cells`/`#size-cells`, else inherited from its ancestors
/// (Xen's rule, kept for compatibility), root default 2/1.
pub fn cells_for_children(ancestors: &[Node<'_>], node: &Node<'_>) -> (u32, u32) {
    let (mut a, mut s) = (None, None);
    for n in core::iter::once(node).chain(ancestors.iter().rev()) {
        let (na, ns) = n.cells();
        a = a.or(na);
        s = s.or(ns);
        if a.is_some() && s.is_some() {
            break;
        }
    }
    (a.unwrap_or(2), s.unwrap_or(1))
}

fn printable(s: &str) -> bool {
    s.bytes().all(|c| (0x20..0x7f).contains(&c) || c == b'\t')
}

/// Parses a size with an optional K/M/G/T suffix; no suffix means KiB
/// (Xen's `dom0_mem` syntax). Returns KiB.
pub fn parse_size_kib(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 10),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 20),
        b'T' | b't' => (&s[..s.len() - 1], 1 << 30),
        b'0'..=b'9' => (s, 1),
        _ => return None,
    };
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl<'a, 'd> Parser<'a, 'd> {
    fn err(&mut self, path: &str, prop: &str, kind: Kind, msg: String) {
        self.d.error(path, Some(prop), kind, msg);
    }

    /// A u32 property: exactly one cell.
    pub fn u32(&mut self, path: &str, p: &Prop<'_>) -> Option<u32> {
        let v = p.u32();
        if v.is_none() {
            self.err(
                path,
                p.name,
                Kind::BadLength,
                format!("expected 1 cell (u32), found {}", describe(p)),
            );
        }
        v
    }

    /// A string property: NUL-terminated, printable, one string.
    pub fn string(&mut self, path: &str, p: &Prop<'_>) -> Option<String> {
        match p.str() {
            Some(s) if printable(s) => Some(s.to_string()),
            _ => {
                let found = if p.value.last() != Some(&0) {
                    format!("{} bytes without a terminating NUL", p.value.len())
                } else {
                    describe(p)
                };
                self.err(
                    path,
                    p.name,
                    Kind::BadString,
                    format!("expected a printable string, found {found}"),
                );
                None
            }
        }
    }

    /// `memory`, `mem-min`, `mem-max`: u64 KiB (2 cells), or inside
    /// hyperlaunch the string form `[min:<size>,][max:<size>,]<size>`.
    /// Returns (size, min, max) in KiB.
    fn memory(
        &mut self,
        path: &str,
        p: &Prop<'_>,
        hyperlaunch: bool,
    ) -> Option<(u64, Option<u64>, Option<u64>)> {
        if let Some(kib) = p.u64() {
            return Some((kib, None, None));
        }
        let is_text = p.str().is_some_and(|s| !s.is_empty() && printable(s));
        if is_text && hyperlaunch && p.name == "memory" {
            let s = p.str().unwrap_or("");
            let (mut size, mut min, mut max) = (None, None, None);
            let mut ok = true;
            for part in s.split(',') {
                if let Some(v) = part.strip_prefix("min:") {
                    min = parse_size_kib(v).or_else(|| {
                        ok = false;
                        None
                    });
                } else if let Some(v) = part.strip_prefix("max:") {
                    max = parse_size_kib(v).or_else(|| {
                        ok = false;
                        None
                    });
                } else {
                    size = parse_size_kib(part).or_else(|| {
                        ok = false;
                        None
                    });
                }
            }
            return match (ok, size) {
                (true, Some(sz)) => Some((sz, min, max)),
                _ => {
                    self.err(
                        path,
                        p.name,
                        Kind::BadValue,
                        format!(
                            "expected u64 KiB (2 cells) or a size like \"256M\" or \"min:128M,max:512M,256M\", found {}",
                            describe(p)
                        ),
                    );
                    None
                }
            };
        }
        let hint = if is_text {
            let kib = p.str().and_then(parse_size_kib);
            match kib {
                Some(k) => format!(
                    " (write <0x{:x} 0x{:x}> for {})",
                    k >> 32,
                    k & 0xffff_ffff,
                    Size(k << 10)
                ),
                None => String::new(),
            }
        } else if let Some(c) = p.u32() {
            format!(" (write <0x0 {c:#x}> for {})", Size((c as u64) << 10))
        } else {
            String::new()
        };
        self.err(
            path,
            p.name,
            Kind::BadLength,
            format!("expected 2 cells (u64 KiB), found {}{hint}", describe(p)),
        );
        None
    }

    fn check_memory(&mut self, path: &str, prop: &str, kib: u64) -> bool {
        if kib == 0 {
            self.err(
                path,
                prop,
                Kind::Zero,
                "expected more than 0 KiB, found 0".into(),
            );
            false
        } else if !kib.is_multiple_of(4) {
            self.err(
                path,
                prop,
                Kind::Alignment,
                format!("expected a multiple of 4 KiB (a page), found {kib} KiB"),
            );
            false
        } else if kib > MAX_MEMORY_KIB {
            self.err(
                path,
                prop,
                Kind::OutOfRange,
                format!(
                    "expected at most {} (the guest RAM banks), found {}",
                    Size(MAX_MEMORY_KIB << 10),
                    Size(kib << 10)
                ),
            );
            false
        } else {
            true
        }
    }

    /// Parses one module node. `cells` are the parent's (inherited) cells.
    pub fn module(
        &mut self,
        node: &Node<'_>,
        path: &str,
        cells: (u32, u32),
        hyperlaunch: bool,
        guess: Option<ModuleKind>,
    ) -> Option<Module> {
        let compat: Vec<&str> = node
            .prop("compatible")
            .map(|p| p.strings().collect())
            .unwrap_or_default();
        let generic = compat
            .iter()
            .any(|c| *c == "multiboot,module" || *c == "xen,multiboot-module");
        let mut kind = None;
        for c in &compat {
            let k = match *c {
                "multiboot,kernel" | "xen,linux-zimage" => Some(ModuleKind::Kernel),
                "multiboot,ramdisk" | "xen,linux-initrd" => Some(ModuleKind::Ramdisk),
                "multiboot,device-tree" => Some(ModuleKind::DeviceTree),
                "xen,xsm-policy" | "multiboot,xsm-policy" => Some(ModuleKind::XsmPolicy),
                "multiboot,microcode" => Some(ModuleKind::Microcode),
                "module,kernel" if hyperlaunch => Some(ModuleKind::Kernel),
                "module,ramdisk" if hyperlaunch => Some(ModuleKind::Ramdisk),
                "module,device-tree" if hyperlaunch => Some(ModuleKind::DeviceTree),
                "module,xsm-policy" if hyperlaunch => Some(ModuleKind::XsmPolicy),
                "module,microcode" if hyperlaunch => Some(ModuleKind::Microcode),
                "module,config" if hyperlaunch => Some(ModuleKind::Config),
                _ => None,
            };
            if k.is_some() {
                kind = k;
                break;
            }
        }
        let module_compat = compat.iter().any(|c| c.starts_with("module,"));
        if module_compat && !hyperlaunch {
            self.err(
                path,
                "compatible",
                Kind::HyperlaunchOnly,
                "module,<kind> compatibles belong to /chosen/hypervisor; use \"multiboot,<kind>\", \"multiboot,module\"".into(),
            );
            return None;
        }
        if !generic && !module_compat {
            self.err(
                path,
                "compatible",
                Kind::BadModule,
                format!(
                    "expected \"multiboot,module\" beside the module kind, found {}",
                    node.prop("compatible")
                        .map_or("no compatible".to_string(), |p| describe(&p))
                ),
            );
            return None;
        }
        // Locator strings must agree with the property present.
        let has_reg = node.prop("reg").is_some() || node.prop("module-addr").is_some();
        let has_index = node.prop("module-index").is_some();
        if compat.contains(&"module,index") && !has_index
            || compat.contains(&"module,addr") && !has_reg
        {
            self.err(
                path,
                "compatible",
                Kind::Conflict,
                "the locator compatible does not match the location property present".into(),
            );
        }
        if has_index {
            if has_reg {
                self.err(
                    path,
                    "module-index",
                    Kind::Conflict,
                    "expected either reg or module-index, found both".into(),
                );
            } else {
                self.err(
                    path,
                    "module-index",
                    Kind::Unsupported,
                    "module-index has no module chain to index on Arm: give the module's location with reg".into(),
                );
            }
            return None;
        }
        let kind = match kind.or(guess) {
            Some(k) => k,
            None => {
                self.err(
                    path,
                    "compatible",
                    Kind::ModuleKind,
                    "expected a specific module kind (\"multiboot,kernel\", \"multiboot,ramdisk\", ...) beside \"multiboot,module\"".into(),
                );
                return None;
            }
        };
        if node.prop("xen,uefi-binary").is_some() && !has_reg {
            self.err(
                path,
                "xen,uefi-binary",
                Kind::Unsupported,
                "xen,uefi-binary needs UEFI boot; dtvisor boots from a DTB: give reg".into(),
            );
            return None;
        }
        let regp = match node.prop("reg").or_else(|| {
            if hyperlaunch {
                node.prop("module-addr")
            } else {
                None
            }
        }) {
            Some(p) => p,
            None => {
                self.d.error(
                    path,
                    Some("reg"),
                    Kind::Missing,
                    "expected the module's location (reg), found none".into(),
                );
                return None;
            }
        };
        let (ac, sc) = cells;
        if !(1..=2).contains(&ac) || !(1..=2).contains(&sc) {
            self.err(
                path,
                regp.name,
                Kind::BadCells,
                format!("#address-cells and #size-cells must be 1 or 2, found {ac} and {sc} (from the parent node)"),
            );
            return None;
        }
        let per = (ac + sc) as usize * 4;
        if regp.value.len() != per {
            let kind = if regp.value.len() > per && regp.value.len() % per == 0 {
                Kind::TooMany
            } else {
                Kind::BadLength
            };
            self.err(
                path,
                regp.name,
                kind,
                format!(
                    "expected exactly one range of {ac}+{sc} cells ({per} bytes), found {}",
                    describe(&regp)
                ),
            );
            return None;
        }
        let start = regp.read_cells(0, ac).unwrap_or(0);
        let size = regp.read_cells(ac as usize, sc).unwrap_or(0);
        if size == 0 {
            self.err(
                path,
                regp.name,
                Kind::Zero,
                "expected a module size above 0, found 0".into(),
            );
            return None;
        }
        let Some(range) = Range::from_base_size(start, size) else {
            self.err(
                path,
                regp.name,
                Kind::OutOfRange,
                format!("{start:#x} + {size:#x} wraps past the end of the address space"),
            );
            return None;
        };
        let bootargs = match node.prop("bootargs") {
            Some(p) => {
                let s = self.string(path, &p)?;
                if s.len() > MAX_CMDLINE {
                    self.err(
                        path,
                        "bootargs",
                        Kind::OutOfRange,
                        format!("expected at most {MAX_CMDLINE} bytes, found {}", s.len()),
                    );
                    return None;
                }
                Some(s)
            }
            None => None,
        };
        for p in node.props() {
            if !matches!(
                p.name,
                "compatible"
                    | "reg"
                    | "module-addr"
                    | "bootargs"
                    | "xen,uefi-binary"
                    | "name"
                    | "phandle"
                    | "status"
            ) {
                self.d.warn(
                    path,
                    Some(p.name),
                    Kind::UnknownProperty,
                    "unknown module property, ignored".into(),
                );
            }
        }
        Some(Module {
            kind,
            range,
            bootargs,
            path: path.into(),
        })
    }

    /// Parses a domain node into a `Domain`, or records why it cannot.
    pub fn domain(
        &mut self,
        node: &Node<'_>,
        path: &str,
        ancestors: &[Node<'_>],
        origin: Origin,
    ) -> Option<Domain> {
        let hl = origin == Origin::Hyperlaunch;
        let mut ok = true;
        let mut vcpus: Option<u32> = if hl { Some(1) } else { None };
        let mut memory: Option<(u64, Option<u64>, Option<u64>)> = None;
        let (mut mem_min, mut mem_max) = (None, None);
        let mut caps_sources: Vec<(&str, u32)> = Vec::new();
        let mut console_io = !hl;
        let placeholder = Module {
            kind: ModuleKind::Kernel,
            range: Range::default(),
            bootargs: None,
            path: String::new(),
        };
        let mut dom = Domain::new(
            node.name().to_string(),
            path.to_string(),
            origin,
            placeholder,
        );
        let mut domid: Option<u32> = None;
        for p in node.props() {
            let Some(spec) = PROPS.iter().find(|s| s.name == p.name) else {
                let hint = props::did_you_mean(p.name)
                    .map_or(String::new(), |n| format!("; did you mean `{n}`?"));
                self.d.warn(
                    path,
                    Some(p.name),
                    Kind::UnknownProperty,
                    format!("unknown property, ignored{hint}"),
                );
                continue;
            };
            if spec.scope == Scope::Hyperlaunch && !hl {
                self.err(
                    path,
                    p.name,
                    Kind::HyperlaunchOnly,
                    format!("{} is a hyperlaunch property: move the domain under /chosen/hypervisor, or drop it", p.name),
                );
                ok = false;
                continue;
            }
            match spec.field {
                Field::Ignore => {}
                Field::Renamed(new) => {
                    self.err(
                        path,
                        p.name,
                        Kind::Renamed,
                        format!("{} was renamed: use {new}", p.name),
                    );
                    ok = false;
                }
                Field::Unsupported(why) => {
                    self.err(
                        path,
                        p.name,
                        Kind::Unsupported,
                        format!("not supported by dtvisor: {why}"),
                    );
                    ok = false;
                }
                Field::Cpus => match self.u32(path, &p) {
                    Some(0) => {
                        self.err(
                            path,
                            "cpus",
                            Kind::Zero,
                            "expected at least 1 vCPU, found 0".into(),
                        );
                        ok = false;
                    }
                    Some(n) if n > MAX_VCPUS => {
                        self.err(
                            path,
                            "cpus",
                            Kind::OutOfRange,
                            format!("expected at most {MAX_VCPUS} vCPUs, found {n}"),
                        );
                        ok = false;
                    }
                    Some(n) => vcpus = Some(n),
                    None => ok = false,
                },
                Field::Memory => match self.memory(path, &p, hl) {
                    Some(m) => {
                        ok &= self.check_memory(path, "memory", m.0);
                        memory = Some(m);
                    }
                    None => ok = false,
                },
                Field::MemMin | Field::MemMax => match self.memory(path, &p, hl) {
                    Some((kib, _, _)) => {
                        if matches!(spec.field, Field::MemMin) {
                            mem_min = Some(kib)
                        } else {
                            mem_max = Some(kib)
                        }
                    }
                    None => ok = false,
                },
                Field::Vpl011 => {
                    if !p.value.is_empty() {
                        self.d.warn(
                            path,
                            Some("vpl011"),
                            Kind::Ignored,
                            format!("vpl011 takes no value; found {} (ignored)", describe(&p)),
                        );
                    }
                    dom.vpl011 = true;
                }
                Field::Capabilities => match self.u32(path, &p) {
                    Some(c) if c & !Caps::ALL != 0 => {
                        self.err(
                            path,
                            p.name,
                            Kind::BadValue,
                            format!("unknown bits {:#x}: valid bits are 0x1 control, 0x2 hardware, 0x4 xenstore (mask 0x7), found {c:#x}", c & !Caps::ALL),
                        );
                        ok = false;
                    }
                    Some(c) => caps_sources.push(("capabilities", c)),
                    None => ok = false,
                },
                Field::Role => match self.u32(path, &p) {
                    // Seed 000 v2: UNBOUNDED 1<<0, CONTROL 1<<1, HARDWARE 1<<2, XENSTORE 1<<3.
                    Some(r) if r & !0xf != 0 => {
                        self.err(
                            path,
                            "role",
                            Kind::BadValue,
                            format!("unknown bits {:#x}: valid are 0x1 unbounded, 0x2 control, 0x4 hardware, 0x8 xenstore, found {r:#x}", r & !0xf),
                        );
                        ok = false;
                    }
                    Some(r) => {
                        let mut c = 0;
                        if r & 1 != 0 {
                            c |= Caps::ALL;
                        }
                        if r & 2 != 0 {
                            c |= Caps::CONTROL;
                        }
                        if r & 4 != 0 {
                            c |= Caps::HARDWARE;
                        }
                        if r & 8 != 0 {
                            c |= Caps::XENSTORE;
                        }
                        caps_sources.push(("role", c));
                    }
                    None => ok = false,
                },
                Field::Capability => match self.u32(path, &p) {
                    Some(c) if c & !1 != 0 => {
                        self.err(
                            path,
                            "capability",
                            Kind::BadValue,
                            format!("valid bit is 0x1 console I/O, found {c:#x}"),
                        );
                        ok = false;
                    }
                    Some(c) => console_io = c & 1 != 0,
                    None => ok = false,
                },
                Field::Domid => match self.u32(path, &p) {
                    Some(id) if id >= DOMID_FIRST_RESERVED => {
                        self.err(path, "domid", Kind::OutOfRange, format!("expected below {DOMID_FIRST_RESERVED:#x} (reserved ids above), found {id:#x}"));
                        ok = false;
                    }
                    Some(id) => domid = Some(id),
                    None => ok = false,
                },
                Field::Mode => match self.u32(path, &p) {
                    Some(m) if m & 3 != 0 => {
                        self.err(
                            path,
                            "mode",
                            Kind::BadValue,
                            format!("PV (0x1) and device-model (0x2) modes do not exist on AArch64; found {m:#x}"),
                        );
                        ok = false;
                    }
                    Some(m) if m & !7 != 0 => {
                        self.err(
                            path,
                            "mode",
                            Kind::BadValue,
                            format!("unknown bits {:#x}; valid is 0x4 (64-bit)", m & !7),
                        );
                        ok = false;
                    }
                    Some(m) => dom.mode = Some(m),
                    None => ok = false,
                },
                Field::Uuid => {
                    if p.value.len() == 16 {
                        let mut u = [0u8; 16];
                        u.copy_from_slice(p.value);
                        dom.uuid = Some(u);
                    } else {
                        self.err(
                            path,
                            "domain-uuid",
                            Kind::BadLength,
                            format!("expected 16 bytes, found {}", describe(&p)),
                        );
                        ok = false;
                    }
                }
                Field::SecurityId => match self.string(path, &p) {
                    Some(s) if s.len() > 256 => {
                        self.err(
                            path,
                            "security-id",
                            Kind::OutOfRange,
                            format!("expected at most 256 bytes, found {}", s.len()),
                        );
                        ok = false;
                    }
                    Some(s) => {
                        self.d.warn(
                            path,
                            Some("security-id"),
                            Kind::Ignored,
                            "kept in the plan; dtvisor has no XSM, so it is not enforced".into(),
                        );
                        dom.security_id = Some(s);
                    }
                    None => ok = false,
                },
                Field::Enhanced => {
                    // Empty or unterminated means "enabled" in Xen.
                    let v = if p.value.is_empty() {
                        Some("enabled")
                    } else {
                        p.str()
                    };
                    dom.enhanced = match v {
                        Some("enabled") => Enhanced::Enabled,
                        Some("legacy") => Enhanced::Legacy,
                        Some("no-xenstore") => Enhanced::NoXenstore,
                        Some("disabled") => Enhanced::Disabled,
                        _ => {
                            self.err(
                                path,
                                "xen,enhanced",
                                Kind::BadValue,
                                format!("expected \"enabled\", \"legacy\", \"no-xenstore\" or \"disabled\", found {}", describe(&p)),
                            );
                            ok = false;
                            Enhanced::Disabled
                        }
                    };
                    if dom.enhanced != Enhanced::Disabled {
                        self.d.warn(
                            path,
                            Some("xen,enhanced"),
                            Kind::Ignored,
                            "Xen PV interfaces (grant tables, event channels, xenstore) are not provided by dtvisor: the guest boots without them".into(),
                        );
                    }
                }
                Field::Passthrough => match p.str() {
                    Some("disabled") => {}
                    Some("enabled") => {
                        self.err(
                            path,
                            "passthrough",
                            Kind::Unsupported,
                            "not supported by dtvisor yet: device passthrough".into(),
                        );
                        ok = false;
                    }
                    _ => {
                        self.err(
                            path,
                            "passthrough",
                            Kind::BadValue,
                            format!(
                                "expected \"enabled\" or \"disabled\", found {}",
                                describe(&p)
                            ),
                        );
                        ok = false;
                    }
                },
                Field::NrSpis => match self.u32(path, &p) {
                    Some(n) if n > 960 => {
                        self.err(
                            path,
                            "nr_spis",
                            Kind::OutOfRange,
                            format!("expected at most 960, found {n}"),
                        );
                        ok = false;
                    }
                    Some(n) => dom.nr_spis = Some(n),
                    None => ok = false,
                },
                Field::TrapUnmapped => match self.u32(path, &p) {
                    Some(v @ 0..=1) => dom.trap_unmapped = v == 1,
                    Some(v) => {
                        self.err(
                            path,
                            p.name,
                            Kind::BadValue,
                            format!("expected 0 or 1, found {v}"),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                Field::GrantVersion => match self.u32(path, &p) {
                    Some(v @ 1..=2) => dom.max_grant_version = Some(v),
                    Some(v) => {
                        self.err(
                            path,
                            p.name,
                            Kind::BadValue,
                            format!("expected 1 or 2, found {v}"),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                Field::GrantFrames | Field::Maptrack => match self.u32(path, &p) {
                    Some(v) if v > i32::MAX as u32 => {
                        self.err(
                            path,
                            p.name,
                            Kind::OutOfRange,
                            format!("expected at most {:#x}, found {v:#x}", i32::MAX),
                        );
                        ok = false;
                    }
                    Some(v) => {
                        if matches!(spec.field, Field::GrantFrames) {
                            dom.max_grant_frames = Some(v)
                        } else {
                            dom.max_maptrack_frames = Some(v)
                        }
                    }
                    None => ok = false,
                },
                Field::P2mMem => match self.u32(path, &p) {
                    Some(v) => dom.p2m_mem_mb = Some(v),
                    None => ok = false,
                },
                Field::Sve => {
                    let v = if p.value.is_empty() {
                        Some(0)
                    } else {
                        self.u32(path, &p)
                    };
                    match v {
                        Some(0) if !p.value.is_empty() => {}
                        Some(vl) if p.value.is_empty() || (vl % 128 == 0 && vl <= 2048) => {
                            self.err(
                                path,
                                "sve",
                                Kind::Unsupported,
                                "not supported by dtvisor: SVE state is not context-switched"
                                    .into(),
                            );
                            ok = false;
                        }
                        Some(vl) => {
                            self.err(
                                path,
                                "sve",
                                Kind::BadValue,
                                format!("expected 0 or a multiple of 128 up to 2048, found {vl}"),
                            );
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                Field::StaticMem => {
                    self.err(path, p.name, Kind::Unsupported, "not supported by dtvisor yet: static memory (guest RAM is placed from free RAM)".into());
                    ok = false;
                }
                Field::DirectMap => {
                    let msg = if node.prop("xen,static-mem").is_none() {
                        "direct-map needs xen,static-mem (and neither is supported by dtvisor yet)"
                    } else {
                        "not supported by dtvisor yet: direct mapping"
                    };
                    self.err(path, p.name, Kind::Unsupported, msg.into());
                    ok = false;
                }
                Field::Cpupool => {
                    match self.u32(path, &p) {
                        Some(ph) => {
                            let target = node.fdt().find_phandle(ph);
                            if target.is_none() {
                                self.err(
                                    path,
                                    p.name,
                                    Kind::BadValue,
                                    format!("phandle {ph:#x} refers to no node"),
                                );
                            } else {
                                self.err(path, p.name, Kind::Unsupported, "not supported by dtvisor: cpupools (each vCPU has its own pCPU)".into());
                            }
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                Field::SciType => match p.str() {
                    Some("none") => {}
                    Some("scmi_smc") => {
                        self.err(
                            path,
                            p.name,
                            Kind::Unsupported,
                            "not supported by dtvisor: SCMI mediation".into(),
                        );
                        ok = false;
                    }
                    _ => {
                        self.err(
                            path,
                            p.name,
                            Kind::BadValue,
                            format!("expected \"none\" or \"scmi_smc\", found {}", describe(&p)),
                        );
                        ok = false;
                    }
                },
                Field::Cells => {
                    if let Some(v) = self.u32(path, &p) {
                        if !(1..=2).contains(&v) {
                            self.err(
                                path,
                                p.name,
                                Kind::BadCells,
                                format!("expected 1 or 2, found {v}"),
                            );
                            ok = false;
                        }
                    } else {
                        ok = false;
                    }
                }
            }
        }
        // Roles from the three encodings must agree.
        if let Some(&(first, c0)) = caps_sources.first() {
            for &(other, c) in &caps_sources[1..] {
                if c != c0 {
                    self.err(
                        path,
                        other,
                        Kind::Conflict,
                        format!("gives roles {c:#x}, but {first} gives {c0:#x}"),
                    );
                    ok = false;
                }
            }
            dom.caps = Caps(c0);
        }
        dom.console_io = console_io;
        match vcpus {
            Some(n) => dom.vcpus = n,
            None => {
                if node.prop("cpus").is_none() {
                    self.d.error(
                        path,
                        Some("cpus"),
                        Kind::Missing,
                        "expected the number of vCPUs (cpus = <N>), found none".into(),
                    );
                }
                ok = false;
            }
        }
        match memory {
            Some((kib, min, max)) => {
                dom.memory_kib = kib;
                dom.mem_min_kib = mem_min.or(min);
                dom.mem_max_kib = mem_max.or(max);
            }
            None => {
                if node.prop("memory").is_none() {
                    self.d.error(
                        path,
                        Some("memory"),
                        Kind::Missing,
                        "expected the domain's memory (memory = <0x0 KiB>), found none".into(),
                    );
                }
                ok = false;
            }
        }
        if let (Some(min), true) = (dom.mem_min_kib, ok) {
            if min > dom.memory_kib {
                self.err(
                    path,
                    "mem-min",
                    Kind::Conflict,
                    format!(
                        "{} is above memory ({})",
                        Size(min << 10),
                        Size(dom.memory_kib << 10)
                    ),
                );
                ok = false;
            }
        }
        if let (Some(max), true) = (dom.mem_max_kib, ok) {
            if max < dom.memory_kib {
                self.err(
                    path,
                    "mem-max",
                    Kind::Conflict,
                    format!(
                        "{} is below memory ({})",
                        Size(max << 10),
                        Size(dom.memory_kib << 10)
                    ),
                );
                ok = false;
            }
        }
        if dom.mem_min_kib.is_some() || dom.mem_max_kib.is_some() {
            self.d.warn(
                path,
                Some("mem-min"),
                Kind::Ignored,
                "mem-min/mem-max are kept in the plan; without ballooning the domain gets `memory`"
                    .into(),
            );
        }
        if let Some(n) = dom.nr_spis {
            if dom.vpl011 && n < 1 {
                self.err(
                    path,
                    "nr_spis",
                    Kind::OutOfRange,
                    format!("vpl011 uses SPI 32, so nr_spis must be at least 1, found {n}"),
                );
                ok = false;
            }
            if dom.caps.0 & Caps::HARDWARE != 0 {
                self.err(
                    path,
                    "nr_spis",
                    Kind::Conflict,
                    "nr_spis cannot be given for the hardware domain".into(),
                );
                ok = false;
            }
        }
        if let Some(m) = dom.mode {
            if m & 4 == 0 {
                self.err(
                    path,
                    "mode",
                    Kind::BadValue,
                    "dtvisor runs 64-bit guests only: set the LONG bit (0x4)".into(),
                );
                ok = false;
            }
        }
        dom.domid = domid.unwrap_or(u32::MAX) as u16;
        // Children: modules, and Xen features dtvisor does not offer.
        let mut anc: Vec<Node<'_>> = ancestors.to_vec();
        anc.push(*node);
        let cells = cells_for_children(ancestors, node);
        let mut kernel = None;
        let mut ramdisk = None;
        for c in node.children() {
            let cpath = format!("{path}/{}", c.name());
            let compat: Vec<&str> = c
                .prop("compatible")
                .map(|p| p.strings().collect())
                .unwrap_or_default();
            let is_module = compat.iter().any(|s| {
                s.starts_with("multiboot,")
                    || s.starts_with("module,")
                    || s.starts_with("xen,linux-")
                    || *s == "xen,multiboot-module"
                    || *s == "xen,xsm-policy"
            });
            if is_module {
                if c.children().next().is_some() {
                    self.d.error(
                        &cpath,
                        None,
                        Kind::ModuleDepth,
                        "a module node has no child nodes; modules nested inside it are not read"
                            .into(),
                    );
                    ok = false;
                }
                let Some(m) = self.module(&c, &cpath, cells, hl, None) else {
                    ok = false;
                    continue;
                };
                let slot = match m.kind {
                    ModuleKind::Kernel => &mut kernel,
                    ModuleKind::Ramdisk => &mut ramdisk,
                    ModuleKind::DeviceTree => {
                        self.err(
                            &cpath,
                            "compatible",
                            Kind::Unsupported,
                            "not supported by dtvisor yet: partial device trees (passthrough)"
                                .into(),
                        );
                        ok = false;
                        continue;
                    }
                    other => {
                        self.err(
                            &cpath,
                            "compatible",
                            Kind::ModuleKind,
                            format!(
                                "a {} module belongs to the hypervisor, not to a domain",
                                other.name()
                            ),
                        );
                        ok = false;
                        continue;
                    }
                };
                if let Some(prev) = slot.as_ref() {
                    let prev: &Module = prev;
                    self.d.error(
                        &cpath,
                        Some("compatible"),
                        Kind::DuplicateModule,
                        format!(
                            "a second {} module; the first is {}",
                            m.kind.name(),
                            prev.path
                        ),
                    );
                    ok = false;
                } else {
                    *slot = Some(m);
                }
            } else if compat.contains(&"xen,vcpu") {
                self.d.error(
                    &cpath,
                    None,
                    Kind::Unsupported,
                    "not supported by dtvisor: xen,vcpu affinity (each vCPU has its own pCPU)"
                        .into(),
                );
                ok = false;
            } else if compat.contains(&"xen,domain-shared-memory-v1") {
                self.d.error(
                    &cpath,
                    None,
                    Kind::Unsupported,
                    "not supported by dtvisor yet: static shared memory".into(),
                );
                ok = false;
            } else if compat.contains(&"xen,evtchn-v1") || compat.contains(&"xen,evtchn") {
                self.d.error(
                    &cpath,
                    None,
                    Kind::Unsupported,
                    "not supported by dtvisor: static event channels (no Xen PV interfaces)".into(),
                );
                ok = false;
            } else if compat.contains(&"xen,domain") {
                self.d.error(
                    &cpath,
                    None,
                    Kind::Nesting,
                    "a domain must be a direct child of its container".into(),
                );
                ok = false;
            } else {
                self.d.warn(
                    &cpath,
                    None,
                    Kind::UnknownNode,
                    "unknown child node of a domain, ignored".into(),
                );
            }
        }
        match kernel {
            Some(k) => {
                dom.cmdline = k.bootargs.clone();
                dom.kernel = k;
            }
            None => {
                if ok {
                    self.d.error(path, None, Kind::NoKernel, "expected a kernel module (compatible \"multiboot,kernel\", \"multiboot,module\"), found none".into());
                }
                ok = false;
            }
        }
        dom.ramdisk = ramdisk;
        ok.then_some(dom)
    }

    /// Checks module ranges against RAM, reserved memory, the image, the
    /// DTB and each other. Identical ranges may be shared (read-only).
    pub fn check_modules(&mut self, mods: &[&Module]) {
        for (i, m) in mods.iter().enumerate() {
            if !self.host.ram.is_empty() && !self.host.in_ram(&m.range) {
                self.err(
                    &m.path,
                    "reg",
                    Kind::OutsideRam,
                    format!("module {} is not inside one RAM bank", m.range),
                );
            }
            for r in &self.host.reserved {
                if !m.range.overlaps(&r.range) {
                    continue;
                }
                let what = match &r.kind {
                    ReservedKind::MemReserve if r.range.contains_range(&m.range) => continue,
                    ReservedKind::MemReserve => format!("the /memreserve/ entry {}", r.range),
                    ReservedKind::Node(p) => format!("reserved memory {p} {}", r.range),
                    ReservedKind::Image => format!("the hypervisor image {}", r.range),
                    ReservedKind::Dtb => format!("the boot device tree {}", r.range),
                };
                self.err(
                    &m.path,
                    "reg",
                    Kind::Overlap,
                    format!("module {} overlaps {what}", m.range),
                );
            }
            for o in &mods[..i] {
                if m.range == o.range || !m.range.overlaps(&o.range) {
                    continue;
                }
                self.err(
                    &m.path,
                    "reg",
                    Kind::Overlap,
                    format!(
                        "module {} overlaps module {} ({})",
                        m.range, o.path, o.range
                    ),
                );
            }
        }
    }
}
