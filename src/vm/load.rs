//! What a (re)start of a domain does to memory, worked out once at boot:
//! which guest pages are its boot modules themselves (mapped read-only and
//! copied page by page only when the guest first writes them), which bytes
//! are copied, which are zeroed and which are cleaned to the point of
//! coherency. The image carries the plan out; the figures it prints come
//! from here too.
//!
//! # Rules
//!
//! * A boot module is never written: it is the pristine image SYSTEM_RESET
//!   restarts from. Where a module's pages line up with the guest pages
//!   that show it (same offset in a 4 KiB page), those guest pages are
//!   mapped onto the module read-only ("shared"): nothing is copied at
//!   boot, and a guest write to such a page copies that page alone into
//!   the domain's own RAM behind it (copy on write). A page the module
//!   fills only in part (its first and last) is copied, so that no byte
//!   beyond the module (another domain's data) is ever shown.
//! * Domains with assigned devices or a direct map copy their images
//!   instead: without an IOMMU a device writes the guest's own RAM, which
//!   a shared page would hide from the guest.
//! * Zeroed ("scrubbed"): the domain's RAM that no image overwrites. Its
//!   host RAM behind shared pages is left alone: a copy on write fills a
//!   whole page.
//! * Cleaned to the point of coherency: what the guest reads with its MMU
//!   off (Linux's boot protocol: the kernel image with its `image_size`,
//!   the initrd, the device tree). Shared pages are not written here, and
//!   a copy on write cleans its page. Scrubbed RAM is cleaned too (see
//!   [`Restart::work`]): a guest may read memory non-cacheably, and would
//!   then see what the zeroes hide while they sit in the cache.

pub use crate::mm::range::{subtract, union};
use crate::mm::Range;
use crate::placement::DomainLayout;
use alloc::vec::Vec;

/// Guest page size: the stage-2 granule.
pub const PAGE: u64 = 4096;

/// A copy made when a domain (re)starts: `len` bytes from host `src` to host `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub src: u64,
    pub dst: u64,
    pub len: u64,
}

/// Guest pages `ipa` (page aligned) that start out mapped read-only onto a
/// boot module at host `module`; `backing` is the domain's own host RAM
/// behind them, where a copy on write puts a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shared {
    pub ipa: Range,
    pub module: u64,
    pub backing: u64,
}

impl Shared {
    /// Host range of the domain's RAM behind these pages.
    pub fn backing_range(&self) -> Range {
        Range::new(self.backing, self.backing + self.ipa.size())
    }
}

/// One image a (re)start puts in guest memory: `len` bytes from host
/// `src` (a boot module or the guest DTB) to guest address `ipa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    pub src: u64,
    pub ipa: u64,
    pub len: u64,
    /// A boot module (kept as it is for good), so it may be shared.
    pub module: bool,
}

/// What a (re)start does to a domain's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restart {
    pub shared: Vec<Shared>,
    pub copies: Vec<Load>,
    /// Host RAM of the domain that no image overwrites (sorted, disjoint).
    pub zero: Vec<Range>,
    /// Host RAM the guest reads with its MMU off that a restart writes:
    /// the copies and the kernel's `image_size` (sorted, disjoint).
    pub clean: Vec<Range>,
    /// `clean` and `zero` together (sorted, disjoint): what a scrubbing
    /// restart cleans. Computed with the plan, so a restart (a guest's
    /// SYSTEM_RESET, a trap) allocates nothing.
    pub clean_scrubbed: Vec<Range>,
}

/// Bytes a (re)start moves, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Mapped from the modules, not copied.
    pub shared: u64,
    pub copied: u64,
    pub zeroed: u64,
    pub cleaned: u64,
}

impl core::ops::AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        self.shared += o.shared;
        self.copied += o.copied;
        self.zeroed += o.zeroed;
        self.cleaned += o.cleaned;
    }
}

fn total(rs: &[Range]) -> u64 {
    rs.iter().map(|r| r.size()).sum()
}

impl Restart {
    /// The work of one (re)start. `scrub`: the domain's other RAM is
    /// zeroed, and cleaned with it (without `bootscrub=0` at boot, and at
    /// every SYSTEM_RESET).
    pub fn work(&self, scrub: bool) -> Work {
        Work {
            shared: self.shared.iter().map(|s| s.ipa.size()).sum(),
            copied: self.copies.iter().map(|c| c.len).sum(),
            zeroed: if scrub { total(&self.zero) } else { 0 },
            cleaned: total(self.clean_ranges(scrub)),
        }
    }

    /// Ranges to clean after a (re)start with or without scrubbing: the
    /// copies and kernel image, plus the scrubbed RAM (sorted, disjoint).
    pub fn clean_ranges(&self, scrub: bool) -> &[Range] {
        if scrub {
            &self.clean_scrubbed
        } else {
            &self.clean
        }
    }

    /// The shared page holding guest address `ipa`: (page's guest address,
    /// its module page, the domain's page behind it).
    pub fn shared_page(&self, ipa: u64) -> Option<(u64, u64, u64)> {
        let s = self.shared.iter().find(|s| s.ipa.contains(ipa))?;
        let page = ipa & !(PAGE - 1);
        let off = page - s.ipa.start;
        Some((page, s.module + off, s.backing + off))
    }
}

/// Splits a copy of `len` bytes from host `src` to guest `ipa` along the
/// host blocks that back the guest RAM. None if it leaves guest RAM.
pub fn loads_for(
    l: &DomainLayout,
    src: u64,
    ipa: u64,
    len: u64,
    out: &mut Vec<Load>,
) -> Option<()> {
    let mut done = 0;
    while done < len {
        let m = l.ram.iter().find(|m| m.ipa.contains(ipa + done))?;
        let off = ipa + done - m.ipa.start;
        let n = (m.ipa.size() - off).min(len - done);
        out.push(Load {
            src: src + done,
            dst: m.pa + off,
            len: n,
        });
        done += n;
    }
    Some(())
}

/// The host pieces behind guest range `ipa`. None if it leaves guest RAM.
fn host_pieces(l: &DomainLayout, ipa: Range) -> Option<Vec<Range>> {
    let mut loads = Vec::new();
    loads_for(l, 0, ipa.start, ipa.size(), &mut loads)?;
    Some(
        loads
            .iter()
            .map(|c| Range::new(c.dst, c.dst + c.len))
            .collect(),
    )
}

/// The restart plan of the domain placed as `l`: `images` in guest memory,
/// the kernel's `image_size` at `kernel` (guest range), modules shared
/// where `share` allows and their pages line up. None if an image leaves
/// guest RAM.
pub fn plan(l: &DomainLayout, images: &[Image], kernel: Range, share: bool) -> Option<Restart> {
    let mut r = Restart::default();
    for im in images {
        let end = im.ipa.checked_add(im.len)?;
        let first = im.ipa.next_multiple_of(PAGE);
        let last = end & !(PAGE - 1);
        let lined_up = im.src % PAGE == im.ipa % PAGE;
        if !(share && im.module && lined_up && first < last) {
            loads_for(l, im.src, im.ipa, im.len, &mut r.copies)?;
            continue;
        }
        let src_at = |ipa: u64| im.src + (ipa - im.ipa);
        loads_for(l, im.src, im.ipa, first - im.ipa, &mut r.copies)?;
        let mut pieces = Vec::new();
        loads_for(l, src_at(first), first, last - first, &mut pieces)?;
        let mut ipa = first;
        for p in pieces {
            r.shared.push(Shared {
                ipa: Range::new(ipa, ipa + p.len),
                module: p.src,
                backing: p.dst,
            });
            ipa += p.len;
        }
        loads_for(l, src_at(last), last, end - last, &mut r.copies)?;
    }
    let ram = l.host_ram();
    let copied: Vec<Range> = r
        .copies
        .iter()
        .map(|c| Range::new(c.dst, c.dst + c.len))
        .collect();
    let backing: Vec<Range> = r.shared.iter().map(|s| s.backing_range()).collect();
    let covered: Vec<Range> = copied.iter().chain(&backing).copied().collect();
    r.zero = subtract(&ram, &covered);
    let kernel_host = host_pieces(l, kernel)?;
    let mut clean = subtract(&kernel_host, &backing);
    clean.extend(copied);
    r.clean = union(clean);
    r.clean_scrubbed = union(r.clean.iter().chain(&r.zero).copied().collect());
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::RamMap;
    use alloc::vec;

    const MIB: u64 = 1 << 20;

    /// 256 MiB at guest 0x4000_0000 from host 0x8000_0000, optionally split
    /// into two host blocks at `split` bytes.
    fn layout(split: Option<u64>) -> DomainLayout {
        let ram = match split {
            None => vec![RamMap {
                ipa: Range::new(0x4000_0000, 0x5000_0000),
                pa: 0x8000_0000,
            }],
            Some(s) => vec![
                RamMap {
                    ipa: Range::new(0x4000_0000, 0x4000_0000 + s),
                    pa: 0x8000_0000,
                },
                RamMap {
                    ipa: Range::new(0x4000_0000 + s, 0x5000_0000),
                    pa: 0xc000_0000,
                },
            ],
        };
        DomainLayout {
            name: "domU1".into(),
            banks: vec![Range::new(0x4000_0000, 0x5000_0000)],
            ram,
            kernel_ipa: Range::new(0x4000_0000, 0x4000_0000 + 40 * MIB),
            initrd_ipa: None,
            dtb_ipa: Range::new(0x4fe0_0000, 0x5000_0000),
            pristine: vec![],
            pcpus: vec![1],
            vmid: 1,
        }
    }

    fn kernel(len: u64, src: u64) -> Image {
        Image {
            src,
            ipa: 0x4000_0000,
            len,
            module: true,
        }
    }

    fn dtb(len: u64) -> Image {
        Image {
            src: 0x4100_0000,
            ipa: 0x4fe0_0000,
            len,
            module: false,
        }
    }

    const K: Range = Range::new(0x4000_0000, 0x4000_0000 + 40 * MIB);

    #[test]
    fn aligned_kernel_is_shared_and_its_tail_copied() {
        let l = layout(None);
        let r = plan(
            &l,
            &[kernel(32 * MIB + 100, 0x6000_0000), dtb(5000)],
            K,
            true,
        )
        .unwrap();
        assert_eq!(
            r.shared,
            vec![Shared {
                ipa: Range::new(0x4000_0000, 0x4000_0000 + 32 * MIB),
                module: 0x6000_0000,
                backing: 0x8000_0000,
            }]
        );
        assert_eq!(
            r.copies,
            vec![
                Load {
                    src: 0x6000_0000 + 32 * MIB,
                    dst: 0x8000_0000 + 32 * MIB,
                    len: 100
                },
                Load {
                    src: 0x4100_0000,
                    dst: 0x8fe0_0000,
                    len: 5000
                },
            ]
        );
        // Zeroed: everything but the shared backing and the copies (the
        // rest of the tail page and of the DTB's page are zeroed).
        assert_eq!(
            r.zero,
            vec![
                Range::new(0x8000_0000 + 32 * MIB + 100, 0x8fe0_0000),
                Range::new(0x8fe0_0000 + 5000, 0x9000_0000),
            ]
        );
        // Cleaned: the kernel's image_size minus the shared pages, and the DTB.
        assert_eq!(
            r.clean,
            vec![
                Range::new(0x8000_0000 + 32 * MIB, 0x8000_0000 + 40 * MIB),
                Range::new(0x8fe0_0000, 0x8fe0_0000 + 5000),
            ]
        );
        let w = r.work(false);
        assert_eq!(
            w,
            Work {
                shared: 32 * MIB,
                copied: 5100,
                zeroed: 0,
                cleaned: 8 * MIB + 5000
            }
        );
        let w = r.work(true);
        assert_eq!(w.zeroed, 256 * MIB - 32 * MIB - 5100);
        // Scrubbed RAM is cleaned too; the kernel's tail overlaps it once.
        assert_eq!(w.cleaned, 256 * MIB - 32 * MIB);
    }

    #[test]
    fn unaligned_module_is_copied_whole() {
        let l = layout(None);
        let r = plan(&l, &[kernel(8 * MIB, 0x6000_0800)], K, true).unwrap();
        assert!(r.shared.is_empty());
        assert_eq!(
            r.copies,
            vec![Load {
                src: 0x6000_0800,
                dst: 0x8000_0000,
                len: 8 * MIB
            }]
        );
        assert_eq!(
            r.clean,
            vec![Range::new(0x8000_0000, 0x8000_0000 + 40 * MIB)]
        );
    }

    #[test]
    fn no_sharing_copies_everything() {
        let l = layout(None);
        let r = plan(&l, &[kernel(8 * MIB, 0x6000_0000)], K, false).unwrap();
        assert!(r.shared.is_empty());
        assert_eq!(r.copies.len(), 1);
        assert_eq!(r.work(false).copied, 8 * MIB);
    }

    #[test]
    fn lined_up_but_offset_module_copies_head_and_tail_pages() {
        let l = layout(None);
        let im = Image {
            src: 0x6000_0100,
            ipa: 0x4800_0100,
            len: 3 * PAGE,
            module: true,
        };
        let r = plan(&l, &[im], K, true).unwrap();
        assert_eq!(
            r.shared,
            vec![Shared {
                ipa: Range::new(0x4800_1000, 0x4800_3000),
                module: 0x6000_1000,
                backing: 0x8800_1000,
            }]
        );
        assert_eq!(
            r.copies,
            vec![
                Load {
                    src: 0x6000_0100,
                    dst: 0x8800_0100,
                    len: 0xf00
                },
                Load {
                    src: 0x6000_3000,
                    dst: 0x8800_3000,
                    len: 0x100
                },
            ]
        );
    }

    #[test]
    fn module_smaller_than_a_page_is_copied() {
        let l = layout(None);
        let r = plan(&l, &[kernel(100, 0x6000_0000)], K, true).unwrap();
        assert!(r.shared.is_empty());
        assert_eq!(r.copies.len(), 1);
    }

    #[test]
    fn shared_run_splits_along_host_blocks() {
        let l = layout(Some(16 * MIB));
        let r = plan(&l, &[kernel(32 * MIB, 0x6000_0000)], K, true).unwrap();
        assert_eq!(
            r.shared,
            vec![
                Shared {
                    ipa: Range::new(0x4000_0000, 0x4100_0000),
                    module: 0x6000_0000,
                    backing: 0x8000_0000,
                },
                Shared {
                    ipa: Range::new(0x4100_0000, 0x4200_0000),
                    module: 0x6100_0000,
                    backing: 0xc000_0000,
                },
            ]
        );
        assert_eq!(
            r.shared_page(0x4100_2345),
            Some((0x4100_2000, 0x6100_2000, 0xc000_2000))
        );
        assert_eq!(
            r.shared_page(0x4000_0fff),
            Some((0x4000_0000, 0x6000_0000, 0x8000_0000))
        );
        assert_eq!(r.shared_page(0x4200_0000), None);
        assert!(r.copies.is_empty());
        // Zeroed: both blocks minus what the shared pages back.
        assert_eq!(
            r.zero,
            vec![Range::new(0xc000_0000 + 16 * MIB, 0xc000_0000 + 240 * MIB),]
        );
    }

    #[test]
    fn image_outside_guest_ram_is_refused() {
        let l = layout(None);
        let im = Image {
            src: 0x6000_0000,
            ipa: 0x4ff0_0000,
            len: 2 * MIB,
            module: true,
        };
        assert_eq!(plan(&l, &[im], K, true), None);
    }

    #[test]
    fn subtract_and_union() {
        let a = [Range::new(0, 100), Range::new(200, 300)];
        let b = [
            Range::new(50, 60),
            Range::new(90, 210),
            Range::new(250, 250),
        ];
        assert_eq!(
            subtract(&a, &b),
            vec![Range::new(0, 50), Range::new(60, 90), Range::new(210, 300)]
        );
        assert_eq!(subtract(&a, &[]), a.to_vec());
        assert_eq!(subtract(&a, &[Range::new(0, 1000)]), vec![]);
        assert_eq!(
            union(vec![
                Range::new(5, 10),
                Range::new(0, 5),
                Range::new(20, 30),
                Range::new(8, 12)
            ]),
            vec![Range::new(0, 12), Range::new(20, 30)]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// For any kernel and initrd (aligned or not, any length, host
            /// RAM in one or two blocks): every image byte is shared or
            /// copied exactly once, to where the guest sees it; the shared,
            /// copied and zeroed host bytes tile the domain's RAM exactly;
            /// no shared page shows a byte beyond its module.
            #[test]
            fn images_and_scrub_tile_the_guest_ram(
                split in proptest::option::of(1u64..128),
                k_src in 0u64..0x10_0000, k_len in 1u64..(40 << 20),
                r_src in 0u64..0x10_0000, r_len in 1u64..(8 << 20), r_page_off in 0u64..4096,
                dtb_len in 1u64..(64 << 10), share: bool,
            ) {
                let l = layout(split.map(|s| s << 21));
                let kernel = Image { src: 0x6000_0000 + k_src, ipa: 0x4000_0000, len: k_len, module: true };
                let rd_ipa = 0x4c00_0000 + r_page_off;
                let rd = Image { src: 0x6800_0000 + r_src, ipa: rd_ipa, len: r_len, module: true };
                let dt = dtb(dtb_len);
                let r = plan(&l, &[kernel, rd, dt], K, share).unwrap();
                let mut covered: Vec<Range> = r.zero.clone();
                covered.extend(r.copies.iter().map(|c| Range::new(c.dst, c.dst + c.len)));
                covered.extend(r.shared.iter().map(|s| s.backing_range()));
                let total: u64 = covered.iter().map(|c| c.size()).sum();
                prop_assert_eq!(total, 256 * MIB, "{:?}", r);
                prop_assert_eq!(union(covered).len(), if split.is_some() { 2 } else { 1 });
                for im in [kernel, rd, dt] {
                    let end = im.ipa + im.len;
                    let mut bytes = 0;
                    for c in &r.copies {
                        if c.src >= im.src && c.src < im.src + im.len {
                            let ipa = im.ipa + (c.src - im.src);
                            prop_assert_eq!(l.ipa_to_pa(ipa), Some(c.dst));
                            bytes += c.len;
                        }
                    }
                    for s in &r.shared {
                        if s.module >= im.src && s.module < im.src + im.len {
                            prop_assert!(s.ipa.start % PAGE == 0 && s.ipa.end % PAGE == 0);
                            prop_assert!(s.module + s.ipa.size() <= im.src + im.len);
                            prop_assert!(s.ipa.end <= end);
                            prop_assert_eq!(l.ipa_to_pa(s.ipa.start), Some(s.backing));
                            bytes += s.ipa.size();
                        }
                    }
                    prop_assert_eq!(bytes, im.len);
                }
                if !share {
                    prop_assert!(r.shared.is_empty());
                }
            }
        }
    }
}
