//! Rate limits for what a guest can make the hypervisor log: a guest that
//! faults or calls unknown functions in a loop must not flood the shared
//! console (and so slow every other domain that prints), but its first
//! events and how many there were in all must still be seen.

use core::sync::atomic::{AtomicU32, Ordering};

/// Counts events of one kind; a log line is due for the first ten, then
/// for every power of two (so a million events log about 30 lines).
pub struct LogLimit(AtomicU32);

impl LogLimit {
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Counts one event: Some(its number, from 1) when a line is due.
    pub fn due(&self) -> Option<u32> {
        let n = self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        (n <= 10 || n.is_power_of_two()).then_some(n)
    }

    /// Events counted so far.
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ten_then_powers_of_two() {
        let l = LogLimit::new();
        let due: Vec<u32> = (0..5000).filter_map(|_| l.due()).collect();
        let mut want: Vec<u32> = (1..=10).collect();
        want.extend([16, 32, 64, 128, 256, 512, 1024, 2048, 4096]);
        assert_eq!(due, want);
        assert_eq!(l.count(), 5000);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let l = LogLimit(AtomicU32::new(u32::MAX - 1));
        assert_eq!(l.due(), None); // u32::MAX: not a power of two
        assert_eq!(l.due(), None); // the add wraps the counter, not the number
        assert!(l.count() < 10);
        // After the wrap it logs again from the start: never a panic.
        assert!(l.due().is_some());
    }
}
