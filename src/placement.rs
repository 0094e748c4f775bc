//! Placement: from the host's free RAM and each domain's needs to a
//! `Layout`: where every guest's RAM comes from (host) and appears
//! (guest), where its kernel, initrd and DTB go, what SYSTEM_RESET
//! restarts from, and which pCPU runs which vCPU.
//!
//! Rules: guest RAM comes from free host RAM in 1 GiB or 2 MiB aligned
//! blocks where possible, never overlapping the image, the host DTB,
//! reserved memory or any boot module (modules are still to be read);
//! guest RAM appears at 0x4000_0000 (up to 3 GiB) then 0x2_0000_0000
//! (Xen's guest map). The boot modules stay where the bootloader put them,
//! reserved and never written: they are the pristine images SYSTEM_RESET
//! reloads a domain from, so no second copy is made.

use crate::diag::{Diagnostic, Kind};
use crate::mm::range::Size;
use crate::mm::Range;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub const GUEST_RAM0: Range = Range::new(0x4000_0000, 0x4000_0000 + (3 << 30));
pub const GUEST_RAM1: Range = Range::new(0x2_0000_0000, 0x2_0000_0000 + (1016 << 30));
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Room reserved for a guest DTB (Linux accepts up to 2 MiB).
pub const DTB_MAX: u64 = 2 << 20;

/// What placement needs to know of one domain.
#[derive(Clone, Debug)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Needs {
    pub name: String,
    pub path: String,
    pub memory: u64,
    pub vcpus: u32,
    /// Host range of the kernel module.
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::range"))]
    pub kernel: Range,
    /// `text_offset` and `image_size` from the kernel's Image header.
    pub text_offset: u64,
    pub image_size: u64,
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::opt_range"))]
    pub ramdisk: Option<Range>,
    /// `xen,static-mem`: its RAM at these host ranges, not from free RAM.
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub static_mem: Vec<Range>,
    /// Guest addresses are host addresses (needs `static_mem`).
    pub direct_map: bool,
}

/// Guest RAM: `ipa` is backed by host memory from `pa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct RamMap {
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::range"))]
    pub ipa: Range,
    pub pa: u64,
}

#[derive(Clone, Debug)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct DomainLayout {
    pub name: String,
    pub ram: Vec<RamMap>,
    /// Guest-physical banks as the guest DTB lists them.
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub banks: Vec<Range>,
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::range"))]
    pub kernel_ipa: Range,
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::opt_range"))]
    pub initrd_ipa: Option<Range>,
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::range"))]
    pub dtb_ipa: Range,
    /// Host ranges a (re)start copies the kernel and initrd from: the boot
    /// modules themselves.
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub pristine: Vec<Range>,
    /// pCPU index of each vCPU.
    pub pcpus: Vec<usize>,
    pub vmid: u16,
}

impl DomainLayout {
    /// Host RAM behind the guest's RAM, block by block.
    pub fn host_ram(&self) -> Vec<Range> {
        self.ram
            .iter()
            .map(|m| Range::new(m.pa, m.pa + m.ipa.size()))
            .collect()
    }

    /// Host address backing guest address `ipa`.
    pub fn ipa_to_pa(&self, ipa: u64) -> Option<u64> {
        self.ram
            .iter()
            .find(|m| m.ipa.contains(ipa))
            .map(|m| m.pa + (ipa - m.ipa.start))
    }
}

#[derive(Clone, Debug, Default)]
#[cfg_attr(json, derive(serde::Serialize))]
pub struct Layout {
    pub domains: Vec<DomainLayout>,
    /// Boot modules, kept reserved as the reset sources (each once, even
    /// when domains share one).
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub kept: Vec<Range>,
    /// Free host RAM left after placement.
    #[cfg_attr(json, serde(serialize_with = "crate::mm::ser::ranges"))]
    pub free: Vec<Range>,
}

/// Guest RAM banks of a domain that is not direct-mapped: Xen's RAM0 up
/// to 3 GiB, then RAM1.
pub fn guest_banks(memory: u64) -> Vec<Range> {
    let in_ram0 = memory.min(GUEST_RAM0.size());
    let mut banks = alloc::vec![Range::new(GUEST_RAM0.start, GUEST_RAM0.start + in_ram0)];
    if memory > in_ram0 {
        banks.push(Range::new(
            GUEST_RAM1.start,
            GUEST_RAM1.start + (memory - in_ram0),
        ));
    }
    banks
}

/// Free host RAM: `ram` minus every `busy` range, sorted.
pub fn free_ram(ram: &[Range], busy: &[Range]) -> Vec<Range> {
    let mut free: Vec<Range> = ram.to_vec();
    for b in busy {
        let mut next = Vec::with_capacity(free.len() + 1);
        for f in free {
            if !f.overlaps(b) {
                next.push(f);
                continue;
            }
            if f.start < b.start {
                next.push(Range::new(f.start, b.start));
            }
            if b.end < f.end {
                next.push(Range::new(b.end, f.end));
            }
        }
        free = next;
    }
    free.sort();
    free
}

/// Takes `size` bytes aligned to `align` from `free`: from the first
/// block that fits whole.
fn take(free: &mut Vec<Range>, size: u64, align: u64) -> Option<Range> {
    for i in 0..free.len() {
        let f = free[i];
        let start = f.start.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end <= f.end {
            free.remove(i);
            if end < f.end {
                free.insert(i, Range::new(end, f.end));
            }
            if f.start < start {
                free.insert(i, Range::new(f.start, start));
            }
            return Some(Range::new(start, end));
        }
    }
    None
}

/// Host memory for `size` bytes of guest RAM: one block if possible (1 GiB
/// aligned, else 2 MiB aligned), else several 2 MiB aligned blocks,
/// largest first.
fn take_ram(free: &mut Vec<Range>, size: u64) -> Option<Vec<Range>> {
    if size >= GIB {
        if let Some(r) = take(free, size, GIB) {
            return Some(alloc::vec![r]);
        }
    }
    if let Some(r) = take(free, size, MIB2) {
        return Some(alloc::vec![r]);
    }
    let mut got = Vec::new();
    let mut left = size;
    let backup = free.clone();
    while left > 0 {
        // The largest 2 MiB aligned piece available.
        let best = free
            .iter()
            .map(|f| {
                let s = (f.start + MIB2 - 1) & !(MIB2 - 1);
                (f.end.saturating_sub(s) & !(MIB2 - 1), s)
            })
            .max();
        match best {
            Some((avail, _)) if avail > 0 => {
                let r = take(free, avail.min(left), MIB2)?;
                left -= r.size();
                got.push(r);
            }
            _ => {
                *free = backup;
                return None;
            }
        }
    }
    Some(got)
}

/// Places every domain. `busy` holds everything that is not free
/// (reserved memory, image, DTB, heap, all modules); `pcpus` the number
/// of physical CPUs.
pub fn place(
    ram: &[Range],
    busy: &[Range],
    pcpus: usize,
    needs: &[Needs],
) -> Result<Layout, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    check_vcpus(pcpus, needs, &mut errors);
    // Static memory first: it is checked against what is busy, then taken
    // out of the free RAM everything else is placed from.
    let statics = check_static_mem(ram, busy, needs, &mut errors);
    let all_busy: Vec<Range> = busy.iter().chain(&statics).copied().collect();
    let mut free = free_ram(ram, &all_busy);
    let mut layout = Layout::default();
    let mut next_cpu = 0usize;
    for (i, n) in needs.iter().enumerate() {
        match place_domain(n, &mut free, next_cpu, (i + 1) as u16) {
            Ok(d) => {
                next_cpu += n.vcpus as usize;
                layout.domains.push(d);
            }
            Err(message) => errors.push(failure(&n.path, message)),
        }
    }
    let mut modules: Vec<Range> = needs
        .iter()
        .flat_map(|n| core::iter::once(n.kernel).chain(n.ramdisk))
        .collect();
    modules.sort();
    modules.dedup();
    layout.kept = modules;
    layout.free = free;
    if errors.is_empty() {
        Ok(layout)
    } else {
        Err(errors)
    }
}

/// A placement failure at node `path` (a domain, or /chosen).
fn failure(path: &str, message: String) -> Diagnostic {
    Diagnostic::error(path, None, Kind::Placement, message)
}

/// Each vCPU needs a pCPU of its own.
fn check_vcpus(pcpus: usize, needs: &[Needs], errors: &mut Vec<Diagnostic>) {
    let total_vcpus: u64 = needs.iter().map(|n| n.vcpus as u64).sum();
    if total_vcpus > pcpus as u64 {
        let list: Vec<String> = needs
            .iter()
            .map(|n| format!("{} ({})", n.name, n.vcpus))
            .collect();
        errors.push(failure(
            "/chosen",
            format!(
                "the domains need {total_vcpus} vCPUs but the machine has {pcpus} CPUs, and each vCPU needs its own: {}",
                list.join(", ")
            ),
        ));
    }
}

/// Every domain's `xen,static-mem` ranges, each inside one RAM bank and
/// clear of everything busy.
fn check_static_mem(
    ram: &[Range],
    busy: &[Range],
    needs: &[Needs],
    errors: &mut Vec<Diagnostic>,
) -> Vec<Range> {
    let mut statics: Vec<Range> = Vec::new();
    for n in needs {
        for r in &n.static_mem {
            if !ram.iter().any(|b| b.contains_range(r)) {
                errors.push(failure(
                    &n.path,
                    format!("xen,static-mem: range {r} is not inside one host RAM bank"),
                ));
            }
            for b in busy.iter().filter(|b| b.overlaps(r)) {
                errors.push(failure(
                    &n.path,
                    format!(
                        "xen,static-mem: range {r} overlaps {b}, which is in use (the hypervisor, its heap, the device tree, reserved memory or a boot module)"
                    ),
                ));
            }
            statics.push(*r);
        }
    }
    statics
}

/// One domain: its RAM from `free` (or its static memory), its guest
/// banks, where its kernel, initrd and DTB go, its pCPUs from `first_cpu`.
fn place_domain(
    n: &Needs,
    free: &mut Vec<Range>,
    first_cpu: usize,
    vmid: u16,
) -> Result<DomainLayout, String> {
    let available: u64 = free
        .iter()
        .map(|f| f.end.saturating_sub((f.start + MIB2 - 1) & !(MIB2 - 1)) & !(MIB2 - 1))
        .sum();
    let blocks = if n.static_mem.is_empty() {
        take_ram(free, n.memory)
    } else {
        Some(n.static_mem.clone())
    };
    let Some(blocks) = blocks else {
        return Err(format!(
            "memory: {} does not fit in free host RAM ({} free in 2 MiB blocks, short by {})",
            Size(n.memory),
            Size(available),
            Size(n.memory.saturating_sub(available))
        ));
    };
    // Guest banks: RAM0 first, then RAM1; host blocks mapped in order.
    let banks = if n.direct_map {
        blocks.clone()
    } else {
        guest_banks(n.memory)
    };
    let maps = map_blocks(&blocks, &banks);
    let (kernel_ipa, initrd_ipa, dtb_ipa) = image_slots(n, banks[0])?;
    Ok(DomainLayout {
        name: n.name.clone(),
        ram: maps,
        banks,
        kernel_ipa,
        initrd_ipa,
        dtb_ipa,
        pristine: core::iter::once(n.kernel).chain(n.ramdisk).collect(),
        pcpus: (first_cpu..first_cpu + n.vcpus as usize).collect(),
        vmid,
    })
}

/// Host `blocks` mapped in order onto the guest `banks`.
fn map_blocks(blocks: &[Range], banks: &[Range]) -> Vec<RamMap> {
    let mut maps = Vec::new();
    let (mut bi, mut boff) = (0usize, 0u64);
    for b in blocks {
        let mut pa = b.start;
        let mut left = b.size();
        while left > 0 {
            let bank = banks[bi];
            let chunk = left.min(bank.size() - boff);
            maps.push(RamMap {
                ipa: Range::new(bank.start + boff, bank.start + boff + chunk),
                pa,
            });
            pa += chunk;
            left -= chunk;
            boff += chunk;
            if boff == bank.size() {
                bi += 1;
                boff = 0;
            }
        }
    }
    maps
}

/// Kernel at bank 0 + text_offset (Linux: text_offset bytes above a 2 MiB
/// aligned base); DTB at the top of bank 0 (2 MiB aligned); the initrd
/// just below the DTB. An error if bank 0 cannot hold them.
fn image_slots(n: &Needs, bank0: Range) -> Result<(Range, Option<Range>, Range), String> {
    let base = (bank0.start + MIB2 - 1) & !(MIB2 - 1);
    let kernel_ipa = Range::new(
        base + n.text_offset,
        base + n.text_offset + n.image_size.max(n.kernel.size()),
    );
    let dtb_start = (bank0.end - DTB_MAX) & !(MIB2 - 1);
    let dtb_ipa = Range::new(dtb_start, dtb_start + DTB_MAX);
    let initrd_ipa = n.ramdisk.map(|r| {
        let start = (dtb_start - r.size()) & !0xfff;
        Range::new(start, start + r.size())
    });
    let lowest = initrd_ipa.map_or(dtb_ipa.start, |r| r.start);
    if bank0.end < DTB_MAX || kernel_ipa.end > lowest || lowest < bank0.start {
        return Err(format!(
            "memory: {} is too small for the kernel ({}), {}the device tree (2 MiB)",
            Size(n.memory),
            Size(kernel_ipa.size() + n.text_offset),
            n.ramdisk.map_or(String::new(), |r| format!(
                "the initrd ({}) and ",
                Size(r.size())
            ))
        ));
    }
    Ok((kernel_ipa, initrd_ipa, dtb_ipa))
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.domains {
            writeln!(f, "layout {} (vmid {})", d.name, d.vmid)?;
            for m in &d.ram {
                writeln!(
                    f,
                    "  ram guest {} <- host {} {}",
                    m.ipa,
                    Range::new(m.pa, m.pa + m.ipa.size()),
                    Size(m.ipa.size())
                )?;
            }
            writeln!(f, "  kernel guest {}", d.kernel_ipa)?;
            if let Some(r) = d.initrd_ipa {
                writeln!(f, "  initrd guest {r}")?;
            }
            writeln!(f, "  dtb guest {}", d.dtb_ipa)?;
            for p in &d.pristine {
                writeln!(
                    f,
                    "  reset source host {p} {} (boot module)",
                    Size(p.size())
                )?;
            }
            let cpus: Vec<String> = d.pcpus.iter().map(|c| format!("{c}")).collect();
            writeln!(f, "  vcpus on pcpus {}", cpus.join(","))?;
        }
        let kept: u64 = self.kept.iter().map(|r| r.size()).sum();
        writeln!(
            f,
            "boot modules kept in place as reset sources: {}",
            Size(kept)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(name: &str, mem: u64, vcpus: u32, kernel: Range, ramdisk: Option<Range>) -> Needs {
        Needs {
            name: name.into(),
            path: format!("/chosen/{name}"),
            memory: mem,
            vcpus,
            kernel,
            text_offset: 0,
            image_size: 0x20_0000,
            ramdisk,
            static_mem: Vec::new(),
            direct_map: false,
        }
    }

    const RAM: [Range; 1] = [Range::new(0x4000_0000, 0xc000_0000)];

    #[test]
    fn static_memory_is_used_as_given_and_kept_from_others() {
        let k = Range::new(0x5000_0000, 0x5010_0000);
        let st = Range::new(0x6000_0000, 0x6800_0000);
        let mut a = needs("domU1", 128 << 20, 1, k, None);
        a.static_mem = alloc::vec![st];
        let b = needs("domU2", 1 << 30, 1, k, None);
        let l = place(&RAM, &[k], 2, &[a, b]).unwrap();
        assert_eq!(
            l.domains[0].ram,
            [RamMap {
                ipa: Range::new(0x4000_0000, 0x4800_0000),
                pa: st.start
            }]
        );
        assert_eq!(l.domains[0].banks, [Range::new(0x4000_0000, 0x4800_0000)]);
        for m in &l.domains[1].ram {
            assert!(
                !Range::new(m.pa, m.pa + m.ipa.size()).overlaps(&st),
                "domU2 got static memory"
            );
        }
    }

    #[test]
    fn direct_map_is_the_identity_in_every_bank() {
        let k = Range::new(0x5000_0000, 0x5010_0000);
        let st = [
            Range::new(0x6010_0000, 0x6400_0000),
            Range::new(0x7000_0000, 0x7010_0000),
        ];
        let mut a = needs(
            "domU1",
            0x3f0_0000,
            1,
            k,
            Some(Range::new(0x5200_0000, 0x5210_0000)),
        );
        a.static_mem = st.to_vec();
        a.direct_map = true;
        let l = place(&RAM, &[k], 1, &[a]).unwrap();
        let d = &l.domains[0];
        assert_eq!(d.banks, st);
        assert!(d.ram.iter().all(|m| m.ipa.start == m.pa));
        assert_eq!(
            d.kernel_ipa.start, 0x6020_0000,
            "2 MiB aligned base in bank 0"
        );
        assert!(st[0].contains_range(&d.dtb_ipa) && st[0].contains_range(&d.initrd_ipa.unwrap()));
    }

    #[test]
    fn static_memory_over_busy_or_outside_ram_is_an_error() {
        let k = Range::new(0x5000_0000, 0x5010_0000);
        let mut a = needs("domU1", 2 << 20, 1, k, None);
        a.static_mem = alloc::vec![Range::new(0x5000_0000, 0x5020_0000)];
        let e = place(&RAM, &[k], 1, &[a.clone()]).unwrap_err();
        assert!(
            e[0].message.contains("overlaps [0x50000000, 0x50100000)"),
            "{e:?}"
        );
        a.static_mem = alloc::vec![Range::new(0xc000_0000, 0xc020_0000)];
        let e = place(&RAM, &[k], 1, &[a]).unwrap_err();
        assert!(
            e[0].message.contains("not inside one host RAM bank"),
            "{e:?}"
        );
    }

    #[test]
    fn two_domains_avoid_everything_busy() {
        let k1 = Range::new(0x5000_0000, 0x5010_0000);
        let r1 = Range::new(0x5100_0000, 0x5180_0000);
        let k2 = Range::new(0x5200_0000, 0x5210_0000);
        let busy = [
            Range::new(0x4020_0000, 0x4030_0000),
            Range::new(0x4800_0000, 0x4810_0000),
            k1,
            r1,
            k2,
        ];
        let n = [
            needs("domU1", 256 << 20, 1, k1, Some(r1)),
            needs("domU2", 128 << 20, 2, k2, None),
        ];
        let l = place(&RAM, &busy, 4, &n).unwrap();
        let mut used: Vec<Range> = Vec::new();
        for d in &l.domains {
            for m in &d.ram {
                let host = Range::new(m.pa, m.pa + m.ipa.size());
                assert_eq!(m.pa % MIB2, 0);
                for b in busy.iter().chain(used.iter()) {
                    assert!(!host.overlaps(b), "{host} overlaps {b}");
                }
                used.push(host);
            }
            // Reset sources are the modules themselves: busy, never guest RAM.
            for p in &d.pristine {
                assert!(busy.contains(p), "{p} is not a boot module");
            }
        }
        let d1 = &l.domains[0];
        assert_eq!(d1.banks, [Range::new(0x4000_0000, 0x5000_0000)]);
        assert_eq!(d1.dtb_ipa, Range::new(0x4fe0_0000, 0x5000_0000));
        assert_eq!(d1.initrd_ipa, Some(Range::new(0x4f60_0000, 0x4fe0_0000)));
        assert_eq!(d1.pcpus, [0]);
        assert_eq!(l.domains[1].pcpus, [1, 2]);
        assert_eq!(l.kept, [k1, r1, k2]);
        assert!(d1.ipa_to_pa(0x4000_1000).is_some());
        assert!(d1.ipa_to_pa(0x5000_0000).is_none());
    }

    #[test]
    fn large_domain_gets_a_1g_block_and_ram1() {
        let ram = [Range::new(0x4000_0000, 0x1_4000_0000)];
        let k = Range::new(0x4100_0000, 0x4120_0000);
        let l = place(&ram, &[k], 1, &[needs("big", 3 << 30, 1, k, None)]).unwrap();
        let d = &l.domains[0];
        assert_eq!(d.banks, [Range::new(0x4000_0000, 0x1_0000_0000)]);
        let n = [needs("huge", (3 << 30) + (512 << 20), 1, k, None)];
        let ram = [Range::new(0x4000_0000, 0x2_4000_0000)];
        let l = place(&ram, &[k], 1, &n).unwrap();
        assert_eq!(
            l.domains[0].banks[1],
            Range::new(0x2_0000_0000, 0x2_2000_0000)
        );
        assert_eq!(l.domains[0].ram[0].pa % GIB, 0);
    }

    #[test]
    fn fragmented_ram_is_used_in_pieces() {
        let ram = [
            Range::new(0x4000_0000, 0x4800_0000),
            Range::new(0x8000_0000, 0x8800_0000),
        ];
        let k = Range::new(0x4000_0000, 0x4010_0000);
        let l = place(&ram, &[k], 1, &[needs("d", 200 << 20, 1, k, None)]).unwrap();
        let total: u64 = l.domains[0].ram.iter().map(|m| m.ipa.size()).sum();
        assert_eq!(total, 200 << 20);
        assert!(l.domains[0].ram.len() >= 2);
    }

    #[test]
    fn errors_name_domain_and_shortfall() {
        let k = Range::new(0x4000_0000, 0x4010_0000);
        let e = place(&RAM, &[k], 4, &[needs("domU1", 4 << 30, 1, k, None)]).unwrap_err();
        assert_eq!(e[0].path, "/chosen/domU1");
        assert!(e[0].message.contains("short by"), "{}", e[0].message);
        let n = [
            needs("a", 64 << 20, 3, k, None),
            needs("b", 64 << 20, 2, k, None),
        ];
        let e = place(&RAM, &[k], 4, &n).unwrap_err();
        assert!(
            e[0].message
                .contains("need 5 vCPUs but the machine has 4 CPUs"),
            "{}",
            e[0].message
        );
        assert!(e[0].message.contains("a (3), b (2)"));
        let e = place(&RAM, &[k], 4, &[needs("tiny", 2 << 20, 1, k, None)]).unwrap_err();
        assert!(e[0].message.contains("too small"), "{}", e[0].message);
    }
}
