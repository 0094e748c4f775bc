//! Partial device trees: the device-assignment fragment a domain may carry
//! as a `multiboot,device-tree` module, in the format Xen defines
//! (docs/misc/arm/passthrough.txt, and "Device Assignment" in
//! docs/misc/arm/device-tree/booting.txt).
//!
//! The fragment is a complete flattened device tree of which only three
//! top-level nodes mean anything:
//!
//! - `/gic`: a placeholder for the guest's interrupt controller, so that
//!   the fragment's devices can say `interrupt-parent = <&gic>`. Only its
//!   phandle is used (the guest's GIC node then takes that phandle);
//!   without it, devices name Xen's fixed GIC phandle, [`GIC_PHANDLE`].
//! - `/aliases`: copied into the guest's device tree as it is.
//! - `/passthrough`: copied into the guest's device tree, recursively. A
//!   node anywhere below it with `xen,reg` and/or `xen,path` is a device
//!   assigned to the domain: `xen,reg` lists `<host-address size
//!   guest-address>` triples of MMIO to map, `xen,path` names the host
//!   node whose interrupts the domain gets, and
//!   `xen,force-assign-without-iommu` allows assignment without an IOMMU.
//!   Those three properties are for the hypervisor and are left out of the
//!   copy.
//!
//! Every other top-level node is ignored, as are the root's properties.
//!
//! [`read`] checks a fragment and lists its devices, collecting every
//! error (each naming the node inside the fragment, and the property
//! where there is one):
//!
//! - It must be a valid device tree (the crate's checked reader), no
//!   larger than the module that holds it.
//! - No `phandle` / `linux,phandle` anywhere in it may be 65000 or above:
//!   Xen reserves that range for the nodes it creates. `/gic` alone may
//!   use exactly 65000, the value the guest's GIC gets anyway.
//! - No two nodes may have the same phandle, and a node with both
//!   properties must give both the same value (the specification's rule;
//!   Xen copies such a fragment, and the guest then resolves a reference
//!   to whichever node its kernel finds first).
//! - `xen,reg` is decoded with the `#address-cells` / `#size-cells` of the
//!   node's parent (2 and 1 where the parent has none, Xen's defaults),
//!   each of which must then be 1 or 2. It must hold a whole, non-zero
//!   number of triples; every address and size must be 4 KiB aligned,
//!   sizes non-zero, and neither range may wrap past 2^64.
//! - `xen,path` must be one NUL-terminated string starting with `/`.
//! - `xen,path` needs `xen,reg`, and `xen,reg` needs either `xen,path` or
//!   `xen,force-assign-without-iommu`. A node with neither is copied but
//!   is not a device.
//! - Copied subtrees may nest at most [`MAX_DEPTH`] levels below the root,
//!   may not repeat a node name among siblings nor a property name in a
//!   node, and every name must be one the guest DTB writer (vm-fdt)
//!   accepts, so that [`copy_into`] cannot fail on a fragment `read`
//!   accepted (short of the guest DTB outgrowing 4 GiB).
//!
//! What `read` does not check, because it needs the host device tree or the
//! domain: whether `xen,path` names a host node, and whether the ranges
//! clash with anything (that is `devices.rs`).
//!
//! One difference from Xen: for `xen,reg` on `/passthrough` itself (an odd
//! place for a device), Xen assumes the default cells rather than reading
//! the fragment's root, which dtc needs anyway; here the root's cells
//! apply, like any other parent's.
//!
//! The checked reader, like libfdt, sees a node's properties only up to
//! its first subnode (the specification puts them all before it, as dtc
//! does); anything else it does not show is neither checked nor copied.

use crate::diag::{Diagnostic, Kind};
use crate::fdt::{Fdt, Node, Prop};
use crate::mm::Range;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The guest DTB writer `copy_into` writes with, re-exported for callers
/// outside the crate (the fuzz target).
pub use vm_fdt::FdtWriter;

/// The phandle Xen gives the guest's GIC (`GUEST_PHANDLE_GIC`); it and
/// everything above it are reserved.
pub const GIC_PHANDLE: u32 = 65000;

/// Deepest nesting of a copied node, counted from the root (`/passthrough`
/// is at depth 1). Xen's own device tree code stops at the same depth.
pub const MAX_DEPTH: usize = 16;

/// Page size every `xen,reg` address and size must be a multiple of.
const PAGE: u64 = 4096;

/// Xen's cell counts where a parent has no `#address-cells`/`#size-cells`.
const DEFAULT_ADDRESS_CELLS: u32 = 2;
const DEFAULT_SIZE_CELLS: u32 = 1;

const XEN_REG: &str = "xen,reg";
const XEN_PATH: &str = "xen,path";
const XEN_FORCE: &str = "xen,force-assign-without-iommu";

/// The properties that are for the hypervisor and not copied.
const STRIPPED: [&str; 3] = [XEN_REG, XEN_PATH, XEN_FORCE];

const PHANDLE_PROPS: [&str; 2] = ["phandle", "linux,phandle"];

/// One `xen,reg` triple: host range -> guest address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtReg {
    /// Host-physical MMIO range.
    pub host: Range,
    /// Guest-physical address where the range appears (same size).
    pub guest: u64,
}

/// A node under `/passthrough` (at any depth) that has `xen,reg` and/or
/// `xen,path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtDevice {
    /// Its path in the fragment, e.g. `/passthrough/rtc@9010000`.
    pub node: String,
    /// The `xen,reg` triples, in order (empty without `xen,reg`).
    pub regs: Vec<PtReg>,
    /// `xen,path`: the host node.
    pub host_path: Option<String>,
    /// `xen,force-assign-without-iommu` is present.
    pub force: bool,
}

/// What a partial device tree holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    /// The `phandle` (or `linux,phandle`) of `/gic`, if it has a non-zero one.
    pub gic_phandle: Option<u32>,
    /// The assigned devices, in fragment order (pre-order).
    pub devices: Vec<PtDevice>,
    /// The fragment has `/passthrough`.
    pub has_passthrough: bool,
    /// The fragment has `/aliases`.
    pub has_aliases: bool,
}

/// Which of the copied top-level nodes a subtree is under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subtree {
    /// `/aliases`: copied verbatim.
    Aliases,
    /// `/passthrough`: devices, and the three `xen,*` properties stripped.
    Passthrough,
}

impl Subtree {
    fn of(name: &str) -> Option<Subtree> {
        // Xen compares these names ignoring case; so do we.
        if name.eq_ignore_ascii_case("aliases") {
            Some(Subtree::Aliases)
        } else if name.eq_ignore_ascii_case("passthrough") {
            Some(Subtree::Passthrough)
        } else {
            None
        }
    }

    fn copies(self, prop: &str) -> bool {
        self == Subtree::Aliases || !STRIPPED.contains(&prop)
    }
}

fn is_gic(name: &str) -> bool {
    name.eq_ignore_ascii_case("gic")
}

/// `#address-cells` and `#size-cells` a node gives its children.
#[derive(Clone, Copy)]
struct Cells {
    addr: u32,
    size: u32,
}

/// Reads and checks a partial device tree of `module_size` bytes (the
/// module's reg size; `bytes` may be longer or shorter). Only
/// `bytes[..min(len, module_size)]` is looked at. Every error is a
/// `partial_dt` diagnostic whose path is inside the fragment ("/" for the
/// blob itself).
pub fn read(bytes: &[u8], module_size: u64) -> Result<Partial, Vec<Diagnostic>> {
    let len = usize::try_from(module_size).map_or(bytes.len(), |m| m.min(bytes.len()));
    let blob = bytes.get(..len).unwrap_or(bytes);
    if let Ok(total) = Fdt::total_size(blob) {
        if total as u64 > module_size {
            return Err(alloc::vec![Diagnostic::error(
                "/",
                None,
                Kind::PartialDt,
                format!("totalsize {total} is larger than the module ({module_size} bytes)"),
            )]);
        }
    }
    let fdt = Fdt::new(blob).map_err(|e| {
        alloc::vec![Diagnostic::error(
            "/",
            None,
            Kind::PartialDt,
            format!("not a device tree: {e}"),
        )]
    })?;
    let mut c = Checker::new();
    let root = fdt.root();
    c.phandles(&root);
    let mut out = Partial::default();
    let mut seen_gic = false;
    for top in root.children() {
        let name = top.name();
        if is_gic(name) {
            if seen_gic {
                c.error(&top_path(name), None, "more than one /gic node".into());
                continue;
            }
            seen_gic = true;
            out.gic_phandle = phandle_of(&top);
            continue;
        }
        let Some(kind) = Subtree::of(name) else {
            continue; // not for us
        };
        let seen = match kind {
            Subtree::Aliases => &mut out.has_aliases,
            Subtree::Passthrough => &mut out.has_passthrough,
        };
        if *seen {
            c.error(&top_path(name), None, format!("more than one /{name} node"));
            continue;
        }
        *seen = true;
        let needed = kind == Subtree::Passthrough && top.prop(XEN_REG).is_some();
        let parent = c.child_cells(&root, "/", needed);
        let mut path = top_path(name);
        c.walk(&top, &mut path, kind, parent);
    }
    if c.errors.is_empty() {
        out.devices = c.devices;
        Ok(out)
    } else {
        Err(c.errors)
    }
}

fn top_path(name: &str) -> String {
    let mut p = String::with_capacity(name.len() + 1);
    p.push('/');
    p.push_str(name);
    p
}

/// `phandle`, else `linux,phandle`, of a node; 0 means none.
fn phandle_of(n: &Node<'_>) -> Option<u32> {
    PHANDLE_PROPS
        .iter()
        .find_map(|p| n.prop(p))
        .and_then(|p| p.u32())
        .filter(|&v| v != 0)
}

/// Collects errors and devices while walking a fragment.
struct Checker {
    errors: Vec<Diagnostic>,
    devices: Vec<PtDevice>,
    /// A scratch writer: vm-fdt is asked about every name `copy_into`
    /// would give it, so its rules are not restated here.
    names: Option<FdtWriter>,
    /// The node each phandle seen so far belongs to.
    phandle_at: BTreeMap<u32, String>,
}

impl Checker {
    fn new() -> Checker {
        let names = FdtWriter::new().ok().and_then(|mut w| {
            // The root stays open (its handle is not needed): names are
            // tried one level below it.
            w.begin_node("").ok()?;
            Some(w)
        });
        Checker {
            errors: Vec::new(),
            devices: Vec::new(),
            names,
            phandle_at: BTreeMap::new(),
        }
    }

    fn error(&mut self, node: &str, property: Option<&str>, message: String) {
        self.errors
            .push(Diagnostic::error(node, property, Kind::PartialDt, message));
    }

    /// Rules: every phandle in the whole fragment is below 65000, except
    /// that `/gic` may have exactly 65000; each belongs to one node. A
    /// walk without recursion.
    fn phandles(&mut self, root: &Node<'_>) {
        self.node_phandles(root, || "/".into(), false);
        let mut stack: Vec<&str> = Vec::new();
        for n in root.descendants() {
            let depth = n.depth();
            stack.truncate(depth.saturating_sub(1));
            stack.push(n.name());
            let gic = depth == 1 && is_gic(n.name());
            self.node_phandles(&n, || path_of(&stack), gic);
        }
    }

    fn node_phandles(&mut self, n: &Node<'_>, path: impl Fn() -> String, gic: bool) {
        let values: Vec<u32> = PHANDLE_PROPS
            .iter()
            .filter_map(|p| n.prop(p).and_then(|p| p.u32()))
            .collect();
        if let [a, b] = values[..] {
            if a != b {
                self.error(
                    &path(),
                    Some("linux,phandle"),
                    format!("{b} differs from the node's phandle {a}"),
                );
            }
        }
        if let Some(v) = phandle_of(n) {
            let here = path();
            if let Some(first) = self.phandle_at.get(&v) {
                let message = format!("{v} is also the phandle of {first}");
                self.error(
                    &here,
                    PHANDLE_PROPS.iter().copied().find(|p| n.prop(p).is_some()),
                    message,
                );
            } else {
                self.phandle_at.insert(v, here);
            }
        }
        for name in PHANDLE_PROPS {
            let Some(p) = n.prop(name) else { continue };
            match p.u32() {
                None => self.error(
                    &path(),
                    Some(name),
                    format!(
                        "expected one 32-bit cell, found {} bytes",
                        p.value.len()
                    ),
                ),
                Some(v) if v == GIC_PHANDLE && gic => {}
                Some(v) if v >= GIC_PHANDLE => self.error(
                    &path(),
                    Some(name),
                    format!(
                        "{v} overlaps the phandles Xen reserves for the nodes it creates ({GIC_PHANDLE} and above{})",
                        if gic { "; /gic may use exactly 65000" } else { "" }
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    /// The cells `node` gives its children, checked when `needed` (a
    /// child under `/passthrough` has `xen,reg`); None when not needed or
    /// invalid (then reported).
    fn child_cells(&mut self, node: &Node<'_>, path: &str, needed: bool) -> Option<Cells> {
        if !needed {
            return None;
        }
        let addr = self.cell_count(node, path, "#address-cells", DEFAULT_ADDRESS_CELLS);
        let size = self.cell_count(node, path, "#size-cells", DEFAULT_SIZE_CELLS);
        Some(Cells {
            addr: addr?,
            size: size?,
        })
    }

    fn cell_count(
        &mut self,
        node: &Node<'_>,
        path: &str,
        name: &'static str,
        default: u32,
    ) -> Option<u32> {
        let Some(p) = node.prop(name) else {
            return Some(default);
        };
        match p.u32() {
            Some(v @ 1..=2) => Some(v),
            Some(v) => {
                self.error(path, Some(name), format!("expected 1 or 2, found {v}"));
                None
            }
            None => {
                self.error(
                    path,
                    Some(name),
                    format!(
                        "expected 1 or 2 in one 32-bit cell, found {} bytes",
                        p.value.len()
                    ),
                );
                None
            }
        }
    }

    /// One copied node and, recursively, its children. `parent` is the
    /// cells of its parent, when it is needed and valid.
    fn walk(&mut self, node: &Node<'_>, path: &mut String, kind: Subtree, parent: Option<Cells>) {
        if node.depth() > MAX_DEPTH {
            self.error(
                path,
                None,
                format!("nested deeper than {MAX_DEPTH} levels below the root"),
            );
            return;
        }
        self.names(node, path, kind);
        if kind == Subtree::Passthrough {
            self.device(node, path, parent);
        }
        let needed =
            kind == Subtree::Passthrough && node.children().any(|c| c.prop(XEN_REG).is_some());
        let cells = self.child_cells(node, path, needed);
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for child in node.children() {
            let len = path.len();
            path.push('/');
            path.push_str(child.name());
            if seen.insert(child.name()) {
                self.walk(&child, path, kind, cells);
            } else {
                self.error(path, None, "a sibling has the same name".into());
            }
            path.truncate(len);
        }
    }

    /// The node's name and its copied properties' names: accepted by
    /// vm-fdt, and no property twice.
    fn names(&mut self, node: &Node<'_>, path: &str, kind: Subtree) {
        let mut bad = Vec::new();
        if let Some(w) = self.names.as_mut() {
            let opened = match w.begin_node(node.name()) {
                Ok(h) => Some(h),
                Err(e) => {
                    bad.push(format!("node name {:?}: {e}", node.name()));
                    // Try the properties in a stand-in node.
                    w.begin_node("n").ok()
                }
            };
            if let Some(h) = opened {
                for p in node.props().filter(|p| kind.copies(p.name)) {
                    if let Err(e) = w.property(p.name, &[]) {
                        bad.push(format!("property name {:?}: {e}", p.name));
                    }
                }
                let _ = w.end_node(h);
            }
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for p in node.props() {
            if !seen.insert(p.name) {
                bad.push(format!("property {:?} appears more than once", p.name));
            }
        }
        for m in bad {
            self.error(
                path,
                None,
                format!("{m} (cannot be written into the guest device tree)"),
            );
        }
    }

    /// The device rules for one node under `/passthrough`.
    fn device(&mut self, node: &Node<'_>, path: &str, parent: Option<Cells>) {
        let reg = node.prop(XEN_REG);
        let xpath = node.prop(XEN_PATH);
        let force = node.prop(XEN_FORCE).is_some();
        let mut regs = Vec::new();
        if let (Some(p), Some(cells)) = (reg, parent) {
            regs = self.regs(path, &p, cells);
        }
        let host_path = xpath.and_then(|p| self.host_path(path, &p));
        match (reg.is_some(), xpath.is_some()) {
            (false, false) => return, // copied, but not a device
            (false, true) => {
                self.error(
                    path,
                    Some(XEN_REG),
                    "xen,reg missing: the node has xen,path but no xen,reg".into(),
                );
                return;
            }
            (true, false) if !force => {
                self.error(
                    path,
                    Some(XEN_PATH),
                    "xen,path missing: the node has xen,reg but neither xen,path nor xen,force-assign-without-iommu".into(),
                );
                return;
            }
            _ => {}
        }
        self.devices.push(PtDevice {
            node: path.to_string(),
            regs,
            host_path,
            force,
        });
    }

    /// Decodes and checks `xen,reg`.
    fn regs(&mut self, path: &str, p: &Prop<'_>, c: Cells) -> Vec<PtReg> {
        let per = (2 * c.addr + c.size) as usize;
        let mut out = Vec::new();
        let len = p.value.len();
        if len == 0 || !len.is_multiple_of(per * 4) {
            self.error(
                path,
                Some(XEN_REG),
                format!(
                    "expected <host-address size guest-address> triples of {}+{}+{} cells (the parent's #address-cells {} and #size-cells {}), found {len} bytes",
                    c.addr, c.size, c.addr, c.addr, c.size
                ),
            );
            return out;
        }
        for i in 0..len / (per * 4) {
            let at = i * per;
            let (Some(host), Some(size), Some(guest)) = (
                p.read_cells(at, c.addr),
                p.read_cells(at + c.addr as usize, c.size),
                p.read_cells(at + (c.addr + c.size) as usize, c.addr),
            ) else {
                continue; // cannot happen: the length was checked
            };
            let what = format!("triple {i} (host {host:#x}, size {size:#x}, guest {guest:#x})");
            let mut ok = true;
            if size == 0 {
                self.error(path, Some(XEN_REG), format!("{what}: size is zero"));
                ok = false;
            }
            if !(host.is_multiple_of(PAGE)
                && size.is_multiple_of(PAGE)
                && guest.is_multiple_of(PAGE))
            {
                self.error(
                    path,
                    Some(XEN_REG),
                    format!("{what}: not page aligned (every value must be a multiple of 4 KiB)"),
                );
                ok = false;
            }
            let hr = Range::from_base_size(host, size);
            if hr.is_none() {
                self.error(
                    path,
                    Some(XEN_REG),
                    format!("{what}: the host range wraps past 2^64"),
                );
                ok = false;
            }
            if guest.checked_add(size).is_none() {
                self.error(
                    path,
                    Some(XEN_REG),
                    format!("{what}: the guest range wraps past 2^64"),
                );
                ok = false;
            }
            if let (Some(host), true) = (hr, ok) {
                out.push(PtReg { host, guest });
            }
        }
        out
    }

    /// Checks `xen,path` and returns it.
    fn host_path(&mut self, path: &str, p: &Prop<'_>) -> Option<String> {
        match p.str() {
            Some(s) if s.starts_with('/') => Some(s.to_string()),
            Some(s) => {
                self.error(
                    path,
                    Some(XEN_PATH),
                    format!("expected an absolute path (starting with '/'), found {s:?}"),
                );
                None
            }
            None => {
                self.error(
                    path,
                    Some(XEN_PATH),
                    format!(
                        "expected one NUL-terminated path string, found {} bytes that are not one",
                        p.value.len()
                    ),
                );
                None
            }
        }
    }
}

fn path_of(stack: &[&str]) -> String {
    let mut s = String::new();
    for n in stack {
        s.push('/');
        s.push_str(n);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Writes the fragment's `/aliases` and `/passthrough` (recursively) as
/// children of the node `w` currently has open (the guest DTB's root), in
/// the fragment's order, copying every property except `xen,reg`,
/// `xen,path` and `xen,force-assign-without-iommu` (stripped at every
/// depth under `/passthrough`; `/aliases` is copied verbatim). `bytes` was
/// accepted by [`read`].
///
/// vm-fdt takes no property of a node after one of its children, so the
/// root's own properties must be written before this.
///
/// Errors are vm-fdt's. Should `bytes` not be a device tree at all,
/// nothing is written and `Error::InvalidString` is returned (vm-fdt has
/// no error for a bad input); nesting past [`MAX_DEPTH`] gives
/// `Error::NodeDepthTooLarge`.
pub fn copy_into(bytes: &[u8], w: &mut FdtWriter) -> Result<(), vm_fdt::Error> {
    let fdt = Fdt::new(bytes).map_err(|_| vm_fdt::Error::InvalidString)?;
    let (mut aliases, mut passthrough) = (false, false);
    for top in fdt.root().children() {
        let Some(kind) = Subtree::of(top.name()) else {
            continue;
        };
        // Only the first of each, as `read` accepts only one.
        let done = match kind {
            Subtree::Aliases => &mut aliases,
            Subtree::Passthrough => &mut passthrough,
        };
        if !*done {
            *done = true;
            copy_node(&top, w, kind)?;
        }
    }
    Ok(())
}

fn copy_node(node: &Node<'_>, w: &mut FdtWriter, kind: Subtree) -> Result<(), vm_fdt::Error> {
    if node.depth() > MAX_DEPTH {
        return Err(vm_fdt::Error::NodeDepthTooLarge);
    }
    let h = w.begin_node(node.name())?;
    for p in node.props().filter(|p| kind.copies(p.name)) {
        w.property(p.name, p.value)?;
    }
    for child in node.children() {
        copy_node(&child, w, kind)?;
    }
    w.end_node(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::tests::dtc;

    /// A fragment whose `/passthrough` has `cells` (e.g. "#address-cells =
    /// <2>; #size-cells = <2>;") and `body`.
    fn pt(cells: &str, body: &str) -> Vec<u8> {
        dtc(&format!(
            "/dts-v1/;\n/ {{\n  #address-cells = <2>; #size-cells = <2>;\n  passthrough {{\n    compatible = \"simple-bus\"; ranges; {cells}\n{body}\n  }};\n}};\n"
        ))
    }

    const CELLS_22: &str = "#address-cells = <2>; #size-cells = <2>;";

    fn ok(blob: &[u8]) -> Partial {
        match read(blob, blob.len() as u64) {
            Ok(p) => p,
            Err(e) => panic!("rejected: {e:#?}"),
        }
    }

    fn errs(blob: &[u8]) -> Vec<Diagnostic> {
        read(blob, blob.len() as u64).expect_err("accepted")
    }

    /// The only error, which must be on `node` and `property`.
    fn one_err(blob: &[u8], node: &str, property: Option<&str>) -> String {
        let e = errs(blob);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].path, node, "{e:#?}");
        assert_eq!(e[0].property.as_deref(), property, "{e:#?}");
        e[0].message.clone()
    }

    /// Xen's example: the PL031 RTC of QEMU's virt machine, with the fixed
    /// clock it needs defined inside /passthrough.
    const RTC: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    passthrough {
        compatible = "simple-bus";
        ranges;
        #address-cells = <2>;
        #size-cells = <2>;
        apb_pclk: clock {
            compatible = "fixed-clock";
            #clock-cells = <0>;
            clock-frequency = <24000000>;
            clock-output-names = "apb_pclk";
        };
        rtc@9010000 {
            compatible = "arm,pl031", "arm,primecell";
            reg = <0x0 0x9010000 0x0 0x1000>;
            interrupts = <0 2 4>;
            interrupt-parent = <65000>;
            clocks = <&apb_pclk>;
            clock-names = "apb_pclk";
            xen,reg = <0x0 0x9010000 0x0 0x1000 0x0 0x9010000>;
            xen,path = "/pl031@9010000";
            xen,force-assign-without-iommu;
        };
    };
};
"#;

    #[test]
    fn xen_rtc_example_is_accepted() {
        let p = ok(&dtc(RTC));
        assert_eq!(
            p,
            Partial {
                gic_phandle: None,
                devices: vec![PtDevice {
                    node: "/passthrough/rtc@9010000".into(),
                    regs: vec![PtReg {
                        host: Range::new(0x901_0000, 0x901_1000),
                        guest: 0x901_0000,
                    }],
                    host_path: Some("/pl031@9010000".into()),
                    force: true,
                }],
                has_passthrough: true,
                has_aliases: false,
            }
        );
    }

    #[test]
    fn gic_placeholder_with_dtc_phandle() {
        let blob = dtc(r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    gic: gic { #interrupt-cells = <3>; interrupt-controller; };
    passthrough {
        compatible = "simple-bus"; ranges; #address-cells = <2>; #size-cells = <2>;
        ethernet@10000000 {
            compatible = "calxeda,hb-xgmac";
            reg = <0 0x10000000 0 0x1000>;
            interrupt-parent = <&gic>;
            interrupts = <0 80 4>;
            xen,reg = <0 0x10000000 0 0x1000 0 0x10000000>;
            xen,path = "/soc/ethernet@10000000";
        };
    };
};
"#);
        let fdt = Fdt::new(&blob).unwrap();
        let ph = fdt
            .find("/gic")
            .unwrap()
            .prop("phandle")
            .unwrap()
            .u32()
            .unwrap();
        let eth = fdt.find("/passthrough/ethernet@10000000").unwrap();
        assert_eq!(eth.prop("interrupt-parent").unwrap().u32(), Some(ph));
        assert!(ph > 0 && ph < GIC_PHANDLE);
        let p = ok(&blob);
        assert_eq!(p.gic_phandle, Some(ph));
        assert_eq!(p.devices.len(), 1);
        assert!(!p.devices[0].force);
        assert_eq!(
            p.devices[0].host_path.as_deref(),
            Some("/soc/ethernet@10000000")
        );
    }

    #[test]
    fn gic_may_take_65000_or_linux_phandle() {
        let p = ok(&dtc("/dts-v1/;\n/ { gic { phandle = <65000>; }; };"));
        assert_eq!(p.gic_phandle, Some(65000));
        let p = ok(&dtc("/dts-v1/;\n/ { gic { linux,phandle = <5>; }; };"));
        assert_eq!(p.gic_phandle, Some(5));
        let p = ok(&dtc("/dts-v1/;\n/ { gic { }; };"));
        assert_eq!(p.gic_phandle, None);
    }

    #[test]
    fn one_and_one_cells() {
        let p = ok(&pt(
            "#address-cells = <1>; #size-cells = <1>;",
            r#"uart@9000000 { xen,reg = <0x9000000 0x1000 0x9000000 0x9010000 0x2000 0x20000000>;
                 xen,path = "/pl011@9000000"; };"#,
        ));
        assert_eq!(
            p.devices[0].regs,
            [
                PtReg {
                    host: Range::new(0x900_0000, 0x900_1000),
                    guest: 0x900_0000
                },
                PtReg {
                    host: Range::new(0x901_0000, 0x901_2000),
                    guest: 0x2000_0000
                },
            ]
        );
    }

    #[test]
    fn two_and_two_cells() {
        let p = ok(&pt(
            CELLS_22,
            r#"dev@100000000 { xen,reg = <0x1 0x0 0x0 0x10000 0x0 0x10000000>; xen,path = "/dev@100000000"; };"#,
        ));
        assert_eq!(
            p.devices[0].regs,
            [PtReg {
                host: Range::new(0x1_0000_0000, 0x1_0001_0000),
                guest: 0x1000_0000
            }]
        );
    }

    /// Without cells on /passthrough, Xen's 2 and 1 apply (not the
    /// root's 2 and 2).
    #[test]
    fn default_cells_when_passthrough_has_none() {
        let p = ok(&pt(
            "",
            r#"rtc@9010000 { xen,reg = <0x0 0x9010000 0x1000 0x0 0x9010000>; xen,path = "/pl031@9010000"; };"#,
        ));
        assert_eq!(
            p.devices[0].regs,
            [PtReg {
                host: Range::new(0x901_0000, 0x901_1000),
                guest: 0x901_0000
            }]
        );
    }

    #[test]
    fn nested_device_uses_its_parents_cells() {
        let p = ok(&pt(
            CELLS_22,
            r#"soc { #address-cells = <1>; #size-cells = <1>; ranges;
                 uart@1c090000 { xen,reg = <0x1c090000 0x1000 0x1c090000>; xen,path = "/soc/uart@1c090000"; };
               };"#,
        ));
        assert_eq!(p.devices[0].node, "/passthrough/soc/uart@1c090000");
        assert_eq!(
            p.devices[0].regs[0].host,
            Range::new(0x1c09_0000, 0x1c09_1000)
        );
    }

    #[test]
    fn phandles_at_or_above_65000_are_refused() {
        let blob = dtc(r#"/dts-v1/;
/ {
    other { linux,phandle = <70000>; };
    passthrough { clock { phandle = <65000>; }; };
};
"#);
        let e = errs(&blob);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_eq!(
            (e[0].path.as_str(), e[0].property.as_deref()),
            ("/other", Some("linux,phandle"))
        );
        assert_eq!(
            (e[1].path.as_str(), e[1].property.as_deref()),
            ("/passthrough/clock", Some("phandle"))
        );
        assert!(e[1].message.contains("65000"), "{}", e[1].message);
        // 64999 is still fine.
        ok(&dtc(
            "/dts-v1/;\n/ { passthrough { clock { phandle = <64999>; }; }; };",
        ));
    }

    #[test]
    fn a_phandle_given_twice_is_refused() {
        // dtc refuses duplicate phandles: write it with vm-fdt. The
        // second owner is named, with the first.
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let g = w.begin_node("gic").unwrap();
        w.property_u32("phandle", 1).unwrap();
        w.end_node(g).unwrap();
        let p = w.begin_node("passthrough").unwrap();
        let a = w.begin_node("a").unwrap();
        w.property_u32("linux,phandle", 1).unwrap();
        w.end_node(a).unwrap();
        let b = w.begin_node("b").unwrap();
        w.property_u32("phandle", 2).unwrap();
        w.end_node(b).unwrap();
        w.end_node(p).unwrap();
        w.end_node(root).unwrap();
        let m = one_err(
            &w.finish().unwrap(),
            "/passthrough/a",
            Some("linux,phandle"),
        );
        assert!(m.contains("also the phandle of /gic"), "{m}");
    }

    #[test]
    fn phandle_and_linux_phandle_must_agree() {
        // dtc refuses this too: vm-fdt again.
        let one = |linux: u32| {
            let mut w = FdtWriter::new().unwrap();
            let root = w.begin_node("").unwrap();
            let p = w.begin_node("passthrough").unwrap();
            let c = w.begin_node("c").unwrap();
            w.property_u32("phandle", 3).unwrap();
            w.property_u32("linux,phandle", linux).unwrap();
            w.end_node(c).unwrap();
            w.end_node(p).unwrap();
            w.end_node(root).unwrap();
            w.finish().unwrap()
        };
        let m = one_err(&one(4), "/passthrough/c", Some("linux,phandle"));
        assert!(m.contains("4 differs from the node's phandle 3"), "{m}");
        ok(&one(3));
    }

    #[test]
    fn gic_phandle_above_65000_is_refused() {
        let blob = dtc("/dts-v1/;\n/ { gic { phandle = <65001>; }; };");
        one_err(&blob, "/gic", Some("phandle"));
    }

    #[test]
    fn phandle_of_wrong_length() {
        // dtc refuses this one: write it with vm-fdt.
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let p = w.begin_node("passthrough").unwrap();
        let x = w.begin_node("x").unwrap();
        w.property_array_u32("phandle", &[1, 2]).unwrap();
        w.end_node(x).unwrap();
        w.end_node(p).unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let m = one_err(&blob, "/passthrough/x", Some("phandle"));
        assert!(m.contains("8 bytes"), "{m}");
    }

    #[test]
    fn address_cells_must_be_1_or_2() {
        let blob = pt(
            "#address-cells = <3>; #size-cells = <2>;",
            r#"d { xen,reg = <0 0 0 0 0 0 0 0>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough", Some("#address-cells"));
        assert_eq!(m, "expected 1 or 2, found 3");
    }

    #[test]
    fn size_cells_must_be_1_or_2() {
        let blob = pt(
            "#address-cells = <2>; #size-cells = <0>;",
            r#"d { xen,reg = <0 0x1000 0 0x1000>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough", Some("#size-cells"));
        assert_eq!(m, "expected 1 or 2, found 0");
        let blob = pt(
            "#address-cells = <2>; #size-cells = <1 1>;",
            r#"d { xen,reg = <0 0x1000 0x1000 0 0x1000>; xen,path = "/d"; };"#,
        );
        one_err(&blob, "/passthrough", Some("#size-cells"));
    }

    /// Cells are checked where `xen,reg` needs them, not elsewhere (an
    /// interrupt controller's `#address-cells = <0>` is fine).
    #[test]
    fn unused_cells_are_not_checked() {
        ok(&pt(
            "#address-cells = <3>; #size-cells = <0>;",
            "intc { #address-cells = <0>; interrupt-controller; };",
        ));
    }

    #[test]
    fn xen_reg_needs_whole_triples() {
        let blob = pt(
            CELLS_22,
            r#"d { xen,reg = <0 0x1000 0 0x1000 0>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.contains("2+2+2") && m.contains("20 bytes"), "{m}");
        let blob = pt(CELLS_22, r#"d { xen,reg; xen,path = "/d"; };"#);
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.contains("0 bytes"), "{m}");
    }

    #[test]
    fn xen_reg_must_be_page_aligned() {
        let blob = pt(
            CELLS_22,
            r#"d { xen,reg = <0 0x9010800 0 0x1000 0 0x9010000>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.contains("not page aligned"), "{m}");
        assert!(
            m.contains("0x9010800") && m.contains("0x1000") && m.contains("0x9010000"),
            "{m}"
        );
        for reg in [
            "0 0x9010000 0 0x800 0 0x9010000",
            "0 0x9010000 0 0x1000 0 0x9010004",
        ] {
            let blob = pt(
                CELLS_22,
                &format!(r#"d {{ xen,reg = <{reg}>; xen,path = "/d"; }};"#),
            );
            assert!(one_err(&blob, "/passthrough/d", Some("xen,reg")).contains("not page aligned"));
        }
    }

    #[test]
    fn xen_reg_size_must_not_be_zero() {
        let blob = pt(
            CELLS_22,
            r#"d { xen,reg = <0 0x9010000 0 0 0 0x9010000>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.contains("size is zero"), "{m}");
    }

    #[test]
    fn xen_reg_must_not_wrap() {
        let blob = pt(
            CELLS_22,
            r#"d { xen,reg = <0xffffffff 0xfffff000 0 0x1000 0 0x9010000>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.contains("host range wraps"), "{m}");
        let blob = pt(
            CELLS_22,
            r#"d { xen,reg = <0 0x9010000 0 0x2000 0xffffffff 0xfffff000>; xen,path = "/d"; };"#,
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.contains("guest range wraps"), "{m}");
    }

    #[test]
    fn xen_path_must_be_an_absolute_path_string() {
        let reg = "xen,reg = <0 0x9010000 0 0x1000 0 0x9010000>; xen,force-assign-without-iommu;";
        for (n, val) in [
            ("relative", r#""pl031@9010000""#),
            ("empty", r#""""#),
            ("unterminated", "[2f 61]"),
            ("list", r#""/a", "/b""#),
            ("cells", "<1>"),
        ] {
            let blob = pt(CELLS_22, &format!("{n} {{ {reg} xen,path = {val}; }};"));
            one_err(&blob, &format!("/passthrough/{n}"), Some("xen,path"));
        }
    }

    #[test]
    fn xen_path_without_xen_reg() {
        let blob = pt(
            CELLS_22,
            r#"d { xen,path = "/d"; xen,force-assign-without-iommu; };"#,
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,reg"));
        assert!(m.starts_with("xen,reg missing"), "{m}");
    }

    #[test]
    fn xen_reg_without_xen_path_or_force() {
        let blob = pt(
            CELLS_22,
            "d { xen,reg = <0 0x9010000 0 0x1000 0 0x9010000>; };",
        );
        let m = one_err(&blob, "/passthrough/d", Some("xen,path"));
        assert!(m.starts_with("xen,path missing"), "{m}");
        assert!(m.contains("xen,force-assign-without-iommu"), "{m}");
    }

    #[test]
    fn xen_reg_with_force_needs_no_path() {
        let p = ok(&pt(
            CELLS_22,
            "d { xen,reg = <0 0x9010000 0 0x1000 0 0x9010000>; xen,force-assign-without-iommu; };",
        ));
        assert_eq!(p.devices[0].host_path, None);
        assert!(p.devices[0].force);
    }

    #[test]
    fn node_without_xen_reg_or_path_is_no_device() {
        let p = ok(&pt(
            CELLS_22,
            r#"clock { compatible = "fixed-clock"; };
               odd { xen,force-assign-without-iommu; };"#,
        ));
        assert!(p.devices.is_empty());
        assert!(p.has_passthrough);
    }

    #[test]
    fn passthrough_and_aliases_are_optional() {
        let p = ok(&dtc("/dts-v1/;\n/ { };"));
        assert_eq!(p, Partial::default());
        let p = ok(&dtc(
            "/dts-v1/;\n/ { aliases { serial1 = \"/passthrough/uart\"; }; };",
        ));
        assert!(p.has_aliases && !p.has_passthrough);
    }

    #[test]
    fn other_top_level_nodes_are_ignored() {
        let p = ok(&dtc(r#"/dts-v1/;
/ {
    chosen { xen,reg = <1>; xen,path = "nowhere"; };
    soc { #address-cells = <7>; dev { xen,reg = <0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0>; }; };
};
"#));
        assert_eq!(p, Partial::default());
    }

    /// Xen matches the top-level names ignoring case.
    #[test]
    fn top_level_names_ignore_case() {
        let blob = dtc(r#"/dts-v1/;
/ { GIC { phandle = <7>; }; PassThrough { d { xen,reg = <0 0x1000 0x1000 0 0x1000>; xen,path = "/d"; }; }; };
"#);
        let p = ok(&blob);
        assert_eq!(p.gic_phandle, Some(7));
        assert_eq!(p.devices[0].node, "/PassThrough/d");
        let out = guest_with(&blob);
        assert!(Fdt::new(&out).unwrap().find("/PassThrough/d").is_some());
    }

    /// `xen,reg` on /passthrough itself is decoded with the root's cells.
    #[test]
    fn xen_reg_on_passthrough_uses_the_roots_cells() {
        let blob = dtc(r#"/dts-v1/;
/ { #address-cells = <1>; #size-cells = <1>;
    passthrough { xen,reg = <0x9000000 0x1000 0x9000000>; xen,path = "/uart"; };
};
"#);
        let p = ok(&blob);
        assert_eq!(p.devices[0].node, "/passthrough");
        assert_eq!(
            p.devices[0].regs[0].host,
            Range::new(0x900_0000, 0x900_1000)
        );
        let blob = dtc(r#"/dts-v1/;
/ { #address-cells = <3>; passthrough { xen,reg = <0 0 0 0 0 0 0>; xen,path = "/uart"; }; };
"#);
        one_err(&blob, "/", Some("#address-cells"));
    }

    /// The /aliases subtree is copied verbatim: xen,* there mean nothing.
    #[test]
    fn aliases_are_not_checked_for_devices() {
        let blob = dtc("/dts-v1/;\n/ { aliases { xen,reg = <1>; rtc = \"/passthrough/rtc\"; }; };");
        assert!(ok(&blob).devices.is_empty());
    }

    fn nested(levels: usize) -> Vec<u8> {
        let mut body = String::new();
        for i in 2..=levels {
            body.push_str(&format!("n{i} {{ "));
        }
        for _ in 2..=levels {
            body.push_str("}; ");
        }
        pt("", &body)
    }

    #[test]
    fn nesting_is_bounded() {
        ok(&nested(MAX_DEPTH));
        let blob = nested(MAX_DEPTH + 1);
        let deepest: String = (2..=MAX_DEPTH + 1).map(|i| format!("/n{i}")).collect();
        let m = one_err(&blob, &format!("/passthrough{deepest}"), None);
        assert!(m.contains("nested deeper"), "{m}");
        // copy_into refuses it too, rather than recursing on.
        let mut w = FdtWriter::new().unwrap();
        let _root = w.begin_node("").unwrap();
        assert_eq!(
            copy_into(&blob, &mut w),
            Err(vm_fdt::Error::NodeDepthTooLarge)
        );
    }

    #[test]
    fn every_error_is_collected() {
        let blob = dtc(r#"/dts-v1/;
/ {
    passthrough {
        #address-cells = <2>; #size-cells = <2>;
        a { xen,reg = <0 0x1001 0 0x1000 0 0x2000>; };
        b { xen,path = "b"; };
        c { phandle = <65535>; xen,reg = <0 0x1000 0 0 0 0x1000>; xen,path = "/c"; };
    };
};
"#);
        let e = errs(&blob);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.path.as_str(), e.property.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("/passthrough/c", Some("phandle")),
                ("/passthrough/a", Some("xen,reg")),
                ("/passthrough/a", Some("xen,path")),
                ("/passthrough/b", Some("xen,path")),
                ("/passthrough/b", Some("xen,reg")),
                ("/passthrough/c", Some("xen,reg")),
            ],
            "{e:#?}"
        );
    }

    /// Blobs dtc will not make: repeated nodes and properties.
    #[test]
    fn repeated_names_are_refused() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        for _ in 0..2 {
            let p = w.begin_node("passthrough").unwrap();
            w.property_u32("a", 1).unwrap();
            w.property_u32("a", 2).unwrap();
            for _ in 0..2 {
                let x = w.begin_node("x").unwrap();
                w.end_node(x).unwrap();
            }
            w.end_node(p).unwrap();
        }
        let g = w.begin_node("gic").unwrap();
        w.end_node(g).unwrap();
        let g = w.begin_node("gic").unwrap();
        w.end_node(g).unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let e = errs(&blob);
        let got: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            got,
            ["/passthrough", "/passthrough/x", "/passthrough", "/gic"],
            "{e:#?}"
        );
        assert!(e[0].message.contains("\"a\" appears more than once"));
        assert!(e[1].message.contains("sibling"));
        assert!(e[2].message.contains("more than one /passthrough"));
        assert!(e[3].message.contains("more than one /gic"));
    }

    /// Names dtc takes but the guest DTB writer does not.
    #[test]
    fn names_the_guest_writer_refuses() {
        let blob = pt(
            CELLS_22,
            "1wire { }; usb { snps,dis-del-phy-power-chg-quirk; };",
        );
        let e = errs(&blob);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_eq!(e[0].path, "/passthrough/1wire");
        assert!(e[0].message.contains("node name"), "{}", e[0].message);
        assert_eq!(e[1].path, "/passthrough/usb");
        assert!(e[1].message.contains("snps,dis-del-phy-power-chg-quirk"));
    }

    #[test]
    fn totalsize_larger_than_module() {
        let blob = dtc(RTC);
        let n = blob.len() as u64;
        let e = read(&blob, n - 4).unwrap_err();
        assert_eq!(
            e,
            [Diagnostic::error(
                "/",
                None,
                Kind::PartialDt,
                format!("totalsize {n} is larger than the module ({} bytes)", n - 4),
            )]
        );
    }

    #[test]
    fn only_the_module_is_read() {
        let blob = dtc(RTC);
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0xa5; 100]);
        assert!(read(&longer, blob.len() as u64).is_ok());
        assert!(read(&longer, u64::MAX).is_ok());
        // A module shorter than the bytes at hand cuts them.
        let e = read(&longer, 39).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "/");
    }

    #[test]
    fn garbage_is_not_a_device_tree() {
        let junk: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for b in [&b""[..], b"\xd0\x0d\xfe\xed", &junk, &[0xff; 64]] {
            let e = read(b, b.len() as u64).unwrap_err();
            assert_eq!(e.len(), 1);
            assert_eq!((e[0].path.as_str(), e[0].property.as_deref()), ("/", None));
            assert!(
                e[0].message.starts_with("not a device tree: "),
                "{}",
                e[0].message
            );
        }
        let mut w = FdtWriter::new().unwrap();
        let _root = w.begin_node("").unwrap();
        assert_eq!(copy_into(&junk, &mut w), Err(vm_fdt::Error::InvalidString));
    }

    fn try_copy(b: &[u8]) {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        if copy_into(b, &mut w).is_ok() {
            w.end_node(root).unwrap();
            let out = w.finish().unwrap();
            Fdt::new(&out).unwrap();
        }
    }

    #[test]
    fn every_prefix_is_refused_without_panic() {
        let blob = dtc(RTC);
        for n in 0..blob.len() {
            let b = &blob[..n];
            assert!(read(b, n as u64).is_err(), "prefix {n}");
            assert!(read(b, blob.len() as u64).is_err(), "prefix {n}");
            assert!(read(&blob, n as u64).is_err(), "module {n}");
            try_copy(b);
        }
    }

    #[test]
    fn corrupted_bytes_do_not_panic() {
        let blob = dtc(RTC);
        for i in 0..blob.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = blob.clone();
                b[i] ^= x;
                if read(&b, b.len() as u64).is_ok() {
                    try_copy(&b);
                }
            }
        }
    }

    /// `a` (in the fragment) and `b` (in the guest DTB) are the same but
    /// for the stripped properties.
    fn same_tree(a: &Node<'_>, b: &Node<'_>, kind: Subtree) {
        assert_eq!(a.name(), b.name());
        let want: Vec<Prop<'_>> = a.props().filter(|p| kind.copies(p.name)).collect();
        let got: Vec<Prop<'_>> = b.props().collect();
        assert_eq!(want, got, "properties of {}", a.name());
        let ca: Vec<_> = a.children().collect();
        let cb: Vec<_> = b.children().collect();
        assert_eq!(ca.len(), cb.len(), "children of {}", a.name());
        for (x, y) in ca.iter().zip(&cb) {
            same_tree(x, y, kind);
        }
    }

    fn guest_with(frag: &[u8]) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        let c = w.begin_node("chosen").unwrap();
        w.end_node(c).unwrap();
        copy_into(frag, &mut w).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn copy_into_round_trip() {
        let frag = dtc(r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    gic: gic { #interrupt-cells = <3>; interrupt-controller; };
    aliases { serial1 = "/passthrough/soc/uart@1c090000"; xen,path = "kept"; };
    chosen { bootargs = "not copied"; };
    passthrough {
        compatible = "simple-bus"; ranges; #address-cells = <2>; #size-cells = <2>;
        apb_pclk: clock { compatible = "fixed-clock"; #clock-cells = <0>; clock-frequency = <24000000>; };
        soc {
            compatible = "simple-bus"; #address-cells = <1>; #size-cells = <1>; ranges;
            xen,force-assign-without-iommu;
            uart@1c090000 {
                compatible = "arm,pl011", "arm,primecell";
                reg = <0x1c090000 0x1000>;
                interrupt-parent = <&gic>; interrupts = <0 5 4>;
                clocks = <&apb_pclk>;
                xen,reg = <0x1c090000 0x1000 0x1c090000>;
                xen,path = "/soc/uart@1c090000";
                xen,force-assign-without-iommu;
                status = "okay";
            };
        };
    };
};
"#);
        assert_eq!(ok(&frag).devices.len(), 1);
        let out = guest_with(&frag);
        let g = Fdt::new(&out).unwrap();
        let f = Fdt::new(&frag).unwrap();
        let names: Vec<_> = g.root().children().map(|n| n.name()).collect();
        assert_eq!(names, ["chosen", "aliases", "passthrough"]);
        assert_eq!(g.root().props().count(), 1);
        same_tree(
            &f.find("/aliases").unwrap(),
            &g.find("/aliases").unwrap(),
            Subtree::Aliases,
        );
        same_tree(
            &f.find("/passthrough").unwrap(),
            &g.find("/passthrough").unwrap(),
            Subtree::Passthrough,
        );
        let pt = g.find("/passthrough").unwrap();
        for n in core::iter::once(pt).chain(pt.descendants()) {
            for s in STRIPPED {
                assert!(n.prop(s).is_none(), "{s} left in {}", n.name());
            }
        }
        // Everything else is there byte for byte, e.g. the uart's.
        let uart = g.find("/passthrough/soc/uart@1c090000").unwrap();
        assert_eq!(uart.props().count(), 6);
        assert!(g.find("/gic").is_none());
        assert_eq!(
            g.find("/aliases").unwrap().prop("xen,path").unwrap().str(),
            Some("kept")
        );
    }

    #[test]
    fn copy_into_keeps_the_fragments_order() {
        let frag = dtc(
            "/dts-v1/;\n/ { passthrough { a { x = <1>; }; }; other { }; aliases { s = \"/passthrough/a\"; }; };",
        );
        let out = guest_with(&frag);
        let g = Fdt::new(&out).unwrap();
        let names: Vec<_> = g.root().children().map(|n| n.name()).collect();
        assert_eq!(names, ["chosen", "passthrough", "aliases"]);
    }

    #[test]
    fn copy_of_a_fragment_without_either_writes_nothing() {
        let frag = dtc("/dts-v1/;\n/ { gic { phandle = <65000>; }; };");
        let out = guest_with(&frag);
        let g = Fdt::new(&out).unwrap();
        assert_eq!(g.root().children().count(), 1);
    }
}
