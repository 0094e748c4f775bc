//! The hardware domain (Xen's dom0 on Arm): the domain with the HARDWARE
//! role, from any of the three forms (legacy dom0 modules under /chosen,
//! dom0less `capabilities` 0x2, hyperlaunch `role` hardware). It is
//! direct-mapped (guest addresses are host addresses, as Xen maps dom0 on
//! Arm without an IOMMU), its console is a vPL011 at the host console's
//! address and interrupt, and it owns every enabled device of the host
//! device tree that neither the hypervisor nor another domain has:
//!
//! - every `reg` region (translated through the buses' `ranges`, widened
//!   to whole pages) is mapped 1:1 as device memory; a PCI host bridge's
//!   `ranges` windows too;
//! - every SPI of `interrupts`, `interrupts-extended` and a PCI bridge's
//!   `interrupt-map` is routed to it (hardware-linked, same INTID).
//!
//! Left out, with the reason recorded in the plan (and its device tree
//! rewritten without them, `vm::guest_dtb`): the hypervisor's console
//! UART, nodes marked `xen,passthrough`, nodes another domain's partial
//! device tree names by `xen,path`, nodes using a private interrupt (a
//! PPI: the vGIC routes none to a guest; Xen's rule), and nodes whose
//! registers the hypervisor cannot give (over RAM, the GIC or the
//! console; beyond the guest address space), each with a warning.
//! /chosen, /cpus, memory, the GIC, the timer, PSCI and /hypervisor are
//! the hypervisor's to describe. `/reserved-memory` stays in its tree, and
//! its regions are mapped 1:1 as memory (as Xen does: shared carveouts,
//! firmware buffers). A device a domU's partial device tree
//! names that the host tree does not mark `xen,passthrough` would be
//! both the hardware domain's and the domU's: an error.

use super::devices::HypDevices;
use super::diag::Kind;
use super::model::*;
use super::parse::Parser;
use crate::fdt::{Fdt, Node, Prop};
use crate::hw::platform::{self, GicIrq, Located, Walk};
use crate::mm::range::subtract;
use crate::mm::Range;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Guest-physical addresses a domain can have: below this.
const IPA_LIMIT: u64 = crate::mm::stage2::IPA_SPACE.end;

/// Gives the hardware domain, if there is one, its devices and its
/// device tree's removals; checks the other domains' devices against it.
pub(super) fn resolve(domains: &mut [Domain], fdt: &Fdt<'_>, p: &mut Parser<'_, '_>) {
    let Some(hw) = domains.iter().position(|d| d.caps.0 & Caps::HARDWARE != 0) else {
        return;
    };
    let mut taken: Vec<(usize, String)> = Vec::new();
    let others = domains.iter().enumerate().filter(|&(i, _)| i != hw);
    for d in others.map(|(_, d)| d) {
        for dev in &d.devices {
            let Some(hp) = &dev.host_path else { continue };
            let Some(loc) = platform::locate(fdt, hp) else {
                continue;
            };
            if !marked(&loc) {
                let m = d.device_tree.as_ref().map_or(d.path.as_str(), |m| &m.path);
                p.d.error(
                    m,
                    Some("xen,path"),
                    Kind::Conflict,
                    format!(
                        "in the partial device tree, {}: {hp} is also the hardware domain's ({}): add xen,passthrough to the host node to take it from the hardware domain",
                        dev.node, domains[hw].name
                    ),
                );
            }
            taken.push((loc.node.offset(), format!("{}'s, by xen,path", d.name)));
        }
    }
    if fdt.root().cells() != (Some(2), Some(2)) {
        let (a, s) = fdt.root().cells();
        p.d.error(
            "/",
            Some("#address-cells"),
            Kind::Unsupported,
            format!(
                "the hardware domain {}'s device tree is the host's with nodes dtvisor writes in 2 address and 2 size cells; this root has {} and {} (not supported yet)",
                domains[hw].name,
                a.map_or("none".to_string(), |v| v.to_string()),
                s.map_or("none".to_string(), |v| v.to_string())
            ),
        );
    }
    let (devices, removed) = host_devices(fdt, &taken, &domains[hw].name, p);
    let reserved_memory = p
        .host
        .reserved
        .iter()
        .filter(|r| matches!(r.kind, crate::hw::ReservedKind::Node(_)))
        .map(|r| r.range.whole_pages())
        .filter(|r| r.end <= IPA_LIMIT)
        .collect();
    let d = &mut domains[hw];
    d.reserved_memory = reserved_memory;
    d.direct_map = true;
    d.vpl011 = true;
    d.devices = devices;
    d.removed = removed;
}

/// A node or one of its ancestors has `xen,passthrough`.
fn marked(l: &Located<'_>) -> bool {
    l.node.prop("xen,passthrough").is_some()
        || l.ancestors().any(|a| a.prop("xen,passthrough").is_some())
}

/// Nodes the hypervisor describes itself in the hardware domain's tree
/// (or, /aliases, rewrites): not walked for devices, not copied.
pub fn hypervisors(n: &Node<'_>) -> bool {
    matches!(
        n.name(),
        "chosen" | "cpus" | "aliases" | "__symbols__" | "hypervisor"
    ) || n.prop("device_type").and_then(|p| p.str()) == Some("memory")
        || [
            "arm,armv8-timer",
            "arm,armv7-timer",
            "arm,psci",
            "arm,psci-0.2",
            "arm,psci-1.0",
            "xen,xen",
        ]
        .iter()
        .any(|c| n.is_compatible(c))
}

/// One host node met by the walk: its path, why it is left out (None:
/// it is not), its registers (CPU addresses) and interrupts.
struct Met {
    path: String,
    left_out: Option<String>,
    regs: Vec<Range>,
    irqs: Vec<GicIrq>,
}

/// The hardware domain's devices from the host tree, and the nodes its
/// device tree leaves out. `taken`: node offsets other domains have.
fn host_devices(
    fdt: &Fdt<'_>,
    taken: &[(usize, String)],
    hw_name: &str,
    p: &mut Parser<'_, '_>,
) -> (Vec<Device>, Vec<Removed>) {
    let k = HypDevices::of(fdt);
    let mut out = Given {
        devices: Vec::new(),
        removed: Vec::new(),
        have: Vec::new(),
    };
    for m in walk(fdt, &k, taken) {
        out.judge(m, &k, hw_name, p);
    }
    (out.devices, out.removed)
}

/// Every host node the hardware domain could have, in tree order.
fn walk(fdt: &Fdt<'_>, k: &HypDevices, taken: &[(usize, String)]) -> Vec<Met> {
    let mut met = Vec::new();
    platform::walk_located(fdt, &mut |l| {
        let n = l.node;
        // Described by the hypervisor; /reserved-memory is kept in the
        // hardware domain's tree as it is.
        if hypervisors(&n) || Some(n.offset()) == k.gic || n.name() == "reserved-memory" {
            return Walk::Over;
        }
        let left_out = if Some(n.offset()) == k.console_node {
            Some("the hypervisor's console".to_string())
        } else if n.prop("xen,passthrough").is_some() {
            Some("xen,passthrough".to_string())
        } else {
            taken
                .iter()
                .find(|(o, _)| *o == n.offset())
                .map(|(_, who)| who.clone())
        };
        if left_out.is_some() {
            met.push(Met {
                path: l.path(),
                left_out,
                regs: Vec::new(),
                irqs: Vec::new(),
            });
            return Walk::Over;
        }
        if !n.is_enabled() {
            return Walk::Over;
        }
        let mut irqs = match k.gic {
            Some(g) => l.gic_interrupts(fdt, g).unwrap_or_default(),
            None => Vec::new(),
        };
        // A `reg` that does not translate (a bus without `ranges`: I2C,
        // SPI, MDIO addresses) is not memory-mapped.
        let mut regs: Vec<Range> = l
            .regs()
            .into_iter()
            .flatten()
            .filter_map(|(a, s)| Range::from_base_size(l.translate(a)?, s))
            .collect();
        let pci = n.prop("device_type").and_then(|x| x.str()) == Some("pci");
        if pci {
            regs.extend(pci_windows(l));
            if let Some(g) = k.gic {
                irqs.extend(pci_interrupt_map(fdt, &n, g));
            }
        }
        met.push(Met {
            path: l.path(),
            left_out: None,
            regs,
            irqs,
        });
        // A PCI bridge's children are PCI functions, not MMIO nodes.
        if pci {
            Walk::Over
        } else {
            Walk::Into
        }
    });
    met
}

/// What the hardware domain is given so far.
struct Given {
    devices: Vec<Device>,
    removed: Vec<Removed>,
    /// Host ranges already given (nodes may share a page).
    have: Vec<Range>,
}

impl Given {
    /// One node: given (its pages not yet given, its SPIs), or left out
    /// with the reason (a warning when the hypervisor refuses it).
    fn judge(&mut self, m: Met, k: &HypDevices, hw_name: &str, p: &mut Parser<'_, '_>) {
        let warn = |p: &mut Parser<'_, '_>, why: &str| {
            p.d.warn(
                &m.path,
                None,
                Kind::Ignored,
                format!("not given to the hardware domain {hw_name}: {why}"),
            );
        };
        if let Some(why) = m.left_out.clone() {
            self.removed.push(Removed { node: m.path, why });
            return;
        }
        if let Some(ppi) = m.irqs.iter().find(|i| i.intid < 32) {
            warn(p, &format!("it uses the private interrupt {} (a PPI), which the virtual GIC routes to no guest", ppi.intid));
            self.removed.push(Removed {
                node: m.path,
                why: format!("private interrupt {}", ppi.intid),
            });
            return;
        }
        let mut pages = Vec::new();
        for r in &m.regs {
            let r = r.whole_pages();
            let refused = if let Some(b) = p.host.ram.iter().find(|b| b.overlaps(&r)) {
                Some(format!("its registers {r} overlap RAM {b}"))
            } else {
                k.frames
                    .iter()
                    .find(|(_, f)| f.overlaps(&r))
                    .map(|(what, f)| {
                        format!("its registers {r} overlap {what} {f}, which the hypervisor keeps")
                    })
            };
            if let Some(why) = refused {
                warn(p, &why);
                self.removed.push(Removed { node: m.path, why });
                return;
            }
            if r.end > IPA_LIMIT {
                p.d.warn(
                    &m.path,
                    None,
                    Kind::Ignored,
                    format!(
                        "the hardware domain {hw_name} gets this node without its registers {r}: they are beyond the {}-bit guest address space (a PCI window there is left out of its ranges)",
                        crate::mm::stage2::IPA_BITS
                    ),
                );
                continue;
            }
            pages.push(r);
        }
        let mut regions = Vec::new();
        for r in pages {
            for piece in subtract(&[r], &self.have) {
                self.have.push(piece);
                regions.push(DeviceRegion {
                    host: piece,
                    guest: piece.start,
                });
            }
        }
        let mut irqs: Vec<DeviceIrq> = Vec::new();
        for i in &m.irqs {
            let given = |l: &[DeviceIrq]| l.iter().any(|s| s.intid == i.intid);
            if !given(&irqs) && !self.devices.iter().any(|d| given(&d.irqs)) {
                irqs.push(DeviceIrq {
                    intid: i.intid,
                    edge: i.edge,
                });
            }
        }
        if !regions.is_empty() || !irqs.is_empty() {
            self.devices.push(Device {
                node: m.path.clone(),
                host_path: Some(m.path),
                regions,
                irqs,
            });
        }
    }
}

/// A PCI host bridge's memory and I/O windows, as CPU addresses.
fn pci_windows(l: &Located<'_>) -> Vec<Range> {
    let Some(r) = l.node.prop("ranges") else {
        return Vec::new();
    };
    let pac = l.parent().and_then(|p| p.cells().0).unwrap_or(2);
    pci_ranges(&r, pac)
        .flatten()
        .filter_map(|(parent, size)| Range::from_base_size(l.translate(parent)?, size))
        .collect()
}

/// Each whole entry of a PCI host bridge's `ranges` (3 cells of PCI
/// address, `parent_cells` of the parent bus's address, 2 of size): the
/// parent address and the size, None where they do not decode (more than
/// 2 parent cells).
pub fn pci_ranges<'a>(
    ranges: &Prop<'a>,
    parent_cells: u32,
) -> impl Iterator<Item = Option<(u64, u64)>> + 'a {
    let r = *ranges;
    let per = 3 + parent_cells as usize + 2;
    (0..r.cell_count().unwrap_or(0) / per).map(move |e| {
        let parent = r.read_cells(e * per + 3, parent_cells)?;
        Some((
            parent,
            r.read_cells(e * per + 3 + parent_cells as usize, 2)?,
        ))
    })
}

/// The SPIs a PCI host bridge's `interrupt-map` sends to the GIC `gic`
/// (legacy INTx): each entry is the child unit address (the bridge's
/// #address-cells), the child interrupt (its #interrupt-cells), the
/// parent's phandle, unit address (the parent's #address-cells) and
/// interrupt (the parent's #interrupt-cells).
fn pci_interrupt_map(fdt: &Fdt<'_>, bridge: &Node<'_>, gic: usize) -> Vec<GicIrq> {
    let mut out = Vec::new();
    let Some(map) = bridge.prop("interrupt-map") else {
        return out;
    };
    let Some(cells) = map.cells() else { return out };
    let cells: Vec<u32> = cells.collect();
    let cac = bridge.cells().0.unwrap_or(3) as usize;
    let cic = bridge
        .prop("#interrupt-cells")
        .and_then(|p| p.u32())
        .unwrap_or(1) as usize;
    let mut i = 0;
    while i + cac + cic < cells.len() {
        let Some(parent) = fdt.find_phandle(cells[i + cac + cic]) else {
            break;
        };
        let pac = parent.cells().0.unwrap_or(0) as usize;
        let pic = parent
            .prop("#interrupt-cells")
            .and_then(|p| p.u32())
            .unwrap_or(0) as usize;
        let at = i + cac + cic + 1 + pac;
        if pic == 0 || at + pic > cells.len() {
            break;
        }
        if parent.offset() == gic && pic == 3 && cells[at] == 0 && cells[at + 1] < 988 {
            out.push(GicIrq {
                intid: cells[at + 1] + 32,
                edge: cells[at + 2] & 3 != 0,
            });
        }
        i = at + pic;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Report};
    use crate::fdt::tests::dtc;
    use crate::hw::HostMemory;

    /// A QEMU-virt-like host: GIC (phandle 1, with an ITS child), the
    /// console PL011, an RTC, a PMU on a PPI, a PCI bridge with INTx and a
    /// window beyond the guest address space, a disabled node, a node
    /// marked xen,passthrough, one over RAM; `extra` goes in /chosen.
    fn host(extra: &str) -> Report {
        let src = format!(
            r#"/dts-v1/;
/ {{ #address-cells = <2>; #size-cells = <2>; interrupt-parent = <1>;
  memory@40000000 {{ device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; }};
  intc@8000000 {{ compatible = "arm,gic-v3"; phandle = <1>; #interrupt-cells = <3>; interrupt-controller;
    #address-cells = <2>; #size-cells = <2>; ranges;
    reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>;
    its@8080000 {{ compatible = "arm,gic-v3-its"; reg = <0x0 0x8080000 0x0 0x20000>; phandle = <2>; }}; }};
  pl011@9000000 {{ compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; interrupts = <0 1 4>; }};
  pl031@9010000 {{ compatible = "arm,pl031", "arm,primecell"; reg = <0x0 0x9010000 0x0 0x1000>; interrupts = <0 2 4>; }};
  pmu {{ compatible = "arm,armv8-pmuv3"; interrupts = <1 7 4>; }};
  timer {{ compatible = "arm,armv8-timer"; interrupts = <1 13 4>, <1 14 4>, <1 11 4>, <1 10 4>; }};
  off@9040000 {{ reg = <0x0 0x9040000 0x0 0x1000>; status = "disabled"; }};
  mine@9050000 {{ reg = <0x0 0x9050000 0x0 0x1000>; interrupts = <0 9 4>; xen,passthrough; }};
  sram@40000000 {{ reg = <0x0 0x40000000 0x0 0x1000>; }};
  reserved-memory {{ #address-cells = <2>; #size-cells = <2>; ranges;
    buf@bff00000 {{ reg = <0x0 0xbff00000 0x0 0x800>; no-map; }}; }};
  pcie@10000000 {{ device_type = "pci"; #address-cells = <3>; #size-cells = <2>; #interrupt-cells = <1>;
    reg = <0x40 0x10000000 0x0 0x10000000>; msi-map = <0 2 0 0x10000>;
    ranges = <0x2000000 0x0 0x10000000 0x0 0x10000000 0x0 0x2eff0000
              0x3000000 0x80 0x0 0x80 0x0 0x80 0x0>;
    interrupt-map-mask = <0 0 0 7>;
    interrupt-map = <0 0 0 1 1 0 0 0 3 4  0 0 0 2 1 0 0 0 4 4>; }};
  chosen {{ stdout-path = "/pl011@9000000"; #address-cells = <2>; #size-cells = <2>;
    xen,xen-bootargs = "dom0_mem=512M";
    module@50000000 {{ compatible = "multiboot,kernel", "multiboot,module"; reg = <0x0 0x50000000 0x0 0x200000>; }};
    {extra} }};
}};
"#
        );
        let blob = dtc(&src);
        let fdt = Fdt::new(&blob).unwrap();
        parse(&fdt, &HostMemory::from_fdt(&fdt))
    }

    fn dom0(r: &Report) -> &Domain {
        &r.plan.as_ref().expect("a plan").domains[0]
    }

    #[test]
    fn the_hardware_domain_is_direct_mapped_with_a_console() {
        let r = host("");
        let d = dom0(&r);
        assert!(d.direct_map && d.vpl011, "{d:?}");
    }

    #[test]
    fn its_reserved_memory_is_mapped_whole_pages() {
        let r = host("");
        assert_eq!(
            dom0(&r).reserved_memory,
            [Range::new(0xbff0_0000, 0xbff0_1000)]
        );
        assert!(!dom0(&r)
            .devices
            .iter()
            .any(|d| d.node.starts_with("/reserved-memory")));
    }

    #[test]
    fn it_gets_the_enabled_devices_nobody_else_has() {
        let r = host("");
        let names: Vec<&str> = dom0(&r).devices.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(names, ["/pl031@9010000", "/pcie@10000000"]);
        let rtc = &dom0(&r).devices[0];
        assert_eq!(rtc.regions[0].host, Range::new(0x901_0000, 0x901_1000));
        assert_eq!(rtc.regions[0].guest, 0x901_0000);
        assert_eq!(
            rtc.irqs,
            [DeviceIrq {
                intid: 34,
                edge: false
            }]
        );
    }

    #[test]
    fn what_it_does_not_get_is_listed_with_the_reason() {
        let r = host("");
        let removed: Vec<(&str, &str)> = dom0(&r)
            .removed
            .iter()
            .map(|x| (x.node.as_str(), x.why.as_str()))
            .collect();
        assert!(
            removed.contains(&("/pl011@9000000", "the hypervisor's console")),
            "{removed:?}"
        );
        assert!(
            removed.contains(&("/mine@9050000", "xen,passthrough")),
            "{removed:?}"
        );
        assert!(
            removed.contains(&("/pmu", "private interrupt 23")),
            "{removed:?}"
        );
        assert!(removed
            .iter()
            .any(|(n, w)| *n == "/sram@40000000" && w.contains("overlap RAM")));
        assert!(
            !removed.iter().any(|(n, _)| n.starts_with("/off")),
            "disabled nodes are not devices"
        );
    }

    #[test]
    fn pci_bridges_give_their_windows_and_intx_but_not_what_is_out_of_reach() {
        let r = host("");
        let pci = &dom0(&r).devices[1];
        let hosts: Vec<Range> = pci.regions.iter().map(|x| x.host).collect();
        assert_eq!(
            hosts,
            [
                Range::new(0x40_1000_0000, 0x40_2000_0000),
                Range::new(0x1000_0000, 0x3eff_0000)
            ]
        );
        let intids: Vec<u32> = pci.irqs.iter().map(|i| i.intid).collect();
        assert_eq!(intids, [35, 36]);
        assert!(r
            .warnings()
            .any(|w| w.path == "/pcie@10000000" && w.message.contains("beyond the 39-bit")));
    }

    // A domU's device the host tree leaves unmarked: the conformance case
    // err-hardware-domain-device-not-marked (it needs the partial tree's
    // contents).

    /// A legacy dom0 alone on a host whose root has `size_cells`, with
    /// `bootargs`: the errors, as printed.
    fn legacy_errors(size_cells: u32, bootargs: &str) -> Vec<String> {
        let mem = if size_cells == 1 {
            "0x80000000"
        } else {
            "0x0 0x80000000"
        };
        let blob = dtc(&format!(
            r#"/dts-v1/;
/ {{ #address-cells = <2>; #size-cells = <{size_cells}>;
  memory@40000000 {{ device_type = "memory"; reg = <0x0 0x40000000 {mem}>; }};
  chosen {{ #address-cells = <2>; #size-cells = <2>; xen,xen-bootargs = "{bootargs}";
    module@50000000 {{ compatible = "multiboot,kernel", "multiboot,module"; reg = <0x0 0x50000000 0x0 0x200000>; }}; }};
}};
"#
        ));
        let fdt = Fdt::new(&blob).unwrap();
        let r = parse(&fdt, &HostMemory::from_fdt(&fdt));
        r.errors().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_root_with_other_cells_is_refused_for_now() {
        let e = legacy_errors(1, "dom0_mem=512M");
        assert!(
            e.iter()
                .any(|m| m.starts_with("error: /: #address-cells:") && m.contains("has 2 and 1")),
            "{e:?}"
        );
    }

    #[test]
    fn dom0_mem_with_min_or_max_is_refused_as_on_arm() {
        let e = legacy_errors(2, "dom0_mem=min:128M,max:1G,512M");
        assert!(
            e.iter()
                .any(|m| m.contains("/chosen: xen,xen-bootargs: dom0_mem")
                    && m.contains("x86 forms")),
            "{e:?}"
        );
    }
}
