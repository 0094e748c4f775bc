//! One domain node: its properties, one handler per entry of the binding
//! table (`props::PROPS`), then the checks between them, then its child
//! nodes (modules, and Xen features dtvisor does not offer).

use super::{cells_for_children, describe, Parser, DOMID_FIRST_RESERVED, MAX_VCPUS};
use crate::config::diag::Kind;
use crate::config::model::*;
use crate::config::props::{self, Binding, Field, PROPS};
use crate::fdt::{Node, Prop};
use crate::mm::range::Size;
use crate::mm::Range;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A domain while its node is read: the settings found so far, and
/// whether every one of them was valid.
struct Draft<'n> {
    node: Node<'n>,
    path: &'n str,
    b: &'static Binding,
    ok: bool,
    dom: Domain,
    vcpus: Option<u32>,
    /// `memory`: (size, min, max) in KiB.
    memory: Option<(u64, Option<u64>, Option<u64>)>,
    mem_min: Option<u64>,
    mem_max: Option<u64>,
    /// Roles as each encoding gave them (property name, `capabilities`).
    roles: Vec<(&'static str, u32)>,
    console_io: bool,
    domid: Option<u32>,
    /// `passthrough` = "enabled" (true) or "disabled" (false).
    passthrough: Option<bool>,
    /// Cells of the domain's children and `xen,static-mem`.
    cells: (u32, u32),
}

impl<'n> Draft<'n> {
    fn new(node: Node<'n>, path: &'n str, origin: Origin) -> Draft<'n> {
        let b = Binding::of(origin == Origin::Hyperlaunch);
        let placeholder = Module {
            kind: ModuleKind::Kernel,
            range: Range::default(),
            bootargs: None,
            path: String::new(),
        };
        Draft {
            node,
            path,
            b,
            ok: true,
            dom: Domain::new(
                node.name().to_string(),
                path.to_string(),
                origin,
                placeholder,
            ),
            vcpus: b.default_vcpus,
            memory: None,
            mem_min: None,
            mem_max: None,
            roles: Vec::new(),
            console_io: b.console_io,
            domid: None,
            passthrough: None,
            cells: (2, 2),
        }
    }
}

/// A domain's kernel, ramdisk and partial device tree modules.
type Slots = (Option<Module>, Option<Module>, Option<Module>);

/// Whether a domain child's compatibles make it a boot module.
fn names_module(compat: &[&str]) -> bool {
    compat.iter().any(|s| {
        s.starts_with("multiboot,")
            || s.starts_with("module,")
            || s.starts_with("xen,linux-")
            || *s == "xen,multiboot-module"
            || *s == "xen,xsm-policy"
    })
}

impl Parser<'_, '_> {
    /// Parses a domain node into a `Domain`, or records why it cannot.
    pub fn domain(
        &mut self,
        node: &Node<'_>,
        path: &str,
        ancestors: &[Node<'_>],
        origin: Origin,
    ) -> Option<Domain> {
        let mut d = Draft::new(*node, path, origin);
        d.cells = cells_for_children(ancestors, node);
        for p in node.props() {
            self.domain_prop(&mut d, &p);
        }
        self.settle_roles(&mut d);
        self.settle_vcpus(&mut d);
        self.settle_memory(&mut d);
        self.check_memory_bounds(&mut d);
        self.check_nr_spis(&mut d);
        self.check_mode(&mut d);
        d.dom.domid = d.domid.unwrap_or(u32::MAX) as u16;
        self.settle_static_mem(&mut d);
        let (kernel, ramdisk, device_tree) = self.domain_modules(&mut d);
        self.settle_kernel(&mut d, kernel);
        d.dom.ramdisk = ramdisk;
        self.settle_passthrough(&mut d, device_tree);
        d.ok.then_some(d.dom)
    }

    /// One property: looked up in the binding table, then handled by its
    /// field's handler.
    fn domain_prop(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) {
        let path = d.path;
        let Some(spec) = PROPS.iter().find(|s| s.name == p.name) else {
            let hint = props::did_you_mean(p.name)
                .map_or(String::new(), |n| format!("; did you mean `{n}`?"));
            self.d.warn(
                path,
                Some(p.name),
                Kind::UnknownProperty,
                format!("unknown property, ignored{hint}"),
            );
            return;
        };
        if !d.b.allows(spec.scope) {
            self.err(
                path,
                p.name,
                Kind::HyperlaunchOnly,
                format!("{} is a hyperlaunch property: move the domain under /chosen/hypervisor, or drop it", p.name),
            );
            d.ok = false;
            return;
        }
        let valid = self.field(d, spec.field, p);
        d.ok &= valid;
    }

    /// The handler of each `Field`; returns whether the value is valid.
    fn field(&mut self, d: &mut Draft<'_>, field: Field, p: &Prop<'_>) -> bool {
        let path = d.path;
        match field {
            Field::Ignore => true,
            Field::Renamed(new) => self.bad(
                path,
                p.name,
                Kind::Renamed,
                format!("{} was renamed: use {new}", p.name),
            ),
            Field::Unsupported(why) => self.bad(
                path,
                p.name,
                Kind::Unsupported,
                format!("not supported by dtvisor: {why}"),
            ),
            Field::Cells => self.prop_cells(path, p),
            Field::Cpus => self.prop_cpus(d, p),
            Field::Memory => self.prop_memory(d, p),
            Field::MemMin | Field::MemMax => self.prop_mem_bound(d, field, p),
            Field::Vpl011 => self.prop_vpl011(d, p),
            Field::Capabilities => self.prop_capabilities(d, p),
            Field::Role => self.prop_role(d, p),
            Field::Capability => self.prop_capability(d, p),
            Field::Domid => self.prop_domid(d, p),
            Field::Mode => self.prop_mode(d, p),
            Field::Uuid => self.prop_uuid(d, p),
            Field::SecurityId => self.prop_security_id(d, p),
            Field::Enhanced => self.prop_enhanced(d, p),
            Field::Passthrough => self.prop_passthrough(d, p),
            Field::NrSpis => self.prop_nr_spis(d, p),
            Field::TrapUnmapped => self.prop_trap_unmapped(d, p),
            Field::GrantVersion => self.prop_grant_version(d, p),
            Field::GrantFrames | Field::Maptrack => self.prop_frames(d, field, p),
            Field::P2mMem => self.prop_p2m_mem(d, p),
            Field::Sve => self.prop_sve(path, p),
            Field::StaticMem => self.prop_static_mem(d, p),
            Field::DirectMap => self.prop_direct_map(d, p),
            Field::Cpupool => self.prop_cpupool(d, p),
            Field::SciType => self.prop_sci_type(path, p),
        }
    }

    // ---- one handler per field (table order) ----

    /// `#address-cells`, `#size-cells` of the domain (for its modules).
    fn prop_cells(&mut self, path: &str, p: &Prop<'_>) -> bool {
        match self.u32(path, p) {
            Some(v) if !(1..=2).contains(&v) => self.bad(
                path,
                p.name,
                Kind::BadCells,
                format!("expected 1 or 2, found {v}"),
            ),
            Some(_) => true,
            None => false,
        }
    }

    fn prop_cpus(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        let path = d.path;
        match self.u32(path, p) {
            Some(0) => self.bad(
                path,
                "cpus",
                Kind::Zero,
                "expected at least 1 vCPU, found 0".into(),
            ),
            Some(n) if n > MAX_VCPUS => self.bad(
                path,
                "cpus",
                Kind::OutOfRange,
                format!("expected at most {MAX_VCPUS} vCPUs, found {n}"),
            ),
            Some(n) => {
                d.vcpus = Some(n);
                true
            }
            None => false,
        }
    }

    fn prop_memory(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        let Some(m) = self.memory(d.path, p, d.b.hyperlaunch) else {
            return false;
        };
        d.memory = Some(m);
        self.check_memory(d.path, "memory", m.0)
    }

    /// `mem-min`, `mem-max` (hyperlaunch).
    fn prop_mem_bound(&mut self, d: &mut Draft<'_>, field: Field, p: &Prop<'_>) -> bool {
        let Some((kib, _, _)) = self.memory(d.path, p, d.b.hyperlaunch) else {
            return false;
        };
        if field == Field::MemMin {
            d.mem_min = Some(kib);
        } else {
            d.mem_max = Some(kib);
        }
        true
    }

    fn prop_vpl011(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        if !p.value.is_empty() {
            self.d.warn(
                d.path,
                Some("vpl011"),
                Kind::Ignored,
                format!("vpl011 takes no value; found {} (ignored)", describe(p)),
            );
        }
        d.dom.vpl011 = true;
        true
    }

    fn prop_capabilities(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(c) if c & !Caps::ALL != 0 => self.bad(
                d.path,
                p.name,
                Kind::BadValue,
                format!("unknown bits {:#x}: valid bits are 0x1 control, 0x2 hardware, 0x4 xenstore (mask 0x7), found {c:#x}", c & !Caps::ALL),
            ),
            Some(c) => {
                d.roles.push(("capabilities", c));
                true
            }
            None => false,
        }
    }

    /// Hyperlaunch `role`, as `capabilities` (`props::ROLE_BITS`).
    fn prop_role(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(r) if r & !0xf != 0 => self.bad(
                d.path,
                "role",
                Kind::BadValue,
                format!("unknown bits {:#x}: valid are 0x1 unbounded, 0x2 control, 0x4 hardware, 0x8 xenstore, found {r:#x}", r & !0xf),
            ),
            Some(r) => {
                d.roles.push(("role", props::role_caps(r)));
                true
            }
            None => false,
        }
    }

    /// Hyperlaunch `capability`: CAP_CONSOLE_IO.
    fn prop_capability(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(c) if c & !1 != 0 => self.bad(
                d.path,
                "capability",
                Kind::BadValue,
                format!("valid bit is 0x1 console I/O, found {c:#x}"),
            ),
            Some(c) => {
                d.console_io = c & 1 != 0;
                true
            }
            None => false,
        }
    }

    fn prop_domid(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(id) if id >= DOMID_FIRST_RESERVED => self.bad(
                d.path,
                "domid",
                Kind::OutOfRange,
                format!(
                    "expected below {DOMID_FIRST_RESERVED:#x} (reserved ids above), found {id:#x}"
                ),
            ),
            Some(id) => {
                d.domid = Some(id);
                true
            }
            None => false,
        }
    }

    /// Hyperlaunch `mode`: the LONG bit is checked after every property.
    fn prop_mode(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(m) if m & 3 != 0 => self.bad(
                d.path,
                "mode",
                Kind::BadValue,
                format!(
                    "PV (0x1) and device-model (0x2) modes do not exist on AArch64; found {m:#x}"
                ),
            ),
            Some(m) if m & !7 != 0 => self.bad(
                d.path,
                "mode",
                Kind::BadValue,
                format!("unknown bits {:#x}; valid is 0x4 (64-bit)", m & !7),
            ),
            Some(m) => {
                d.dom.mode = Some(m);
                true
            }
            None => false,
        }
    }

    fn prop_uuid(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        let Ok(u) = <[u8; 16]>::try_from(p.value) else {
            return self.bad(
                d.path,
                "domain-uuid",
                Kind::BadLength,
                format!("expected 16 bytes, found {}", describe(p)),
            );
        };
        d.dom.uuid = Some(u);
        true
    }

    fn prop_security_id(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.string(d.path, p) {
            Some(s) if s.len() > 256 => self.bad(
                d.path,
                "security-id",
                Kind::OutOfRange,
                format!("expected at most 256 bytes, found {}", s.len()),
            ),
            Some(s) => {
                self.d.warn(
                    d.path,
                    Some("security-id"),
                    Kind::Ignored,
                    "kept in the plan; dtvisor has no XSM, so it is not enforced".into(),
                );
                d.dom.security_id = Some(s);
                true
            }
            None => false,
        }
    }

    fn prop_enhanced(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        // Empty or unterminated means "enabled" in Xen.
        let v = if p.value.is_empty() {
            Some("enabled")
        } else {
            p.str()
        };
        let (enhanced, valid) = match v {
            Some("enabled") => (Enhanced::Enabled, true),
            Some("legacy") => (Enhanced::Legacy, true),
            Some("no-xenstore") => (Enhanced::NoXenstore, true),
            Some("disabled") => (Enhanced::Disabled, true),
            _ => {
                self.err(
                    d.path,
                    "xen,enhanced",
                    Kind::BadValue,
                    format!("expected \"enabled\", \"legacy\", \"no-xenstore\" or \"disabled\", found {}", describe(p)),
                );
                (Enhanced::Disabled, false)
            }
        };
        d.dom.enhanced = enhanced;
        if enhanced != Enhanced::Disabled {
            self.d.warn(
                d.path,
                Some("xen,enhanced"),
                Kind::Ignored,
                "Xen PV interfaces (grant tables, event channels, xenstore) are not provided by dtvisor: the guest boots without them".into(),
            );
        }
        valid
    }

    fn prop_passthrough(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match p.str() {
            Some(v @ ("enabled" | "disabled")) => {
                d.passthrough = Some(v == "enabled");
                true
            }
            _ => self.bad(
                d.path,
                "passthrough",
                Kind::BadValue,
                format!(
                    "expected \"enabled\" or \"disabled\", found {}",
                    describe(p)
                ),
            ),
        }
    }

    fn prop_nr_spis(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(n) if n > 960 => self.bad(
                d.path,
                "nr_spis",
                Kind::OutOfRange,
                format!("expected at most 960, found {n}"),
            ),
            Some(n) => {
                d.dom.nr_spis = Some(n);
                true
            }
            None => false,
        }
    }

    fn prop_trap_unmapped(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(v @ 0..=1) => {
                d.dom.trap_unmapped = v == 1;
                true
            }
            Some(v) => self.bad(
                d.path,
                p.name,
                Kind::BadValue,
                format!("expected 0 or 1, found {v}"),
            ),
            None => false,
        }
    }

    fn prop_grant_version(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(v @ 1..=2) => {
                d.dom.max_grant_version = Some(v);
                true
            }
            Some(v) => self.bad(
                d.path,
                p.name,
                Kind::BadValue,
                format!("expected 1 or 2, found {v}"),
            ),
            None => false,
        }
    }

    /// `max_grant_frames`, `max_maptrack_frames`.
    fn prop_frames(&mut self, d: &mut Draft<'_>, field: Field, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(v) if v > i32::MAX as u32 => self.bad(
                d.path,
                p.name,
                Kind::OutOfRange,
                format!("expected at most {:#x}, found {v:#x}", i32::MAX),
            ),
            Some(v) => {
                if field == Field::GrantFrames {
                    d.dom.max_grant_frames = Some(v);
                } else {
                    d.dom.max_maptrack_frames = Some(v);
                }
                true
            }
            None => false,
        }
    }

    fn prop_p2m_mem(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        match self.u32(d.path, p) {
            Some(v) => {
                d.dom.p2m_mem_mb = Some(v);
                true
            }
            None => false,
        }
    }

    /// `sve`: empty (the maximum) or a vector length; both refused, as
    /// SVE state is not switched. 0 (no SVE) is accepted.
    fn prop_sve(&mut self, path: &str, p: &Prop<'_>) -> bool {
        let v = if p.value.is_empty() {
            Some(0)
        } else {
            self.u32(path, p)
        };
        match v {
            Some(0) if !p.value.is_empty() => true,
            Some(vl) if p.value.is_empty() || (vl % 128 == 0 && vl <= 2048) => self.bad(
                path,
                "sve",
                Kind::Unsupported,
                "not supported by dtvisor: SVE state is not context-switched".into(),
            ),
            Some(vl) => self.bad(
                path,
                "sve",
                Kind::BadValue,
                format!("expected 0 or a multiple of 128 up to 2048, found {vl}"),
            ),
            None => false,
        }
    }

    fn prop_direct_map(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        d.dom.direct_map = true;
        if !p.value.is_empty() {
            self.d.warn(
                d.path,
                Some(p.name),
                Kind::Ignored,
                format!("direct-map takes no value; {} ignored", describe(p)),
            );
        }
        true
    }

    /// `xen,static-mem`: (address, size) pairs in the domain's own cells,
    /// each page aligned, non-empty and inside one host RAM bank.
    fn prop_static_mem(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        let (ac, sc) = d.cells;
        if !(1..=2).contains(&ac) || !(1..=2).contains(&sc) {
            return self.bad(
                d.path,
                p.name,
                Kind::BadCells,
                format!("cannot be read: #address-cells and #size-cells must be 1 or 2, found {ac} and {sc}"),
            );
        }
        let ranges: Option<Vec<(u64, u64)>> = p.ranges(ac, sc).map(|r| r.collect());
        let Some(ranges) = ranges else {
            return self.bad(
                d.path,
                p.name,
                Kind::BadLength,
                format!(
                    "expected (address, size) pairs of {ac}+{sc} cells, found {}",
                    describe(p)
                ),
            );
        };
        let mut ok = true;
        for (a, s) in ranges {
            let Some(r) = Range::from_base_size(a, s).filter(|_| s > 0) else {
                ok = self.bad(
                    d.path,
                    p.name,
                    Kind::Zero,
                    format!("range {a:#x} + {s:#x} is empty or wraps around"),
                );
                continue;
            };
            if a % 4096 != 0 || s % 4096 != 0 {
                ok = self.bad(
                    d.path,
                    p.name,
                    Kind::Alignment,
                    format!("range {r} is not 4 KiB aligned"),
                );
                continue;
            }
            if !self.host.ram.is_empty() && !self.host.in_ram(&r) {
                ok = self.bad(
                    d.path,
                    p.name,
                    Kind::OutsideRam,
                    format!("range {r} is not inside one host RAM bank"),
                );
                continue;
            }
            if let Some(o) = d.dom.static_mem.iter().find(|o| o.overlaps(&r)) {
                ok = self.bad(
                    d.path,
                    p.name,
                    Kind::Overlap,
                    format!("range {r} overlaps its range {o}"),
                );
                continue;
            }
            d.dom.static_mem.push(r);
        }
        ok
    }

    /// `domain-cpupool`: a phandle; refused either way.
    fn prop_cpupool(&mut self, d: &mut Draft<'_>, p: &Prop<'_>) -> bool {
        let Some(ph) = self.u32(d.path, p) else {
            return false;
        };
        if d.node.fdt().find_phandle(ph).is_none() {
            self.bad(
                d.path,
                p.name,
                Kind::BadValue,
                format!("phandle {ph:#x} refers to no node"),
            )
        } else {
            self.bad(
                d.path,
                p.name,
                Kind::Unsupported,
                "not supported by dtvisor: cpupools (each vCPU has its own pCPU)".into(),
            )
        }
    }

    fn prop_sci_type(&mut self, path: &str, p: &Prop<'_>) -> bool {
        match p.str() {
            Some("none") => true,
            Some("scmi_smc") => self.bad(
                path,
                p.name,
                Kind::Unsupported,
                "not supported by dtvisor: SCMI mediation".into(),
            ),
            _ => self.bad(
                path,
                p.name,
                Kind::BadValue,
                format!("expected \"none\" or \"scmi_smc\", found {}", describe(p)),
            ),
        }
    }

    // ---- checks between properties ----

    /// Roles from the three encodings must agree; CAP_CONSOLE_IO is set.
    fn settle_roles(&mut self, d: &mut Draft<'_>) {
        if let Some(&(first, c0)) = d.roles.first() {
            for &(other, c) in &d.roles[1..] {
                if c != c0 {
                    self.err(
                        d.path,
                        other,
                        Kind::Conflict,
                        format!("gives roles {c:#x}, but {first} gives {c0:#x}"),
                    );
                    d.ok = false;
                }
            }
            d.dom.caps = Caps(c0);
        }
        d.dom.console_io = d.console_io;
    }

    fn settle_vcpus(&mut self, d: &mut Draft<'_>) {
        match d.vcpus {
            Some(n) => d.dom.vcpus = n,
            None => {
                if d.node.prop("cpus").is_none() {
                    self.d.error(
                        d.path,
                        Some("cpus"),
                        Kind::Missing,
                        "expected the number of vCPUs (cpus = <N>), found none".into(),
                    );
                }
                d.ok = false;
            }
        }
    }

    /// `memory`, with `mem-min`/`mem-max` given apart or in its string.
    fn settle_memory(&mut self, d: &mut Draft<'_>) {
        match d.memory {
            Some((kib, min, max)) => {
                d.dom.memory_kib = kib;
                d.dom.mem_min_kib = d.mem_min.or(min);
                d.dom.mem_max_kib = d.mem_max.or(max);
            }
            None => {
                if d.node.prop("memory").is_none() {
                    self.d.error(
                        d.path,
                        Some("memory"),
                        Kind::Missing,
                        "expected the domain's memory (memory = <0x0 KiB>), found none".into(),
                    );
                }
                d.ok = false;
            }
        }
    }

    /// `mem-min <= memory <= mem-max`, checked only when all else is
    /// valid; the bounds are kept but not used.
    fn check_memory_bounds(&mut self, d: &mut Draft<'_>) {
        let kib = d.dom.memory_kib;
        if let (Some(min), true) = (d.dom.mem_min_kib, d.ok) {
            if min > kib {
                self.err(
                    d.path,
                    "mem-min",
                    Kind::Conflict,
                    format!("{} is above memory ({})", Size(min << 10), Size(kib << 10)),
                );
                d.ok = false;
            }
        }
        if let (Some(max), true) = (d.dom.mem_max_kib, d.ok) {
            if max < kib {
                self.err(
                    d.path,
                    "mem-max",
                    Kind::Conflict,
                    format!("{} is below memory ({})", Size(max << 10), Size(kib << 10)),
                );
                d.ok = false;
            }
        }
        if d.dom.mem_min_kib.is_some() || d.dom.mem_max_kib.is_some() {
            self.d.warn(
                d.path,
                Some("mem-min"),
                Kind::Ignored,
                "mem-min/mem-max are kept in the plan; without ballooning the domain gets `memory`"
                    .into(),
            );
        }
    }

    fn check_nr_spis(&mut self, d: &mut Draft<'_>) {
        let Some(n) = d.dom.nr_spis else {
            return;
        };
        if d.dom.vpl011 && n < 1 {
            self.err(
                d.path,
                "nr_spis",
                Kind::OutOfRange,
                format!("vpl011 uses SPI 32, so nr_spis must be at least 1, found {n}"),
            );
            d.ok = false;
        }
        if d.dom.caps.0 & Caps::HARDWARE != 0 {
            self.err(
                d.path,
                "nr_spis",
                Kind::Conflict,
                "nr_spis cannot be given for the hardware domain".into(),
            );
            d.ok = false;
        }
    }

    fn check_mode(&mut self, d: &mut Draft<'_>) {
        if d.dom.mode.is_some_and(|m| m & 4 == 0) {
            self.err(
                d.path,
                "mode",
                Kind::BadValue,
                "dtvisor runs 64-bit guests only: set the LONG bit (0x4)".into(),
            );
            d.ok = false;
        }
    }

    /// `xen,static-mem` sums to `memory`; `direct-map` needs it.
    fn settle_static_mem(&mut self, d: &mut Draft<'_>) {
        let sum: u64 = d.dom.static_mem.iter().map(|r| r.size()).sum();
        if !d.dom.static_mem.is_empty() && d.ok && sum != d.dom.memory_kib << 10 {
            self.err(
                d.path,
                "xen,static-mem",
                Kind::Conflict,
                format!(
                    "the ranges sum to {}, but memory is {}: they must be equal",
                    Size(sum),
                    Size(d.dom.memory_kib << 10)
                ),
            );
            d.ok = false;
        }
        // The hardware domain is direct-mapped whatever it says, from free
        // RAM when it has no static memory (`hwdom`).
        let hardware = d.dom.caps.0 & Caps::HARDWARE != 0;
        if d.dom.direct_map && !hardware && d.node.prop("xen,static-mem").is_none() {
            self.err(
                d.path,
                "direct-map",
                Kind::Missing,
                "direct-map needs xen,static-mem: a direct-mapped domain's RAM is at fixed host addresses".into(),
            );
            d.ok = false;
        }
    }

    /// The partial device tree and `passthrough`: they must agree, and
    /// the hardware domain has neither (as in Xen). The module's contents
    /// are read where they are at hand (`devices`).
    fn settle_passthrough(&mut self, d: &mut Draft<'_>, dt: Option<Module>) {
        let hardware = d.dom.caps.0 & Caps::HARDWARE != 0;
        if hardware && d.passthrough.is_some() {
            self.err(
                d.path,
                "passthrough",
                Kind::Conflict,
                "the hardware domain owns every device: passthrough is not given for it".into(),
            );
            d.ok = false;
        }
        let Some(dt) = dt else { return };
        if hardware {
            self.err(
                &dt.path,
                "compatible",
                Kind::Conflict,
                "a partial device tree cannot be given to the hardware domain".into(),
            );
            d.ok = false;
        }
        if d.passthrough == Some(false) {
            self.err(
                d.path,
                "passthrough",
                Kind::Conflict,
                format!(
                    "passthrough is \"disabled\", but {} assigns devices: drop one of them",
                    dt.path
                ),
            );
            d.ok = false;
        }
        if d.ok {
            let before = self.d.error_count();
            self.devices(d.node, &mut d.dom, &dt);
            d.ok = self.d.error_count() == before;
        }
        d.dom.device_tree = Some(dt);
    }

    /// was wrong); its `bootargs` are the domain's command line.
    fn settle_kernel(&mut self, d: &mut Draft<'_>, kernel: Option<Module>) {
        match kernel {
            Some(k) => {
                d.dom.cmdline = k.bootargs.clone();
                d.dom.kernel = k;
            }
            None => {
                if d.ok {
                    self.d.error(d.path, None, Kind::NoKernel, "expected a kernel module (compatible \"multiboot,kernel\", \"multiboot,module\"), found none".into());
                }
                d.ok = false;
            }
        }
    }

    // ---- child nodes ----

    /// The domain's children: its kernel, ramdisk and partial device tree
    /// modules; anything else is refused or warned of.
    fn domain_modules(&mut self, d: &mut Draft<'_>) -> Slots {
        let cells = d.cells;
        let mut slots = (None, None, None);
        for c in d.node.children() {
            let cpath = format!("{}/{}", d.path, c.name());
            let compat: Vec<&str> = c
                .prop("compatible")
                .map(|p| p.strings().collect())
                .unwrap_or_default();
            if names_module(&compat) {
                self.domain_module(d, &c, &cpath, cells, &mut slots);
            } else {
                self.domain_child(d, &cpath, &compat);
            }
        }
        slots
    }

    /// A module child: a domain has one kernel and at most one ramdisk.
    fn domain_module(
        &mut self,
        d: &mut Draft<'_>,
        c: &Node<'_>,
        cpath: &str,
        cells: (u32, u32),
        (kernel, ramdisk, device_tree): &mut Slots,
    ) {
        if c.children().next().is_some() {
            self.d.error(
                cpath,
                None,
                Kind::ModuleDepth,
                "a module node has no child nodes; modules nested inside it are not read".into(),
            );
            d.ok = false;
        }
        let Some(m) = self.module(c, cpath, cells, d.b.hyperlaunch, None) else {
            d.ok = false;
            return;
        };
        let slot = match m.kind {
            ModuleKind::Kernel => kernel,
            ModuleKind::Ramdisk => ramdisk,
            ModuleKind::DeviceTree => device_tree,
            other => {
                self.err(
                    cpath,
                    "compatible",
                    Kind::ModuleKind,
                    format!(
                        "a {} module belongs to the hypervisor, not to a domain",
                        other.name()
                    ),
                );
                d.ok = false;
                return;
            }
        };
        if let Some(prev) = slot.as_ref() {
            self.d.error(
                cpath,
                Some("compatible"),
                Kind::DuplicateModule,
                format!(
                    "a second {} module; the first is {}",
                    m.kind.name(),
                    prev.path
                ),
            );
            d.ok = false;
        } else {
            *slot = Some(m);
        }
    }

    /// A child that is not a module: a Xen feature dtvisor does not
    /// offer (`props::UNSUPPORTED_CHILDREN`), a nested domain, or unknown.
    fn domain_child(&mut self, d: &mut Draft<'_>, cpath: &str, compat: &[&str]) {
        let unsupported = props::UNSUPPORTED_CHILDREN
            .iter()
            .find(|(names, _)| names.iter().any(|n| compat.contains(n)));
        if let Some((_, why)) = unsupported {
            self.d.error(cpath, None, Kind::Unsupported, (*why).into());
            d.ok = false;
        } else if compat.contains(&"xen,domain") {
            self.d.error(
                cpath,
                None,
                Kind::Nesting,
                "a domain must be a direct child of its container".into(),
            );
            d.ok = false;
        } else {
            self.d.warn(
                cpath,
                None,
                Kind::UnknownNode,
                "unknown child node of a domain, ignored".into(),
            );
        }
    }
}
