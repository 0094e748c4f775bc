//! Allocation-free views of the boot DTB for the first steps of the image,
//! before the heap exists: RAM banks (for the EL2 identity map) and every
//! range the heap must not be carved from.

use crate::fdt::{Fdt, Node};
use crate::mm::Range;

/// Calls `f` with each RAM bank of the `memory` nodes (`device_type = "memory"`).
pub fn for_each_ram(fdt: &Fdt<'_>, mut f: impl FnMut(Range)) {
    let root = fdt.root();
    let (ac, sc) = root.child_cells();
    for n in root.children() {
        let is_mem = n.prop("device_type").and_then(|p| p.str()) == Some("memory");
        if !is_mem || !n.is_enabled() {
            continue;
        }
        if let Some(regs) = n.prop("reg").and_then(|p| p.ranges(ac, sc)) {
            regs.filter_map(|(a, s)| Range::from_base_size(a, s))
                .filter(|r| !r.is_empty())
                .for_each(&mut f);
        }
    }
}

/// The 4 KiB page holding a spin-table release address: never given to a
/// guest or the heap, mapped at EL2 (the hypervisor writes it).
pub fn release_page(addr: u64) -> Range {
    let start = addr & !0xfff;
    Range::new(start, start + 0x1000)
}

/// Calls `f` with every range that free RAM must exclude and that the DTB
/// tells: `/memreserve/`, `/reserved-memory` children, spin-table release
/// pages, and anything under
/// `/chosen` with a `reg` (boot modules, decoded with the parent's cells,
/// inherited as Xen does), domains' `xen,static-mem`, or
/// `linux,initrd-start/end`. Deliberately
/// over-approximate: it runs before the config parser can.
pub fn for_each_busy(fdt: &Fdt<'_>, mut f: impl FnMut(Range)) {
    for (a, s) in fdt.reserved_entries() {
        if let Some(r) = Range::from_base_size(a, s) {
            f(r);
        }
    }
    let root = fdt.root();
    // Spin-table release addresses: the hypervisor writes them, the CPUs
    // waiting in firmware read them.
    if let Some(cpus) = root.child("cpus") {
        for c in cpus.children() {
            let release = c
                .prop("cpu-release-addr")
                .filter(|p| p.value.len() == 8)
                .and_then(|p| p.read_cells(0, 2));
            if let Some(a) = release {
                f(release_page(a));
            }
        }
    }
    if let Some(rm) = root.child("reserved-memory") {
        let (ac, sc) = rm.child_cells();
        for c in rm.children() {
            if let Some(regs) = c.prop("reg").and_then(|p| p.ranges(ac, sc)) {
                regs.filter_map(|(a, s)| Range::from_base_size(a, s))
                    .for_each(&mut f);
            }
        }
    }
    let Some(chosen) = root.child("chosen") else {
        return;
    };
    let start = chosen
        .prop("linux,initrd-start")
        .and_then(|p| p.read_cells(0, p.value.len() as u32 / 4));
    let end = chosen
        .prop("linux,initrd-end")
        .and_then(|p| p.read_cells(0, p.value.len() as u32 / 4));
    if let (Some(s), Some(e)) = (start, end) {
        f(Range::new(s, e));
    }
    visit_regs(&chosen, (2, 2), 0, &mut f);
}

fn visit_regs(node: &Node<'_>, parent_cells: (u32, u32), depth: usize, f: &mut impl FnMut(Range)) {
    let (a, s) = node.cells();
    let cells = (a.unwrap_or(parent_cells.0), s.unwrap_or(parent_cells.1));
    for c in node.children() {
        for name in ["reg", "module-addr"] {
            if let Some(regs) = c.prop(name).and_then(|p| p.ranges(cells.0, cells.1)) {
                regs.filter_map(|(a, s)| Range::from_base_size(a, s))
                    .for_each(&mut *f);
            }
        }
        // A domain's static memory, in the domain node's own cells.
        if let Some(p) = c.prop("xen,static-mem") {
            let (ca, cs) = c.cells();
            let own = (ca.unwrap_or(cells.0), cs.unwrap_or(cells.1));
            if let Some(regs) = p.ranges(own.0, own.1) {
                regs.filter_map(|(a, s)| Range::from_base_size(a, s))
                    .for_each(&mut *f);
            }
        }
        if depth < 4 {
            visit_regs(&c, cells, depth + 1, f);
        }
    }
}

/// The lowest `size`-byte, `align`-aligned block of RAM that avoids every
/// range in `busy`.
pub fn find_free(ram: &[Range], busy: &[Range], size: u64, align: u64) -> Option<Range> {
    for bank in ram {
        let mut start = bank.start.checked_add(align - 1)? & !(align - 1);
        while let Some(end) = start.checked_add(size) {
            if end > bank.end {
                break;
            }
            let cand = Range::new(start, end);
            match busy
                .iter()
                .filter(|b| b.overlaps(&cand))
                .map(|b| b.end)
                .max()
            {
                None => return Some(cand),
                Some(e) => start = e.checked_add(align - 1)? & !(align - 1),
            }
        }
    }
    None
}

/// The hypervisor heap for this DTB, decided before the parse (no
/// allocation yet): 1 MiB, plus four times the DTB (discovery and the
/// parser hold copies of its facts), plus 128 KiB for each node below
/// `/chosen` (a domain's plan, stage-2 tables, vCPU and device state),
/// plus three times each partial device tree (read, copied into the guest
/// DTB, and the guest DTB itself), in 64 KiB steps. Measured: two Linux
/// domUs use 180 KiB at most. A boot that needs more gets it from RAM
/// left free after placement, so this only has to cover the boot up to
/// placement.
pub fn heap_size(fdt: &Fdt<'_>) -> u64 {
    let mut size = (1u64 << 20) + 4 * fdt.as_bytes().len() as u64;
    if let Some(chosen) = fdt.root().child("chosen") {
        for n in chosen.descendants() {
            size += 128 << 10;
            if n.is_compatible("multiboot,device-tree") {
                let mut part = 0;
                // Cells as the parser reads them (the domain's own, else 2/2):
                // over-approximate with the largest value found.
                if let Some(p) = n.prop("reg") {
                    for cells in [(1, 1), (2, 1), (1, 2), (2, 2)] {
                        if let Some(mut r) = p.ranges(cells.0, cells.1) {
                            if let Some((_, s)) = r.next() {
                                part = part.max(s.min(2 << 20));
                            }
                        }
                    }
                }
                size += 3 * part;
            }
        }
    }
    size.next_multiple_of(64 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_grows_with_domains_and_partial_device_trees() {
        let dts = |chosen: &str| {
            let src = alloc::format!(
                "/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>; chosen {{ {chosen} }}; }};"
            );
            let out = std::process::Command::new("dtc")
                .args(["-q", "-I", "dts", "-O", "dtb"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(src.as_bytes())?;
                    c.wait_with_output()
                })
                .expect("dtc");
            out.stdout
        };
        let none = dts("");
        let base = heap_size(&Fdt::new(&none).unwrap());
        assert_eq!(base, (1u64 << 20) + (64 << 10));
        let two = dts(
            "domU1 { compatible = \"xen,domain\"; #address-cells = <1>; #size-cells = <1>;
               module@0 { compatible = \"multiboot,kernel\"; reg = <0x50000000 0x100000>; }; };
             domU2 { compatible = \"xen,domain\"; #address-cells = <1>; #size-cells = <1>;
               module@1 { compatible = \"multiboot,device-tree\"; reg = <0x51000000 0x10000>; }; };",
        );
        let h = heap_size(&Fdt::new(&two).unwrap());
        // 4 nodes, one partial DTB of 64 KiB read three times.
        assert!(h >= base + 4 * (128 << 10) + 3 * (64 << 10), "{h:#x}");
        assert!(
            h < base + 4 * (128 << 10) + 3 * (64 << 10) + (64 << 10) + 8 * 1024,
            "{h:#x}"
        );
    }

    #[test]
    fn find_free_skips_busy() {
        let ram = [Range::new(0x4000_0000, 0x8000_0000)];
        let busy = [
            Range::new(0x4000_0000, 0x4040_0000),
            Range::new(0x4100_0000, 0x4100_1000),
        ];
        let r = find_free(&ram, &busy, 16 << 20, 2 << 20).unwrap();
        assert_eq!(r, Range::new(0x4120_0000, 0x4220_0000));
        assert!(find_free(&ram, &busy, 2 << 30, 2 << 20).is_none());
    }
}
