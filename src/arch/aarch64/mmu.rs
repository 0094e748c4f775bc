//! EL2 stage-1 translation: an identity map built with `aarch64-paging`
//! before the heap exists, from a static pool of table pages. RAM is
//! Normal write-back (so atomics and the heap work), everything else in the
//! low 512 GiB is Device-nGnRE.
//!
//! W^X: the hypervisor's own code is the only memory EL2 may execute, and
//! it is read-only; its read-only data is read-only; every other page (its
//! data, BSS and stacks, the heap, guest RAM, boot modules, devices) is
//! never executable. SCTLR_EL2.WXN makes any writable page execute-never
//! as well, should a mapping ever say otherwise.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2,
};
use aarch64_paging::descriptor::{El23Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El2, MemoryRegion, PageTable, RootTable, Translation};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use dtvisor::mm::Range;

const POOL_PAGES: usize = 24;
const PAGE: usize = 4096;
/// Device mappings cover this much of the physical address space.
const DEVICE_SPAN: u64 = 512 << 30;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u8; PAGE]; POOL_PAGES]>);

// SAFETY: the pool is only touched by the boot CPU while building the map,
// before any other CPU runs.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([[0; PAGE]; POOL_PAGES]));

/// Hands out pool pages; the identity map makes VA == PA.
struct StaticPool {
    next: usize,
}

impl Translation<El23Attributes> for StaticPool {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El23Attributes>>, PhysicalAddress) {
        if self.next >= POOL_PAGES {
            panic!("EL2 page-table pool exhausted");
        }
        // SAFETY: each index is handed out once; the page is zeroed (BSS)
        // and 4 KiB aligned, which is what a PageTable needs.
        let p = unsafe { (*POOL.0.get())[self.next].as_mut_ptr() };
        self.next += 1;
        let nn = NonNull::new(p as *mut PageTable<El23Attributes>).unwrap_or(NonNull::dangling());
        (nn, PhysicalAddress(p as usize))
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<El23Attributes>>) {}

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El23Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<El23Attributes>).unwrap_or(NonNull::dangling())
    }
}

/// The EL2 translation registers, computed once by the boot CPU and
/// loaded by every CPU.
#[derive(Clone, Copy)]
pub struct El2Mmu {
    ttbr: u64,
    tcr: u64,
    mair: u64,
}

const MAIR_DEVICE: u64 = 0x04; // index 0: Device-nGnRE
const MAIR_NORMAL: u64 = 0xff; // index 1: Normal WB RA WA, inner and outer

/// Normal memory, read-write, never executable.
fn ram_attrs() -> El23Attributes {
    El23Attributes::VALID
        | El23Attributes::ATTRIBUTE_INDEX_1
        | El23Attributes::INNER_SHAREABLE
        | El23Attributes::ACCESSED
        | El23Attributes::XN
}

/// The hypervisor's code: read-only, executable.
fn text_attrs() -> El23Attributes {
    (ram_attrs() - El23Attributes::XN) | El23Attributes::READ_ONLY
}

/// The hypervisor's read-only data.
fn rodata_attrs() -> El23Attributes {
    ram_attrs() | El23Attributes::READ_ONLY
}

fn device_attrs() -> El23Attributes {
    El23Attributes::VALID
        | El23Attributes::ATTRIBUTE_INDEX_0
        | El23Attributes::ACCESSED
        | El23Attributes::XN
}

/// Builds the identity map: `ram` as Normal memory, the rest of the low
/// 512 GiB as Device memory.
pub fn build(ram: &[Range]) -> El2Mmu {
    let mut table = RootTable::new(StaticPool { next: 0 }, 0, El2);
    let map = |t: &mut RootTable<El2, StaticPool>, r: Range, a: El23Attributes| {
        let region = MemoryRegion::new(r.start as usize, r.end as usize);
        if t.map_range(
            &region,
            PhysicalAddress(r.start as usize),
            a,
            Constraints::empty(),
        )
        .is_err()
        {
            panic!("cannot build the EL2 identity map");
        }
    };
    // Device holes between RAM banks (RAM rounded out to 2 MiB for blocks).
    let mut cursor = 0u64;
    for r in ram {
        let start = r.start & !0x1f_ffff;
        if start > cursor && cursor < DEVICE_SPAN {
            map(
                &mut table,
                Range::new(cursor, start.min(DEVICE_SPAN)),
                device_attrs(),
            );
        }
        cursor = cursor.max((r.end + 0x1f_ffff) & !0x1f_ffff);
    }
    if cursor < DEVICE_SPAN {
        map(&mut table, Range::new(cursor, DEVICE_SPAN), device_attrs());
    }
    for r in ram {
        let start = r.start & !0x1f_ffff;
        let end = (r.end + 0x1f_ffff) & !0x1f_ffff;
        map(&mut table, Range::new(start, end), ram_attrs());
    }
    // The image over it, by permission (its blocks split into pages).
    let (image_start, _) = super::boot::image_range();
    let (text_end, data_start) = super::boot::image_parts();
    map(&mut table, Range::new(image_start, text_end), text_attrs());
    map(&mut table, Range::new(text_end, data_start), rodata_attrs());
    let pa_bits = match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 0u64,
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        _ => 5, // 48 bits and above: TCR_EL2.PS is capped at 48 with 4K pages
    };
    let ttbr = table.to_physical().0 as u64;
    // The table lives for the life of the hypervisor.
    core::mem::forget(table);
    // T0SZ 16 (48-bit VA, start level 0), WBWA inner/outer, inner shareable, 4K.
    let tcr = 16 | (1 << 8) | (1 << 10) | (3 << 12) | (pa_bits << 16) | (1 << 23) | (1 << 31);
    El2Mmu {
        ttbr,
        tcr,
        mair: MAIR_DEVICE | (MAIR_NORMAL << 8),
    }
}

/// Turns the MMU and caches on with `m` on the calling CPU. The boot CPU
/// passes `boot = true`: the data it wrote with the MMU off went straight
/// to memory, so stale lines for the image (code, data, BSS, tables,
/// stacks) are dropped first. Secondaries must not do that (it would
/// discard the boot CPU's cached writes); the boot CPU cleans the image to
/// memory before it starts them.
pub fn enable(m: &El2Mmu, boot: bool) {
    if boot {
        let (start, end) = super::boot::image_range();
        invalidate_dcache_range(start, end);
    }
    MAIR_EL2.set(m.mair);
    TCR_EL2.set(m.tcr);
    TTBR0_EL2.set(m.ttbr);
    barrier::dsb(barrier::SY);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating all EL2 TLB entries has no memory effects.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", "isb") };
    // SCTLR_EL2 in full (el2cfg): MMU, caches, WXN and the rest decided
    // there, nothing inherited from firmware.
    let f = dtvisor::hw::cpufeat::Features::from_ids(&super::vcpu::id_regs());
    SCTLR_EL2.set(dtvisor::hw::el2cfg::sctlr_el2(&f, true));
    barrier::isb(barrier::SY);
}

/// `dc ivac` over `[start, end)`: drop cached copies (memory is current).
pub fn invalidate_dcache_range(start: u64, end: u64) {
    for_each_line(start, end, |a| {
        // SAFETY: invalidation of lines we own; memory already holds the data.
        unsafe { core::arch::asm!("dc ivac, {}", in(reg) a) };
    });
}

/// `dc cvac` over `[start, end)`: make data visible to non-cacheable observers.
pub fn clean_dcache_range(start: u64, end: u64) {
    for_each_line(start, end, |a| {
        // SAFETY: cleaning has no effect on the contents.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a) };
    });
}

/// `ic ivau` over `[start, end)`: no CPU fetches stale instructions of it.
pub fn invalidate_icache_range(start: u64, end: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr) };
    let line = 4u64 << (ctr & 0xf);
    let mut a = start & !(line - 1);
    while a < end {
        // SAFETY: instruction cache invalidation has no memory effects.
        unsafe { core::arch::asm!("ic ivau, {}", in(reg) a) };
        a += line;
    }
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Cleans and invalidates `[start, end)` to the point of coherency: memory
/// holds the data, and no line of it stays in the cache to be hit later
/// (a guest that wrote with its MMU off, then reads cacheably).
pub fn clean_invalidate_dcache_range(start: u64, end: u64) {
    for_each_line(start, end, |a| {
        // SAFETY: clean and invalidate keeps the contents (dirty lines
        // are written back first).
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a) };
    });
}

/// Calls `op` with each data-cache line address of `[start, end)`, then
/// waits for the maintenance to complete.
fn for_each_line(start: u64, end: u64, op: impl Fn(u64)) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    // Eight lines per round where they fit: the loop's own instructions
    // were most of the cost (a scrub cleans hundreds of MiB). Written out:
    // an inner `for` over the eight measured 2.5 times slower (opt-level s
    // does not unroll it).
    while a + 8 * line <= end {
        op(a);
        op(a + line);
        op(a + 2 * line);
        op(a + 3 * line);
        op(a + 4 * line);
        op(a + 5 * line);
        op(a + 6 * line);
        op(a + 7 * line);
        a += 8 * line;
    }
    while a < end {
        op(a);
        a += line;
    }
    barrier::dsb(barrier::SY);
}

fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr) };
    4 << ((ctr >> 16) & 0xf)
}

/// Zeroes `[start, end)` of identity-mapped Normal memory, with `dc zva`
/// (a cache block per instruction) where the CPU allows it.
pub fn zero_range(start: u64, end: u64) {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid) };
    let block = 4u64 << (dczid & 0xf);
    let prohibited = dczid & (1 << 4) != 0;
    let (mut a, b) = if prohibited {
        (end, end)
    } else {
        ((start + block - 1) & !(block - 1), end & !(block - 1))
    };
    if a >= b {
        a = end;
    }
    // SAFETY: the caller owns `[start, end)`, mapped RAM (the same for
    // the block zeroing and the tail below).
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, (a.min(end) - start) as usize) };
    let mut p = a;
    // Eight blocks per round where they fit (see for_each_line).
    while p + 8 * block <= b {
        // SAFETY: as above; eight whole, aligned cache blocks.
        unsafe {
            core::arch::asm!(
                "dc zva, {p}",
                "add {q}, {p}, {s}",
                "dc zva, {q}",
                "add {q}, {q}, {s}",
                "dc zva, {q}",
                "add {q}, {q}, {s}",
                "dc zva, {q}",
                "add {q}, {q}, {s}",
                "dc zva, {q}",
                "add {q}, {q}, {s}",
                "dc zva, {q}",
                "add {q}, {q}, {s}",
                "dc zva, {q}",
                "add {q}, {q}, {s}",
                "dc zva, {q}",
                p = in(reg) p,
                q = out(reg) _,
                s = in(reg) block,
            )
        };
        p += 8 * block;
    }
    while p < b {
        // SAFETY: as above; one whole, aligned cache block.
        unsafe { core::arch::asm!("dc zva, {}", in(reg) p) };
        p += block;
    }
    if b > a && b < end {
        // SAFETY: as above.
        unsafe { core::ptr::write_bytes(b as *mut u8, 0, (end - b) as usize) };
    }
}
