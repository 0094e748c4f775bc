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

/// Makes table writes visible to the walkers of all CPUs (after a new
/// mapping where there was none, or the "make" of break-before-make),
/// and drops the combined stage-1+2 entries of the current VMID: they
/// may hold the old output address (TLBI by IPA does not reach them).
pub fn tables_updated() {
    // SAFETY: barriers and TLB invalidation have no memory effects.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalle1is", "dsb ish", "isb") };
}

/// The "break" of break-before-make for one page: its stage-2 entry was
/// made invalid; every CPU forgets the old translation of `ipa` for the
/// current VMID (VTTBR_EL2: the trapping vCPU's domain).
pub fn invalidate_ipa(ipa: u64) {
    // SAFETY: as above; the operand is IPA[47:12].
    unsafe { core::arch::asm!("dsb ishst", "tlbi ipas2e1is, {}", "dsb ish", in(reg) ipa >> 12) };
}

/// Every stage-1 and stage-2 translation of the current VMID, on all CPUs.
pub fn invalidate_vmid() {
    // SAFETY: as above.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb") };
}
