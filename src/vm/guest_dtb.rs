//! The guest DTB, written with rust-vmm's `vm-fdt`, in the layout Xen gives
//! dom0less domUs (bindings.md 4.2), so kernels and DTB fragments written
//! for Xen guests see the same machine. One documented extension:
//! `/chosen/stdout-path` names the vpl011 when present, so early console
//! output works without kernel arguments.

use crate::emul::vpl011;
use crate::mm::Range;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

/// Phandle of the vGIC (Xen's GUEST_PHANDLE_GIC), as the partial device
/// tree contract fixes it.
pub use crate::config::partial::GIC_PHANDLE;
pub use crate::hw::GicVersion;
pub use crate::vgic::v3::{GICD_BASE, GICR_BASE, GICR_STRIDE};
pub const GICC_BASE: u64 = 0x0300_2000;

/// Where a guest sees its virtual devices: Xen's guest map, or for a
/// direct-mapped domain the host's own GIC and console addresses (so
/// nothing lands on RAM, which the guest sees at host addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMap {
    pub gicd: u64,
    /// GICv3 redistributors (one 128 KiB frame pair per vCPU).
    pub gicr: u64,
    /// GICv2 CPU interface.
    pub gicc: u64,
    pub vpl011: u64,
    /// The vPL011's interrupt (an SPI's INTID).
    pub vpl011_intid: u32,
}

impl GuestMap {
    /// Xen's guest map (bindings 4.1).
    pub const XEN: GuestMap = GuestMap {
        gicd: GICD_BASE,
        gicr: GICR_BASE,
        gicc: GICC_BASE,
        vpl011: vpl011::BASE,
        vpl011_intid: vpl011::INTID,
    };
}

/// What goes into one guest's DTB.
#[derive(Clone, Debug)]
pub struct GuestDtbSpec<'a> {
    pub map: GuestMap,
    /// A partial device tree whose /aliases and /passthrough are copied
    /// (checked by `config::partial::read`), and the phandle its /gic
    /// placeholder gives the vGIC.
    pub partial: Option<&'a [u8]>,
    pub gic_phandle: u32,
    pub bootargs: Option<&'a str>,
    /// Guest-physical initrd range.
    pub initrd: Option<Range>,
    /// Guest-physical RAM banks.
    pub ram: &'a [Range],
    pub vcpus: u32,
    /// `compatible` of the host's first CPU node.
    pub cpu_compatible: &'a str,
    pub gic: GicVersion,
    pub timer_clock_frequency: Option<u32>,
    pub vpl011: bool,
    /// The hardware domain: its tree is the host's, filtered.
    pub host: Option<HostTree<'a>>,
}

/// The host device tree a hardware domain's is copied from.
#[derive(Clone, Copy, Debug)]
pub struct HostTree<'a> {
    pub dtb: &'a [u8],
    /// Host nodes left out (and their subtrees), by path.
    pub removed: &'a [String],
    /// The host console's node: aliases naming it name the vPL011.
    pub console: Option<&'a str>,
}

/// Guest MPIDR affinity of vCPU `n`: Aff0 = n & 0xf, Aff1 = n >> 4.
pub fn vcpu_mpidr(n: u32) -> u32 {
    (n & 0xf) | ((n >> 4) << 8)
}

type W = vm_fdt::FdtWriter;
type Res = Result<(), vm_fdt::Error>;

/// Builds the guest DTB: /chosen, the CPUs, memory, the vGIC, the timer,
/// PSCI and the vPL011, after the partial device tree's nodes.
pub fn build(spec: &GuestDtbSpec) -> Result<Vec<u8>, vm_fdt::Error> {
    if let Some(h) = spec.host {
        return build_hardware(spec, h);
    }
    let mut w = vm_fdt::FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", spec.gic_phandle)?;
    if let Some(p) = spec.partial {
        crate::config::partial::copy_into(p, &mut w)?;
    }
    chosen(&mut w, spec)?;
    cpus(&mut w, spec)?;
    memory_gic_timer_psci_uart(&mut w, spec, (0, 0))?;
    w.end_node(root)?;
    w.finish()
}

/// The nodes every guest's tree ends with: memory, the vGIC (with
/// `gic_cells`, see `gic`), the timer, PSCI and the vPL011.
fn memory_gic_timer_psci_uart(w: &mut W, spec: &GuestDtbSpec, gic_cells: (u32, u32)) -> Res {
    let first = spec.ram.first().map_or(0, |r| r.start);
    let mem = w.begin_node(&format!("memory@{first:x}"))?;
    w.property_string("device_type", "memory")?;
    let regs: Vec<u64> = spec.ram.iter().flat_map(|r| [r.start, r.size()]).collect();
    w.property_array_u64("reg", &regs)?;
    w.end_node(mem)?;
    gic(w, spec, gic_cells)?;
    timer_and_psci(w, spec)?;
    if spec.vpl011 {
        let m = &spec.map;
        let uart = w.begin_node(&format!("sbsa-uart@{:x}", m.vpl011))?;
        w.property_string("compatible", "arm,sbsa-uart")?;
        w.property_array_u64("reg", &[m.vpl011, vpl011::SIZE])?;
        w.property_array_u32("interrupts", &[0, m.vpl011_intid - 32, 4])?;
        w.property_u32("interrupt-parent", spec.gic_phandle)?;
        w.property_u32("current-speed", 115200)?;
        w.end_node(uart)?;
    }
    Ok(())
}

/// Properties a hardware domain's copy of a host node drops: MSI
/// routing to an ITS (dtvisor offers no virtual ITS, so PCI falls back to
/// INTx) and Xen's own marker.
const DROPPED_PROPS: [&str; 4] = ["msi-parent", "msi-map", "msi-map-mask", "xen,passthrough"];

/// The hardware domain's tree (Xen's dom0 rules, `config::hwdom`): the
/// host's root properties and nodes, less those the hypervisor describes
/// (/chosen, /cpus, memory, the GIC, timer, PSCI, /hypervisor) and those
/// left out (`host.removed`), then the generated nodes of every guest.
/// The vGIC keeps the host GIC's phandle and cells, so every copied
/// `interrupt-parent` still names it and every PCI `interrupt-map` entry
/// (written with the GIC's #address-cells) still decodes. The host's root
/// must use 2 address and 2 size cells, as the generated nodes do.
fn build_hardware(spec: &GuestDtbSpec, host: HostTree<'_>) -> Result<Vec<u8>, vm_fdt::Error> {
    use crate::fdt::{Fdt, Node};
    let fdt = Fdt::new(host.dtb).map_err(|_| vm_fdt::Error::InvalidString)?;
    let root = fdt.root();
    if root.cells() != (Some(2), Some(2)) {
        return Err(vm_fdt::Error::InvalidNodeName);
    }
    let host_gic = crate::hw::platform::gic_node(&fdt);
    let gic = host_gic.map(|g| g.offset());
    let gic_cells = host_gic.map_or((0, 0), |g| {
        let (a, s) = g.cells();
        (a.unwrap_or(0), s.unwrap_or(0))
    });
    let spec = &GuestDtbSpec {
        gic_phandle: host_gic
            .and_then(|g| g.prop("phandle")?.u32())
            .unwrap_or(spec.gic_phandle),
        ..spec.clone()
    };
    let mut w = vm_fdt::FdtWriter::new()?;
    let top = w.begin_node("")?;
    for p in root.props() {
        match p.name {
            "interrupt-parent" => w.property_u32("interrupt-parent", spec.gic_phandle)?,
            n if DROPPED_PROPS.contains(&n) => {}
            n => w.property(n, p.value)?,
        }
    }
    let skip = |n: &Node<'_>, path: &str| {
        Some(n.offset()) == gic
            || host.removed.iter().any(|r| r == path)
            || crate::config::hwdom::hypervisors(n)
    };
    fn copy(
        w: &mut W,
        n: Node<'_>,
        path: &str,
        parent_cells: u32,
        skip: &dyn Fn(&Node<'_>, &str) -> bool,
    ) -> Res {
        let node = w.begin_node(n.name())?;
        let pci = n.prop("device_type").and_then(|p| p.str()) == Some("pci");
        for p in n.props() {
            if DROPPED_PROPS.contains(&p.name) {
                continue;
            }
            if pci && p.name == "ranges" {
                w.property("ranges", &pci_ranges_in_reach(&p, parent_cells))?;
            } else {
                w.property(p.name, p.value)?;
            }
        }
        let cells = n.cells().0.unwrap_or(2);
        for c in n.children() {
            let cp = format!("{path}/{}", c.name());
            if !skip(&c, &cp) {
                copy(w, c, &cp, cells, skip)?;
            }
        }
        w.end_node(node)
    }
    let uart = format!("/sbsa-uart@{:x}", spec.map.vpl011);
    for c in root.children() {
        let path = format!("/{}", c.name());
        if c.name() == "aliases" {
            // Aliases to what is left out go; the console's names the vPL011.
            let a = w.begin_node("aliases")?;
            for p in c.props() {
                let Some(target) = p.str() else { continue };
                if spec.vpl011 && Some(target) == host.console {
                    w.property_string(p.name, &uart)?;
                } else if !host
                    .removed
                    .iter()
                    .any(|r| target == r || target.starts_with(&format!("{r}/")))
                {
                    w.property(p.name, p.value)?;
                }
            }
            w.end_node(a)?;
            continue;
        }
        if !skip(&c, &path) {
            copy(&mut w, c, &path, 2, &skip)?;
        }
    }
    chosen(&mut w, spec)?;
    cpus(&mut w, spec)?;
    memory_gic_timer_psci_uart(&mut w, spec, gic_cells)?;
    w.end_node(top)?;
    w.finish()
}

/// /chosen: bootargs, the initrd, the console.
fn chosen(w: &mut W, spec: &GuestDtbSpec) -> Res {
    let chosen = w.begin_node("chosen")?;
    if let Some(b) = spec.bootargs.filter(|b| !b.is_empty()) {
        w.property_string("bootargs", b)?;
    }
    if let Some(r) = spec.initrd {
        w.property_u64("linux,initrd-start", r.start)?;
        w.property_u64("linux,initrd-end", r.end)?;
    }
    if spec.vpl011 {
        w.property_string("stdout-path", &format!("/sbsa-uart@{:x}", spec.map.vpl011))?;
    }
    w.end_node(chosen)
}

/// /cpus: one node per vCPU, started by PSCI.
fn cpus(w: &mut W, spec: &GuestDtbSpec) -> Res {
    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for n in 0..spec.vcpus {
        let mpidr = vcpu_mpidr(n);
        let cpu = w.begin_node(&format!("cpu@{mpidr:x}"))?;
        w.property_string("compatible", spec.cpu_compatible)?;
        w.property_string("device_type", "cpu")?;
        w.property_u32("reg", mpidr)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)
}

/// The vGIC's node (GICv3 or GICv2), with the phandle devices name;
/// `cells`: #address-cells and #size-cells (a hardware domain's, the host
/// GIC's; (0, 0): #address-cells 0 alone).
fn gic(w: &mut W, spec: &GuestDtbSpec, cells: (u32, u32)) -> Res {
    let (m, gic_ph) = (&spec.map, spec.gic_phandle);
    let gic = w.begin_node(&format!("interrupt-controller@{:x}", m.gicd))?;
    match spec.gic {
        GicVersion::V3 => {
            w.property_string("compatible", "arm,gic-v3")?;
            w.property_u32("#redistributor-regions", 1)?;
            let gicr = spec.vcpus.max(1) as u64 * GICR_STRIDE;
            w.property_array_u64("reg", &[m.gicd, 0x1_0000, m.gicr, gicr])?;
        }
        GicVersion::V2 => {
            w.property_string("compatible", "arm,gic-400")?;
            w.property_array_u64("reg", &[m.gicd, 0x1000, m.gicc, 0x2000])?;
        }
    }
    w.property_u32("#interrupt-cells", 3)?;
    match cells {
        (0, _) => w.property_u32("#address-cells", 0)?,
        (ac, sc) => {
            w.property_u32("#address-cells", ac)?;
            w.property_u32("#size-cells", sc)?;
        }
    }
    w.property_null("interrupt-controller")?;
    w.property_u32("phandle", gic_ph)?;
    w.property_u32("linux,phandle", gic_ph)?;
    w.end_node(gic)
}

/// The architected timer and PSCI (over HVC).
fn timer_and_psci(w: &mut W, spec: &GuestDtbSpec) -> Res {
    let timer = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    // The four architected timers in the binding's order: secure and
    // non-secure physical, virtual, hypervisor (PPIs 13, 14, 11, 10;
    // level-low, all CPUs). Xen lists only the first three; guests on QEMU
    // and KVM see four, and some bare-metal guests insist on four. The
    // guest uses the virtual and the non-secure physical timer; the other
    // two never fire for it.
    w.property_array_u32(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    )?;
    w.property_u32("interrupt-parent", spec.gic_phandle)?;
    if let Some(f) = spec.timer_clock_frequency {
        w.property_u32("clock-frequency", f)?;
    }
    w.end_node(timer)?;
    let psci = w.begin_node("psci")?;
    let compat = vec![
        "arm,psci-1.0".to_string(),
        "arm,psci-0.2".to_string(),
        "arm,psci".to_string(),
    ];
    w.property_string_list("compatible", compat)?;
    w.property_string("method", "hvc")?;
    w.property_u32("cpu_off", 1)?;
    w.property_u32("cpu_on", 2)?;
    w.end_node(psci)
}

/// A PCI host bridge's `ranges` without the windows beyond the guest
/// address space (QEMU virt's 512 GiB one at 512 GiB), which the hardware
/// domain could not reach: Linux then places every BAR in the others.
/// The parent address is taken as the CPU's (identity above the bridge,
/// as `config::hwdom` maps them); an entry that does not decode, or a
/// trailing part of one, is kept.
fn pci_ranges_in_reach(ranges: &crate::fdt::Prop<'_>, parent_cells: u32) -> Vec<u8> {
    let per = (3 + parent_cells as usize + 2) * 4;
    let mut entries = crate::config::hwdom::pci_ranges(ranges, parent_cells);
    let mut out = Vec::new();
    for chunk in ranges.value.chunks(per) {
        let in_reach = match entries.next().flatten() {
            Some((addr, size)) => addr
                .checked_add(size)
                .is_some_and(|end| end <= crate::mm::stage2::IPA_SPACE.end),
            None => true,
        };
        if in_reach {
            out.extend_from_slice(chunk);
        }
    }
    out
}

/// A short name for logs.
pub fn describe(spec: &GuestDtbSpec) -> String {
    format!("{} vCPUs, {} RAM banks", spec.vcpus, spec.ram.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::Fdt;

    fn spec(ram: &[Range]) -> GuestDtbSpec<'_> {
        GuestDtbSpec {
            map: GuestMap::XEN,
            partial: None,
            gic_phandle: GIC_PHANDLE,
            bootargs: Some("console=ttyAMA0 quiet"),
            initrd: Some(Range::new(0x4800_0000, 0x4810_0000)),
            ram,
            vcpus: 18,
            cpu_compatible: "arm,cortex-a57",
            gic: GicVersion::V3,
            timer_clock_frequency: None,
            vpl011: true,
            host: None,
        }
    }

    #[test]
    fn layout_matches_xen_domu() {
        let ram = [
            Range::new(0x4000_0000, 0x1_0000_0000),
            Range::new(0x2_0000_0000, 0x2_4000_0000),
        ];
        let blob = build(&spec(&ram)).unwrap();
        let f = Fdt::new(&blob).unwrap();
        let root = f.root();
        assert_eq!(root.prop("#address-cells").unwrap().u32(), Some(2));
        let chosen = f.find("/chosen").unwrap();
        assert_eq!(
            chosen.prop("bootargs").unwrap().str(),
            Some("console=ttyAMA0 quiet")
        );
        assert_eq!(
            chosen.prop("linux,initrd-start").unwrap().u64(),
            Some(0x4800_0000)
        );
        assert_eq!(
            chosen.prop("linux,initrd-end").unwrap().u64(),
            Some(0x4810_0000)
        );
        let cpus: Vec<_> = f
            .find("/cpus")
            .unwrap()
            .children()
            .map(|c| c.prop("reg").unwrap().u32().unwrap())
            .collect();
        assert_eq!(cpus.len(), 18);
        assert_eq!(cpus[16], 0x100);
        assert_eq!(cpus[17], 0x101);
        let mem = f.find("/memory@40000000").unwrap();
        let banks: Vec<_> = mem.prop("reg").unwrap().ranges(2, 2).unwrap().collect();
        assert_eq!(
            banks,
            [(0x4000_0000, 0xc000_0000), (0x2_0000_0000, 0x4000_0000)]
        );
        let gic = f.find("/interrupt-controller@3001000").unwrap();
        assert!(gic.is_compatible("arm,gic-v3"));
        assert_eq!(gic.prop("phandle").unwrap().u32(), Some(GIC_PHANDLE));
        let regs: Vec<_> = gic.prop("reg").unwrap().ranges(2, 2).unwrap().collect();
        assert_eq!(regs, [(GICD_BASE, 0x1_0000), (GICR_BASE, 18 * GICR_STRIDE)]);
        let psci = f.find("/psci").unwrap();
        assert_eq!(psci.prop("method").unwrap().str(), Some("hvc"));
        assert!(psci.is_compatible("arm,psci-1.0"));
        let uart = f.find("/sbsa-uart@22000000").unwrap();
        assert_eq!(
            uart.prop("interrupts")
                .unwrap()
                .cells()
                .unwrap()
                .collect::<Vec<_>>(),
            [0, 0, 4]
        );
        let t = f.find("/timer").unwrap();
        assert_eq!(t.prop("interrupts").unwrap().cell_count(), Some(12));
    }

    #[test]
    fn gicv2_and_no_optional_parts() {
        let ram = [Range::new(0x4000_0000, 0x4800_0000)];
        let mut s = spec(&ram);
        s.gic = GicVersion::V2;
        s.vpl011 = false;
        s.initrd = None;
        s.bootargs = Some("");
        let blob = build(&s).unwrap();
        let f = Fdt::new(&blob).unwrap();
        assert!(f
            .find("/interrupt-controller@3001000")
            .unwrap()
            .is_compatible("arm,gic-400"));
        assert!(f.find("/sbsa-uart@22000000").is_none());
        let chosen = f.find("/chosen").unwrap();
        assert!(chosen.prop("bootargs").is_none() && chosen.prop("linux,initrd-start").is_none());
        assert!(blob.len() < 16 * 1024);
    }

    #[test]
    fn partial_device_tree_and_direct_map_layout() {
        let frag = crate::fdt::tests::dtc(
            r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
  gic: gic { #interrupt-cells = <3>; interrupt-controller; };
  aliases { rtc = "/passthrough/rtc@9010000"; };
  passthrough { compatible = "simple-bus"; ranges; #address-cells = <2>; #size-cells = <2>;
    rtc@9010000 { compatible = "arm,pl031"; reg = <0x0 0x9010000 0x0 0x1000>;
      interrupts = <0 2 4>; interrupt-parent = <&gic>;
      xen,reg = <0x0 0x9010000 0x0 0x1000 0x0 0x9010000>; xen,path = "/pl031@9010000";
      xen,force-assign-without-iommu; };
  };
};
"#,
        );
        let ph = crate::config::partial::read(&frag, frag.len() as u64)
            .unwrap()
            .gic_phandle
            .unwrap();
        let ram = [Range::new(0x6000_0000, 0x7000_0000)];
        let mut s = spec(&ram);
        s.partial = Some(&frag);
        s.gic_phandle = ph;
        s.map = GuestMap {
            gicd: 0x0800_0000,
            gicr: 0x080a_0000,
            gicc: 0x0801_0000,
            vpl011: 0x0900_0000,
            vpl011_intid: 33,
        };
        let blob = build(&s).unwrap();
        let f = Fdt::new(&blob).unwrap();
        let rtc = f.find("/passthrough/rtc@9010000").unwrap();
        assert!(rtc.prop("xen,reg").is_none() && rtc.prop("xen,path").is_none());
        assert!(rtc.prop("xen,force-assign-without-iommu").is_none());
        assert_eq!(rtc.prop("interrupt-parent").unwrap().u32(), Some(ph));
        assert!(f.find("/aliases").unwrap().prop("rtc").is_some());
        assert!(f.find("/gic").is_none(), "the placeholder is not copied");
        assert_eq!(f.root().prop("interrupt-parent").unwrap().u32(), Some(ph));
        let gic = f.find("/interrupt-controller@8000000").unwrap();
        assert_eq!(gic.prop("phandle").unwrap().u32(), Some(ph));
        let regs: Vec<_> = gic.prop("reg").unwrap().ranges(2, 2).unwrap().collect();
        assert_eq!(regs[1], (0x080a_0000, 18 * GICR_STRIDE));
        let uart = f.find("/sbsa-uart@9000000").unwrap();
        let irq: Vec<_> = uart.prop("interrupts").unwrap().cells().unwrap().collect();
        assert_eq!(irq, [0, 1, 4]);
        assert_eq!(
            f.find("/chosen")
                .unwrap()
                .prop("stdout-path")
                .unwrap()
                .str(),
            Some("/sbsa-uart@9000000")
        );
    }

    /// The hardware domain's tree: the host's, less what the hypervisor
    /// describes or keeps, with the vGIC under the host GIC's phandle and
    /// cells, MSI properties gone, PCI windows beyond reach dropped,
    /// aliases to the console naming the vPL011.
    #[test]
    fn the_hardware_domains_tree_is_the_hosts_filtered() {
        let host = crate::fdt::tests::dtc(
            r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <1>; model = "board";
  aliases { serial0 = "/pl011@9000000"; rtc = "/pl031@9010000"; gone = "/mine@9050000"; };
  memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
  intc@8000000 { compatible = "arm,gic-v3"; phandle = <1>; #interrupt-cells = <3>; interrupt-controller;
    #address-cells = <2>; #size-cells = <2>; ranges; reg = <0x0 0x8000000 0x0 0x10000>;
    its@8080000 { compatible = "arm,gic-v3-its"; reg = <0x0 0x8080000 0x0 0x20000>; phandle = <2>; }; };
  pl011@9000000 { compatible = "arm,pl011"; reg = <0x0 0x9000000 0x0 0x1000>; interrupts = <0 1 4>; };
  pl031@9010000 { compatible = "arm,pl031"; reg = <0x0 0x9010000 0x0 0x1000>; interrupts = <0 2 4>; };
  mine@9050000 { reg = <0x0 0x9050000 0x0 0x1000>; xen,passthrough; };
  timer { compatible = "arm,armv8-timer"; interrupts = <1 13 4>; };
  psci { compatible = "arm,psci-1.0"; method = "smc"; };
  cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; }; };
  pcie@10000000 { device_type = "pci"; #address-cells = <3>; #size-cells = <2>; msi-map = <0 2 0 0x10000>;
    reg = <0x40 0x10000000 0x0 0x10000000>;
    ranges = <0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000
              0x3000000 0x80 0x0 0x80 0x0 0x80 0x0>; };
  chosen { bootargs = "host"; stdout-path = "/pl011@9000000"; };
};
"#,
        );
        let removed = ["/pl011@9000000".to_string(), "/mine@9050000".to_string()];
        let ram = [Range::new(0x5420_0000, 0x7420_0000)];
        let mut s = spec(&ram);
        s.vcpus = 1;
        s.map = GuestMap {
            gicd: 0x800_0000,
            gicr: 0x80a_0000,
            gicc: 0,
            vpl011: 0x900_0000,
            vpl011_intid: 33,
        };
        s.host = Some(HostTree {
            dtb: &host,
            removed: &removed,
            console: Some("/pl011@9000000"),
        });
        let blob = build(&s).unwrap();
        let f = Fdt::new(&blob).unwrap();
        assert_eq!(f.root().prop("model").unwrap().str(), Some("board"));
        for gone in [
            "/pl011@9000000",
            "/mine@9050000",
            "/intc@8000000",
            "/memory@40000000",
        ] {
            assert!(f.find(gone).is_none(), "{gone} is still there");
        }
        assert!(f.find("/pl031@9010000").is_some());
        let cpu = f.find("/cpus/cpu@0").unwrap();
        assert_eq!(cpu.prop("enable-method").unwrap().str(), Some("psci"));
        let gic = f.find("/interrupt-controller@8000000").unwrap();
        assert_eq!(gic.prop("phandle").unwrap().u32(), Some(1));
        assert_eq!(gic.cells(), (Some(2), Some(2)));
        assert!(f
            .find("/interrupt-controller@8000000/its@8080000")
            .is_none());
        let pcie = f.find("/pcie@10000000").unwrap();
        assert!(pcie.prop("msi-map").is_none());
        assert_eq!(pcie.prop("ranges").unwrap().cell_count(), Some(7));
        let aliases = f.find("/aliases").unwrap();
        assert_eq!(
            aliases.prop("serial0").unwrap().str(),
            Some("/sbsa-uart@9000000")
        );
        assert_eq!(aliases.prop("rtc").unwrap().str(), Some("/pl031@9010000"));
        assert!(aliases.prop("gone").is_none());
        assert!(f.find("/sbsa-uart@9000000").is_some());
        assert_eq!(
            f.find("/psci").unwrap().prop("method").unwrap().str(),
            Some("hvc")
        );
        assert_eq!(
            f.find("/memory@54200000")
                .unwrap()
                .prop("reg")
                .unwrap()
                .cell_count(),
            Some(4)
        );
        assert_eq!(
            f.find("/chosen").unwrap().prop("bootargs").unwrap().str(),
            Some("console=ttyAMA0 quiet")
        );
    }
}
