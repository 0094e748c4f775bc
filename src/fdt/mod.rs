//! A checked, allocation-free reader for flattened device trees.
//!
//! Why not `fdt-rs`: its constructors (`DevTree::new`, `verify_magic`) are
//! `unsafe` and trust the blob's offsets, and the crate is no longer kept.
//! A hypervisor reads DTBs that users edit with U-Boot `fdt` commands and
//! that the conformance suite mutates byte by byte, so every offset, length
//! and string here is checked once by [`Fdt::new`], and every accessor still
//! uses checked slicing: no input, however malformed, can make it panic.
//! It is fuzzed together with the config parser.

use core::fmt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_LEN: usize = 40;

/// Deepest node nesting accepted (the root is depth 0). Real trees stay
/// below 10; Xen skips nodes past 16 with a warning, we refuse the blob.
pub const MAX_DEPTH: usize = 32;

/// Why a blob is not a usable flattened device tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtError {
    /// Shorter than the 40-byte header.
    TooShort { len: usize },
    /// The first word is not 0xd00dfeed.
    BadMagic { found: u32 },
    /// `totalsize` is larger than the buffer (or smaller than the header).
    TotalSize { totalsize: u32, available: usize },
    /// Version older than 16 or last-compatible newer than 17.
    Version { version: u32, last_comp: u32 },
    /// A header block (structure, strings, memory reservation map) lies
    /// outside `totalsize` or is misaligned.
    Block {
        block: &'static str,
        offset: u32,
        size: u32,
    },
    /// The structure block ends before `FDT_END` or a token's payload.
    Truncated { offset: usize },
    /// An unknown token, or a token where it is not allowed.
    BadToken { offset: usize, token: u32 },
    /// A node name without NUL inside the structure block, or not UTF-8.
    BadNodeName { offset: usize },
    /// A property name offset outside the strings block, unterminated, or not UTF-8.
    BadPropName { offset: usize, nameoff: u32 },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep { offset: usize },
    /// `END_NODE` without `BEGIN_NODE`, or `FDT_END` inside a node.
    Unbalanced { offset: usize },
    /// The memory reservation map has no terminating entry.
    ReserveMap,
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FdtError::TooShort { len } => {
                write!(f, "invalid FDT header: blob is {len} bytes, a header needs {HEADER_LEN}")
            }
            FdtError::BadMagic { found } => {
                write!(f, "invalid FDT header: magic is {found:#010x}, expected 0xd00dfeed")
            }
            FdtError::TotalSize { totalsize, available } => write!(
                f,
                "invalid FDT header: totalsize {totalsize} but {available} bytes available"
            ),
            FdtError::Version { version, last_comp } => write!(
                f,
                "invalid FDT header: version {version} (last compatible {last_comp}), expected 16 or 17"
            ),
            FdtError::Block { block, offset, size } => write!(
                f,
                "invalid FDT header: {block} block at offset {offset:#x} size {size:#x} is misaligned or outside the blob"
            ),
            FdtError::Truncated { offset } => {
                write!(f, "invalid FDT: structure block truncated at offset {offset:#x}")
            }
            FdtError::BadToken { offset, token } => {
                write!(f, "invalid FDT: unexpected token {token:#x} at offset {offset:#x}")
            }
            FdtError::BadNodeName { offset } => write!(
                f,
                "invalid FDT: node name at offset {offset:#x} is unterminated or not UTF-8"
            ),
            FdtError::BadPropName { offset, nameoff } => write!(
                f,
                "invalid FDT: property at offset {offset:#x} has bad name offset {nameoff:#x}"
            ),
            FdtError::TooDeep { offset } => write!(
                f,
                "invalid FDT: nodes nested deeper than {MAX_DEPTH} levels at offset {offset:#x}"
            ),
            FdtError::Unbalanced { offset } => {
                write!(f, "invalid FDT: unbalanced node nesting at offset {offset:#x}")
            }
            FdtError::ReserveMap => {
                write!(f, "invalid FDT: memory reservation map is not terminated")
            }
        }
    }
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some(((be32(b, off)? as u64) << 32) | be32(b, off.checked_add(4)?)? as u64)
}

fn align4(x: usize) -> Option<usize> {
    x.checked_add(3).map(|v| v & !3)
}

/// NUL-terminated string starting at `off` in `b` (without the NUL).
fn cstr(b: &[u8], off: usize) -> Option<&str> {
    let tail = b.get(off..)?;
    let n = tail.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&tail[..n]).ok()
}

/// A validated flattened device tree.
#[derive(Clone, Copy)]
pub struct Fdt<'a> {
    blob: &'a [u8],
    structs: &'a [u8],
    strings: &'a [u8],
    rsvmap: &'a [u8],
    boot_cpuid: u32,
}

impl fmt::Debug for Fdt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdt")
            .field("totalsize", &self.blob.len())
            .finish()
    }
}

/// A structure-block token with names left undecoded.
enum Raw<'a> {
    Begin(&'a [u8]),
    End,
    Prop(u32, &'a [u8]),
    Eof,
}

/// One token of the structure block.
enum Token {
    Begin,
    End,
    Prop,
    Eof,
}

impl<'a> Fdt<'a> {
    /// Checks the header and walks the whole structure block once.
    /// `buf` may be longer than the tree (it is cut to `totalsize`).
    pub fn new(buf: &'a [u8]) -> Result<Self, FdtError> {
        if buf.len() < HEADER_LEN {
            return Err(FdtError::TooShort { len: buf.len() });
        }
        let h = |i: usize| be32(buf, i * 4).unwrap_or(0);
        if h(0) != FDT_MAGIC {
            return Err(FdtError::BadMagic { found: h(0) });
        }
        let totalsize = h(1);
        if (totalsize as usize) < HEADER_LEN || totalsize as usize > buf.len() {
            return Err(FdtError::TotalSize {
                totalsize,
                available: buf.len(),
            });
        }
        let blob = &buf[..totalsize as usize];
        let (version, last_comp) = (h(5), h(6));
        if version < 16 || last_comp > 17 {
            return Err(FdtError::Version { version, last_comp });
        }
        let block = |name: &'static str, off: u32, size: u32, align: usize| {
            let err = FdtError::Block {
                block: name,
                offset: off,
                size,
            };
            let start = off as usize;
            let end = start.checked_add(size as usize).ok_or(err)?;
            if start < HEADER_LEN || !start.is_multiple_of(align) || end > blob.len() {
                return Err(err);
            }
            Ok(&blob[start..end])
        };
        let structs = block("structure", h(2), h(9), 4)?;
        let strings = block("strings", h(3), h(8), 1)?;
        // The reservation map has no size field: it runs to its (0, 0) entry.
        let rsv_off = h(4);
        let rsvmap = block(
            "memory reservation",
            rsv_off,
            totalsize - rsv_off.min(totalsize),
            8,
        )?;
        let fdt = Fdt {
            blob,
            structs,
            strings,
            rsvmap,
            boot_cpuid: h(7),
        };
        fdt.validate()?;
        Ok(fdt)
    }

    /// Reads `totalsize` from a header without validating the rest, so a
    /// caller that only has a pointer knows how much memory to map.
    pub fn total_size(header: &[u8]) -> Result<usize, FdtError> {
        if header.len() < 8 {
            return Err(FdtError::TooShort { len: header.len() });
        }
        let magic = be32(header, 0).unwrap_or(0);
        if magic != FDT_MAGIC {
            return Err(FdtError::BadMagic { found: magic });
        }
        Ok(be32(header, 4).unwrap_or(0) as usize)
    }

    fn validate(&self) -> Result<(), FdtError> {
        // The reservation map must terminate.
        let mut off = 0;
        loop {
            let (a, s) = match (be64(self.rsvmap, off), be64(self.rsvmap, off + 8)) {
                (Some(a), Some(s)) => (a, s),
                _ => return Err(FdtError::ReserveMap),
            };
            if a == 0 && s == 0 {
                break;
            }
            off += 16;
        }
        let mut depth = 0usize;
        let mut off = 0usize;
        let mut seen_root = false;
        // Whether the open node has had a subnode: the specification puts
        // a node's properties before its subnodes, and `props()` stops at
        // the first subnode, so a property after one would be hidden.
        let mut after_child = false;
        loop {
            let at = off;
            let (tok, next) = self.token(off)?;
            match tok {
                Token::Begin => {
                    after_child = false;
                    if depth == 0 && seen_root {
                        return Err(FdtError::BadToken {
                            offset: at,
                            token: FDT_BEGIN_NODE,
                        });
                    }
                    seen_root = true;
                    depth += 1;
                    if depth > MAX_DEPTH + 1 {
                        return Err(FdtError::TooDeep { offset: at });
                    }
                }
                Token::End => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or(FdtError::Unbalanced { offset: at })?;
                    after_child = true;
                }
                Token::Prop => {
                    if depth == 0 || after_child {
                        return Err(FdtError::BadToken {
                            offset: at,
                            token: FDT_PROP,
                        });
                    }
                }
                Token::Eof => {
                    if depth != 0 || !seen_root {
                        return Err(FdtError::Unbalanced { offset: at });
                    }
                    return Ok(());
                }
            }
            off = next;
        }
    }

    /// Decodes the token at `off` (NOPs skipped); returns it and the offset after it.
    fn token(&self, mut off: usize) -> Result<(Token, usize), FdtError> {
        let s = self.structs;
        loop {
            let tok = be32(s, off).ok_or(FdtError::Truncated { offset: off })?;
            let body = off + 4;
            match tok {
                FDT_NOP => off = body,
                FDT_BEGIN_NODE => {
                    let tail = s.get(body..).ok_or(FdtError::Truncated { offset: off })?;
                    let n = tail
                        .iter()
                        .position(|&c| c == 0)
                        .ok_or(FdtError::BadNodeName { offset: off })?;
                    let name = core::str::from_utf8(&tail[..n])
                        .map_err(|_| FdtError::BadNodeName { offset: off })?;
                    let next = align4(body + n + 1).ok_or(FdtError::Truncated { offset: off })?;
                    let _ = name;
                    return Ok((Token::Begin, next));
                }
                FDT_END_NODE => return Ok((Token::End, body)),
                FDT_PROP => {
                    let len = be32(s, body).ok_or(FdtError::Truncated { offset: off })? as usize;
                    let nameoff = be32(s, body + 4).ok_or(FdtError::Truncated { offset: off })?;
                    let vstart = body + 8;
                    let vend = vstart
                        .checked_add(len)
                        .ok_or(FdtError::Truncated { offset: off })?;
                    let value = s
                        .get(vstart..vend)
                        .ok_or(FdtError::Truncated { offset: off })?;
                    let name =
                        cstr(self.strings, nameoff as usize).ok_or(FdtError::BadPropName {
                            offset: off,
                            nameoff,
                        })?;
                    let next = align4(vend).ok_or(FdtError::Truncated { offset: off })?;
                    let _ = (name, value);
                    return Ok((Token::Prop, next));
                }
                FDT_END => return Ok((Token::Eof, body)),
                other => {
                    return Err(FdtError::BadToken {
                        offset: off,
                        token: other,
                    })
                }
            }
        }
    }

    /// Decodes the token at `off` without checking names (`new` already
    /// did, once): the fast path every walk after validation uses.
    fn raw(&self, mut off: usize) -> Option<(Raw<'a>, usize)> {
        let s = self.structs;
        loop {
            let tok = be32(s, off)?;
            let body = off + 4;
            match tok {
                FDT_NOP => off = body,
                FDT_BEGIN_NODE => {
                    let tail = s.get(body..)?;
                    let n = tail.iter().position(|&c| c == 0)?;
                    return Some((Raw::Begin(&tail[..n]), align4(body + n + 1)?));
                }
                FDT_END_NODE => return Some((Raw::End, body)),
                FDT_PROP => {
                    let len = be32(s, body)? as usize;
                    let nameoff = be32(s, body + 4)?;
                    let vstart = body + 8;
                    let value = s.get(vstart..vstart.checked_add(len)?)?;
                    return Some((Raw::Prop(nameoff, value), align4(vstart + len)?));
                }
                FDT_END => return Some((Raw::Eof, body)),
                _ => return None,
            }
        }
    }

    /// Whether the strings-block name at `nameoff` is exactly `name`.
    fn name_is(&self, nameoff: u32, name: &str) -> bool {
        let start = nameoff as usize;
        let n = name.len();
        self.strings.get(start..start + n) == Some(name.as_bytes())
            && self.strings.get(start + n) == Some(&0)
    }

    fn prop_name(&self, nameoff: u32) -> &'a str {
        cstr(self.strings, nameoff as usize).unwrap_or("")
    }

    /// The whole blob (cut to `totalsize`).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// `boot_cpuid_phys` from the header.
    pub fn boot_cpuid(&self) -> u32 {
        self.boot_cpuid
    }

    /// The root node.
    pub fn root(&self) -> Node<'a> {
        // validate() proved the first token is a BEGIN_NODE.
        let mut off = 0;
        while be32(self.structs, off) == Some(FDT_NOP) {
            off += 4;
        }
        Node {
            fdt: *self,
            offset: off,
            depth: 0,
        }
    }

    /// `/memreserve/` entries as (address, size).
    pub fn reserved_entries(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let map = self.rsvmap;
        (0..)
            .map(move |i: usize| (be64(map, i * 16), be64(map, i * 16 + 8)))
            .map_while(|e| match e {
                (Some(a), Some(s)) if a != 0 || s != 0 => Some((a, s)),
                _ => None,
            })
    }

    /// Finds a node by absolute path (`/chosen/domU1`). Each component
    /// matches a node's full name, or its name without the unit address
    /// when the component has no `@`.
    pub fn find(&self, path: &str) -> Option<Node<'a>> {
        let mut node = self.root();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            node = node.child(comp)?;
        }
        Some(node)
    }

    /// Finds the node whose `phandle` (or `linux,phandle`) is `ph`.
    pub fn find_phandle(&self, ph: u32) -> Option<Node<'a>> {
        self.root().descendants().find(|n| {
            n.prop("phandle")
                .or_else(|| n.prop("linux,phandle"))
                .and_then(|p| p.u32())
                == Some(ph)
        })
    }

    /// Resolves an alias name from `/aliases` to a node.
    pub fn alias(&self, name: &str) -> Option<Node<'a>> {
        let target = self.find("/aliases")?.prop(name)?.str()?;
        self.find(target)
    }
}

/// A node of a validated tree.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    offset: usize,
    depth: usize,
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({:?} @ {:#x})", self.name(), self.offset)
    }
}

impl<'a> Node<'a> {
    fn begin(&self) -> Option<(&'a str, usize)> {
        match self.fdt.raw(self.offset) {
            // Names were checked to be UTF-8 by `Fdt::new`.
            Some((Raw::Begin(name), next)) => {
                Some((core::str::from_utf8(name).unwrap_or(""), next))
            }
            _ => None,
        }
    }

    fn props_start(&self) -> Option<usize> {
        match self.fdt.raw(self.offset) {
            Some((Raw::Begin(_), next)) => Some(next),
            _ => None,
        }
    }

    /// Full node name including unit address (`memory@40000000`); "" for the root.
    pub fn name(&self) -> &'a str {
        self.begin().map(|(n, _)| n).unwrap_or("")
    }

    /// Name without the unit address (`memory`).
    pub fn base_name(&self) -> &'a str {
        let n = self.name();
        n.split('@').next().unwrap_or(n)
    }

    /// Unit address part after `@`, if any.
    pub fn unit_address(&self) -> Option<&'a str> {
        self.name().split_once('@').map(|(_, u)| u)
    }

    /// Depth below the root (root = 0).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Offset of this node in the structure block: a stable identity.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The tree this node belongs to.
    pub fn fdt(&self) -> Fdt<'a> {
        self.fdt
    }

    /// The node's properties, in blob order.
    pub fn props(&self) -> PropIter<'a> {
        PropIter {
            fdt: self.fdt,
            off: self.begin().map(|(_, n)| n),
        }
    }

    /// The property called `name`, if present (the first one if repeated).
    pub fn prop(&self, name: &str) -> Option<Prop<'a>> {
        let mut off = self.props_start()?;
        loop {
            match self.fdt.raw(off)? {
                (Raw::Prop(nameoff, value), next) => {
                    if self.fdt.name_is(nameoff, name) {
                        return Some(Prop {
                            name: self.fdt.prop_name(nameoff),
                            value,
                        });
                    }
                    off = next;
                }
                _ => return None,
            }
        }
    }

    /// Whether `compatible` lists `compat`.
    pub fn is_compatible(&self, compat: &str) -> bool {
        self.prop("compatible")
            .is_some_and(|p| p.strings().any(|s| s == compat))
    }

    /// `status` is absent, "okay" or "ok".
    pub fn is_enabled(&self) -> bool {
        match self.prop("status") {
            None => true,
            Some(p) => matches!(p.str(), Some("okay") | Some("ok")),
        }
    }

    /// The node's direct children, in blob order.
    pub fn children(&self) -> ChildIter<'a> {
        // Skip the properties to the first child token.
        let mut off = self.props_start();
        while let Some(o) = off {
            match self.fdt.raw(o) {
                Some((Raw::Prop(..), next)) => off = Some(next),
                _ => break,
            }
        }
        ChildIter {
            fdt: self.fdt,
            off,
            depth: self.depth + 1,
        }
    }

    /// The direct child called `name` (full name, or base name if `name` has no `@`).
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        let want_unit = name.contains('@');
        self.children().find(|c| {
            if want_unit {
                c.name() == name
            } else {
                c.base_name() == name
            }
        })
    }

    /// All nodes below this one, depth first, pre-order (not including self).
    pub fn descendants(&self) -> Descendants<'a> {
        let first = self.children().off;
        Descendants {
            fdt: self.fdt,
            off: first,
            depth: self.depth + 1,
            floor: self.depth + 1,
        }
    }

    /// `#address-cells` and `#size-cells` of this node if present.
    pub fn cells(&self) -> (Option<u32>, Option<u32>) {
        (
            self.prop("#address-cells").and_then(|p| p.u32()),
            self.prop("#size-cells").and_then(|p| p.u32()),
        )
    }

    /// `#address-cells`/`#size-cells` that govern the `reg` of this node's
    /// children, per the DT spec (defaults 2/1, not inherited).
    pub fn child_cells(&self) -> (u32, u32) {
        let (a, s) = self.cells();
        (a.unwrap_or(2), s.unwrap_or(1))
    }
}

/// Iterator over a node's properties.
pub struct PropIter<'a> {
    fdt: Fdt<'a>,
    off: Option<usize>,
}

impl<'a> Iterator for PropIter<'a> {
    type Item = Prop<'a>;
    fn next(&mut self) -> Option<Prop<'a>> {
        let off = self.off?;
        match self.fdt.raw(off) {
            Some((Raw::Prop(nameoff, value), next)) => {
                self.off = Some(next);
                Some(Prop {
                    name: self.fdt.prop_name(nameoff),
                    value,
                })
            }
            _ => {
                self.off = None;
                None
            }
        }
    }
}

/// Skips the node starting at `off` (a BEGIN_NODE) and returns the offset after its END_NODE.
fn skip_node(fdt: &Fdt<'_>, mut off: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        let (tok, next) = fdt.raw(off)?;
        match tok {
            Raw::Begin(_) => depth += 1,
            Raw::End => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(next);
                }
            }
            Raw::Prop(..) => {}
            Raw::Eof => return None,
        }
        off = next;
    }
}

/// Iterator over a node's direct children.
pub struct ChildIter<'a> {
    fdt: Fdt<'a>,
    off: Option<usize>,
    depth: usize,
}

impl<'a> Iterator for ChildIter<'a> {
    type Item = Node<'a>;
    fn next(&mut self) -> Option<Node<'a>> {
        let off = self.off?;
        // Skip NOPs so the node offset points at its BEGIN_NODE token.
        let mut o = off;
        while be32(self.fdt.structs, o) == Some(FDT_NOP) {
            o += 4;
        }
        match self.fdt.raw(o) {
            Some((Raw::Begin(_), _)) => {
                self.off = skip_node(&self.fdt, o);
                Some(Node {
                    fdt: self.fdt,
                    offset: o,
                    depth: self.depth,
                })
            }
            _ => {
                self.off = None;
                None
            }
        }
    }
}

/// Pre-order walk below a node.
pub struct Descendants<'a> {
    fdt: Fdt<'a>,
    off: Option<usize>,
    depth: usize,
    floor: usize,
}

impl<'a> Iterator for Descendants<'a> {
    type Item = Node<'a>;
    fn next(&mut self) -> Option<Node<'a>> {
        loop {
            let off = self.off?;
            let Some((tok, next)) = self.fdt.raw(off) else {
                self.off = None;
                return None;
            };
            match tok {
                Raw::Begin(_) => {
                    // `off` may point at NOPs before the BEGIN_NODE: find it.
                    let mut o = off;
                    while be32(self.fdt.structs, o) == Some(FDT_NOP) {
                        o += 4;
                    }
                    let node = Node {
                        fdt: self.fdt,
                        offset: o,
                        depth: self.depth,
                    };
                    self.depth += 1;
                    self.off = Some(next);
                    return Some(node);
                }
                Raw::Prop(..) => self.off = Some(next),
                Raw::End => {
                    if self.depth <= self.floor {
                        self.off = None;
                        return None;
                    }
                    self.depth -= 1;
                    self.off = Some(next);
                }
                Raw::Eof => {
                    self.off = None;
                    return None;
                }
            }
        }
    }
}

/// One property: its name and raw big-endian value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prop<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl<'a> Prop<'a> {
    /// Exactly one 32-bit cell.
    pub fn u32(&self) -> Option<u32> {
        if self.value.len() == 4 {
            be32(self.value, 0)
        } else {
            None
        }
    }

    /// Exactly two cells, as one 64-bit value.
    pub fn u64(&self) -> Option<u64> {
        if self.value.len() == 8 {
            be64(self.value, 0)
        } else {
            None
        }
    }

    /// The value as 32-bit cells; None if the length is not a multiple of 4.
    pub fn cells(&self) -> Option<impl Iterator<Item = u32> + 'a> {
        if !self.value.len().is_multiple_of(4) {
            return None;
        }
        let v = self.value;
        Some((0..v.len() / 4).filter_map(move |i| be32(v, i * 4)))
    }

    /// Number of whole cells, if the length is a multiple of 4.
    pub fn cell_count(&self) -> Option<usize> {
        self.value
            .len()
            .is_multiple_of(4)
            .then_some(self.value.len() / 4)
    }

    /// A single NUL-terminated UTF-8 string with no interior NUL.
    pub fn str(&self) -> Option<&'a str> {
        let (last, body) = self.value.split_last()?;
        if *last != 0 || body.contains(&0) {
            return None;
        }
        core::str::from_utf8(body).ok()
    }

    /// The strings of a string list (an unterminated tail is dropped).
    pub fn strings(&self) -> impl Iterator<Item = &'a str> + 'a {
        let v = self.value;
        let nul = v.iter().rposition(|&c| c == 0);
        let complete = nul.map_or(&v[..0], |i| &v[..i]);
        complete
            .split(|&c| c == 0)
            .filter(move |_| nul.is_some())
            .filter_map(|s| core::str::from_utf8(s).ok())
    }

    /// Reads a number of `cells` (1 or 2) cells at cell index `idx`.
    pub fn read_cells(&self, idx: usize, cells: u32) -> Option<u64> {
        match cells {
            1 => be32(self.value, idx.checked_mul(4)?).map(u64::from),
            2 => be64(self.value, idx.checked_mul(4)?),
            _ => None,
        }
    }

    /// Decodes `reg`-style (address, size) pairs with the given cell counts
    /// (each 1 or 2). None if the counts are unsupported or the length is
    /// not a whole number of pairs.
    pub fn ranges(&self, ac: u32, sc: u32) -> Option<impl Iterator<Item = (u64, u64)> + 'a> {
        if !(1..=2).contains(&ac) || sc > 2 {
            return None;
        }
        let per = (ac + sc) as usize * 4;
        if self.value.is_empty() || !self.value.len().is_multiple_of(per) {
            return None;
        }
        let p = *self;
        Some((0..self.value.len() / per).map(move |i| {
            let base = i * (ac + sc) as usize;
            let a = p.read_cells(base, ac).unwrap_or(0);
            let s = if sc == 0 {
                0
            } else {
                p.read_cells(base + ac as usize, sc).unwrap_or(0)
            };
            (a, s)
        }))
    }
}

pub mod tree;

#[cfg(test)]
pub(crate) mod tests;
