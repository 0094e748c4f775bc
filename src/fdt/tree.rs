//! An editable device tree.
//!
//! [`Fdt`] reads a blob in place and never changes it. A [`Tree`] owns its
//! nodes, so that the edits a U-Boot boot script makes with `fdt mknod`,
//! `fdt set` and `fdt rm` can be replayed on a board's DTB and the result
//! written out again ([`Tree::to_dtb`]) for dtvisor's parser.
//!
//! The edits follow libfdt as U-Boot's `fdt` command drives it, because the
//! order of nodes and properties in the edited tree is the order in which
//! dtvisor later meets them (and Xen, for the same script):
//!
//! * `fdt mknod` calls `fdt_add_subnode()`. `fdt_add_subnode_namelen()` in
//!   `fdt_rw.c` first asks `fdt_subnode_offset_namelen()` whether the parent
//!   already has such a child (`FDT_ERR_EXISTS`), then steps over the
//!   parent's BEGIN_NODE token and every PROP or NOP token after it and
//!   splices the new node in at that point: the new node becomes the
//!   parent's FIRST child, ahead of the existing ones.
//! * `fdt set` calls `fdt_setprop()`, i.e. `fdt_setprop_placeholder()`,
//!   which tries `fdt_resize_property_()` first (an existing property keeps
//!   its place, only its value is resized) and otherwise calls
//!   `fdt_add_property_()`. That one splices the new property at the offset
//!   `fdt_check_node_offset_()` (`fdt.c`) returns, which is the offset just
//!   past the node's BEGIN_NODE token and name: the new property becomes
//!   the node's FIRST property.
//!
//! A script that creates a node and then sets `compatible`, `reg`, ...
//! therefore leaves them in reverse order. The tests check this against
//! `fdtput`, which uses the same libfdt calls.
//!
//! Paths are resolved like `fdt_path_offset()`: a path not starting with
//! `/` begins with an alias from `/aliases`, empty components (`//`, a
//! trailing `/`) are skipped, and a component without `@` also matches a
//! node whose name is that component followed by `@unit` (the first such
//! node, in tree order).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::{Fdt, MAX_DEPTH};

/// One node: its full name (with unit address; "" for the root), its
/// properties and children, both in blob order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

impl Node {
    /// An empty node called `name`.
    pub fn new(name: &str) -> Node {
        Node {
            name: name.to_string(),
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The value of the first property called `name`.
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first child matched by path component `comp` (libfdt rules).
    pub fn child(&self, comp: &str) -> Option<&Node> {
        self.children.iter().find(|c| name_matches(&c.name, comp))
    }
}

/// A whole device tree: nodes, the memory reservation block and the
/// header's `boot_cpuid_phys`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub root: Node,
    pub reserved: Vec<(u64, u64)>,
    pub boot_cpuid: u32,
}

// libfdt's error numbers (libfdt.h), for the failures an edit can report.
pub const FDT_ERR_NOTFOUND: i32 = 1;
pub const FDT_ERR_EXISTS: i32 = 2;
pub const FDT_ERR_NOSPACE: i32 = 3;
pub const FDT_ERR_BADPATH: i32 = 5;
pub const FDT_ERR_BADVERSION: i32 = 10;
pub const FDT_ERR_BADLAYOUT: i32 = 12;

/// libfdt's name for error number `code`, as `fdt_strerror()` prints it.
pub fn fdt_err_name(code: i32) -> &'static str {
    match code {
        1 => "FDT_ERR_NOTFOUND",
        2 => "FDT_ERR_EXISTS",
        3 => "FDT_ERR_NOSPACE",
        4 => "FDT_ERR_BADOFFSET",
        5 => "FDT_ERR_BADPATH",
        6 => "FDT_ERR_BADPHANDLE",
        7 => "FDT_ERR_BADSTATE",
        8 => "FDT_ERR_TRUNCATED",
        9 => "FDT_ERR_BADMAGIC",
        10 => "FDT_ERR_BADVERSION",
        11 => "FDT_ERR_BADSTRUCTURE",
        12 => "FDT_ERR_BADLAYOUT",
        13 => "FDT_ERR_INTERNAL",
        _ => "FDT_ERR_UNKNOWN",
    }
}

/// Why an edit failed: a libfdt error (with the call U-Boot names in its
/// message), or a limit of this implementation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditError {
    Libfdt {
        code: i32,
        call: &'static str,
        detail: String,
    },
    Refused(String),
}

impl EditError {
    fn libfdt(code: i32, call: &'static str, detail: String) -> EditError {
        EditError::Libfdt { code, call, detail }
    }
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // U-Boot words path lookups differently from the other calls.
            EditError::Libfdt {
                code,
                call: "fdt_path_offset",
                detail,
            } => write!(
                f,
                "libfdt fdt_path_offset() returned {}: {detail}",
                fdt_err_name(*code)
            ),
            EditError::Libfdt { code, call, detail } => {
                write!(f, "libfdt {call}(): {}: {detail}", fdt_err_name(*code))
            }
            EditError::Refused(why) => f.write_str(why),
        }
    }
}

/// libfdt's `fdt_nodename_eq_()`: `comp` names the node exactly, or `comp`
/// has no unit address and the node's name is `comp@something`.
pub(crate) fn name_matches(node_name: &str, comp: &str) -> bool {
    node_name == comp
        || (!comp.contains('@')
            && node_name.len() > comp.len()
            && node_name.starts_with(comp)
            && node_name.as_bytes()[comp.len()] == b'@')
}

/// Rounds up to libfdt's 4-byte tag alignment.
pub fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Alias chains longer than this are treated as a bad path (libfdt would
/// recurse without bound on a cycle).
const MAX_ALIAS_HOPS: u32 = 8;

impl Tree {
    /// Copies a validated blob into an editable tree.
    pub fn from_fdt(f: &Fdt<'_>) -> Tree {
        // Fdt::new bounds the nesting, so the recursion is shallow.
        fn copy(n: &super::Node<'_>) -> Node {
            Node {
                name: n.name().to_string(),
                props: n
                    .props()
                    .map(|p| (p.name.to_string(), p.value.to_vec()))
                    .collect(),
                children: n.children().map(|c| copy(&c)).collect(),
            }
        }
        Tree {
            root: copy(&f.root()),
            reserved: f.reserved_entries().collect(),
            boot_cpuid: f.boot_cpuid(),
        }
    }

    /// The node at `path`, resolved like libfdt's `fdt_path_offset()`.
    pub fn find(&self, path: &str) -> Option<&Node> {
        let idx = self.resolve(path).ok()?;
        Some(self.node_at(&idx))
    }

    /// The node at `path`, for changing it in place.
    pub fn find_mut(&mut self, path: &str) -> Option<&mut Node> {
        let idx = self.resolve(path).ok()?;
        Some(self.node_at_mut(&idx))
    }

    /// The full path (every component with its unit address, no aliases)
    /// of the node `path` resolves to.
    pub fn canonical_path(&self, path: &str) -> Option<String> {
        let idx = self.resolve(path).ok()?;
        Some(self.path_of(&idx))
    }

    /// Adds an empty node `name` under `parent`, as the parent's first
    /// child. Fails if the parent does not exist or already has a child
    /// that `name` matches (libfdt `FDT_ERR_EXISTS`, also when an existing
    /// `name@unit` is matched by a `name` without unit address). Names are
    /// not validated, as in libfdt; nesting is limited to
    /// [`MAX_DEPTH`](super::MAX_DEPTH) levels, which dtvisor's reader accepts.
    pub fn mknod(&mut self, parent: &str, name: &str) -> Result<(), String> {
        self.add_node(parent, name)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Sets property `name` of the node at `path`: an existing property
    /// gets the new value in place, a new one is inserted as the node's
    /// first property.
    pub fn set_prop(&mut self, path: &str, name: &str, value: Vec<u8>) -> Result<(), String> {
        self.put_prop(path, name, value)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Removes property `prop` of the node at `path`, or with `None` the
    /// node itself and everything below it. The root cannot be removed.
    pub fn rm(&mut self, path: &str, prop: Option<&str>) -> Result<(), String> {
        self.remove(path, prop)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Writes the tree as a DTB (version 17), with the reservations and
    /// `boot_cpuid_phys`.
    ///
    /// The blob is built with vm-fdt's `FdtWriter`. vm-fdt enforces the
    /// devicetree specification's naming rules (names of at most 31
    /// characters, node names starting with a letter) and refuses
    /// overlapping or empty reservations; real DTBs break those rules
    /// (`__symbols__` from `dtc -@`, 34-character `snps,...` properties in
    /// ZynqMP trees), so for those trees the same layout is written by a
    /// plain writer here instead. Both produce identical bytes otherwise.
    pub fn to_dtb(&self) -> Result<Vec<u8>, String> {
        use vm_fdt::Error as E;
        match self.write_vm_fdt() {
            Ok(blob) => Ok(blob),
            Err(
                E::InvalidNodeName
                | E::InvalidPropertyName
                | E::InvalidMemoryReservation
                | E::OverlappingMemoryReservations,
            ) => self.write_plain(),
            Err(e) => Err(format!("cannot write the device tree: {e}")),
        }
    }

    // ---- crate-internal helpers used by the U-Boot interpreter ----

    /// Child indices from the root to the node `path` names.
    pub fn resolve(&self, path: &str) -> Result<Vec<usize>, EditError> {
        self.resolve_hops(path, 0)
    }

    fn resolve_hops(&self, path: &str, hops: u32) -> Result<Vec<usize>, EditError> {
        let (mut idx, rest) = if path.starts_with('/') {
            (Vec::new(), path)
        } else {
            let (alias, rest) = match path.find('/') {
                Some(i) => (&path[..i], &path[i..]),
                None => (path, ""),
            };
            (self.resolve_alias(alias, hops)?, rest)
        };
        for comp in rest.split('/').filter(|c| !c.is_empty()) {
            let node = self.node_at(&idx);
            match node
                .children
                .iter()
                .position(|c| name_matches(&c.name, comp))
            {
                Some(i) => idx.push(i),
                None => {
                    return Err(EditError::libfdt(
                        FDT_ERR_NOTFOUND,
                        "fdt_path_offset",
                        format!("no node `{comp}` in {}", self.path_of(&idx)),
                    ))
                }
            }
        }
        Ok(idx)
    }

    fn resolve_alias(&self, alias: &str, hops: u32) -> Result<Vec<usize>, EditError> {
        let bad = |detail: String| EditError::libfdt(FDT_ERR_BADPATH, "fdt_path_offset", detail);
        if hops >= MAX_ALIAS_HOPS {
            return Err(bad(format!("alias `{alias}` loops")));
        }
        let aliases = self
            .root
            .child("aliases")
            .ok_or_else(|| bad(format!("`{alias}` is not an alias: there is no /aliases")))?;
        let value = aliases
            .prop(alias)
            .ok_or_else(|| bad(format!("`{alias}` is not an alias in /aliases")))?;
        // libfdt uses the value as a C string.
        let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        let target = core::str::from_utf8(&value[..end])
            .map_err(|_| bad(format!("alias `{alias}` is not a path")))?;
        self.resolve_hops(target, hops + 1)
    }

    pub fn node_at(&self, idx: &[usize]) -> &Node {
        let mut n = &self.root;
        for &i in idx {
            n = &n.children[i];
        }
        n
    }

    pub fn node_at_mut(&mut self, idx: &[usize]) -> &mut Node {
        let mut n = &mut self.root;
        for &i in idx {
            n = &mut n.children[i];
        }
        n
    }

    /// The full path of the node at `idx` ("/" for the root).
    pub fn path_of(&self, idx: &[usize]) -> String {
        if idx.is_empty() {
            return "/".to_string();
        }
        let mut s = String::new();
        let mut n = &self.root;
        for &i in idx {
            n = &n.children[i];
            s.push('/');
            s.push_str(&n.name);
        }
        s
    }

    /// `fdt_add_subnode()`; returns the new node's full path.
    pub fn add_node(&mut self, parent: &str, name: &str) -> Result<String, EditError> {
        let idx = self.resolve(parent)?;
        let p = self.node_at(&idx);
        if let Some(c) = p.child(name) {
            return Err(EditError::libfdt(
                FDT_ERR_EXISTS,
                "fdt_add_subnode",
                format!("{} already has a node `{}`", self.path_of(&idx), c.name),
            ));
        }
        if idx.len() + 1 > MAX_DEPTH {
            return Err(EditError::Refused(format!(
                "a node in {} would be nested deeper than {MAX_DEPTH} levels, \
                 which dtvisor does not accept",
                self.path_of(&idx)
            )));
        }
        self.node_at_mut(&idx).children.insert(0, Node::new(name));
        let mut new = idx;
        new.push(0);
        Ok(self.path_of(&new))
    }

    /// `fdt_setprop()`; returns the node's full path.
    pub fn put_prop(
        &mut self,
        path: &str,
        name: &str,
        value: Vec<u8>,
    ) -> Result<String, EditError> {
        let idx = self.resolve(path)?;
        let node = self.node_at_mut(&idx);
        match node.props.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => node.props.insert(0, (name.to_string(), value)),
        }
        Ok(self.path_of(&idx))
    }

    /// `fdt_delprop()` or `fdt_del_node()`; returns the node's full path.
    pub fn remove(&mut self, path: &str, prop: Option<&str>) -> Result<String, EditError> {
        let idx = self.resolve(path)?;
        let full = self.path_of(&idx);
        match prop {
            Some(name) => {
                let node = self.node_at_mut(&idx);
                match node.props.iter().position(|(n, _)| n == name) {
                    Some(i) => {
                        node.props.remove(i);
                    }
                    None => {
                        return Err(EditError::libfdt(
                            FDT_ERR_NOTFOUND,
                            "fdt_delprop",
                            format!("{full} has no property `{name}`"),
                        ))
                    }
                }
            }
            None => {
                let Some((&last, parent)) = idx.split_last() else {
                    return Err(EditError::Refused(
                        "refusing to delete the root node".to_string(),
                    ));
                };
                self.node_at_mut(parent).children.remove(last);
            }
        }
        Ok(full)
    }

    /// Visits the nodes depth first without recursion: `begin` for a node
    /// (before its children), `end` after them.
    fn walk<'t, E>(
        &'t self,
        mut begin: impl FnMut(&'t Node) -> Result<(), E>,
        mut end: impl FnMut() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stack: Vec<(&'t Node, usize)> = vec![(&self.root, 0)];
        begin(&self.root)?;
        while let Some(top) = stack.last_mut() {
            let (node, next) = (top.0, top.1);
            if let Some(child) = node.children.get(next) {
                top.1 += 1;
                begin(child)?;
                stack.push((child, 0));
            } else {
                stack.pop();
                end()?;
            }
        }
        Ok(())
    }

    fn write_vm_fdt(&self) -> Result<Vec<u8>, vm_fdt::Error> {
        use vm_fdt::{FdtReserveEntry, FdtWriter, FdtWriterNode};
        let rsv = self
            .reserved
            .iter()
            .map(|&(a, s)| FdtReserveEntry::new(a, s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut w = FdtWriter::new_with_mem_reserv(&rsv)?;
        w.set_boot_cpuid_phys(self.boot_cpuid);
        let w = core::cell::RefCell::new(w);
        let mut open: Vec<FdtWriterNode> = Vec::new();
        let open = core::cell::RefCell::new(&mut open);
        self.walk(
            |n| {
                let mut w = w.borrow_mut();
                let h = w.begin_node(&n.name)?;
                for (name, value) in &n.props {
                    w.property(name, value)?;
                }
                open.borrow_mut().push(h);
                Ok(())
            },
            || match open.borrow_mut().pop() {
                Some(h) => w.borrow_mut().end_node(h),
                None => Err(vm_fdt::Error::OutOfOrderEndNode),
            },
        )?;
        w.into_inner().finish()
    }

    /// The layout vm-fdt produces (header, reservation block at offset 40,
    /// structure block, strings in order of first use), without its naming
    /// rules.
    fn write_plain(&self) -> Result<Vec<u8>, String> {
        fn put(b: &mut Vec<u8>, v: u32) {
            b.extend_from_slice(&v.to_be_bytes());
        }
        fn pad4(b: &mut Vec<u8>) {
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
        }
        let mut data = vec![0u8; 40];
        for &(a, s) in &self.reserved {
            data.extend_from_slice(&a.to_be_bytes());
            data.extend_from_slice(&s.to_be_bytes());
        }
        data.extend_from_slice(&[0; 16]);
        let off_struct = data.len();
        let mut strings: Vec<u8> = Vec::new();
        let mut offsets: alloc::collections::BTreeMap<&str, u32> = Default::default();
        let cell = core::cell::RefCell::new((&mut data, &mut strings, &mut offsets));
        let too_big = || "the device tree is larger than 4 GiB".to_string();
        self.walk(
            |n| {
                let (data, strings, offsets) = &mut *cell.borrow_mut();
                if n.name.contains('\0') {
                    return Err(format!("node name {:?} contains a NUL", n.name));
                }
                put(data, super::FDT_BEGIN_NODE);
                data.extend_from_slice(n.name.as_bytes());
                data.push(0);
                pad4(data);
                for (name, value) in &n.props {
                    if name.contains('\0') {
                        return Err(format!("property name {name:?} contains a NUL"));
                    }
                    let off = match offsets.get(name.as_str()) {
                        Some(&o) => o,
                        None => {
                            let o = u32::try_from(strings.len()).map_err(|_| too_big())?;
                            strings.extend_from_slice(name.as_bytes());
                            strings.push(0);
                            offsets.insert(name.as_str(), o);
                            o
                        }
                    };
                    put(data, super::FDT_PROP);
                    put(data, u32::try_from(value.len()).map_err(|_| too_big())?);
                    put(data, off);
                    data.extend_from_slice(value);
                    pad4(data);
                }
                Ok(())
            },
            || {
                put(cell.borrow_mut().0, super::FDT_END_NODE);
                Ok(())
            },
        )?;
        put(&mut data, super::FDT_END);
        let off_strings = data.len();
        let total = off_strings + strings.len();
        let h = |v: usize| u32::try_from(v).map_err(|_| too_big());
        let header = [
            super::FDT_MAGIC,
            h(total)?,
            h(off_struct)?,
            h(off_strings)?,
            40,
            17,
            16,
            self.boot_cpuid,
            h(strings.len())?,
            h(off_strings - off_struct)?,
        ];
        for (i, v) in header.iter().enumerate() {
            data[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        data.extend_from_slice(&strings);
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::tests::dtc;
    use std::process::Command;

    const SRC: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x100000;
/memreserve/ 0x50000000 0x1000;
/ {
    #address-cells = <2>; #size-cells = <2>;
    model = "test";
    aliases { serial0 = "/pl011@9000000"; ch = "/chosen"; loop = "loop"; };
    chosen {
        stdout-path = "serial0:115200n8";
        empty-prop;
        domU1 { compatible = "xen,domain"; memory = <0 0x40000>;
            kernel { compatible = "multiboot,kernel", "multiboot,module"; };
        };
        module@1000 { reg = <0 0x1000 0 0x10>; };
    };
    memory@40000000 { device_type = "memory"; reg = <0 0x40000000 0 0x80000000>; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; };
};
"#;

    fn sample() -> Tree {
        let blob = dtc(SRC);
        Tree::from_fdt(&Fdt::new(&blob).unwrap())
    }

    fn names(n: &Node) -> Vec<&str> {
        n.children.iter().map(|c| c.name.as_str()).collect()
    }

    fn prop_names(n: &Node) -> Vec<&str> {
        n.props.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn from_fdt_keeps_blob_order() {
        let t = sample();
        assert_eq!(
            names(&t.root),
            ["aliases", "chosen", "memory@40000000", "pl011@9000000"]
        );
        assert_eq!(
            prop_names(&t.root),
            ["#address-cells", "#size-cells", "model"]
        );
        let chosen = t.find("/chosen").unwrap();
        assert_eq!(prop_names(chosen), ["stdout-path", "empty-prop"]);
        assert_eq!(names(chosen), ["domU1", "module@1000"]);
        assert_eq!(chosen.prop("empty-prop"), Some(&[][..]));
        assert_eq!(
            t.reserved,
            [(0x4800_0000, 0x10_0000), (0x5000_0000, 0x1000)]
        );
    }

    #[test]
    fn round_trip_is_identical() {
        let mut t = sample();
        t.boot_cpuid = 3;
        let blob = t.to_dtb().unwrap();
        let f = Fdt::new(&blob).unwrap();
        assert_eq!(f.boot_cpuid(), 3);
        assert_eq!(Tree::from_fdt(&f), t);
        // dtc decompiles the original and the rewritten blob identically.
        t.boot_cpuid = 0;
        assert_eq!(decompile(&t.to_dtb().unwrap()), decompile(&dtc(SRC)));
    }

    fn decompile(blob: &[u8]) -> String {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-q", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(blob).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn plain_writer_matches_vm_fdt_byte_for_byte() {
        let t = sample();
        assert_eq!(t.write_plain().unwrap(), t.write_vm_fdt().unwrap());
    }

    #[test]
    fn names_vm_fdt_refuses_still_write() {
        let mut t = sample();
        t.mknod("/", "__symbols__").unwrap();
        let long = "snps,quirk-frame-length-adjustment"; // 34 characters
        t.set_prop("/chosen", long, vec![0, 0, 0, 0x20]).unwrap();
        t.reserved.push((0x4800_0000, 0x10)); // overlaps the first one
        assert!(t.write_vm_fdt().is_err());
        let blob = t.to_dtb().unwrap();
        assert_eq!(Tree::from_fdt(&Fdt::new(&blob).unwrap()), t);
    }

    #[test]
    fn nul_in_a_name_is_an_error() {
        let mut t = sample();
        t.root.children.push(Node::new("a\0b"));
        assert!(t.to_dtb().unwrap_err().contains("NUL"));
    }

    #[test]
    fn mknod_puts_the_new_node_first() {
        let mut t = sample();
        t.mknod("/chosen", "domU2").unwrap();
        t.mknod("/chosen", "domU3").unwrap();
        let chosen = t.find("/chosen").unwrap();
        assert_eq!(names(chosen), ["domU3", "domU2", "domU1", "module@1000"]);
        // Properties stay where they were.
        assert_eq!(prop_names(chosen), ["stdout-path", "empty-prop"]);
        t.mknod("/chosen/domU3", "kernel").unwrap();
        assert!(t.find("/chosen/domU3/kernel").unwrap().props.is_empty());
    }

    #[test]
    fn set_prop_inserts_first_and_replaces_in_place() {
        let mut t = sample();
        t.mknod("/chosen", "domU0").unwrap();
        for (name, v) in [("compatible", "xen,domain"), ("cpus", "1"), ("memory", "2")] {
            t.set_prop("/chosen/domU0", name, v.as_bytes().to_vec())
                .unwrap();
        }
        let d = t.find("/chosen/domU0").unwrap();
        assert_eq!(prop_names(d), ["memory", "cpus", "compatible"]);
        t.set_prop("/chosen/domU0", "cpus", b"4".to_vec()).unwrap();
        let d = t.find("/chosen/domU0").unwrap();
        assert_eq!(prop_names(d), ["memory", "cpus", "compatible"]);
        assert_eq!(d.prop("cpus"), Some(&b"4"[..]));
    }

    /// The same edits through fdtput (libfdt's fdt_add_subnode and
    /// fdt_setprop) give the same tree.
    #[test]
    fn edits_match_libfdt_through_fdtput() {
        let blob = dtc(SRC);
        let dir = std::env::temp_dir().join(format!("dtvisor-tree-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.dtb");
        std::fs::write(&file, &blob).unwrap();
        let fdtput = |args: &[&str]| {
            let st = Command::new("fdtput")
                .arg(&file)
                .args(args)
                .status()
                .expect("fdtput (device-tree-compiler) must be installed");
            assert!(st.success(), "fdtput {args:?}");
        };
        fdtput(&["-c", "/chosen/domU2"]);
        fdtput(&["-c", "/chosen/domU3"]);
        fdtput(&["-t", "s", "/chosen/domU3", "compatible", "xen,domain"]);
        fdtput(&["-t", "x", "/chosen/domU3", "cpus", "2"]);
        fdtput(&["-t", "s", "/chosen", "stdout-path", "serial1"]);
        fdtput(&["-t", "s", "/chosen", "new", "x"]);
        let theirs = Tree::from_fdt(&Fdt::new(&std::fs::read(&file).unwrap()).unwrap());
        std::fs::remove_dir_all(&dir).ok();

        let mut ours = Tree::from_fdt(&Fdt::new(&blob).unwrap());
        ours.mknod("/chosen", "domU2").unwrap();
        ours.mknod("/chosen", "domU3").unwrap();
        ours.set_prop("/chosen/domU3", "compatible", b"xen,domain\0".to_vec())
            .unwrap();
        ours.set_prop("/chosen/domU3", "cpus", vec![0, 0, 0, 2])
            .unwrap();
        ours.set_prop("/chosen", "stdout-path", b"serial1\0".to_vec())
            .unwrap();
        ours.set_prop("/chosen", "new", b"x\0".to_vec()).unwrap();
        assert_eq!(ours.root, theirs.root);
    }

    #[test]
    fn mknod_refuses_a_name_that_exists() {
        let mut t = sample();
        let e = t.mknod("/chosen", "domU1").unwrap_err();
        assert!(e.contains("FDT_ERR_EXISTS"), "{e}");
        // A name without unit address matches `module@1000`...
        let e = t.mknod("/chosen", "module").unwrap_err();
        assert!(
            e.contains("FDT_ERR_EXISTS") && e.contains("module@1000"),
            "{e}"
        );
        // ... but another unit address is a different node,
        t.mknod("/chosen", "module@2000").unwrap();
        // and so is `domU1@1` next to `domU1`.
        t.mknod("/chosen", "domU1@1").unwrap();
        let e = t.mknod("/nowhere", "x").unwrap_err();
        assert_eq!(
            e,
            "libfdt fdt_path_offset() returned FDT_ERR_NOTFOUND: no node `nowhere` in /"
        );
    }

    #[test]
    fn paths_resolve_like_libfdt() {
        let t = sample();
        let canon = |p: &str| t.canonical_path(p);
        assert_eq!(canon("/").as_deref(), Some("/"));
        assert_eq!(canon("//chosen//domU1/").as_deref(), Some("/chosen/domU1"));
        assert_eq!(canon("/memory").as_deref(), Some("/memory@40000000"));
        assert_eq!(
            canon("/chosen/module").as_deref(),
            Some("/chosen/module@1000")
        );
        assert_eq!(canon("serial0").as_deref(), Some("/pl011@9000000"));
        assert_eq!(
            canon("ch/domU1/kernel").as_deref(),
            Some("/chosen/domU1/kernel")
        );
        assert_eq!(canon("/memory@4"), None);
        assert_eq!(canon("nosuch"), None);
        assert_eq!(canon(""), None);
        // An alias that names itself does not loop forever.
        assert!(matches!(
            t.resolve("loop"),
            Err(EditError::Libfdt {
                code: FDT_ERR_BADPATH,
                ..
            })
        ));
        assert!(t.find("/chosen/domU1/kernel").is_some());
    }

    #[test]
    fn find_mut_edits_in_place() {
        let mut t = sample();
        t.find_mut("ch").unwrap().props.clear();
        assert!(t.find("/chosen").unwrap().props.is_empty());
    }

    #[test]
    fn rm_removes_properties_and_subtrees() {
        let mut t = sample();
        t.rm("/chosen", Some("stdout-path")).unwrap();
        assert_eq!(prop_names(t.find("/chosen").unwrap()), ["empty-prop"]);
        let e = t.rm("/chosen", Some("stdout-path")).unwrap_err();
        assert_eq!(
            e,
            "libfdt fdt_delprop(): FDT_ERR_NOTFOUND: /chosen has no property `stdout-path`"
        );
        t.rm("/chosen/domU1", None).unwrap();
        assert!(t.find("/chosen/domU1/kernel").is_none());
        assert_eq!(names(t.find("/chosen").unwrap()), ["module@1000"]);
        assert!(t.rm("/", None).unwrap_err().contains("root"));
        assert!(t
            .rm("/chosen/domU1", None)
            .unwrap_err()
            .contains("NOTFOUND"));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut t = Tree::default();
        let mut path = String::new();
        for i in 0..MAX_DEPTH {
            let parent = if path.is_empty() {
                "/".to_string()
            } else {
                path.clone()
            };
            t.mknod(&parent, &format!("n{i}")).unwrap();
            path = format!("{path}/n{i}");
        }
        let e = t.mknod(&path, "deeper").unwrap_err();
        assert!(e.contains("deeper than"), "{e}");
        // The deepest tree allowed still writes and reads back.
        let blob = t.to_dtb().unwrap();
        assert_eq!(Tree::from_fdt(&Fdt::new(&blob).unwrap()), t);
    }
}
