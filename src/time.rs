//! Time since the hypervisor's entry, by the system counter.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counter value at hypervisor entry (entry.S reads it first thing).
static T_ENTRY: AtomicU64 = AtomicU64::new(0);

/// Records the counter value at entry.
pub fn set_entry(t: u64) {
    T_ENTRY.store(t, Ordering::Relaxed);
}

/// Counter ticks to microseconds.
pub fn micros(ticks: u64) -> u64 {
    ticks * 1_000_000 / crate::arch::counter_freq().max(1)
}

/// Counter value at hypervisor entry.
pub fn t_entry() -> u64 {
    T_ENTRY.load(Ordering::Relaxed)
}
