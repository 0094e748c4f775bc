//! Console timestamps (`console_timestamps=boot`): seconds since the
//! hypervisor started, in Xen's form `[    1.234567]`, put after a line's
//! `(tag) ` ("(dtvisor) ", "(domU1) ") as Xen puts its own after "(XEN) ",
//! or at the start of an untagged line. A byte-stream filter, so every
//! writer of the console gets it without knowing.

/// Longest tag looked for; a longer "(..." is an ordinary line.
const TAG_MAX: usize = 40;

/// One console's line state.
pub struct Stamper {
    buf: [u8; TAG_MAX],
    len: usize,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    /// Inside "(" ... of a possible tag (bytes held in `buf`).
    Tag,
    /// After "(...)": a space completes the tag.
    TagClosed,
    Mid,
}

impl Default for Stamper {
    fn default() -> Self {
        Self::new()
    }
}

/// `[    1.234567] ` for `micros` microseconds.
pub fn format(micros: u64, out: &mut dyn FnMut(u8)) {
    let mut tmp = [0u8; 32];
    let mut w = Writer(&mut tmp, 0);
    let _ = core::fmt::Write::write_fmt(
        &mut w,
        format_args!("[{:5}.{:06}] ", micros / 1_000_000, micros % 1_000_000),
    );
    let n = w.1;
    tmp[..n].iter().for_each(|&b| out(b));
}

struct Writer<'a>(&'a mut [u8; 32], usize);

impl core::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.1 < self.0.len() {
                self.0[self.1] = b;
                self.1 += 1;
            }
        }
        Ok(())
    }
}

impl Stamper {
    pub const fn new() -> Self {
        Stamper {
            buf: [0; TAG_MAX],
            len: 0,
            state: State::LineStart,
        }
    }

    /// Feeds one byte; writes it (and a timestamp where one belongs) to
    /// `out`. `now` gives microseconds since start, read only when a
    /// timestamp is written.
    pub fn push(&mut self, b: u8, now: &dyn Fn() -> u64, out: &mut dyn FnMut(u8)) {
        match self.state {
            State::LineStart if b == b'(' => {
                self.buf[0] = b;
                self.len = 1;
                self.state = State::Tag;
            }
            State::LineStart if b == b'\n' || b == b'\r' => out(b),
            State::LineStart => {
                format(now(), out);
                out(b);
                self.state = State::Mid;
            }
            State::Tag if b == b')' && self.len < TAG_MAX => {
                self.buf[self.len] = b;
                self.len += 1;
                self.state = State::TagClosed;
            }
            State::Tag if b != b' ' && b != b'\n' && b != b'\r' && self.len < TAG_MAX => {
                self.buf[self.len] = b;
                self.len += 1;
            }
            State::TagClosed if b == b' ' => {
                self.flush(out);
                out(b);
                format(now(), out);
                self.state = State::Mid;
            }
            // Not a tag after all: the stamp goes first.
            State::Tag | State::TagClosed => {
                format(now(), out);
                self.flush(out);
                self.state = State::Mid;
                self.push(b, now, out);
            }
            State::Mid => {
                out(b);
                if b == b'\n' {
                    self.state = State::LineStart;
                }
            }
        }
    }

    fn flush(&mut self, out: &mut dyn FnMut(u8)) {
        self.buf[..self.len].iter().for_each(|&b| out(b));
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    fn run(input: &str) -> String {
        let mut s = Stamper::new();
        let mut out = Vec::new();
        let t = core::cell::Cell::new(1_234_567u64);
        let now = || {
            let v = t.get();
            t.set(v + 1);
            v
        };
        for b in input.bytes() {
            s.push(b, &now, &mut |c| out.push(c));
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tagged_lines_get_the_stamp_after_the_tag() {
        assert_eq!(
            run("(dtvisor) domU1: loaded\n(domU1) hello\n"),
            "(dtvisor) [    1.234567] domU1: loaded\n(domU1) [    1.234568] hello\n"
        );
    }

    #[test]
    fn untagged_and_empty_lines() {
        assert_eq!(
            run("dtvisor 0.1 (EL2)\n\n  heap\n"),
            "[    1.234567] dtvisor 0.1 (EL2)\n\n[    1.234568]   heap\n"
        );
    }

    #[test]
    fn parenthesis_that_is_not_a_tag() {
        assert_eq!(run("(not a tag)\n"), "[    1.234567] (not a tag)\n");
        assert_eq!(run("(x)y\n"), "[    1.234567] (x)y\n");
        assert_eq!(run("(\n"), "[    1.234567] (\n");
        let long = std::format!("({}) z\n", "a".repeat(60));
        assert_eq!(run(&long), std::format!("[    1.234567] {long}"));
    }

    #[test]
    fn crlf_line_ends() {
        assert_eq!(
            run("(a) x\r\n(b) y\r\n"),
            "(a) [    1.234567] x\r\n(b) [    1.234568] y\r\n"
        );
    }

    #[test]
    fn format_wide_seconds() {
        let mut out = Vec::new();
        format(123_456_000_001, &mut |b| out.push(b));
        assert_eq!(String::from_utf8(out).unwrap(), "[123456.000001] ");
    }
}
