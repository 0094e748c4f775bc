//! The shared physical console as guests see it, portable: who gets the
//! input (Ctrl-a three times moves the focus, a powered-off domain loses
//! it), what happens to bytes a domain cannot take (dropped and counted,
//! one report per burst), and what of a guest's output reaches the
//! terminal (printable text, tabs; never control or escape sequences).
//!
//! The image keeps one `Input` behind the console's receive side, so only
//! one CPU steps it at a time, and asks it what to do with each byte.

use core::fmt;

/// The byte that, three times in a row, moves the focus (Ctrl-a).
pub const CTRL_A: u8 = 0x01;

/// What to do with one byte of console input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing (a Ctrl-a of a sequence not yet complete).
    Nothing,
    /// The third Ctrl-a: the focus moved to `to` (None: the hypervisor).
    Focus { to: Option<usize> },
    /// The focused domain (index) went off: the focus moved on to `to`,
    /// and the byte, typed for the domain that is gone, is dropped.
    Lost { from: usize, to: Option<usize> },
    /// Give the byte to domain `dom` (index).
    Deliver { dom: usize, byte: u8 },
    /// The focus is on the hypervisor: the byte is for it.
    Hypervisor(u8),
}

/// The console's input focus and Ctrl-a counter, plus the drop report of
/// the current burst. `takes_input(d)`: domain `d` has a console and is
/// not powered off.
#[derive(Debug, Default)]
pub struct Input {
    /// 0 = the hypervisor, d + 1 = domain d.
    focus: usize,
    ctrl_a: u8,
    /// The domain whose bytes are being dropped, and how many so far.
    dropped: Option<(usize, u32)>,
}

/// What the image reports after a byte was dropped or a burst ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReport {
    /// The first byte of a burst was dropped: say so once.
    Started,
    /// Another byte of the same burst: say nothing.
    Counted,
}

impl Input {
    pub const fn new() -> Self {
        Input {
            focus: 0,
            ctrl_a: 0,
            dropped: None,
        }
    }

    /// The focused domain (None: the hypervisor).
    pub fn focus(&self) -> Option<usize> {
        self.focus.checked_sub(1)
    }

    /// One byte of input, with `n` domains.
    pub fn byte(&mut self, b: u8, n: usize, takes_input: impl Fn(usize) -> bool) -> Step {
        if b == CTRL_A {
            self.ctrl_a += 1;
            if self.ctrl_a < 3 {
                return Step::Nothing;
            }
            self.ctrl_a = 0;
            return Step::Focus {
                to: self.next(n, takes_input),
            };
        }
        self.ctrl_a = 0;
        match self.focus() {
            None => Step::Hypervisor(b),
            Some(d) if takes_input(d) => Step::Deliver { dom: d, byte: b },
            Some(d) => Step::Lost {
                from: d,
                to: self.next(n, takes_input),
            },
        }
    }

    /// Moves the focus on: the hypervisor, then each domain that takes
    /// input, in order, skipping those that do not.
    pub fn next(&mut self, n: usize, takes_input: impl Fn(usize) -> bool) -> Option<usize> {
        let mut f = self.focus;
        loop {
            f = (f + 1) % (n + 1);
            if f == 0 || takes_input(f - 1) {
                break;
            }
        }
        self.focus = f;
        self.focus()
    }

    /// A byte for domain `dom` could not be given to it (its receive
    /// FIFO is full). A burst is the drops of one domain in a row.
    pub fn dropped(&mut self, dom: usize) -> DropReport {
        match &mut self.dropped {
            Some((d, n)) if *d == dom => {
                *n = n.saturating_add(1);
                DropReport::Counted
            }
            _ => {
                self.dropped = Some((dom, 1));
                DropReport::Started
            }
        }
    }

    /// A byte was delivered or the focus moved: the burst of drops, if
    /// there was one, is over. Some((domain, bytes dropped in it)).
    pub fn burst_over(&mut self) -> Option<(usize, u32)> {
        self.dropped.take()
    }
}

/// One domain's console output waiting for the shared UART: whole lines,
/// in order, in a fixed ring (no allocation once built). A vCPU that ends
/// a line queues it and goes back to its guest; whichever CPU holds the
/// UART writes queued lines, a line of each domain in turn.
pub struct LineQueue<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
    lines: usize,
}

impl<const N: usize> Default for LineQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineQueue<N> {
    pub const fn new() -> Self {
        LineQueue {
            buf: [0; N],
            head: 0,
            len: 0,
            lines: 0,
        }
    }

    /// Whole lines waiting.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Queues `line` (without its newline; a newline inside it ends a
    /// line there). False, queuing nothing, if it does not fit.
    pub fn push(&mut self, line: &[u8]) -> bool {
        if line.len() + 1 > N - self.len {
            return false;
        }
        for &b in line.iter().chain(core::iter::once(&b'\n')) {
            self.buf[(self.head + self.len) % N] = b;
            self.len += 1;
            if b == b'\n' {
                self.lines += 1;
            }
        }
        true
    }

    /// Takes the oldest line (without its newline) into `out`: its length,
    /// None if no line waits. A line longer than `out` is cut there (the
    /// rest is dropped with it).
    pub fn pop(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.lines == 0 {
            return None;
        }
        let mut n = 0;
        loop {
            let b = self.buf[self.head];
            self.head = (self.head + 1) % N;
            self.len -= 1;
            if b == b'\n' {
                self.lines -= 1;
                return Some(n);
            }
            if n < out.len() {
                out[n] = b;
                n += 1;
            }
        }
    }
}

/// A guest's console output as the terminal may show it: printable
/// characters (UTF-8 text) and tabs as they are; every control character
/// (ESC, CSI, backspace, carriage return, bell, C1 controls ...) in caret
/// or hex notation, so no guest can move the cursor, rewrite the screen or
/// start a line that looks like another domain's or the hypervisor's; bytes
/// that are not UTF-8 as `\xNN`.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let text = chunk.valid();
            let mut start = 0;
            for (i, c) in text.char_indices() {
                if c == '\t' || !c.is_control() {
                    continue;
                }
                f.write_str(&text[start..i])?;
                start = i + c.len_utf8();
                match c as u32 {
                    0x7f => f.write_str("^?")?,
                    n @ 0..=0x1f => {
                        f.write_str("^")?;
                        fmt::Write::write_char(f, char::from(b'@' + n as u8))?;
                    }
                    n => write!(f, "\\u{{{n:x}}}")?,
                }
            }
            f.write_str(&text[start..])?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    fn all(_: usize) -> bool {
        true
    }

    #[test]
    fn three_ctrl_a_cycle_through_hypervisor_and_domains() {
        let mut i = Input::new();
        assert_eq!(i.byte(CTRL_A, 2, all), Step::Nothing);
        assert_eq!(i.byte(CTRL_A, 2, all), Step::Nothing);
        assert_eq!(i.byte(CTRL_A, 2, all), Step::Focus { to: Some(0) });
        assert_eq!(i.byte(b'x', 2, all), Step::Deliver { dom: 0, byte: b'x' });
        for _ in 0..3 {
            i.byte(CTRL_A, 2, all);
        }
        assert_eq!(i.focus(), Some(1));
        for _ in 0..3 {
            i.byte(CTRL_A, 2, all);
        }
        assert_eq!(i.focus(), None);
        assert_eq!(i.byte(b'\r', 2, all), Step::Hypervisor(b'\r'));
    }

    #[test]
    fn another_byte_resets_the_ctrl_a_count() {
        let mut i = Input::new();
        i.byte(CTRL_A, 1, all);
        i.byte(CTRL_A, 1, all);
        assert_eq!(i.byte(b'a', 1, all), Step::Hypervisor(b'a'));
        assert_eq!(i.byte(CTRL_A, 1, all), Step::Nothing);
        assert_eq!(i.focus(), None);
    }

    #[test]
    fn the_focus_skips_domains_without_input() {
        let mut i = Input::new();
        let takes = |d: usize| d == 2;
        assert_eq!(i.next(3, takes), Some(2));
        assert_eq!(i.next(3, takes), None);
        // No domain takes input: the focus stays on the hypervisor.
        assert_eq!(i.next(3, |_| false), None);
        assert_eq!(i.next(0, all), None);
    }

    #[test]
    fn a_focused_domain_that_goes_off_loses_the_focus_and_the_byte() {
        let mut i = Input::new();
        i.next(2, all);
        assert_eq!(i.focus(), Some(0));
        let off0 = |d: usize| d != 0;
        assert_eq!(
            i.byte(b'x', 2, off0),
            Step::Lost {
                from: 0,
                to: Some(1)
            }
        );
        assert_eq!(i.byte(b'y', 2, off0), Step::Deliver { dom: 1, byte: b'y' });
        // Ctrl-a still works whatever the domains do.
        for _ in 0..2 {
            assert_eq!(i.byte(CTRL_A, 2, |_| false), Step::Nothing);
        }
        assert_eq!(i.byte(CTRL_A, 2, |_| false), Step::Focus { to: None });
    }

    #[test]
    fn drops_are_reported_once_per_burst() {
        let mut i = Input::new();
        assert_eq!(i.burst_over(), None);
        assert_eq!(i.dropped(1), DropReport::Started);
        for _ in 0..79 {
            assert_eq!(i.dropped(1), DropReport::Counted);
        }
        // The focus moving on does not change whose bytes were dropped.
        i.next(2, all);
        assert_eq!(i.burst_over(), Some((1, 80)));
        assert_eq!(i.burst_over(), None);
        assert_eq!(i.dropped(1), DropReport::Started);
        // Another domain's drop starts a burst of its own.
        assert_eq!(i.dropped(0), DropReport::Started);
        assert_eq!(i.burst_over(), Some((0, 1)));
    }

    fn popped<const N: usize>(q: &mut LineQueue<N>) -> Option<std::vec::Vec<u8>> {
        let mut out = [0u8; 64];
        q.pop(&mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn lines_come_out_whole_and_in_order() {
        let mut q = LineQueue::<32>::new();
        assert!(q.push(b"first"));
        assert!(q.push(b""));
        assert!(q.push(b"third"));
        assert_eq!(q.lines(), 3);
        assert_eq!(popped(&mut q).as_deref(), Some(&b"first"[..]));
        assert_eq!(popped(&mut q).as_deref(), Some(&b""[..]));
        assert_eq!(popped(&mut q).as_deref(), Some(&b"third"[..]));
        assert_eq!(popped(&mut q), None);
    }

    #[test]
    fn a_full_queue_refuses_a_line_whole_and_wraps_around() {
        let mut q = LineQueue::<16>::new();
        assert!(q.push(b"0123456789")); // 11 bytes with the newline
        assert!(!q.push(b"abcde"), "6 bytes do not fit in 5");
        assert!(q.push(b"abcd"));
        assert!(!q.push(b""));
        assert_eq!(popped(&mut q).as_deref(), Some(&b"0123456789"[..]));
        // Wraps around the end of the ring.
        assert!(q.push(b"wrap-me"));
        assert_eq!(popped(&mut q).as_deref(), Some(&b"abcd"[..]));
        assert_eq!(popped(&mut q).as_deref(), Some(&b"wrap-me"[..]));
        assert_eq!(q.lines(), 0);
    }

    #[test]
    fn a_line_longer_than_the_reader_is_cut_not_merged() {
        let mut q = LineQueue::<128>::new();
        assert!(q.push(&[b'x'; 100]));
        assert!(q.push(b"next"));
        let mut small = [0u8; 10];
        assert_eq!(q.pop(&mut small), Some(10));
        assert_eq!(popped(&mut q).as_deref(), Some(&b"next"[..]));
    }

    fn shown(b: &[u8]) -> std::string::String {
        Printable(b).to_string()
    }

    #[test]
    fn printable_text_and_tabs_pass_unchanged() {
        assert_eq!(shown(b"hello\tworld # 42"), "hello\tworld # 42");
        assert_eq!(shown("caf\u{e9} \u{2713}".as_bytes()), "caf\u{e9} \u{2713}");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        // Clear screen, cursor home, a fake hypervisor line after a CR.
        assert_eq!(
            shown(b"\x1b[2J\x1b[H\r(dtvisor) fake"),
            "^[[2J^[[H^M(dtvisor) fake"
        );
        assert_eq!(shown(b"a\x08\x07\x7f\x00"), "a^H^G^?^@");
        // C1 CSI (U+009B) as UTF-8, and a raw 0x9b byte (not UTF-8).
        assert_eq!(shown("x\u{9b}2J".as_bytes()), "x\\u{9b}2J");
        assert_eq!(shown(b"x\x9b2J"), "x\\x9b2J");
    }

    #[test]
    fn nothing_shown_contains_a_control_character_but_tab() {
        let bytes: std::vec::Vec<u8> = (0..=255u8).collect();
        let s = shown(&bytes);
        assert!(s.chars().all(|c| c == '\t' || !c.is_control()), "{s:?}");
    }
}
