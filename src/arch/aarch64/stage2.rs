//! Stage-2 translation for a domain, built with `aarch64-paging`'s Stage2
//! regime: 4K granule, 39-bit guest-physical space (start level 1, one
//! root table: room for Xen's RAM0 and 504 GiB of RAM1), output size from
//! ID_AA64MMFR0_EL1.PARange. Guest RAM is Normal write-back, inner
//! shareable, read-write; block mappings (1 GiB, 2 MiB) wherever both sides
//! are aligned; nothing else is mapped, so every other access traps.

use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::{
    Constraints, MemoryRegion, PageTable, RootTable, Stage2, Translation,
};
use alloc::alloc::{alloc_zeroed, Layout};
use core::ptr::NonNull;
use dtvisor::mm::Range;

/// Guest-physical address bits.
pub const IPA_BITS: u64 = 39;

/// Table pages from the hypervisor heap (identity mapped: VA == PA).
struct HeapPages;

impl Translation<Stage2Attributes> for HeapPages {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Stage2Attributes>>, PhysicalAddress) {
        let layout = Layout::from_size_align(4096, 4096).unwrap_or(Layout::new::<u8>());
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc_zeroed(layout) } as *mut PageTable<Stage2Attributes>;
        match NonNull::new(p) {
            Some(nn) => (nn, PhysicalAddress(p as usize)),
            None => crate::arch::early_fatal("out of heap for stage-2 tables"),
        }
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<Stage2Attributes>>) {}

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Stage2Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<Stage2Attributes>).unwrap_or(NonNull::dangling())
    }
}

fn ram_attrs() -> Stage2Attributes {
    Stage2Attributes::VALID
        | Stage2Attributes::MEMATTR_NORMAL_INNER_WB
        | Stage2Attributes::MEMATTR_NORMAL_OUTER_WB
        | Stage2Attributes::S2AP_ACCESS_RW
        | Stage2Attributes::SH_INNER
        | Stage2Attributes::ACCESS_FLAG
}

/// One domain's stage-2 tables.
pub struct Stage2Tables {
    table: RootTable<Stage2, HeapPages>,
}

impl Stage2Tables {
    pub fn new() -> Self {
        Stage2Tables {
            table: RootTable::new(HeapPages, 1, Stage2),
        }
    }

    /// Maps guest RAM `ipa` to host `pa`.
    pub fn map_ram(&mut self, ipa: Range, pa: u64) -> Result<(), ()> {
        let region = MemoryRegion::new(ipa.start as usize, ipa.end as usize);
        self.table
            .map_range(
                &region,
                PhysicalAddress(pa as usize),
                ram_attrs(),
                Constraints::empty(),
            )
            .map_err(|_| ())
    }

    /// VTTBR_EL2 for this domain's VMID; the tables live as long as the domain.
    pub fn vttbr(self, vmid: u16) -> u64 {
        let root = self.table.to_physical().0 as u64;
        core::mem::forget(self);
        root | ((vmid as u64) << 48)
    }
}

/// VTCR_EL2: T0SZ for 39 bits, start level 1, inner/outer write-back
/// write-allocate walks, inner shareable, 4K granule, PS = PARange.
pub fn vtcr() -> u64 {
    let ps = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
    (64 - IPA_BITS) | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (ps << 16) | (1 << 31)
}
