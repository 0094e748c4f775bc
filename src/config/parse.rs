//! The shared parser. Both containers hand every domain node to
//! `Parser::domain` (`parse/domain.rs`) and every module node to
//! `Parser::module`; what differs between the bindings is the tables in
//! `props.rs` (names, encodings, where each is allowed), not code paths.

mod domain;

use super::diag::{Diags, Kind};
use super::model::*;
use super::props::{self, Binding};
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
    /// A module's contents, by node path and `reg`, where they are at hand.
    pub contents: Option<&'a super::Contents<'a>>,
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

/// Hyperlaunch's memory string `[min:<size>,][max:<size>,]<size>` (a later
/// part of the same kind wins): (size, min, max) in KiB.
fn memory_string(s: &str) -> Option<(u64, Option<u64>, Option<u64>)> {
    let (mut size, mut min, mut max) = (None, None, None);
    for part in s.split(',') {
        let (slot, v) = if let Some(v) = part.strip_prefix("min:") {
            (&mut min, v)
        } else if let Some(v) = part.strip_prefix("max:") {
            (&mut max, v)
        } else {
            (&mut size, part)
        };
        *slot = Some(parse_size_kib(v)?);
    }
    Some((size?, min, max))
}

/// How to write a memory size given in the wrong form, when that is clear.
fn memory_hint(p: &Prop<'_>, is_text: bool) -> String {
    if is_text {
        match p.str().and_then(parse_size_kib) {
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
    }
}

impl<'a, 'd> Parser<'a, 'd> {
    fn err(&mut self, path: &str, prop: &str, kind: Kind, msg: String) {
        self.d.error(path, Some(prop), kind, msg);
    }

    /// `err`, for checks: always false (not valid).
    fn bad(&mut self, path: &str, prop: &str, kind: Kind, msg: String) -> bool {
        self.err(path, prop, kind, msg);
        false
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
            let parsed = memory_string(p.str().unwrap_or(""));
            if parsed.is_none() {
                self.err(
                    path,
                    p.name,
                    Kind::BadValue,
                    format!(
                        "expected u64 KiB (2 cells) or a size like \"256M\" or \"min:128M,max:512M,256M\", found {}",
                        describe(p)
                    ),
                );
            }
            return parsed;
        }
        let hint = memory_hint(p, is_text);
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

    /// Parses one module node. `cells` are the parent's (inherited) cells;
    /// `guess` is the kind when the compatibles name none (bare modules
    /// under /chosen).
    pub fn module(
        &mut self,
        node: &Node<'_>,
        path: &str,
        cells: (u32, u32),
        hyperlaunch: bool,
        guess: Option<ModuleKind>,
    ) -> Option<Module> {
        let b = Binding::of(hyperlaunch);
        let compat: Vec<&str> = node
            .prop("compatible")
            .map(|p| p.strings().collect())
            .unwrap_or_default();
        if !self.module_compatible(node, path, &compat, b) {
            return None;
        }
        let has_reg = node.prop("reg").is_some() || node.prop("module-addr").is_some();
        if !self.module_locator(node, path, &compat, has_reg) {
            return None;
        }
        let kind = self.module_kind(path, props::module_kind(&compat, b).or(guess))?;
        if node.prop("xen,uefi-binary").is_some() && !has_reg {
            self.err(
                path,
                "xen,uefi-binary",
                Kind::Unsupported,
                "xen,uefi-binary without reg: the EFI stub loads such a module and writes its reg when dtvisor is started from UEFI; booted otherwise, give reg".into(),
            );
            return None;
        }
        let range = self.module_range(node, path, cells, b)?;
        let bootargs = match node.prop("bootargs") {
            Some(p) => Some(self.module_bootargs(path, &p)?),
            None => None,
        };
        self.unknown_module_props(node, path);
        Some(Module {
            kind,
            range,
            bootargs,
            path: path.into(),
        })
    }

    /// `module,<kind>` only in hyperlaunch; elsewhere "multiboot,module"
    /// (or Xen's older name) beside the kind. Returns whether valid.
    fn module_compatible(
        &mut self,
        node: &Node<'_>,
        path: &str,
        compat: &[&str],
        b: &Binding,
    ) -> bool {
        let generic = compat.iter().any(|c| props::GENERIC_MODULE.contains(c));
        let module_compat = compat.iter().any(|c| c.starts_with("module,"));
        if module_compat && !b.hyperlaunch {
            return self.bad(
                path,
                "compatible",
                Kind::HyperlaunchOnly,
                "module,<kind> compatibles belong to /chosen/hypervisor; use \"multiboot,<kind>\", \"multiboot,module\"".into(),
            );
        }
        if !generic && !module_compat {
            return self.bad(
                path,
                "compatible",
                Kind::BadModule,
                format!(
                    "expected \"multiboot,module\" beside the module kind, found {}",
                    node.prop("compatible")
                        .map_or("no compatible".to_string(), |p| describe(&p))
                ),
            );
        }
        true
    }

    /// The locator compatibles must agree with the property present, and
    /// `module-index` cannot be followed on Arm. Returns whether the
    /// module can be located (by `reg` or `module-addr`).
    fn module_locator(
        &mut self,
        node: &Node<'_>,
        path: &str,
        compat: &[&str],
        has_reg: bool,
    ) -> bool {
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
        if !has_index {
            return true;
        }
        if has_reg {
            self.bad(
                path,
                "module-index",
                Kind::Conflict,
                "expected either reg or module-index, found both".into(),
            )
        } else {
            self.bad(
                path,
                "module-index",
                Kind::Unsupported,
                "module-index has no module chain to index on Arm: give the module's location with reg".into(),
            )
        }
    }

    /// A module must say (or be guessed to be) of one kind.
    fn module_kind(&mut self, path: &str, kind: Option<ModuleKind>) -> Option<ModuleKind> {
        if kind.is_none() {
            self.err(
                path,
                "compatible",
                Kind::ModuleKind,
                "expected a specific module kind (\"multiboot,kernel\", \"multiboot,ramdisk\", ...) beside \"multiboot,module\"".into(),
            );
        }
        kind
    }

    /// The module's one range, from `reg` (or hyperlaunch `module-addr`)
    /// in the parent's cells.
    fn module_range(
        &mut self,
        node: &Node<'_>,
        path: &str,
        cells: (u32, u32),
        b: &Binding,
    ) -> Option<Range> {
        let regp = node
            .prop("reg")
            .or_else(|| b.hyperlaunch.then(|| node.prop("module-addr")).flatten());
        let Some(regp) = regp else {
            self.d.error(
                path,
                Some("reg"),
                Kind::Missing,
                "expected the module's location (reg), found none".into(),
            );
            return None;
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
        self.module_span(path, regp.name, start, size)
    }

    /// `start`/`size` as a range: not empty, not wrapping.
    fn module_span(&mut self, path: &str, prop: &str, start: u64, size: u64) -> Option<Range> {
        if size == 0 {
            self.err(
                path,
                prop,
                Kind::Zero,
                "expected a module size above 0, found 0".into(),
            );
            return None;
        }
        let range = Range::from_base_size(start, size);
        if range.is_none() {
            self.err(
                path,
                prop,
                Kind::OutOfRange,
                format!("{start:#x} + {size:#x} wraps past the end of the address space"),
            );
        }
        range
    }

    /// A module's command line: a printable string of bounded length.
    fn module_bootargs(&mut self, path: &str, p: &Prop<'_>) -> Option<String> {
        let s = self.string(path, p)?;
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

    fn unknown_module_props(&mut self, node: &Node<'_>, path: &str) {
        for p in node.props() {
            if !props::MODULE_PROPS.contains(&p.name) {
                self.d.warn(
                    path,
                    Some(p.name),
                    Kind::UnknownProperty,
                    "unknown module property, ignored".into(),
                );
            }
        }
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
                    ReservedKind::Heap => format!("the hypervisor's heap {}", r.range),
                    ReservedKind::Dtb => format!("the boot device tree {}", r.range),
                    ReservedKind::SpinTable(cpu) => {
                        format!("the spin-table release page {} of {cpu}", r.range)
                    }
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
