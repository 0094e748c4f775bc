//! The image's side of stage 2: table pages from the heap (RAM is
//! identity mapped, so a page's address is its physical address) and the
//! CPU's physical address size. The tables themselves are built by the
//! portable `dtvisor::mm::stage2`.

use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
use alloc::alloc::{alloc_zeroed, Layout};
use core::ptr::NonNull;
use dtvisor::mm::stage2::{self, PageSource};

/// Table pages from the hypervisor heap.
pub struct HeapPages;

impl PageSource for HeapPages {
    fn zeroed_page(&mut self) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: a non-zero-sized layout; the page lives as long as the domain.
        NonNull::new(unsafe { alloc_zeroed(layout) })
    }
}

/// VTCR_EL2 for this CPU.
pub fn vtcr() -> u64 {
    stage2::vtcr(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange))
}
