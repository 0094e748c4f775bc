//! Guest device trees (src/vm/guest_dtb.rs `build`, `describe`) from any
//! `GuestDtbSpec`: vCPUs, RAM banks, bootargs, initrd, CPU compatible, GIC
//! version and phandle, timer frequency, vPL011, addresses of the virtual
//! devices (Xen's guest map or arbitrary, as with direct-map), and, in the
//! second mode, a fuzzed partial device tree merged in as
//! vm::build::guest_dtb does it (only one `config::partial::read`
//! accepts, with the phandle of its /gic).
//!
//! Checked: `build` fails only where a string holds a NUL (vm-fdt's one
//! error for these inputs: bootargs or the CPU compatible); otherwise its
//! blob parses (`fdt::Fdt::new`) and says what the spec says:
//! - root: #address-cells = #size-cells = 2, interrupt-parent = the GIC's
//!   phandle; exactly the nodes expected (plus /aliases and /passthrough
//!   where the partial has them);
//! - /chosen: bootargs (when non-empty), linux,initrd-start/end,
//!   stdout-path to the vPL011 iff there is one;
//! - /cpus: one cpu@<mpidr> per vCPU, reg = vcpu_mpidr(n), all different,
//!   with the compatible, device_type and enable-method;
//! - /memory@<first bank>: reg = the banks, (address, size) in 2+2 cells;
//! - the GIC node at the distributor's address: compatible and reg of its
//!   version (GICv3: the redistributors of every vCPU), phandle;
//! - timer (clock-frequency iff given), psci (hvc), the vPL011 node iff
//!   asked, with its reg and SPI;
//! - the partial's /aliases copied as it is and its /passthrough copied
//!   without xen,reg / xen,path / xen,force-assign-without-iommu;
//! - no phandle twice; the tree reads back the same after writing it again
//!   (fdt::tree).
//!
//! Input: a fixed header (see the code), two length-prefixed strings, then
//! the partial device tree (the rest; used when header bit 0 is set).
#![no_main]

use dtvisor::config::partial;
use dtvisor::emul::vpl011;
use dtvisor::fdt::tree::{Node, Tree};
use dtvisor::fdt::{Fdt, Node as FdtNode};
use dtvisor::mm::Range;
use dtvisor::vm::guest_dtb::{self, GicVersion, GuestDtbSpec, GuestMap, GICR_STRIDE};
use libfuzzer_sys::fuzz_target;

mod bytes;
use bytes::Bytes;

const STRIPPED: [&str; 3] = ["xen,reg", "xen,path", "xen,force-assign-without-iommu"];

/// `n` with the hypervisor's properties left out, at every depth.
fn stripped(n: &Node) -> Node {
    Node {
        name: n.name.clone(),
        props: n
            .props
            .iter()
            .filter(|(p, _)| !STRIPPED.contains(&p.as_str()))
            .cloned()
            .collect(),
        children: n.children.iter().map(stripped).collect(),
    }
}

fn be64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn be32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// Every node's phandle (`phandle`, else `linux,phandle`; both may be
/// there) with the node's path.
fn phandles(n: &Node, path: &str, out: &mut Vec<(u32, String)>) {
    if let Some(v) = n.prop("phandle").or_else(|| n.prop("linux,phandle")) {
        if v.len() == 4 {
            out.push((u32::from_be_bytes([v[0], v[1], v[2], v[3]]), path.into()));
        }
    }
    for c in &n.children {
        phandles(
            c,
            &format!("{}/{}", path.trim_end_matches('/'), c.name),
            out,
        );
    }
}

fn u32_of(n: &FdtNode<'_>, p: &str) -> Option<u32> {
    n.prop(p).and_then(|p| p.u32())
}

fn prop_u64(n: &FdtNode<'_>, p: &str) -> Option<u64> {
    n.prop(p).and_then(|p| p.u64())
}

fn str_of<'a>(n: &FdtNode<'a>, p: &str) -> Option<&'a str> {
    n.prop(p).and_then(|p| p.str())
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let flags = b.u8();
    // Mostly a few vCPUs (each costs a cpu node and a redistributor, and
    // the run's speed goes with them); with the top bit, up to 127.
    let v = b.u8();
    let vcpus = if v & 0x80 != 0 {
        (v & 0x7f) as u32
    } else {
        (v % 9) as u32
    };
    let nbanks = b.u8() as usize % 5;
    let ram: Vec<Range> = (0..nbanks)
        .map(|_| {
            let start = b.u64();
            let size = b.u64() >> (b.u8() % 64);
            Range::new(start, start.saturating_add(size))
        })
        .collect();
    let initrd = (flags & 0x10 != 0).then(|| Range::new(b.u64(), b.u64()));
    let timer = (flags & 0x20 != 0).then(|| b.u32());
    let mut map = GuestMap::XEN;
    if flags & 0x40 != 0 {
        map = GuestMap {
            gicd: b.u64(),
            gicr: b.u64(),
            gicc: b.u64(),
            vpl011: b.u64(),
            // An SPI's INTID (GuestMap's doc; discovery keeps only those).
            vpl011_intid: 32 + b.u16() as u32 % 988,
        };
    }
    let own_phandle = b.u32();
    let bootargs_len = b.u8() as usize;
    let bootargs = String::from_utf8_lossy(b.bytes(bootargs_len)).into_owned();
    let compat_len = b.u8() as usize;
    let cpu_compatible = String::from_utf8_lossy(b.bytes(compat_len)).into_owned();
    let frag = b.rest();

    // The partial, only if `read` accepts it (what the parser checks
    // before a plan names it), with vm::build::guest_dtb's phandle rule.
    let read = (flags & 1 != 0)
        .then(|| partial::read(frag, frag.len() as u64).ok())
        .flatten();
    let (partial, gic_phandle) = match &read {
        Some(p) => (Some(frag), p.gic_phandle.unwrap_or(guest_dtb::GIC_PHANDLE)),
        None if flags & 0x80 != 0 => (None, own_phandle),
        None => (None, guest_dtb::GIC_PHANDLE),
    };
    let gic = if flags & 4 != 0 {
        GicVersion::V2
    } else {
        GicVersion::V3
    };
    let vpl011 = flags & 2 != 0;
    let spec = GuestDtbSpec {
        map,
        partial,
        gic_phandle,
        bootargs: (flags & 8 != 0).then_some(bootargs.as_str()),
        initrd,
        ram: &ram,
        vcpus,
        cpu_compatible: &cpu_compatible,
        gic,
        timer_clock_frequency: timer,
        vpl011,
        host: None,
    };
    // A fragment that is no partial device tree but a device tree: the
    // hardware domain's build from it as the host's. Whatever the tree,
    // no panic, and what is written parses.
    if flags & 1 != 0 && read.is_none() && Fdt::new(frag).is_ok() {
        let removed = [String::from("/chosen"), String::from("/pl011@9000000")];
        let hw = GuestDtbSpec {
            host: Some(guest_dtb::HostTree {
                dtb: frag,
                removed: &removed,
                console: Some("/pl011@9000000"),
            }),
            ..spec.clone()
        };
        if let Ok(blob) = guest_dtb::build(&hw) {
            Fdt::new(&blob).unwrap_or_else(|e| panic!("the hardware domain's DTB does not parse: {e}"));
        }
        return;
    }
    let d = guest_dtb::describe(&spec);
    assert!(
        d.starts_with(&format!("{vcpus} vCPUs, {} RAM banks", ram.len())),
        "{d}"
    );

    let nul_bootargs = spec
        .bootargs
        .is_some_and(|s| !s.is_empty() && s.contains('\0'));
    let nul_compat = vcpus > 0 && cpu_compatible.contains('\0');
    let blob = match guest_dtb::build(&spec) {
        Ok(blob) => blob,
        Err(e) => {
            assert!(
                nul_bootargs || nul_compat,
                "build failed without a NUL in a string: {e:?}\n{spec:?}"
            );
            return;
        }
    };
    assert!(
        !nul_bootargs && !nul_compat,
        "a string with a NUL was written: {spec:?}"
    );
    let f = Fdt::new(&blob).unwrap_or_else(|e| panic!("the guest DTB does not parse: {e}"));
    let root = f.root();
    assert_eq!(u32_of(&root, "#address-cells"), Some(2));
    assert_eq!(u32_of(&root, "#size-cells"), Some(2));
    assert_eq!(u32_of(&root, "interrupt-parent"), Some(gic_phandle));

    // /chosen
    let chosen = f.find("/chosen").expect("/chosen");
    let want_args = spec.bootargs.filter(|s| !s.is_empty());
    assert_eq!(str_of(&chosen, "bootargs"), want_args, "bootargs");
    if want_args.is_none() {
        assert!(chosen.prop("bootargs").is_none());
    }
    assert_eq!(
        prop_u64(&chosen, "linux,initrd-start"),
        initrd.map(|r| r.start)
    );
    assert_eq!(prop_u64(&chosen, "linux,initrd-end"), initrd.map(|r| r.end));
    let uart_path = format!("/sbsa-uart@{:x}", map.vpl011);
    let stdout = str_of(&chosen, "stdout-path");
    assert_eq!(stdout, vpl011.then_some(uart_path.as_str()), "stdout-path");
    if !vpl011 {
        assert!(chosen.prop("stdout-path").is_none());
    }

    // /cpus
    let cpus = f.find("/cpus").expect("/cpus");
    assert_eq!(u32_of(&cpus, "#address-cells"), Some(1));
    assert_eq!(u32_of(&cpus, "#size-cells"), Some(0));
    let mut seen = std::collections::BTreeSet::new();
    let mut n = 0u32;
    for c in cpus.children() {
        let mpidr = guest_dtb::vcpu_mpidr(n);
        assert_eq!(c.name(), format!("cpu@{mpidr:x}"));
        assert_eq!(u32_of(&c, "reg"), Some(mpidr), "cpu {n} reg");
        assert!(seen.insert(mpidr), "two vCPUs with MPIDR {mpidr:#x}");
        assert_eq!(
            c.prop("compatible").map(|p| p.value),
            Some(format!("{cpu_compatible}\0").as_bytes())
        );
        assert_eq!(str_of(&c, "device_type"), Some("cpu"));
        assert_eq!(str_of(&c, "enable-method"), Some("psci"));
        n += 1;
    }
    assert_eq!(n, vcpus, "one cpu node per vCPU");

    // /memory
    let first = ram.first().map_or(0, |r| r.start);
    let mem = f
        .find(&format!("/memory@{first:x}"))
        .expect("the memory node");
    assert_eq!(str_of(&mem, "device_type"), Some("memory"));
    let regs: Vec<u64> = ram.iter().flat_map(|r| [r.start, r.size()]).collect();
    assert_eq!(
        mem.prop("reg").map(|p| p.value.to_vec()),
        Some(be64s(&regs)),
        "memory reg"
    );
    if !ram.is_empty() {
        let got: Vec<(u64, u64)> = mem.prop("reg").unwrap().ranges(2, 2).unwrap().collect();
        let want: Vec<(u64, u64)> = ram.iter().map(|r| (r.start, r.size())).collect();
        assert_eq!(got, want);
    }

    // The GIC
    let gicn = f
        .find(&format!("/interrupt-controller@{:x}", map.gicd))
        .expect("the GIC node at the distributor's address");
    let want_reg = match gic {
        GicVersion::V3 => {
            assert!(gicn.is_compatible("arm,gic-v3"));
            assert_eq!(u32_of(&gicn, "#redistributor-regions"), Some(1));
            vec![
                map.gicd,
                0x1_0000,
                map.gicr,
                vcpus.max(1) as u64 * GICR_STRIDE,
            ]
        }
        GicVersion::V2 => {
            assert!(gicn.is_compatible("arm,gic-400"));
            vec![map.gicd, 0x1000, map.gicc, 0x2000]
        }
    };
    assert_eq!(
        gicn.prop("reg").map(|p| p.value.to_vec()),
        Some(be64s(&want_reg)),
        "GIC reg"
    );
    assert_eq!(u32_of(&gicn, "#interrupt-cells"), Some(3));
    assert!(gicn
        .prop("interrupt-controller")
        .is_some_and(|p| p.value.is_empty()));
    assert_eq!(u32_of(&gicn, "phandle"), Some(gic_phandle));
    assert_eq!(
        f.find_phandle(gic_phandle).map(|n| n.offset()),
        Some(gicn.offset())
    );

    // Timer, PSCI
    let t = f.find("/timer").expect("/timer");
    assert!(t.is_compatible("arm,armv8-timer"));
    assert_eq!(t.prop("interrupts").and_then(|p| p.cell_count()), Some(12));
    assert_eq!(u32_of(&t, "clock-frequency"), timer);
    let psci = f.find("/psci").expect("/psci");
    assert!(psci.is_compatible("arm,psci-1.0"));
    assert_eq!(str_of(&psci, "method"), Some("hvc"));

    // The vPL011
    let uart = f.find(&uart_path);
    assert_eq!(uart.is_some(), vpl011, "the vPL011 node iff asked");
    if let Some(u) = uart {
        assert!(u.is_compatible("arm,sbsa-uart"));
        assert_eq!(
            u.prop("reg").map(|p| p.value.to_vec()),
            Some(be64s(&[map.vpl011, vpl011::SIZE]))
        );
        assert_eq!(
            u.prop("interrupts").map(|p| p.value.to_vec()),
            Some(be32s(&[0, map.vpl011_intid - 32, 4]))
        );
        assert_eq!(u32_of(&u, "interrupt-parent"), Some(gic_phandle));
    }

    // The root's nodes, and what the partial added.
    let tree = Tree::from_fdt(&f);
    let mut want_children = 6 + vpl011 as usize;
    if let (Some(p), Some(frag)) = (&read, partial) {
        let ft = Tree::from_fdt(&Fdt::new(frag).expect("read accepted it"));
        let top = |name: &str| {
            ft.root
                .children
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
        };
        for (name, has, strip) in [
            ("aliases", p.has_aliases, false),
            ("passthrough", p.has_passthrough, true),
        ] {
            let src = top(name);
            assert_eq!(src.is_some(), has, "{name}");
            let Some(src) = src else { continue };
            let want = if strip { stripped(src) } else { src.clone() };
            let got = tree.root.children.iter().find(|c| c.name == src.name);
            assert_eq!(got, Some(&want), "/{} as copied", src.name);
            want_children += 1;
        }
        assert!(
            tree.root
                .children
                .iter()
                .all(|c| !c.name.eq_ignore_ascii_case("gic")),
            "the /gic placeholder is not copied"
        );
    }
    assert_eq!(
        tree.root.children.len(),
        want_children,
        "root nodes: {:?}",
        tree.root
            .children
            .iter()
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
    let mut ph = Vec::new();
    phandles(&tree.root, "/", &mut ph);
    ph.sort_unstable();
    for w in ph.windows(2) {
        assert!(
            w[0].0 != w[1].0,
            "phandle {:#x} given twice in the guest DTB: {} and {}",
            w[0].0,
            w[0].1,
            w[1].1
        );
    }

    // It writes out and reads back the same (the reader and the writer agree).
    let again = tree.to_dtb().expect("the guest tree writes");
    assert_eq!(Tree::from_fdt(&Fdt::new(&again).expect("re-read")), tree);
});
