//! A U-Boot boot-script interpreter for dtvisor's pre-flight check.
//!
//! Dom0less systems are usually booted by a U-Boot script (often written by
//! Xilinx ImageBuilder's `uboot-script-gen`) that loads the images, adds
//! `/chosen/domU*` nodes to the board's DTB with `fdt` commands and ends in
//! `booti`. [`run`] replays such a script on the board's DTB the way U-Boot
//! would, without touching hardware: it records what would be loaded where
//! ([`Loaded`]), the boot command ([`Boot`]), the edited tree, and every
//! command that would fail or that the check cannot follow, with its line.
//! The host tool then feeds the tree to dtvisor's own parser and can map
//! its diagnostics back to script lines with [`Outcome::line_of`].
//!
//! What is modelled (see `parse.rs` for the grammar):
//!
//! * The shell: U-Boot's original hush, line by line; `;`, `&&`, `||`;
//!   quoting and escapes (including its quirks: a backslash before a
//!   newline keeps the newline in the word instead of joining the lines,
//!   and a `'` opens a quote even inside double quotes); `$name`,
//!   `${name}`, `${name:-default}` (also `:=` and U-Boot's inverted `:+`),
//!   `$?`; `name=value` shell variables.
//!   Like hush, a command containing variables is expanded and then parsed
//!   a second time, so values split into words and quote characters in
//!   values count; in that second parse `#` at the start of a word still
//!   starts a comment, which is why `fdt set ${node} \#address-cells <2>`
//!   loses everything from the property name on in U-Boot (and here). An undefined variable
//!   expands to nothing and gives a warning.
//! * The environment: `setenv`, `env set/delete/exists`, `setexpr` (hex
//!   arithmetic, results in hex without `0x`), `run`.
//! * Loading: `load`/`fatload`/`ext4load`/`ext2load` (all forms, with
//!   `bytes` and `pos`), `tftpboot`/`tftpb`/`tftp`, `dhcp`/`bootp` with
//!   arguments. File sizes come from the caller; `filesize` and `fileaddr`
//!   are set as U-Boot sets them (hex, no `0x`), and `filesize` is left
//!   unset when a size is unknown.
//! * `fdt`: every subcommand of `cmd/fdt.c`, matched by prefix in the same
//!   order as U-Boot. Edits follow libfdt (see `dtvisor::fdt::tree`), and the
//!   blob's free space is accounted for like libfdt does (the structure and
//!   strings blocks grow, `fdt resize` is `fdt_shrink_to_minimum()`, `fdt
//!   addr ADDR LEN` is `fdt_open_into()`; like every number there, the
//!   argument of `fdt resize` is hex: ImageBuilder's `fdt resize 1024`
//!   asks for 0x1024 bytes), so a script that runs out of room gets
//!   U-Boot's `FDT_ERR_NOSPACE`. This depends on the header of the DTB
//!   passed in: give the blob as it is in memory (QEMU's `dumpdtb`, or
//!   the file the script loads). `fdt set` values are parsed like
//!   `fdt_parse_prop()`, including `?` cells and U-Boot's 1024-byte
//!   scratchpad; `fdt get` and `fdt header get` set variables; `fdt
//!   rsvmem`, `bootcpu` and `move` change the blob. `fdt apply` is an
//!   error; `fdt chosen`, `memory`, `boardsetup` and `systemsetup` only
//!   warn (board-specific fixups).
//! * `booti`/`bootm`/`bootz`: recorded; nothing after them runs.
//! * Return codes: a failing command does not stop a U-Boot script, but a
//!   command returning less than -1 (`fdt rm` or `fdt rsvmem` passing a
//!   libfdt error through) ends it like `exit`, and so it does here.
//!
//! Ignored: `echo`, `sleep`, `dcache`, `icache`, `usb`, `virtio`, `mmc`,
//! `pci`, `scsi`, `nvme`, `ide`, `sata`, `dhcp`/`bootp` without arguments,
//! `printenv`, `saveenv`, `version`, `bdinfo`, `coninfo`, `ls` and its
//! variants, `true` (`false` fails). `part` only warns. Any other command,
//! and `if`/`for`/`while`/`until` constructs, are errors "not supported by
//! the pre-flight check". Input size, command count, `run` nesting,
//! expansion length and the environment's size are all bounded.

use alloc::borrow::ToOwned;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use dtvisor::fdt::tree::Tree;

mod fdtcmd;
mod parse;
mod scr;
#[cfg(test)]
mod tests;

use parse::{Cmd, Follow, Job, List, Mode, Parser, Step, Word, MARK};
pub use scr::script_of_scr;

/// Longest script accepted (bytes).
pub const MAX_SCRIPT_LEN: usize = 1 << 20;
/// Commands run (including those run by `run`) before the check gives up.
pub const MAX_COMMANDS: usize = 20_000;
/// Longest command line after variable substitution (bytes).
pub const MAX_EXPANDED_LEN: usize = 64 * 1024;
/// Largest environment (bytes of names and values).
pub const MAX_ENV_BYTES: usize = 1 << 20;
/// Deepest nesting of `run`.
pub const MAX_RUN_DEPTH: usize = 8;
/// Errors, and warnings, recorded at most.
pub const MAX_DIAGNOSTICS: usize = 1000;
/// Loads recorded at most.
pub const MAX_LOADS: usize = 1000;
/// Largest working FDT the check edits (real ones are well below 1 MiB).
pub const MAX_FDT_BYTES: u64 = 16 << 20;
/// Characters of a script line quoted in a [`ScriptError`].
const MAX_QUOTED: usize = 200;

/// A file the script loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// 1-based script line.
    pub line: usize,
    pub addr: u64,
    /// The file name as the load command names it (for TFTP without the
    /// `server:` prefix).
    pub file: String,
    /// Bytes loaded (the file size, less `pos`, at most `bytes`), if the
    /// caller knows the file's size.
    pub size: Option<u64>,
}

/// The boot command that ends the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    pub line: usize,
    /// The command after variable substitution, e.g. `booti 0x40400000 - 0x44000000`.
    pub command: String,
    pub kernel: u64,
    pub initrd: Option<u64>,
    pub fdt: Option<u64>,
}

/// A problem found at a script line (0: the script as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    pub line: usize,
    /// That line of the script, trimmed.
    pub text: String,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {} (`{}`)", self.line, self.message, self.text)
        }
    }
}

/// What running a script produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The board DTB as the script left it; `None` if `fdt addr` never
    /// selected it.
    pub tree: Option<Tree>,
    /// Where U-Boot's working FDT was when the script ended.
    pub fdt_addr: Option<u64>,
    pub loads: Vec<Loaded>,
    pub boot: Option<Boot>,
    pub errors: Vec<ScriptError>,
    pub warnings: Vec<ScriptError>,
    /// The environment at the end (U-Boot variables, not shell ones).
    pub env: Vec<(String, String)>,
    node_lines: BTreeMap<String, usize>,
    prop_lines: BTreeMap<(String, String), usize>,
}

impl Outcome {
    /// The script line behind a node or property of [`Outcome::tree`]: for
    /// `prop`, the line that last set (or removed) it; for `None`, or a
    /// property the script never touched, the line that created the node
    /// or its closest ancestor the script created. Paths are resolved like
    /// `fdt` commands resolve them (aliases, names without unit address).
    pub fn line_of(&self, node_path: &str, prop: Option<&str>) -> Option<usize> {
        let path = self
            .tree
            .as_ref()
            .and_then(|t| t.canonical_path(node_path))
            .unwrap_or_else(|| normalize_path(node_path));
        if let Some(p) = prop {
            if let Some(&l) = self.prop_lines.get(&(path.clone(), p.to_string())) {
                return Some(l);
            }
        }
        let mut cur = path.as_str();
        loop {
            if let Some(&l) = self.node_lines.get(cur) {
                return Some(l);
            }
            match cur.rfind('/') {
                Some(0) if cur != "/" => cur = "/",
                Some(i) if i > 0 => cur = &cur[..i],
                _ => return None,
            }
        }
    }
}

fn normalize_path(p: &str) -> String {
    let mut s = String::new();
    for comp in p.split('/').filter(|c| !c.is_empty()) {
        s.push('/');
        s.push_str(comp);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Runs `script` (the text of a `boot.cmd`, or [`script_of_scr`] of a
/// `boot.scr`) against `board_dtb`, the DTB the script's `fdt addr` finds
/// in memory. `file_size` gives the size of a file the script loads, if
/// known; `env` is U-Boot's environment when the script starts (for
/// QEMU's `qemu_arm64`, e.g. `fdt_addr`, `kernel_addr_r`, `devtype`,
/// `devnum`, `loadaddr`). Never panics.
pub fn run(
    script: &str,
    board_dtb: &[u8],
    file_size: &dyn Fn(&str) -> Option<u64>,
    env: &[(&str, &str)],
) -> Outcome {
    let mut it = Interp {
        lines: script.split('\n').take(MAX_SCRIPT_LEN).collect(),
        board: board_dtb,
        file_size,
        env: BTreeMap::new(),
        env_bytes: 0,
        locals: BTreeMap::new(),
        locals_bytes: 0,
        last_rc: 0,
        blob: None,
        scratch: [0; fdtcmd::SCRATCHPAD],
        out: Outcome::default(),
        commands: 0,
        stop: false,
        exit: false,
        booted: false,
        after_boot_noted: false,
        run_depth: 0,
        at: None,
        undefined: BTreeSet::new(),
    };
    for &(k, v) in env {
        it.set_env(k, v, 0);
    }
    if script.len() > MAX_SCRIPT_LEN {
        it.error(
            0,
            format!(
                "the script is {} bytes long; the pre-flight check reads at most {MAX_SCRIPT_LEN}",
                script.len()
            ),
        );
        return it.finish();
    }
    let line_at = |i: usize| script[..i].matches('\n').count() + 1;
    let mut text = script;
    if let Some(i) = script.find('\0') {
        it.warn(
            line_at(i),
            "a NUL character ends the script for U-Boot; the rest is not run",
        );
        text = &script[..i];
    }
    if let Some(i) = text.find(['\u{3}', '\u{4}']) {
        it.error(
            line_at(i),
            "control character U+0003/U+0004, which U-Boot's shell uses internally: \
             the script is not checked",
        );
        return it.finish();
    }
    if let Some(i) = text.find('\r') {
        it.warn(
            line_at(i),
            "carriage return (Windows line ends): U-Boot keeps it as part of the last \
             word of each line",
        );
    }
    it.run_text(text, false);
    it.finish()
}

/// Parses an address argument like U-Boot's `hextoul()`: an optional `0x`,
/// then hex digits, stopping at the first other character. Returns the
/// value (wrapping like C's `unsigned long`) and the bytes used.
pub(crate) fn hextoul(s: &str) -> (u64, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'0') && b.get(1).map(u8::to_ascii_lowercase) == Some(b'x') {
        i = 2;
    }
    digits(b, i, 16)
}

/// U-Boot's `simple_strtoul(s, &end, 0)`: `0x` selects hex, a leading `0`
/// octal, anything else decimal.
pub(crate) fn strtoul_auto(b: &[u8]) -> (u64, usize) {
    match (b.first(), b.get(1).map(u8::to_ascii_lowercase)) {
        (Some(b'0'), Some(b'x')) => digits(b, 2, 16),
        (Some(b'0'), _) => digits(b, 0, 8),
        _ => digits(b, 0, 10),
    }
}

fn digits(b: &[u8], mut i: usize, base: u64) -> (u64, usize) {
    let mut v: u64 = 0;
    while let Some(d) = b.get(i).and_then(|c| (*c as char).to_digit(16)) {
        if u64::from(d) >= base {
            break;
        }
        v = v.wrapping_mul(base).wrapping_add(u64::from(d));
        i += 1;
    }
    (v, i)
}

/// The whole word is a hex number (U-Boot's `*end == '\0'` test).
fn all_hex(s: &str) -> bool {
    hextoul(s).1 == s.len()
}

/// hush's `is_assignment()`: `name=...` with a letter first.
fn is_assignment(s: &str) -> bool {
    let mut c = s.chars();
    if !c.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    for ch in c {
        if ch == '=' {
            return true;
        }
        if !(ch.is_ascii_alphanumeric() || ch == '_') {
            return false;
        }
    }
    false
}

struct Interp<'a> {
    lines: Vec<&'a str>,
    board: &'a [u8],
    file_size: &'a dyn Fn(&str) -> Option<u64>,
    env: BTreeMap<String, String>,
    env_bytes: usize,
    /// hush's own variables (`name=value`), looked up after the environment.
    locals: BTreeMap<String, String>,
    locals_bytes: usize,
    last_rc: i32,
    blob: Option<fdtcmd::Blob>,
    /// cmd/fdt.c's static buffer for `fdt set` values: `?` cells keep what
    /// it holds.
    scratch: [u8; fdtcmd::SCRATCHPAD],
    out: Outcome,
    commands: usize,
    /// Nothing more runs (boot, limits, a syntax error).
    stop: bool,
    /// `exit` (or a return value below -1) ends the text being run.
    exit: bool,
    booted: bool,
    after_boot_noted: bool,
    run_depth: usize,
    /// While `run` runs a variable: the line of the `run`.
    at: Option<usize>,
    undefined: BTreeSet<(usize, String)>,
}

impl Interp<'_> {
    fn finish(mut self) -> Outcome {
        self.out.env = core::mem::take(&mut self.env).into_iter().collect();
        if let Some(b) = self.blob.take() {
            self.out.fdt_addr = Some(b.addr);
            self.out.tree = Some(b.tree);
        }
        self.out
    }

    fn diag(&self, line: usize, message: String) -> ScriptError {
        let text = match line {
            0 => "",
            l => self.lines.get(l - 1).map_or("", |t| t.trim()),
        };
        let text = match text.char_indices().nth(MAX_QUOTED) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text.to_owned(),
        };
        ScriptError {
            line,
            text,
            message,
        }
    }

    fn error(&mut self, line: usize, message: impl Into<String>) {
        if self.out.errors.len() < MAX_DIAGNOSTICS {
            let d = self.diag(line, message.into());
            self.out.errors.push(d);
        }
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        if self.out.warnings.len() < MAX_DIAGNOSTICS {
            let d = self.diag(line, message.into());
            self.out.warnings.push(d);
        }
    }

    /// A usage error: U-Boot prints the command's help and fails.
    fn usage(&mut self, line: usize, usage: &str) -> i32 {
        self.error(line, format!("usage: {usage}"));
        1
    }

    /// The line to report: inside `run`, the `run` itself.
    fn line(&self, l: usize) -> usize {
        self.at.unwrap_or(l)
    }

    fn set_env(&mut self, name: &str, value: &str, line: usize) -> bool {
        let old = self.env.get(name).map_or(0, |v| name.len() + v.len());
        let new = self.env_bytes - old + name.len() + value.len();
        if new > MAX_ENV_BYTES {
            self.error(
                line,
                format!("the environment would exceed {MAX_ENV_BYTES} bytes"),
            );
            return false;
        }
        self.env_bytes = new;
        self.env.insert(name.to_owned(), value.to_owned());
        true
    }

    fn unset_env(&mut self, name: &str) {
        if let Some(v) = self.env.remove(name) {
            self.env_bytes -= name.len() + v.len();
        }
    }

    /// hush's `set_local_var()` for `name=value` (silently ignored unless
    /// the name starts with a letter).
    fn set_local(&mut self, s: &str) {
        if let Some((name, value)) = s.split_once('=') {
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return;
            }
            let old = self.locals.get(name).map_or(0, |v| name.len() + v.len());
            let new = self.locals_bytes - old + name.len() + value.len();
            // Beyond the bound the assignment is dropped, like a failed one.
            if new <= MAX_ENV_BYTES {
                self.locals_bytes = new;
                self.locals.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// Parses and runs `text`: the script (`nested` false) or the value of
    /// a variable given to `run`. Returns the last command's status.
    fn run_text(&mut self, text: &str, nested: bool) -> i32 {
        let mut p = Parser::new(text, Mode::Script, nested);
        while !self.stop && !self.exit {
            match p.next_list() {
                Step::End => break,
                Step::Syntax { line, message } => {
                    let line = self.line(line);
                    if nested {
                        self.error(line, format!("syntax error in the variable run: {message}"));
                        self.last_rc = 1;
                    } else {
                        self.error(
                            line,
                            format!(
                                "syntax error: {message}. After a syntax error in a script \
                                 U-Boot's shell reads from a reset input pointer, so what \
                                 happens next is undefined; the check stops here"
                            ),
                        );
                        self.stop = true;
                    }
                    break;
                }
                Step::List(l) => {
                    for (line, note) in &l.notes {
                        let line = self.line(*line);
                        self.warn(line, note.clone());
                    }
                    self.run_list(&l);
                }
            }
        }
        if self.booted && !self.after_boot_noted {
            while let Step::List(l) = p.next_list() {
                if self.note_after_boot(&l.pipes) {
                    break;
                }
            }
        }
        // `exit` inside `run` ends only the `run`, which then succeeds.
        if nested && self.exit {
            self.exit = false;
            return 0;
        }
        self.last_rc
    }

    /// Warns (once) about commands that come after the boot command.
    fn note_after_boot(&mut self, pipes: &[parse::Pipe]) -> bool {
        let first = pipes.iter().find_map(|p| match &p.job {
            Job::Simple(c) if c.words.is_empty() => None,
            Job::Simple(c) => Some(c.line),
            Job::Compound { line, .. } => Some(*line),
        });
        match first {
            Some(line) if !self.after_boot_noted => {
                self.after_boot_noted = true;
                let line = self.line(line);
                self.warn(
                    line,
                    "this and the following commands are not run: the boot command ends the script",
                );
                true
            }
            _ => false,
        }
    }

    /// hush's `run_list_real()` for one line: `&&` and `||` skip the rest of
    /// the and-or chain up to the next `;` or newline.
    fn run_list(&mut self, l: &List) {
        let mut skip = false;
        for (i, pipe) in l.pipes.iter().enumerate() {
            if self.stop || self.exit {
                if self.booted && !self.after_boot_noted {
                    self.note_after_boot(&l.pipes[i..]);
                }
                return;
            }
            if skip {
                if pipe.follow == Follow::Seq {
                    skip = false;
                }
                continue;
            }
            let (rc, line) = match &pipe.job {
                Job::Compound { keyword, line } => {
                    let line = self.line(*line);
                    let end = if keyword == "if" { "fi" } else { "done" };
                    self.error(
                        line,
                        format!(
                            "`{keyword}` ... `{end}`: conditionals and loops are not supported \
                             by the pre-flight check; nothing inside was run"
                        ),
                    );
                    (1, line)
                }
                Job::Simple(c) if c.words.is_empty() => continue,
                Job::Simple(c) => (self.exec(c), self.line(c.line)),
            };
            if rc < -1 {
                if !self.exit && !self.stop {
                    let rest = if self.run_depth > 0 {
                        "this `run`"
                    } else {
                        "the script"
                    };
                    self.error(
                        line,
                        format!(
                            "U-Boot's shell takes the return value {rc} as `exit`: the rest \
                             of {rest} is not run"
                        ),
                    );
                }
                self.exit = true;
                self.last_rc = -rc - 2;
                continue;
            }
            self.last_rc = i32::from(rc != 0);
            if (rc == 0 && pipe.follow == Follow::Or) || (rc != 0 && pipe.follow == Follow::And) {
                skip = true;
            }
        }
    }

    fn exec(&mut self, c: &Cmd) -> i32 {
        let line = self.line(c.line);
        self.commands += 1;
        if self.commands > MAX_COMMANDS {
            self.error(
                line,
                format!("more than {MAX_COMMANDS} commands run: the check stops here"),
            );
            self.stop = true;
            return 1;
        }
        self.exec_words(&c.words, c.vars, line)
    }

    /// hush's `run_pipe_real()`: assignments, then either the words as
    /// parsed or, if variables were met, the line rebuilt with their values
    /// and parsed again.
    fn exec_words(&mut self, words: &[Word], mut vars: usize, line: usize) -> i32 {
        let assigns = words.iter().take_while(|w| is_assignment(&w.text)).count();
        for w in &words[..assigns] {
            let Some(v) = self.expand(&w.text, line) else {
                return 1;
            };
            self.set_local(&v);
            if w.text.contains(MARK) {
                vars = vars.saturating_sub(1);
            }
        }
        let rest = &words[assigns..];
        if rest.is_empty() {
            return 0;
        }
        if vars > 0 {
            let Some(s) = self.make_string(rest, line) else {
                return 1;
            };
            let mut p = Parser::new(&s, Mode::Reparse, false);
            return match p.next_list() {
                Step::List(l) => {
                    let cmd = l.pipes.iter().find_map(|p| match &p.job {
                        Job::Simple(c) if !c.words.is_empty() => Some(c.words.clone()),
                        _ => None,
                    });
                    match cmd {
                        // The second parse runs as a script of its own: `exit`
                        // and return values below -1 end only that.
                        Some(ws) => {
                            let rc = self.exec_words(&ws, 0, line);
                            self.exit = false;
                            if rc < -1 {
                                -rc - 2
                            } else {
                                i32::from(rc != 0)
                            }
                        }
                        None => self.last_rc,
                    }
                }
                Step::Syntax { message, .. } => {
                    self.error(
                        line,
                        format!(
                            "after variable substitution the command reads `{}`, a syntax \
                             error ({message}): U-Boot does not run it",
                            s.trim_end()
                        ),
                    );
                    self.last_rc
                }
                Step::End => self.last_rc,
            };
        }
        let argv: Vec<String> = rest.iter().map(|w| w.text.clone()).collect();
        if argv[0].contains(';') {
            self.error(line, format!("Unknown command '{}'", argv[0]));
            return 1;
        }
        self.dispatch(&argv, line)
    }

    /// hush's `make_string()`: the words with their variables substituted,
    /// joined by spaces, quoted words inside single quotes.
    fn make_string(&mut self, words: &[Word], line: usize) -> Option<String> {
        let mut s = String::new();
        for (n, w) in words.iter().enumerate() {
            if n > 0 {
                s.push(' ');
            }
            let v = self.expand(&w.text, line)?;
            if w.quoted {
                s.push('\'');
                s.push_str(&v);
                s.push('\'');
            } else {
                s.push_str(&v);
            }
            if s.len() > MAX_EXPANDED_LEN {
                self.error(line, format!("the command is longer than {MAX_EXPANDED_LEN} bytes after variable substitution"));
                return None;
            }
        }
        s.push('\n');
        Some(s)
    }

    /// hush's `insert_var_value_sub()`: replaces each marked reference by
    /// its value; if there was one, newlines become spaces.
    fn expand(&mut self, text: &str, line: usize) -> Option<String> {
        if !text.contains(MARK) {
            return Some(text.to_owned());
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(p) = rest.find(MARK) {
            out.push_str(&rest[..p]);
            let after = &rest[p + MARK.len_utf8()..];
            let Some(q) = after.find(MARK) else {
                rest = after;
                break;
            };
            if let Some(v) = self.lookup(&after[..q], line) {
                out.push_str(&v);
            }
            if out.len() > MAX_EXPANDED_LEN {
                self.error(line, format!("a word is longer than {MAX_EXPANDED_LEN} bytes after variable substitution"));
                return None;
            }
            rest = &after[q + MARK.len_utf8()..];
        }
        out.push_str(rest);
        Some(out.replace('\n', " "))
    }

    /// hush's `lookup_param()`: the environment first, then shell
    /// variables; `name:-default`, `name:=default`, and `name:+word`
    /// (which U-Boot gets backwards: `word` when unset, empty when set).
    fn lookup(&mut self, src: &str, line: usize) -> Option<String> {
        let (name, op, default) = match src.find(':') {
            Some(i) => {
                let op = src[i + 1..]
                    .chars()
                    .next()
                    .filter(|c| matches!(c, '-' | '=' | '+'));
                let default = op.map(|_| &src[i + 2..]);
                (&src[..i], op, default)
            }
            None => (src, None, None),
        };
        let value = if name == "$?" {
            Some(self.last_rc.to_string())
        } else {
            self.env
                .get(name)
                .or_else(|| self.locals.get(name))
                .cloned()
        };
        match value {
            Some(v) if !v.is_empty() => Some(if op == Some('+') { String::new() } else { v }),
            v => {
                if v.is_none() && op.is_none() && self.undefined.len() < MAX_DIAGNOSTICS {
                    let key = (line, name.to_owned());
                    if self.undefined.insert(key) {
                        self.warn(
                            line,
                            format!("`{name}` is not defined: it expands to nothing"),
                        );
                    }
                }
                if op == Some('=') {
                    let set = format!("{name}={}", default.unwrap_or(""));
                    self.set_local(&set);
                }
                match default {
                    Some(d) => Some(d.to_owned()),
                    None => v,
                }
            }
        }
    }

    /// U-Boot's `find_cmd()` ignores a `.suffix` (`setexpr.l`).
    fn dispatch(&mut self, argv: &[String], line: usize) -> i32 {
        let name = argv[0].split('.').next().unwrap_or("");
        match name {
            "setenv" => self.cmd_setenv(&argv[1..], line),
            "env" => self.cmd_env(argv, line),
            "setexpr" => self.cmd_setexpr(argv, line),
            "run" => self.cmd_run(argv, line),
            "load" | "fatload" | "ext4load" | "ext2load" => self.cmd_load(argv, line),
            "tftpboot" | "tftpb" | "tftp" => self.cmd_tftp(argv, line),
            "dhcp" | "bootp" if argv.len() > 1 => self.cmd_tftp(argv, line),
            "fdt" => self.cmd_fdt(argv, line),
            "booti" | "bootm" | "bootz" => self.cmd_boot(argv, line),
            "true" => 0,
            "false" => 1,
            "exit" => {
                self.exit = true;
                -2
            }
            "part" => {
                self.warn(
                    line,
                    "`part` reads partition tables, which the pre-flight check cannot see; \
                     any variable it would set stays as it was",
                );
                0
            }
            "echo" | "sleep" | "dcache" | "icache" | "usb" | "virtio" | "mmc" | "pci" | "scsi"
            | "nvme" | "ide" | "sata" | "dhcp" | "bootp" | "printenv" | "saveenv" | "version"
            | "bdinfo" | "coninfo" | "ls" | "fatls" | "ext2ls" | "ext4ls" | "fstype"
            | "showvar" => 0,
            _ => {
                self.error(
                    line,
                    format!("`{}` is not supported by the pre-flight check", argv[0]),
                );
                1
            }
        }
    }

    /// `setenv [-f] name [value ...]` (cmd/nvedit.c `_do_env_set()`).
    fn cmd_setenv(&mut self, args: &[String], line: usize) -> i32 {
        const USAGE: &str = "setenv [-f] name [value ...]";
        let mut args = args;
        while let Some(opt) = args.first().and_then(|a| a.strip_prefix('-')) {
            if opt.chars().any(|c| c != 'f') {
                return self.usage(line, USAGE);
            }
            args = &args[1..];
        }
        let Some(name) = args.first() else {
            return self.usage(line, USAGE);
        };
        if name.contains('=') {
            self.error(
                line,
                format!("## Error: illegal character '=' in variable name \"{name}\""),
            );
            return 1;
        }
        if args.len() == 1 {
            self.unset_env(name);
            return 0;
        }
        let value = args[1..].join(" ");
        if self.set_env(name, &value, line) {
            0
        } else {
            1
        }
    }

    fn cmd_env(&mut self, argv: &[String], line: usize) -> i32 {
        match argv.get(1).map(String::as_str) {
            Some("set") => self.cmd_setenv(&argv[2..], line),
            Some("delete") => {
                let names: Vec<&String> = argv[2..].iter().filter(|a| *a != "-f").collect();
                if names.is_empty() {
                    return self.usage(line, "env delete [-f] var [...]");
                }
                for n in names {
                    self.unset_env(n);
                }
                0
            }
            Some("exists") => match argv.get(2) {
                Some(n) => i32::from(!self.env.contains_key(n.as_str())),
                None => self.usage(line, "env exists name"),
            },
            Some("print" | "save" | "info") => 0,
            Some(other) => {
                self.error(
                    line,
                    format!("`env {other}` is not supported by the pre-flight check"),
                );
                1
            }
            None => self.usage(line, "env <set|delete|exists|print|save> ..."),
        }
    }

    /// `setexpr[.b|.w|.l|.q] name value` and `setexpr name a <op> b`, the
    /// values hex, the result stored in hex without `0x`.
    fn cmd_setexpr(&mut self, argv: &[String], line: usize) -> i32 {
        const USAGE: &str = "setexpr[.b, .w, .l, .q] name [*]value1 <op> [*]value2";
        let n = argv.len();
        if n < 3 || n == 4 {
            return self.usage(line, USAGE);
        }
        if let Some(size) = argv[0].split('.').nth(1) {
            if !matches!(size, "b" | "w" | "l" | "q") {
                self.error(
                    line,
                    format!("`setexpr.{size}` is not supported by the pre-flight check"),
                );
                return 1;
            }
        }
        if matches!(argv[2].as_str(), "sub" | "gsub" | "fmt") {
            self.error(
                line,
                format!(
                    "`setexpr {}` is not supported by the pre-flight check",
                    argv[2]
                ),
            );
            return 1;
        }
        if argv[2].starts_with('*') || argv.get(4).is_some_and(|v| v.starts_with('*')) {
            self.error(
                line,
                "`setexpr` reading memory (`*addr`) is not supported by the pre-flight check",
            );
            return 1;
        }
        let a = hextoul(&argv[2]).0;
        let value = if n == 3 {
            a
        } else {
            if n != 5 || argv[3].chars().count() != 1 {
                return self.usage(line, USAGE);
            }
            let b = hextoul(&argv[4]).0;
            match argv[3].as_str() {
                "|" => a | b,
                "&" => a & b,
                "+" => a.wrapping_add(b),
                "^" => a ^ b,
                "-" => a.wrapping_sub(b),
                "*" => a.wrapping_mul(b),
                "/" | "%" if b == 0 => {
                    self.warn(line, "division by zero: on AArch64 U-Boot computes 0");
                    0
                }
                "/" => a / b,
                "%" => a % b,
                _ => {
                    self.error(line, "invalid op");
                    return 1;
                }
            }
        };
        i32::from(!self.set_env(&argv[1], &format!("{value:x}"), line))
    }

    /// `run var ...`: runs each variable's value as commands.
    fn cmd_run(&mut self, argv: &[String], line: usize) -> i32 {
        if argv.len() < 2 {
            return self.usage(line, "run var [...]");
        }
        for name in &argv[1..] {
            let Some(text) = self.env.get(name.as_str()).cloned() else {
                self.error(line, format!("## Error: \"{name}\" not defined"));
                return 1;
            };
            if self.run_depth >= MAX_RUN_DEPTH {
                self.error(
                    line,
                    format!("`run` nested more than {MAX_RUN_DEPTH} deep: not followed further"),
                );
                return 1;
            }
            self.run_depth += 1;
            let saved = self.at.replace(line);
            let rc = self.run_text(&text, true);
            self.at = saved;
            self.run_depth -= 1;
            if rc != 0 {
                return 1;
            }
            if self.stop {
                break;
            }
        }
        0
    }

    fn loadaddr(&mut self, line: usize) -> Option<u64> {
        match self.env.get("loadaddr") {
            Some(v) => Some(hextoul(v).0),
            None => {
                self.error(
                    line,
                    "no load address given and `loadaddr` is not set (U-Boot would use \
                     its CONFIG_SYS_LOAD_ADDR, which the pre-flight check does not know)",
                );
                None
            }
        }
    }

    fn bootfile(&mut self, line: usize) -> Option<String> {
        let f = self.env.get("bootfile").cloned();
        if f.is_none() {
            self.error(
                line,
                "no file name given and `bootfile` is not set (** No boot file defined **)",
            );
        }
        f
    }

    /// `load <interface> [<dev[:part]> [<addr> [<filename> [bytes [pos]]]]]`
    /// (fs/fs.c `do_load()`), the same for `fatload`, `ext4load`,
    /// `ext2load`; and the newer `load <addr> <path> [bytes [pos]]`.
    fn cmd_load(&mut self, argv: &[String], line: usize) -> i32 {
        const USAGE: &str = "load <interface> [<dev[:part]> [<addr> [<filename> [bytes [pos]]]]]";
        let n = argv.len();
        if argv[0] == "load" && n >= 2 && all_hex(&argv[1]) {
            if !(3..=5).contains(&n) {
                return self.usage(line, "load <addr> <path> [bytes [pos]]");
            }
            let addr = hextoul(&argv[1]).0;
            let bytes = argv.get(3).map_or(0, |s| hextoul(s).0);
            let pos = argv.get(4).map_or(0, |s| hextoul(s).0);
            return self.do_load(line, addr, argv[2].clone(), bytes, pos);
        }
        if !(2..=7).contains(&n) {
            return self.usage(line, USAGE);
        }
        let addr = if n >= 4 {
            if argv[3].is_empty() || !all_hex(&argv[3]) {
                let usage = format!("{USAGE} (`{}` is not a hex address)", argv[3]);
                return self.usage(line, &usage);
            }
            hextoul(&argv[3]).0
        } else {
            match self.loadaddr(line) {
                Some(a) => a,
                None => return 1,
            }
        };
        let file = if n >= 5 {
            argv[4].clone()
        } else {
            match self.bootfile(line) {
                Some(f) => f,
                None => return 1,
            }
        };
        let bytes = argv.get(5).map_or(0, |s| hextoul(s).0);
        let pos = argv.get(6).map_or(0, |s| hextoul(s).0);
        self.do_load(line, addr, file, bytes, pos)
    }

    /// `tftpboot [loadAddress] [[hostIPaddr:]bootfilename]` (net/net.c
    /// `netboot_common()`); `dhcp` and `bootp` take the same arguments.
    fn cmd_tftp(&mut self, argv: &[String], line: usize) -> i32 {
        let (addr, file) = match argv.len() {
            1 => (self.loadaddr(line), self.bootfile(line)),
            2 if all_hex(&argv[1]) => (Some(hextoul(&argv[1]).0), self.bootfile(line)),
            2 => (self.loadaddr(line), Some(argv[1].clone())),
            3 => (Some(hextoul(&argv[1]).0), Some(argv[2].clone())),
            _ => {
                let usage = format!("{} [loadAddress] [[hostIPaddr:]bootfilename]", argv[0]);
                return self.usage(line, &usage);
            }
        };
        let (Some(addr), Some(file)) = (addr, file) else {
            return 1;
        };
        // A `server:` prefix names the TFTP server, not the file.
        let file = match file.split_once(':') {
            Some((_, f)) => f.to_owned(),
            None => file,
        };
        self.do_load(line, addr, file, 0, 0)
    }

    fn do_load(&mut self, line: usize, addr: u64, file: String, bytes: u64, pos: u64) -> i32 {
        let size = (self.file_size)(&file);
        if size.is_some_and(|s| pos > s) {
            self.warn(
                line,
                format!("position 0x{pos:x} is beyond the end of `{file}`"),
            );
        }
        let len = size.map(|s| {
            let avail = s.saturating_sub(pos);
            if bytes != 0 {
                bytes.min(avail)
            } else {
                avail
            }
        });
        if self.out.loads.len() >= MAX_LOADS {
            self.error(line, format!("more than {MAX_LOADS} loads: not recorded"));
            return 1;
        }
        if let Some(l) = len.filter(|&l| l > 0) {
            let end = addr.saturating_add(l);
            let mut clashes = Vec::new();
            for prev in &self.out.loads {
                if let Some(pl) = prev.size.filter(|&pl| pl > 0) {
                    if addr < prev.addr.saturating_add(pl) && prev.addr < end {
                        clashes.push(format!(
                            "`{file}` (0x{addr:x}..0x{end:x}) overlaps `{}` loaded at line {} \
                             (0x{:x}..0x{:x})",
                            prev.file,
                            prev.line,
                            prev.addr,
                            prev.addr.saturating_add(pl)
                        ));
                    }
                }
            }
            if let Some(b) = &self.blob {
                let fdt_end = b.addr.saturating_add(b.totalsize);
                if addr < fdt_end && b.addr < end {
                    clashes.push(format!(
                        "`{file}` (0x{addr:x}..0x{end:x}) overwrites the working FDT at \
                         0x{:x}: U-Boot loses the edits made so far (the check keeps them)",
                        b.addr
                    ));
                }
            }
            for c in clashes {
                self.warn(line, c);
            }
        }
        self.out.loads.push(Loaded {
            line,
            addr,
            file,
            size: len,
        });
        self.set_env("fileaddr", &format!("{addr:x}"), line);
        match len {
            Some(l) => {
                self.set_env("filesize", &format!("{l:x}"), line);
            }
            None => self.unset_env("filesize"),
        }
        0
    }

    /// An address argument of a boot command; warns where U-Boot's
    /// `hextoul()` would silently read something else.
    fn boot_addr(&mut self, s: &str, line: usize, fit: bool) -> u64 {
        let (v, used) = hextoul(s);
        let rest = &s[used..];
        let fit_suffix = fit && (rest.starts_with('#') || rest.starts_with(':'));
        if used == 0 || (!rest.is_empty() && !fit_suffix) {
            self.warn(
                line,
                format!("`{s}` is not a hex address: U-Boot reads it as 0x{v:x}"),
            );
        }
        v
    }

    /// `booti`/`bootz`/`bootm [addr [initrd[:size]|-] [fdt]]`.
    fn cmd_boot(&mut self, argv: &[String], line: usize) -> i32 {
        let fit = argv[0] == "bootm";
        let kernel = match argv.get(1) {
            Some(k) => self.boot_addr(k, line, fit),
            None => match self.loadaddr(line) {
                Some(a) => a,
                None => return 1,
            },
        };
        let initrd = match argv.get(2).map(String::as_str) {
            None | Some("-") => None,
            Some(r) => {
                let addr = r.split(':').next().unwrap_or("");
                Some(self.boot_addr(addr, line, fit))
            }
        };
        let fdt = argv.get(3).map(|f| self.boot_addr(f, line, fit));
        if argv.len() > 4 {
            self.warn(line, "arguments after the device tree address are ignored");
        }
        match (fdt, self.blob.as_ref().map(|b| b.addr)) {
            (None, _) => self.warn(
                line,
                "no device tree address: U-Boot does not pass the edited device tree \
                 (it may fall back to one the pre-flight check cannot see)",
            ),
            (Some(f), Some(w)) if f != w => self.warn(
                line,
                format!(
                    "boots with the device tree at 0x{f:x}, but the script edited the one \
                     at 0x{w:x}"
                ),
            ),
            _ => {}
        }
        if let Some(args) = self.env.get("bootargs").cloned() {
            self.warn(
                line,
                format!(
                    "U-Boot writes `bootargs` (\"{args}\") to /chosen/bootargs when it \
                     boots; the checked tree does not include that"
                ),
            );
        }
        self.out.boot = Some(Boot {
            line,
            command: argv.join(" "),
            kernel,
            initrd,
            fdt,
        });
        self.booted = true;
        self.stop = true;
        0
    }
}
