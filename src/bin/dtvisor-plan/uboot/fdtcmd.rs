//! U-Boot's `fdt` command (cmd/fdt.c) on a model of the working blob.
//!
//! The tree itself is a [`Tree`]; around it [`Blob`] keeps the header
//! fields libfdt works with, so that an edit fails where libfdt's would:
//! `fdt_rw_probe_()` wants version 17 and blocks in order, and
//! `fdt_splice_()` refuses to grow the data past `totalsize`
//! (`FDT_ERR_NOSPACE`). Every splice changes the sizes the way libfdt's
//! does: a node costs its BEGIN_NODE tag, padded name and END_NODE tag, a
//! property its 12-byte header and padded value, a new property name is
//! appended to the strings block unless `fdt_find_string_()` finds it
//! (anywhere, also as the tail of a longer name), and strings are never
//! removed. NOP tokens in the board's blob are not tracked, so deleting a
//! node that contains some frees slightly less here than in U-Boot.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{hextoul, strtoul_auto, Interp, MAX_FDT_BYTES};
use dtvisor::fdt::tree::{
    align4, fdt_err_name, EditError, Node, Tree, FDT_ERR_BADLAYOUT, FDT_ERR_BADVERSION,
    FDT_ERR_NOSPACE, FDT_ERR_NOTFOUND,
};
use dtvisor::fdt::Fdt;

/// Size of cmd/fdt.c's static buffer for `fdt set` values.
pub(super) const SCRATCHPAD: usize = 1024;

const HEADER_LEN: u64 = 40;
const RSV_ENTRY: u64 = 16;

/// U-Boot's working FDT.
pub(super) struct Blob {
    pub tree: Tree,
    pub addr: u64,
    pub totalsize: u64,
    version: u32,
    last_comp: u32,
    off_rsvmap: u64,
    off_struct: u64,
    size_struct: u64,
    off_strings: u64,
    strings: Vec<u8>,
}

/// A failed `fdt` subcommand: what to report and the command's return
/// value (negative values are libfdt errors cmd/fdt.c passes through).
#[derive(Debug)]
struct Fail {
    rc: i32,
    msg: String,
}

fn fail(rc: i32, msg: impl Into<String>) -> Fail {
    Fail {
        rc,
        msg: msg.into(),
    }
}

fn edit_fail(e: EditError) -> Fail {
    fail(1, e.to_string())
}

fn be32(b: &[u8], i: usize) -> u64 {
    b.get(i * 4..i * 4 + 4).map_or(0, |s| {
        u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    })
}

/// Bytes a node and everything below it take in the structure block.
fn subtree_size(n: &Node) -> u64 {
    let mut total = 0u64;
    let mut stack = alloc::vec![n];
    while let Some(n) = stack.pop() {
        total += 8 + align4(n.name.len() + 1) as u64;
        for (_, v) in &n.props {
            total += 12 + align4(v.len()) as u64;
        }
        stack.extend(n.children.iter());
    }
    total
}

/// The devicetree specification's characters for node names (one `@`
/// before the unit address).
fn valid_node_name(name: &str) -> bool {
    let ok = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b",._+-".contains(&c))
    };
    match name.split_once('@') {
        Some((n, unit)) => !n.is_empty() && ok(n) && ok(unit),
        None => !name.is_empty() && ok(name),
    }
}

fn valid_prop_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b",._+?#-".contains(&c))
}

impl Blob {
    /// The board's DTB as `fdt addr` finds it at `addr`.
    pub(super) fn open(board: &[u8], addr: u64) -> Result<Blob, String> {
        let f = Fdt::new(board).map_err(|e| e.to_string())?;
        let h = |i| be32(board, i);
        let (off_strings, size_strings) = (h(3), h(8));
        // Fdt::new checked that the strings block lies inside the blob.
        let strings = board
            .get(off_strings as usize..(off_strings + size_strings) as usize)
            .unwrap_or(&[])
            .to_vec();
        Ok(Blob {
            tree: Tree::from_fdt(&f),
            addr,
            totalsize: h(1),
            version: h(5) as u32,
            last_comp: h(6) as u32,
            off_rsvmap: h(4),
            off_struct: h(2),
            size_struct: h(9),
            off_strings,
            strings,
        })
    }

    fn data_size(&self) -> u64 {
        self.off_strings + self.strings.len() as u64
    }

    /// libfdt's `fdt_blocks_misordered_()`.
    fn misordered(&self, mem_rsv_size: u64) -> bool {
        self.off_rsvmap < HEADER_LEN
            || self.off_struct < self.off_rsvmap + mem_rsv_size
            || self.off_strings < self.off_struct + self.size_struct
            || self.totalsize < self.data_size()
    }

    /// libfdt's `fdt_rw_probe_()`, which every edit starts with.
    fn rw_probe(&self, call: &str) -> Result<(), Fail> {
        let code = if self.version < 17 {
            FDT_ERR_BADVERSION
        } else if self.misordered(RSV_ENTRY) {
            FDT_ERR_BADLAYOUT
        } else {
            return Ok(());
        };
        Err(fail(
            -code,
            format!(
                "libfdt {call}(): {} (the blob is version {} or its blocks are out of order; \
                 `fdt addr <addr> <length>` rewrites it)",
                fdt_err_name(code),
                self.version
            ),
        ))
    }

    /// libfdt's `fdt_splice_()` space check for growing by `grow` bytes.
    fn room(&self, call: &str, grow: u64) -> Result<(), Fail> {
        if self.data_size() + grow > MAX_FDT_BYTES {
            return Err(fail(
                1,
                format!("the pre-flight check does not grow the working FDT beyond {MAX_FDT_BYTES} bytes"),
            ));
        }
        if self.data_size() + grow <= self.totalsize {
            return Ok(());
        }
        Err(fail(
            -FDT_ERR_NOSPACE,
            format!(
                "libfdt {call}(): FDT_ERR_NOSPACE: the working FDT has no room for {grow} \
                 more bytes ({} of its 0x{:x} bytes are used); make room with `fdt resize` \
                 or `fdt addr <addr> <length>`",
                self.data_size(),
                self.totalsize
            ),
        ))
    }

    fn grow_struct(&mut self, by: u64) {
        self.size_struct += by;
        self.off_strings += by;
    }

    fn shrink_struct(&mut self, by: u64) {
        self.size_struct = self.size_struct.saturating_sub(by);
        self.off_strings = self.off_strings.saturating_sub(by);
    }

    /// `fdt_find_string_()`: `name` and its NUL anywhere in the block.
    fn has_string(&self, name: &str) -> bool {
        let n = name.len();
        self.strings
            .windows(n + 1)
            .any(|w| &w[..n] == name.as_bytes() && w[n] == 0)
    }

    fn mknod(&mut self, path: &str, name: &str) -> Result<String, Fail> {
        let idx = self.tree.resolve(path).map_err(edit_fail)?;
        // cmd/fdt.c returns 1 for any failure of fdt_add_subnode().
        self.rw_probe("fdt_add_subnode")
            .map_err(|f| fail(1, f.msg))?;
        if let Some(c) = self.tree.node_at(&idx).child(name) {
            return Err(fail(
                1,
                format!(
                    "libfdt fdt_add_subnode(): FDT_ERR_EXISTS: {} already has a node `{}`",
                    self.tree.path_of(&idx),
                    c.name
                ),
            ));
        }
        let need = 8 + align4(name.len() + 1) as u64;
        self.room("fdt_add_subnode", need)
            .map_err(|f| fail(1, f.msg))?;
        let full = self.tree.add_node(path, name).map_err(edit_fail)?;
        self.grow_struct(need);
        Ok(full)
    }

    fn setprop(&mut self, path: &str, name: &str, value: Vec<u8>) -> Result<String, Fail> {
        let idx = self.tree.resolve(path).map_err(edit_fail)?;
        self.rw_probe("fdt_setprop").map_err(|f| fail(1, f.msg))?;
        let old = self.tree.node_at(&idx).prop(name).map(<[u8]>::len);
        let nospace = |f: Fail| fail(1, f.msg);
        match old {
            Some(old) => {
                let (new, old) = (align4(value.len()) as u64, align4(old) as u64);
                if new > old {
                    self.room("fdt_setprop", new - old).map_err(nospace)?;
                    self.grow_struct(new - old);
                } else {
                    self.shrink_struct(old - new);
                }
            }
            None => {
                let added = !self.has_string(name);
                if added {
                    self.room("fdt_setprop", name.len() as u64 + 1)
                        .map_err(nospace)?;
                }
                let need = 12 + align4(value.len()) as u64;
                // libfdt takes the new name back if the property does not fit.
                let extra = if added { name.len() as u64 + 1 } else { 0 };
                self.room("fdt_setprop", need + extra).map_err(nospace)?;
                if added {
                    self.strings.extend_from_slice(name.as_bytes());
                    self.strings.push(0);
                }
                self.grow_struct(need);
            }
        }
        self.tree.put_prop(path, name, value).map_err(edit_fail)
    }

    fn delprop(&mut self, path: &str, name: &str) -> Result<String, Fail> {
        let idx = self.tree.resolve(path).map_err(edit_fail)?;
        self.rw_probe("fdt_delprop")?;
        let Some(len) = self.tree.node_at(&idx).prop(name).map(<[u8]>::len) else {
            return Err(fail(
                -FDT_ERR_NOTFOUND,
                format!(
                    "libfdt fdt_delprop(): FDT_ERR_NOTFOUND: {} has no property `{name}`",
                    self.tree.path_of(&idx)
                ),
            ));
        };
        let full = self.tree.remove(path, Some(name)).map_err(edit_fail)?;
        self.shrink_struct(12 + align4(len) as u64);
        Ok(full)
    }

    fn delnode(&mut self, path: &str) -> Result<String, Fail> {
        let idx = self.tree.resolve(path).map_err(edit_fail)?;
        self.rw_probe("fdt_del_node")?;
        let size = subtree_size(self.tree.node_at(&idx));
        let full = self.tree.remove(path, None).map_err(edit_fail)?;
        self.shrink_struct(size);
        Ok(full)
    }

    fn add_rsv(&mut self, addr: u64, size: u64) -> Result<(), Fail> {
        self.rw_probe("fdt_add_mem_rsv")?;
        self.room("fdt_add_mem_rsv", RSV_ENTRY)?;
        // libfdt counts entries up to the first one of size 0: an entry of
        // size 0 takes its 16 bytes but ends the list as it stands.
        if size != 0 {
            self.tree.reserved.push((addr, size));
        }
        self.off_struct += RSV_ENTRY;
        self.off_strings += RSV_ENTRY;
        Ok(())
    }

    fn del_rsv(&mut self, n: u64) -> Result<(), Fail> {
        self.rw_probe("fdt_del_mem_rsv")?;
        let count = self.tree.reserved.len();
        let Some(i) = usize::try_from(n).ok().filter(|&i| i < count) else {
            return Err(fail(
                -FDT_ERR_NOTFOUND,
                format!(
                    "libfdt fdt_del_mem_rsv(): FDT_ERR_NOTFOUND: there are {count} reservations"
                ),
            ));
        };
        self.tree.reserved.remove(i);
        self.off_struct -= RSV_ENTRY;
        self.off_strings -= RSV_ENTRY;
        Ok(())
    }

    /// libfdt's `fdt_open_into(blob, blob, bufsize)`.
    fn open_into(&mut self, bufsize: i64) -> Result<(), Fail> {
        let nospace = || fail(1, "libfdt fdt_open_into(): FDT_ERR_NOSPACE");
        let Ok(bufsize) = u64::try_from(bufsize) else {
            return Err(nospace());
        };
        let mem_rsv_size = (self.tree.reserved.len() as u64 + 1) * RSV_ENTRY;
        if !self.misordered(mem_rsv_size) {
            if self.totalsize > bufsize {
                return Err(nospace());
            }
        } else {
            let need = HEADER_LEN + mem_rsv_size + self.size_struct + self.strings.len() as u64;
            if bufsize < need {
                return Err(nospace());
            }
            self.off_rsvmap = HEADER_LEN;
            self.off_struct = HEADER_LEN + mem_rsv_size;
            self.off_strings = self.off_struct + self.size_struct;
            self.last_comp = 16;
        }
        self.version = 17;
        self.totalsize = bufsize;
        Ok(())
    }

    /// U-Boot's `fdt_shrink_to_minimum()` (`fdt resize`).
    fn shrink(&mut self, extrasize: u64) {
        let mut had_rsv = false;
        if let Some(i) = self.tree.reserved.iter().position(|&(a, _)| a == self.addr) {
            if self.del_rsv(i as u64).is_ok() {
                had_rsv = true;
            }
        }
        // Room for five more reservations, then up to the next 4 KiB page.
        let pad = self.addr & 0xfff;
        let actual = self.data_size() + 5 * RSV_ENTRY + extrasize;
        let actual = ((actual + pad + 0xfff) & !0xfff) - pad;
        self.totalsize = actual & 0xffff_ffff;
        if had_rsv {
            let _ = self.add_rsv(self.addr, actual);
        }
    }

    /// The header field `fdt header get` names.
    fn header_field(&self, member: &str) -> Option<u64> {
        Some(match member {
            "magic" => 0xd00d_feed,
            "totalsize" => self.totalsize,
            "off_dt_struct" => self.off_struct,
            "off_dt_strings" => self.off_strings,
            "off_mem_rsvmap" => self.off_rsvmap,
            "version" => u64::from(self.version),
            "last_comp_version" => u64::from(self.last_comp),
            "boot_cpuid_phys" => u64::from(self.tree.boot_cpuid),
            "size_dt_strings" => self.strings.len() as u64,
            "size_dt_struct" => self.size_struct,
            _ => return None,
        })
    }
}

/// cmd/fdt.c `is_printable_string()`.
fn is_printable_string(s: &[u8]) -> bool {
    let Some(&last) = s.last() else {
        return false;
    };
    if last != 0 && last != b'\n' {
        return false;
    }
    let printable = |c: u8| c == 0 || (0x20..0x7f).contains(&c) || b" \t\n\x0b\x0c\r".contains(&c);
    let mut i = 0;
    while i < s.len() && printable(s[i]) {
        if s[i] == 0 {
            if i + 1 == s.len() {
                return true;
            }
            if s[i + 1] == 0 {
                return false;
            }
        }
        i += 1;
    }
    i == s.len()
}

/// How `fdt get value` stores a property in a variable
/// (`fdt_value_env_set()`; AArch64 is little-endian).
fn value_for_env(v: &[u8]) -> Option<String> {
    if is_printable_string(v) {
        let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        return Some(String::from_utf8_lossy(&v[..end]).into_owned());
    }
    if v.len() == 4 {
        return Some(format!(
            "0x{:08X}",
            u32::from_be_bytes([v[0], v[1], v[2], v[3]])
        ));
    }
    if v.len().is_multiple_of(4) && v.len() <= 20 {
        return Some(
            v.chunks(4)
                .map(|c| format!("{:08x}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        );
    }
    None
}

/// cmd/fdt.c `fdt_parse_prop()`: `<cells>`, `[bytes]` or strings, into
/// the scratchpad (which holds the property's old value, for `?` cells).
/// Returns the value's length.
pub(super) fn parse_prop(words: &[String], data: &mut [u8; SCRATCHPAD]) -> Result<usize, String> {
    match words.first().and_then(|f| f.as_bytes().first()) {
        None if words.is_empty() => Ok(0),
        Some(b'<') => parse_cells(words, data),
        Some(b'[') => parse_bytes(words, data),
        _ => parse_strings(words, data),
    }
}

fn too_long() -> String {
    format!("the value is longer than U-Boot's {SCRATCHPAD}-byte fdt scratchpad")
}

/// The character at (word, offset); None past the last word, 0 at a
/// word's end.
fn char_at(words: &[String], w: usize, p: usize) -> Option<u8> {
    words
        .get(w)
        .map(|s| s.as_bytes().get(p).copied().unwrap_or(0))
}

/// `<cell cell ...>`: 32-bit big-endian cells (`?` reserves one).
fn parse_cells(words: &[String], data: &mut [u8; SCRATCHPAD]) -> Result<usize, String> {
    let (mut w, mut p, mut len) = (0, 1, 0usize);
    loop {
        match char_at(words, w, p) {
            None => return Err("the cell list has no closing `>`".to_string()),
            Some(b'>') => return Ok(len),
            Some(0) => {
                w += 1;
                p = 0;
            }
            Some(c) => {
                let bytes = &words[w].as_bytes()[p..];
                let (v, used) = strtoul_auto(bytes);
                let next = if c == b'?' { p + 1 } else { p + used };
                if len + 4 > SCRATCHPAD {
                    return Err(too_long());
                }
                if c != b'?' {
                    data[len..len + 4].copy_from_slice(&(v as u32).to_be_bytes());
                }
                len += 4;
                if next == p {
                    return Err(format!(
                        "Sorry, I could not convert \"{}\"",
                        String::from_utf8_lossy(bytes)
                    ));
                }
                p = next;
                while char_at(words, w, p) == Some(b' ') {
                    p += 1;
                }
            }
        }
    }
}

/// `[hex hex ...]`: bytes.
fn parse_bytes(words: &[String], data: &mut [u8; SCRATCHPAD]) -> Result<usize, String> {
    let (mut w, mut p, mut len) = (0, 1, 0usize);
    loop {
        match char_at(words, w, p) {
            None => return Err("the byte list has no closing `]`".to_string()),
            Some(b']') => return Ok(len),
            Some(b' ') => p += 1,
            Some(0) => {
                w += 1;
                p = 0;
            }
            Some(c) if c.is_ascii_hexdigit() => {
                let (v, used) = hextoul(&words[w][p..]);
                if len + 1 > SCRATCHPAD {
                    return Err(too_long());
                }
                data[len] = v as u8;
                len += 1;
                p += used;
            }
            Some(c) => return Err(format!("Unexpected character '{}'", c as char)),
        }
    }
}

/// Anything else: each word a NUL-terminated string.
fn parse_strings(words: &[String], data: &mut [u8; SCRATCHPAD]) -> Result<usize, String> {
    let mut len = 0usize;
    for s in words {
        let b = s.as_bytes();
        if len + b.len() + 1 > SCRATCHPAD {
            return Err(too_long());
        }
        data[len..len + b.len()].copy_from_slice(b);
        data[len + b.len()] = 0;
        len += b.len() + 1;
    }
    Ok(len)
}

const FDT_USAGE: &str = "fdt <addr|resize|print|list|get|set|mknode|rm|header|bootcpu|memory|rsvmem|chosen|move|apply> ...";

impl Interp<'_> {
    /// Reports a failed subcommand and returns its return value.
    fn fdt_fail(&mut self, line: usize, sub: &str, f: Fail) -> i32 {
        self.error(line, format!("fdt {sub}: {}", f.msg));
        f.rc
    }

    fn no_fdt_model(&mut self, line: usize, what: &str) -> i32 {
        self.warn(
            line,
            format!("`fdt {what}` makes board-specific changes that the pre-flight check does not model"),
        );
        0
    }

    /// The `fdt` command; subcommands are matched by prefix, in cmd/fdt.c's order.
    pub(super) fn cmd_fdt(&mut self, argv: &[String], line: usize) -> i32 {
        let Some(sub) = argv.get(1).map(String::as_str) else {
            return self.usage(line, FDT_USAGE);
        };
        if sub.starts_with("ad") {
            return self.fdt_addr(argv, line);
        }
        if self.blob.is_none() {
            self.error(
                line,
                "no working FDT: `fdt addr` has not selected one (U-Boot: \"No FDT memory \
                 address configured\")",
            );
            return 1;
        }
        let n = argv.len();
        if sub.starts_with("mo") {
            self.fdt_move(argv, line)
        } else if sub.starts_with("sys") {
            self.no_fdt_model(line, "systemsetup")
        } else if sub.starts_with("mk") {
            if n < 4 {
                return self.usage(line, "fdt mknode <path> <node>");
            }
            self.fdt_mknod(&argv[2], &argv[3], line)
        } else if sub.starts_with('s') {
            if n < 4 {
                return self.usage(line, "fdt set <path> <prop> [<val>]");
            }
            self.fdt_set(&argv[2], &argv[3], &argv[4..], line)
        } else if sub.starts_with('g') {
            self.fdt_get(argv, line)
        } else if sub.starts_with('p') || sub.starts_with('l') {
            let path = argv.get(2).map_or("/", String::as_str);
            self.fdt_print(path, argv.get(3).map(String::as_str), line)
        } else if sub.starts_with("rm") {
            if n < 3 {
                return self.usage(line, "fdt rm <path> [<prop>]");
            }
            self.fdt_rm(&argv[2], argv.get(3).map(String::as_str), line)
        } else if sub.starts_with('h') {
            self.fdt_header(argv, line)
        } else if sub.starts_with("boo") {
            let Some(id) = argv.get(2) else {
                return self.usage(line, "fdt bootcpu <id>");
            };
            let id = hextoul(id).0 as u32;
            if let Some(b) = self.blob.as_mut() {
                b.tree.boot_cpuid = id;
            }
            0
        } else if sub.starts_with("me") {
            if n < 4 {
                return self.usage(line, "fdt memory <addr> <size>");
            }
            self.no_fdt_model(line, "memory")
        } else if sub.starts_with("rs") {
            self.fdt_rsvmem(argv, line)
        } else if sub.starts_with("boa") {
            self.no_fdt_model(line, "boardsetup")
        } else if sub.starts_with("cho") {
            if n != 2 && n != 4 {
                return self.usage(line, "fdt chosen [<start> <end>]");
            }
            self.no_fdt_model(line, "chosen")
        } else if sub.starts_with("che") {
            0
        } else if sub.starts_with("ap") {
            if n != 3 {
                return self.usage(line, "fdt apply <addr>");
            }
            self.error(
                line,
                "`fdt apply`: overlays are not applied by the pre-flight check (the \
                 tree lacks whatever the overlay adds)",
            );
            1
        } else if sub.starts_with("re") {
            let extra = argv.get(2).map_or(0, |s| hextoul(s).0 & 0xffff_ffff);
            if let Some(b) = self.blob.as_mut() {
                b.shrink(extra);
            }
            0
        } else {
            self.error(line, format!("`fdt {sub}` is not an fdt subcommand"));
            self.usage(line, FDT_USAGE)
        }
    }

    /// `fdt addr [-c] [-q] [<addr> [<length>]]`.
    fn fdt_addr(&mut self, argv: &[String], line: usize) -> i32 {
        let mut args = &argv[2..];
        let mut control = false;
        while let Some(flag) = args.first().filter(|a| *a == "-c" || *a == "-q") {
            control |= flag == "-c";
            args = &args[1..];
        }
        let Some(addr_arg) = args.first() else {
            if self.blob.is_none() && !control {
                self.error(
                    line,
                    "`fdt addr` without an address only prints the current one, and none \
                     is selected yet",
                );
                return 1;
            }
            return 0;
        };
        let (addr, used) = hextoul(addr_arg);
        if used == 0 || used != addr_arg.len() {
            self.warn(
                line,
                format!("`{addr_arg}` is not a hex address: U-Boot reads it as 0x{addr:x}"),
            );
        }
        if control {
            self.warn(
                line,
                "`fdt addr -c` selects U-Boot's own control FDT, not the working FDT the \
                 other `fdt` commands edit",
            );
            return 0;
        }
        if let Some(b) = self.blob.as_mut() {
            let old = b.addr;
            b.addr = addr;
            if old != addr {
                self.warn(
                    line,
                    format!(
                        "selects the FDT at 0x{addr:x} after the one at 0x{old:x}; the \
                         pre-flight check has one DTB and keeps editing it"
                    ),
                );
            }
        } else {
            match Blob::open(self.board, addr) {
                Ok(b) => self.blob = Some(b),
                Err(e) => {
                    self.error(line, format!("the board DTB is not a valid FDT: {e}"));
                    return 1;
                }
            }
        }
        self.set_env("fdtaddr", &format!("{addr:x}"), line);
        if let Some(len_arg) = args.get(1) {
            // cmd/fdt.c keeps the length in an int.
            let len = hextoul(len_arg).0 as u32;
            let Some(b) = self.blob.as_mut() else {
                return 0;
            };
            if u64::from(len) < b.totalsize {
                let total = b.totalsize;
                self.warn(
                    line,
                    format!("New length 0x{len:x} < existing length 0x{total:x}, ignoring."),
                );
            } else if let Err(f) = b.open_into(i64::from(len as i32)) {
                self.warn(line, f.msg);
            }
        }
        0
    }

    /// `fdt move <fdt> <newaddr> [<length>]`.
    fn fdt_move(&mut self, argv: &[String], line: usize) -> i32 {
        if argv.len() < 4 {
            return self.usage(line, "fdt move <fdt> <newaddr> <length>");
        }
        let src = hextoul(&argv[2]).0;
        let dst = hextoul(&argv[3]).0;
        let Some(b) = self.blob.as_mut() else {
            return 1;
        };
        let mut notes = Vec::new();
        if src != b.addr {
            notes.push(format!(
                "moves the FDT at 0x{src:x}, but the working one is at 0x{:x}; the \
                 pre-flight check moves its one DTB",
                b.addr
            ));
        }
        let len = match argv.get(4) {
            Some(l) => {
                let len = u64::from(hextoul(l).0 as u32);
                if len < b.totalsize {
                    let msg = format!(
                        "New length 0x{len:X} < existing length 0x{:X}, aborting.",
                        b.totalsize
                    );
                    return self.fdt_fail(line, "move", fail(1, msg));
                }
                len
            }
            None => b.totalsize,
        };
        let res = b.open_into(i64::from(len as u32 as i32));
        if res.is_ok() {
            b.addr = dst;
        }
        for n in notes {
            self.warn(line, n);
        }
        match res {
            Ok(()) => {
                self.set_env("fdtaddr", &format!("{dst:x}"), line);
                0
            }
            Err(f) => self.fdt_fail(line, "move", f),
        }
    }

    fn fdt_mknod(&mut self, path: &str, name: &str, line: usize) -> i32 {
        let Some(b) = self.blob.as_mut() else {
            return 1;
        };
        match b.mknod(path, name) {
            Ok(full) => {
                if !valid_node_name(name) {
                    self.warn(line, format!("`{name}` is not a valid node name"));
                }
                self.out.node_lines.insert(full, line);
                0
            }
            Err(f) => self.fdt_fail(line, "mknode", f),
        }
    }

    fn fdt_set(&mut self, path: &str, prop: &str, values: &[String], line: usize) -> i32 {
        let Some(b) = self.blob.as_mut() else {
            return 1;
        };
        let old = match b.tree.resolve(path) {
            Ok(idx) => b.tree.node_at(&idx).prop(prop).map(<[u8]>::to_vec),
            Err(e) => return self.fdt_fail(line, "set", edit_fail(e)),
        };
        let value = if values.is_empty() {
            Vec::new()
        } else {
            if let Some(old) = &old {
                if old.len() > SCRATCHPAD {
                    let msg = format!("prop ({}) doesn't fit in scratchpad!", old.len());
                    return self.fdt_fail(line, "set", fail(1, msg));
                }
                self.scratch[..old.len()].copy_from_slice(old);
            }
            match parse_prop(values, &mut self.scratch) {
                Ok(len) => self.scratch[..len].to_vec(),
                Err(msg) => return self.fdt_fail(line, "set", fail(1, msg)),
            }
        };
        let Some(b) = self.blob.as_mut() else {
            return 1;
        };
        match b.setprop(path, prop, value) {
            Ok(full) => {
                if !valid_prop_name(prop) {
                    self.warn(line, format!("`{prop}` is not a valid property name"));
                }
                self.out.prop_lines.insert((full, prop.to_string()), line);
                0
            }
            Err(f) => self.fdt_fail(line, "set", f),
        }
    }

    fn fdt_rm(&mut self, path: &str, prop: Option<&str>, line: usize) -> i32 {
        let Some(b) = self.blob.as_mut() else {
            return 1;
        };
        // A path that does not resolve fails with 1; libfdt errors of the
        // removal itself are returned as they are (negative).
        if let Err(e) = b.tree.resolve(path) {
            return self.fdt_fail(line, "rm", edit_fail(e));
        }
        let res = match prop {
            Some(p) => b.delprop(path, p),
            None => b.delnode(path),
        };
        match (res, prop) {
            (Ok(full), Some(p)) => {
                self.out.prop_lines.insert((full, p.to_string()), line);
                0
            }
            (Ok(full), None) => {
                let below = format!("{full}/");
                self.out
                    .node_lines
                    .retain(|k, _| *k != full && !k.starts_with(&below));
                self.out
                    .prop_lines
                    .retain(|(k, _), _| *k != full && !k.starts_with(&below));
                0
            }
            (Err(f), _) => self.fdt_fail(line, "rm", f),
        }
    }

    fn fdt_print(&mut self, path: &str, prop: Option<&str>, line: usize) -> i32 {
        let Some(b) = self.blob.as_ref() else {
            return 1;
        };
        let res = match b.tree.resolve(path) {
            Err(e) => Err(edit_fail(e)),
            Ok(idx) => match prop {
                Some(p) if b.tree.node_at(&idx).prop(p).is_none() => Err(fail(
                    1,
                    format!("libfdt fdt_getprop(): FDT_ERR_NOTFOUND: no property `{p}` in {path}"),
                )),
                _ => Ok(()),
            },
        };
        match res {
            Ok(()) => 0,
            Err(f) => self.fdt_fail(line, "print", f),
        }
    }

    /// `fdt get value|name|size|addr <var> <path> [<prop>|<index>]`.
    fn fdt_get(&mut self, argv: &[String], line: usize) -> i32 {
        const USAGE: &str = "fdt get <value|name|addr|size> <var> <path> [<prop>|<index>]";
        let n = argv.len();
        if n < 5 || (n < 6 && !argv[2].starts_with('s')) {
            return self.usage(line, USAGE);
        }
        let (sub, var, path) = (argv[2].as_str(), argv[3].as_str(), argv[4].as_str());
        let Some(b) = self.blob.as_ref() else {
            return 1;
        };
        let idx = match b.tree.resolve(path) {
            Ok(i) => i,
            Err(e) => return self.fdt_fail(line, "get", edit_fail(e)),
        };
        let node = b.tree.node_at(&idx);
        enum Get {
            Set(String),
            Unset,
            Fail(Fail),
            Usage,
        }
        let got = if sub.starts_with('n') || (sub.starts_with('s') && n == 5) {
            if sub.starts_with('n') {
                let want = hextoul(&argv[5]).0;
                match usize::try_from(want)
                    .ok()
                    .and_then(|i| node.children.get(i))
                {
                    Some(c) => Get::Set(c.name.clone()),
                    None => Get::Fail(fail(1, "libfdt node not found")),
                }
            } else {
                Get::Set(node.children.len().to_string())
            }
        } else {
            match node.prop(&argv[5]) {
                None => Get::Fail(fail(
                    1,
                    format!(
                        "libfdt fdt_getprop(): FDT_ERR_NOTFOUND: no property `{}` in {path}",
                        argv[5]
                    ),
                )),
                Some([]) => Get::Unset,
                Some(v) if sub.starts_with('v') => match value_for_env(v) {
                    Some(s) => Get::Set(s),
                    None => Get::Fail(fail(1, "error: unprintable value")),
                },
                Some(v) if sub.starts_with('s') => Get::Set(format!("0x{:08X}", v.len())),
                Some(_) if sub.starts_with('a') => Get::Fail(fail(
                    1,
                    "`fdt get addr` gives a memory address, which the pre-flight check does not have",
                )),
                Some(_) => Get::Usage,
            }
        };
        match got {
            Get::Set(v) => i32::from(!self.set_env(var, &v, line)),
            Get::Unset => {
                self.unset_env(var);
                0
            }
            Get::Fail(f) => self.fdt_fail(line, "get", f),
            Get::Usage => self.usage(line, USAGE),
        }
    }

    /// `fdt header [get <var> <member>]`.
    fn fdt_header(&mut self, argv: &[String], line: usize) -> i32 {
        if argv.len() != 5 {
            return 0;
        }
        if !argv[2].starts_with('g') {
            return self.usage(line, "fdt header [get <var> <member>]");
        }
        let value = self.blob.as_ref().and_then(|b| b.header_field(&argv[4]));
        match value {
            Some(v) => i32::from(!self.set_env(&argv[3], &format!("{v:x}"), line)),
            None => {
                self.error(line, format!("fdt header: no header member `{}`", argv[4]));
                1
            }
        }
    }

    /// `fdt rsvmem print|add <addr> <size>|delete <index>`.
    fn fdt_rsvmem(&mut self, argv: &[String], line: usize) -> i32 {
        const USAGE: &str = "fdt rsvmem <print|add <addr> <size>|delete <index>>";
        let n = argv.len();
        let Some(sub) = argv.get(2) else {
            return self.usage(line, USAGE);
        };
        let Some(b) = self.blob.as_mut() else {
            return 1;
        };
        let res = if sub.starts_with('p') {
            Ok(())
        } else if sub.starts_with('a') && n >= 5 {
            b.add_rsv(hextoul(&argv[3]).0, hextoul(&argv[4]).0)
        } else if sub.starts_with('d') && n >= 4 {
            b.del_rsv(hextoul(&argv[3]).0)
        } else {
            return self.usage(line, USAGE);
        };
        match res {
            Ok(()) => 0,
            Err(f) => self.fdt_fail(line, "rsvmem", f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use dtvisor::testing::dtc;
    use std::process::Command;

    const SRC: &str =
        "/dts-v1/;\n/ { #address-cells = <2>; chosen { a = \"1\"; old { x; }; }; };\n";

    /// The same edits through fdtput (libfdt) leave the same strings block
    /// and the same structure size as the model.
    #[test]
    fn space_accounting_matches_libfdt() {
        let blob = dtc(SRC);
        let mut b = Blob::open(&blob, 0x4000_0000).unwrap();
        b.open_into(0x1_0000).unwrap();
        b.mknod("/chosen", "n1").unwrap();
        b.setprop("/chosen", "cells", b"x\0".to_vec()).unwrap(); // a tail of "#address-cells"
        b.setprop("/chosen", "bb", b"yy\0".to_vec()).unwrap();
        b.setprop("/chosen", "a", b"longer value\0".to_vec())
            .unwrap();
        b.delprop("/chosen", "bb").unwrap();
        b.delnode("/chosen/old").unwrap();

        let dir = std::env::temp_dir().join(format!("dtvisor-fdtcmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("b.dtb");
        std::fs::write(&file, &blob).unwrap();
        for args in [
            &["-c", "/chosen/n1"][..],
            &["-t", "s", "/chosen", "cells", "x"],
            &["-t", "s", "/chosen", "bb", "yy"],
            &["-t", "s", "/chosen", "a", "longer value"],
            &["-d", "/chosen", "bb"],
            &["-r", "/chosen/old"],
        ] {
            let st = Command::new("fdtput")
                .arg(&file)
                .args(args)
                .status()
                .unwrap();
            assert!(st.success(), "fdtput {args:?}");
        }
        let theirs = std::fs::read(&file).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let h = |i| be32(&theirs, i);
        assert_eq!(b.size_struct, h(9), "size_dt_struct");
        assert_eq!(b.strings, theirs[h(3) as usize..(h(3) + h(8)) as usize]);
        assert_eq!(b.data_size(), h(3) + h(8));
        assert_eq!(b.tree, Tree::from_fdt(&Fdt::new(&theirs).unwrap()));
    }

    #[test]
    fn no_space_then_resize() {
        let blob = dtc(SRC); // dtc leaves no free space
        let mut b = Blob::open(&blob, 0x4000_0100).unwrap();
        let e = b.mknod("/chosen", "n").err().unwrap();
        assert!(e.msg.contains("FDT_ERR_NOSPACE"), "{}", e.msg);
        assert_eq!(e.rc, 1);
        b.shrink(0);
        // Five reservation entries of slack, then up to the page end (the
        // blob starts 0x100 into its page).
        let expect = ((b.data_size() + 80 + 0x100 + 0xfff) & !0xfff) - 0x100;
        assert_eq!(b.totalsize, expect);
        b.mknod("/chosen", "n").unwrap();
        // Fill the rest exactly: a 12-byte header, the value, a new name.
        let free = b.totalsize - b.data_size();
        let name = "p";
        let len = (free - 12 - 2) as usize & !3;
        b.setprop("/chosen", name, vec![0; len]).unwrap();
        let e = b.setprop("/chosen", "q", vec![]).err().unwrap();
        assert!(e.msg.contains("NOSPACE"));
        // A reservation that does not fit is a negative libfdt error.
        assert_eq!(b.add_rsv(0, 0x1000).err().unwrap().rc, -FDT_ERR_NOSPACE);
    }

    #[test]
    fn fdt_resize_moves_the_blob_reservation() {
        let src = "/dts-v1/;\n/memreserve/ 0x40000000 0x1000;\n/ { };\n";
        let mut b = Blob::open(&dtc(src), 0x4000_0000).unwrap();
        b.open_into(0x2000).unwrap();
        b.shrink(0x10);
        assert_eq!(b.tree.reserved, [(0x4000_0000, b.totalsize)]);
    }

    #[test]
    fn old_or_misordered_blobs_refuse_edits() {
        let mut blob = dtc(SRC);
        blob[23] = 16; // version 16
        let mut b = Blob::open(&blob, 0).unwrap();
        let e = b.delprop("/chosen", "a").err().unwrap();
        assert_eq!(e.rc, -FDT_ERR_BADVERSION);
        // fdt_open_into() upgrades it.
        b.open_into(0x1000).unwrap();
        b.delprop("/chosen", "a").unwrap();
    }

    #[test]
    fn cells_bytes_and_strings() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut d = [0u8; SCRATCHPAD];
        let mut parse = |s: &[&str]| parse_prop(&w(s), &mut d).map(|n| d[..n].to_vec());
        assert_eq!(parse(&["<0x1", "2>"]).unwrap(), [0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            parse(&["<", "010", "0x100000001", ">"]).unwrap(),
            [0, 0, 0, 8, 0, 0, 0, 1]
        );
        assert_eq!(parse(&["<7 8>"]).unwrap(), [0, 0, 0, 7, 0, 0, 0, 8]);
        // `?` keeps what the scratchpad holds (the old value, or leftovers).
        assert_eq!(parse(&["<?", "5>"]).unwrap(), [0, 0, 0, 7, 0, 0, 0, 5]);
        // `09` is octal 0 then decimal 9, as simple_strtoul reads it.
        assert_eq!(parse(&["<09>"]).unwrap(), [0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(parse(&["[00", "1f", "0x2233]"]).unwrap(), [0, 0x1f, 0x33]);
        assert_eq!(parse(&["[0102 ]"]).unwrap(), [2]);
        assert_eq!(parse(&["a", "bc"]).unwrap(), b"a\0bc\0");
        assert_eq!(parse(&[""]).unwrap(), b"\0");
        assert!(parse(&["<1 zz>"])
            .unwrap_err()
            .contains("could not convert \"zz>\""));
        assert!(parse(&["<-1>"]).unwrap_err().contains("could not convert"));
        assert!(parse(&["<1", "2"]).unwrap_err().contains("`>`"));
        assert!(parse(&["[1 2"]).unwrap_err().contains("`]`"));
        assert!(parse(&["[1 x]"])
            .unwrap_err()
            .contains("Unexpected character 'x'"));
        let long = "x".repeat(SCRATCHPAD);
        assert!(parse(&[long.as_str()]).unwrap_err().contains("scratchpad"));
        let many = ["<", &"1 ".repeat(SCRATCHPAD / 4 + 1), ">"].concat();
        assert!(parse(&[many.as_str()]).unwrap_err().contains("scratchpad"));
    }

    #[test]
    fn values_for_env() {
        assert_eq!(value_for_env(b"hello\0").as_deref(), Some("hello"));
        assert_eq!(value_for_env(b"a\0b\0").as_deref(), Some("a"));
        assert_eq!(
            value_for_env(&[0, 0, 0x12, 0x34]).as_deref(),
            Some("0x00001234")
        );
        assert_eq!(
            value_for_env(&[0, 0, 0, 1, 0, 0, 0, 2]).as_deref(),
            Some("0100000002000000")
        );
        assert_eq!(value_for_env(&[1, 2, 3]), None);
        assert!(!is_printable_string(b"a\0\0"));
        assert!(!is_printable_string(b""));
        assert!(is_printable_string(b"line\n"));
    }
}
