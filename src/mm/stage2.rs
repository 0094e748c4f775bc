//! Stage-2 translation tables for a domain, built with Google's
//! `aarch64-paging` (its Stage2 regime): 4K granule, a 39-bit guest-physical
//! space (start level 1, one root table: Xen's RAM0 and 504 GiB of RAM1),
//! output size from ID_AA64MMFR0_EL1.PARange. Guest RAM is Normal
//! write-back, inner shareable, read-write; 1 GiB and 2 MiB blocks wherever
//! both sides are aligned; nothing else is mapped, so every other access
//! traps to EL2. Portable: the image hands it identity-mapped heap pages,
//! host tests hand it ordinary allocations.

use crate::mm::Range;
use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::{
    Constraints, MemoryRegion, PageTable, RootTable, Stage2, Translation,
};
use core::ptr::NonNull;

/// Guest-physical address bits.
pub const IPA_BITS: u64 = 39;

/// Where table pages come from: zeroed, 4 KiB aligned, and addressable at
/// the physical address returned (the image maps RAM 1:1).
pub trait PageSource {
    fn zeroed_page(&mut self) -> Option<NonNull<u8>>;
}

struct Pages<S: PageSource>(S);

impl<S: PageSource> Translation<Stage2Attributes> for Pages<S> {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Stage2Attributes>>, PhysicalAddress) {
        // Table pages are tiny next to the heap; running out is fatal to
        // the hypervisor, and the crate's trait has no error path.
        let Some(p) = self.0.zeroed_page() else {
            panic!("out of memory for stage-2 tables")
        };
        (p.cast(), PhysicalAddress(p.as_ptr() as usize))
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<Stage2Attributes>>) {}

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Stage2Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<Stage2Attributes>).unwrap_or(NonNull::dangling())
    }
}

/// Attributes of guest RAM.
pub fn ram_attrs() -> Stage2Attributes {
    Stage2Attributes::VALID
        | Stage2Attributes::MEMATTR_NORMAL_INNER_WB
        | Stage2Attributes::MEMATTR_NORMAL_OUTER_WB
        | Stage2Attributes::S2AP_ACCESS_RW
        | Stage2Attributes::SH_INNER
        | Stage2Attributes::ACCESS_FLAG
}

/// Attributes of a guest page shared with a boot module: guest RAM that
/// the guest may read and execute; a write faults (copy on write).
pub fn shared_attrs() -> Stage2Attributes {
    (ram_attrs() - Stage2Attributes::S2AP_ACCESS_RW) | Stage2Attributes::S2AP_ACCESS_RO
}

/// Attributes of a device passed through to the guest (Device-nGnRE,
/// never executable).
pub fn device_attrs() -> Stage2Attributes {
    Stage2Attributes::VALID
        | Stage2Attributes::MEMATTR_DEVICE_nGnRE
        | Stage2Attributes::S2AP_ACCESS_RW
        | Stage2Attributes::ACCESS_FLAG
        | Stage2Attributes::XN
}

/// The guest-physical range the tables cover.
pub const IPA_SPACE: Range = Range::new(0, 1 << IPA_BITS);

/// One domain's stage-2 tables.
pub struct Stage2Tables<S: PageSource> {
    table: RootTable<Stage2, Pages<S>>,
}

// SAFETY: the tables are plain memory that only this value reaches (the
// crate's `NonNull`s point into pages it owns); moving it to another CPU
// moves that ownership, and the image only touches it under a lock.
unsafe impl<S: PageSource + Send> Send for Stage2Tables<S> {}

/// Why a mapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Outside the 39-bit guest-physical space, or not page aligned.
    Range(Range),
}

impl<S: PageSource> Stage2Tables<S> {
    pub fn new(pages: S) -> Self {
        Stage2Tables {
            table: RootTable::new(Pages(pages), 1, Stage2),
        }
    }

    /// Maps guest RAM `ipa` to host `pa`.
    pub fn map_ram(&mut self, ipa: Range, pa: u64) -> Result<(), MapError> {
        self.map(ipa, pa, ram_attrs())
    }

    /// Maps a device frame (such as the GICv2 virtual CPU interface) at
    /// `ipa` to host `pa`: device memory, not executable.
    pub fn map_device(&mut self, ipa: Range, pa: u64) -> Result<(), MapError> {
        self.map(ipa, pa, device_attrs())
    }

    /// Maps guest pages `ipa` read-only onto a boot module at host `pa`,
    /// page by page (no blocks), so that [`Self::unshare_page`] never splits
    /// a live block.
    pub fn map_shared(&mut self, ipa: Range, pa: u64) -> Result<(), MapError> {
        self.map_with(ipa, pa, shared_attrs(), Constraints::NO_BLOCK_MAPPINGS)
    }

    /// Makes the page at `ipa` invalid (the first half of
    /// break-before-make: the caller invalidates the TLBs next). Only for
    /// a page [`Self::map_shared`] mapped, so no table is split.
    pub fn unmap_page(&mut self, ipa: u64) -> Result<(), MapError> {
        let r = Range::new(ipa, ipa.wrapping_add(4096));
        self.map_with(
            r,
            0,
            Stage2Attributes::empty(),
            Constraints::NO_BLOCK_MAPPINGS,
        )
    }

    /// Maps the page at `ipa` read-write onto the domain's own RAM at `pa`
    /// (after [`Self::unmap_page`] and the TLB invalidation).
    pub fn map_ram_page(&mut self, ipa: u64, pa: u64) -> Result<(), MapError> {
        let r = Range::new(ipa, ipa.wrapping_add(4096));
        self.map_with(r, pa, ram_attrs(), Constraints::NO_BLOCK_MAPPINGS)
    }

    /// Whether the guest may write the page at `ipa` (None: not mapped).
    pub fn writable(&self, ipa: u64) -> Option<bool> {
        let mut out = None;
        let region = MemoryRegion::new(ipa as usize, ipa as usize + 1);
        let _ = self
            .table
            .walk_range(&region, &mut |_: &MemoryRegion, d, level| {
                let leaf = level == 3 || !d.is_table_or_page();
                if level > 0 && d.is_valid() && leaf {
                    out = Some(d.flags().contains(Stage2Attributes::S2AP_ACCESS_RW));
                }
                Ok(())
            });
        out
    }

    fn map(&mut self, ipa: Range, pa: u64, attrs: Stage2Attributes) -> Result<(), MapError> {
        self.map_with(ipa, pa, attrs, Constraints::empty())
    }

    fn map_with(
        &mut self,
        ipa: Range,
        pa: u64,
        attrs: Stage2Attributes,
        constraints: Constraints,
    ) -> Result<(), MapError> {
        let aligned = ipa.start.is_multiple_of(4096)
            && ipa.end.is_multiple_of(4096)
            && pa.is_multiple_of(4096);
        if !aligned || !IPA_SPACE.contains_range(&ipa) || ipa.is_empty() {
            return Err(MapError::Range(ipa));
        }
        let region = MemoryRegion::new(ipa.start as usize, ipa.end as usize);
        self.table
            .map_range(&region, PhysicalAddress(pa as usize), attrs, constraints)
            .map_err(|_| MapError::Range(ipa))
    }

    /// Where `ipa` leads: (host address, mapping size at that level).
    pub fn translate(&self, ipa: u64) -> Option<(u64, u64)> {
        let region = MemoryRegion::new(ipa as usize, ipa as usize + 1);
        let mut out = None;
        let _ = self
            .table
            .walk_range(&region, &mut |_: &MemoryRegion, d, level| {
                let leaf = level == 3 || !d.is_table_or_page();
                if level > 0 && d.is_valid() && leaf {
                    let block = 1u64 << (12 + 9 * (3 - level as u64));
                    out = Some((d.output_address().0 as u64 + (ipa & (block - 1)), block));
                }
                Ok(())
            });
        out
    }

    /// Physical address of the root table.
    pub fn root(&self) -> u64 {
        self.table.to_physical().0 as u64
    }

    /// VTTBR_EL2 for these tables and the domain's VMID.
    pub fn vttbr(&self, vmid: u16) -> u64 {
        self.root() | ((vmid as u64) << 48)
    }
}

/// VTCR_EL2 for these tables: T0SZ for 39 bits, start level 1, inner and
/// outer write-back write-allocate walks, inner shareable, 4K granule,
/// PS = `pa_range` (ID_AA64MMFR0_EL1.PARange, capped at 48 bits).
pub fn vtcr(pa_range: u64) -> u64 {
    (64 - IPA_BITS)
        | (1 << 6)
        | (1 << 8)
        | (1 << 10)
        | (3 << 12)
        | (pa_range.min(5) << 16)
        | (1 << 31)
}

/// Table pages from the host's allocator, counted (host tests).
#[cfg(test)]
pub struct HostPages(pub usize);

#[cfg(test)]
impl PageSource for HostPages {
    fn zeroed_page(&mut self) -> Option<NonNull<u8>> {
        extern crate std;
        use std::alloc::{alloc_zeroed, Layout};
        self.0 += 1;
        // SAFETY: a non-zero-sized layout; leaked on purpose (test).
        NonNull::new(unsafe { alloc_zeroed(Layout::from_size_align(4096, 4096).unwrap()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    #[test]
    fn blocks_where_aligned_pages_elsewhere() {
        let mut t = Stage2Tables::new(HostPages(0));
        // 1 GiB aligned on both sides: one level-1 block.
        t.map_ram(Range::new(0x4000_0000, 0x8000_0000), 0x8000_0000)
            .unwrap();
        assert_eq!(t.translate(0x4000_1234), Some((0x8000_1234, 1 << 30)));
        // 2 MiB aligned, not 1 GiB: level-2 blocks.
        t.map_ram(Range::new(0x2_0000_0000, 0x2_0040_0000), 0x4560_0000)
            .unwrap();
        assert_eq!(t.translate(0x2_0020_0010), Some((0x4580_0010, 2 << 20)));
        // Page aligned only: level-3 pages; the last page of the range maps.
        t.map_ram(Range::new(0x1_0000_0000, 0x1_0000_3000), 0x4123_4000)
            .unwrap();
        assert_eq!(t.translate(0x1_0000_2fff), Some((0x4123_6fff, 4096)));
        // Nothing else is mapped.
        assert_eq!(t.translate(0x1_0000_3000), None);
        assert_eq!(t.translate(0x2200_0000), None);
        assert_eq!(t.translate(0x3fff_ffff), None);
    }

    #[test]
    fn shared_pages_read_only_then_copied_one_by_one() {
        let mut t = Stage2Tables::new(HostPages(0));
        // RAM in blocks first, then the module's pages over part of it.
        t.map_ram(Range::new(0x4000_0000, 0x5000_0000), 0x8000_0000)
            .unwrap();
        t.map_shared(Range::new(0x4000_0000, 0x4020_0000), 0x6000_0000)
            .unwrap();
        assert_eq!(t.translate(0x4000_1234), Some((0x6000_1234, 4096)));
        assert_eq!(t.writable(0x4000_1234), Some(false));
        assert_eq!(t.translate(0x401f_f000), Some((0x601f_f000, 4096)));
        // Past the shared pages: still RAM, writable, in 2 MiB blocks.
        assert_eq!(t.translate(0x4020_0000), Some((0x8020_0000, 2 << 20)));
        assert_eq!(t.writable(0x4020_0000), Some(true));
        let pages = t.table.translation().0 .0;
        // Copy on write of one page: break, then make; no table allocated.
        t.unmap_page(0x4000_1000).unwrap();
        assert_eq!(t.translate(0x4000_1000), None);
        assert_eq!(t.writable(0x4000_1000), None);
        t.map_ram_page(0x4000_1000, 0x8000_1000).unwrap();
        assert_eq!(t.translate(0x4000_1abc), Some((0x8000_1abc, 4096)));
        assert_eq!(t.writable(0x4000_1abc), Some(true));
        assert_eq!(t.table.translation().0 .0, pages);
        // Its neighbours stay shared.
        assert_eq!(t.translate(0x4000_0000), Some((0x6000_0000, 4096)));
        assert_eq!(t.translate(0x4000_2000), Some((0x6000_2000, 4096)));
        // A restart shares the page again.
        t.unmap_page(0x4000_1000).unwrap();
        t.map_shared(Range::new(0x4000_1000, 0x4000_2000), 0x6000_1000)
            .unwrap();
        assert_eq!(t.writable(0x4000_1000), Some(false));
        assert_eq!(t.table.translation().0 .0, pages);
    }

    #[test]
    fn device_frame_maps_as_device_memory_only_there() {
        let mut t = Stage2Tables::new(HostPages(0));
        t.map_device(Range::new(0x0300_2000, 0x0300_4000), 0x0804_0000)
            .unwrap();
        assert_eq!(t.translate(0x0300_3004), Some((0x0804_1004, 4096)));
        assert_eq!(
            t.translate(0x0300_1000),
            None,
            "the distributor stays trapped"
        );
        assert_eq!(t.translate(0x0300_4000), None);
        let attrs = device_attrs();
        assert!(attrs.contains(Stage2Attributes::XN));
        assert!(!attrs.contains(Stage2Attributes::MEMATTR_NORMAL_INNER_WB));
        assert!(t
            .map_device(Range::new(0x0300_2100, 0x0300_4000), 0)
            .is_err());
    }

    #[test]
    fn refuses_bad_ranges() {
        let mut t = Stage2Tables::new(HostPages(0));
        assert!(t.map_ram(Range::new(0x4000_0100, 0x4000_1000), 0).is_err());
        assert!(t.map_ram(Range::new(1 << 39, (1 << 39) + 4096), 0).is_err());
        assert!(t.map_ram(Range::new(0x4000_0000, 0x4000_0000), 0).is_err());
    }

    #[test]
    fn vtcr_fields() {
        let v = vtcr(2); // 40-bit PA
        assert_eq!(v & 0x3f, 25);
        assert_eq!((v >> 6) & 3, 1);
        assert_eq!((v >> 16) & 7, 2);
        assert_eq!((v >> 14) & 3, 0);
        assert_eq!((vtcr(6) >> 16) & 7, 5);
    }
}
