//! Half-open physical address ranges `[start, end)`.

use alloc::vec::Vec;
use core::fmt;

/// A half-open range of physical (or guest-physical) addresses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    /// `[start, start + size)`; None if it wraps past 2^64.
    pub fn from_base_size(start: u64, size: u64) -> Option<Range> {
        Some(Range {
            start,
            end: start.checked_add(size)?,
        })
    }

    pub const fn new(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn overlaps(&self, o: &Range) -> bool {
        !self.is_empty() && !o.is_empty() && self.start < o.end && o.start < self.end
    }

    /// Whether `o` lies wholly inside `self`.
    pub fn contains_range(&self, o: &Range) -> bool {
        o.start >= self.start && o.end <= self.end
    }

    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }

    /// The whole 4 KiB pages the range touches (stage 2 maps pages).
    pub fn whole_pages(&self) -> Range {
        Range::new(self.start & !0xfff, self.end.saturating_add(0xfff) & !0xfff)
    }
}

/// Sorted, merged copy of `rs` (empty ranges dropped).
pub fn union(mut rs: Vec<Range>) -> Vec<Range> {
    rs.retain(|r| !r.is_empty());
    rs.sort();
    let mut out: Vec<Range> = Vec::with_capacity(rs.len());
    for r in rs {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `from` minus every range of `minus` (sorted, disjoint result).
pub fn subtract(from: &[Range], minus: &[Range]) -> Vec<Range> {
    let minus = union(minus.to_vec());
    let mut out = Vec::new();
    for f in union(from.to_vec()) {
        let mut at = f.start;
        for m in minus.iter().filter(|m| m.overlaps(&f)) {
            if m.start > at {
                out.push(Range::new(at, m.start));
            }
            at = at.max(m.end);
        }
        if at < f.end {
            out.push(Range::new(at, f.end));
        }
    }
    out
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// Formats a byte count the way the boot plan prints sizes: the largest of
/// GiB/MiB/KiB that divides it exactly, else bytes.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        const K: u64 = 1024;
        if b != 0 && b.is_multiple_of(K * K * K) {
            write!(f, "{} GiB", b / (K * K * K))
        } else if b != 0 && b.is_multiple_of(K * K) {
            write!(f, "{} MiB", b / (K * K))
        } else if b != 0 && b.is_multiple_of(K) {
            write!(f, "{} KiB", b / K)
        } else {
            write!(f, "{b} B")
        }
    }
}

/// An exact byte count, with its size in MiB or KiB for reading:
/// "166831296 B (159.1 MiB)", "6976 B (6.8 KiB)", "512 B".
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{b} B")?;
        if b >= 1 << 20 {
            let tenths = (b * 10 + (1 << 19)) >> 20;
            write!(f, " ({}.{} MiB)", tenths / 10, tenths % 10)
        } else if b >= 1 << 10 {
            let tenths = (b * 10 + (1 << 9)) >> 10;
            write!(f, " ({}.{} KiB)", tenths / 10, tenths % 10)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn bytes_exact_and_readable() {
        assert_eq!(format!("{}", Bytes(512)), "512 B");
        assert_eq!(format!("{}", Bytes(6976)), "6976 B (6.8 KiB)");
        assert_eq!(format!("{}", Bytes(166_831_296)), "166831296 B (159.1 MiB)");
        assert_eq!(format!("{}", Bytes(1 << 20)), "1048576 B (1.0 MiB)");
    }

    #[test]
    fn overlap_rules() {
        let a = Range::new(0x1000, 0x2000);
        assert!(a.overlaps(&Range::new(0x1fff, 0x3000)));
        assert!(!a.overlaps(&Range::new(0x2000, 0x3000)));
        assert!(!a.overlaps(&Range::new(0x1800, 0x1800)));
        assert!(a.contains_range(&Range::new(0x1000, 0x2000)));
        assert!(Range::from_base_size(u64::MAX, 2).is_none());
        assert_eq!(format!("{a}"), "[0x1000, 0x2000)");
        assert_eq!(format!("{}", Size(256 << 20)), "256 MiB");
        assert_eq!(format!("{}", Size(2 << 30)), "2 GiB");
        assert_eq!(format!("{}", Size(12 << 10)), "12 KiB");
        assert_eq!(format!("{}", Size(7)), "7 B");
    }
}
