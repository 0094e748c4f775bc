//! The hypervisor's heap: a buddy allocator over RAM nothing else uses,
//! grown from the RAM placement leaves free, with its high-water mark
//! kept for the boot report.

use crate::arch::Mutex;
use buddy_system_allocator::LockedHeapWithRescue;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use dtvisor::mm::Range;

static HEAP: LockedHeapWithRescue<32> = LockedHeapWithRescue::new(grow_heap);

/// RAM nothing uses once the domains are placed: where the heap grows
/// when it runs out (empty before placement, so the heap never takes RAM
/// a guest is about to get).
static SPARE: Mutex<[Range; 32]> = Mutex::new([Range::new(0, 0); 32]);

/// Smallest step the heap grows by.
const GROW_STEP: u64 = 256 << 10;

/// Hands RAM that placement left free to the heap's reserve.
pub fn donate_free(free: &[Range]) {
    {
        let mut spare = SPARE.lock();
        for (slot, r) in spare
            .iter_mut()
            .zip(free.iter().filter(|r| r.size() >= GROW_STEP))
        {
            *slot = *r;
        }
    }
    if SELFTEST_HEAP.load(Ordering::Relaxed) {
        // dtvisor.selftest=heap-grow: more than the whole heap at once.
        let (_, _, before) = heap_stats();
        let v: alloc::vec::Vec<u8> = alloc::vec![1; before as usize + (1 << 20)];
        let (_, _, after) = heap_stats();
        log::info!(
            "dtvisor.selftest=heap-grow: the heap grew from {before} B to {after} B for {} B",
            v.len()
        );
    }
}

/// `dtvisor.selftest=heap-grow` (tests only).
static SELFTEST_HEAP: AtomicBool = AtomicBool::new(false);

/// `dtvisor.selftest=heap-grow`: the first donation allocates more than
/// the whole heap at once (a QEMU test checks that the heap grows).
pub fn set_selftest(on: bool) {
    SELFTEST_HEAP.store(on, Ordering::Relaxed);
}

/// The allocator's rescue (it holds the heap lock; nothing here allocates).
fn grow_heap(heap: &mut buddy_system_allocator::Heap<32>, layout: &core::alloc::Layout) {
    let want = (layout.size().max(layout.align()) as u64)
        .next_power_of_two()
        .saturating_mul(2)
        .max(GROW_STEP);
    let mut spare = SPARE.lock();
    for r in spare.iter_mut() {
        let start = r.start.next_multiple_of(want.min(2 << 20));
        if start.checked_add(want).is_some_and(|e| e <= r.end) {
            // SAFETY: free RAM placement gave to no one (see SPARE), identity
            // mapped Normal, handed to the heap once (cut from the reserve).
            unsafe { heap.add_to_heap(start as usize, (start + want) as usize) };
            r.start = start + want;
            return;
        }
    }
}

/// The heap with its high-water mark kept (for the boot log's memory
/// figures): allocation goes to HEAP.
struct Tracked;

static PEAK: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to HEAP, a correct allocator; only reads its statistics.
unsafe impl core::alloc::GlobalAlloc for Tracked {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        crate::arch::exception::count_allocation(layout.size());
        // SAFETY: the caller's contract is HEAP's.
        let p = unsafe { core::alloc::GlobalAlloc::alloc(&HEAP, layout) };
        let used = HEAP.lock().stats_alloc_actual() as u64;
        PEAK.fetch_max(used, Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: as above.
        unsafe { core::alloc::GlobalAlloc::dealloc(&HEAP, ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Tracked = Tracked;

/// Heap bytes: (in use now, most ever in use, size).
pub fn heap_stats() -> (u64, u64, u64) {
    let h = HEAP.lock();
    let used = h.stats_alloc_actual() as u64;
    (
        used,
        PEAK.load(Ordering::Relaxed).max(used),
        h.stats_total_bytes() as u64,
    )
}

/// The heap: `size` bytes at `start` (the image's, or the EFI stub's
/// from the firmware: the image's own heap replaces it once the image
/// runs, BSS being zeroed again at its entry).
///
/// # Safety
/// `start..start + size` is RAM used by nothing else while the stub runs.
pub unsafe fn init_at(start: u64, size: usize) {
    // SAFETY: the caller's promise.
    unsafe { HEAP.lock().init(start as usize, size) };
}
