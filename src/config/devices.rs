//! Device passthrough, host side: the devices a domain's partial device
//! tree assigns (the fragment itself is read by `partial`), each
//! `xen,path` looked up in the host device tree and its interrupts
//! decoded; then, across domains, who owns what.
//!
//! dtvisor drives no IOMMU, so every device assigned by `xen,path` can
//! reach all of memory by DMA: as Xen does on a machine without an
//! IOMMU, such a device needs `xen,force-assign-without-iommu`.
//!
//! Ownership rules, checked on the host DTB at boot and by the host tool:
//! an MMIO region or SPI belongs to one domain; no region may overlap
//! RAM, the GIC or the hypervisor's console UART, nor may the console's
//! interrupt be assigned; in the guest, a region may not overlap the
//! guest's RAM, its vGIC or its vPL011, and a direct-mapped guest sees
//! each region at its host address.

use super::diag::Kind;
use super::model::*;
use super::parse::Parser;
use super::partial::{self, PtDevice};
use crate::fdt::{Fdt, Node};
use crate::hw::platform::{self, GicIrq};
use crate::mm::Range;
use crate::placement::guest_banks;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Guest-physical ranges of the vGIC frames (either version) and the
/// vPL011 in Xen's guest map, which an assigned region may not cover.
const VGIC_FRAMES: Range = Range::new(0x0300_1000, 0x0402_0000);
const VPL011_FRAME: Range = Range::new(0x2200_0000, 0x2200_1000);

impl Parser<'_, '_> {
    /// Reads domain `dom`'s partial device tree `dt` where its contents
    /// are at hand, and records the devices it assigns.
    pub(super) fn devices(&mut self, node: Node<'_>, dom: &mut Domain, dt: &Module) {
        let mut read = None;
        let mut visit = |bytes: &[u8]| read = Some(partial::read(bytes, dt.range.size()));
        if !self
            .contents
            .is_some_and(|c| c(&dt.path, dt.range, &mut visit))
        {
            dom.devices_read = false;
            return;
        }
        let frag = match read {
            Some(Ok(f)) => f,
            None => return,
            Some(Err(errs)) => {
                for e in errs {
                    self.d.error(
                        &dt.path,
                        e.property.as_deref(),
                        Kind::PartialDt,
                        format!("in the partial device tree, {}: {}", e.path, e.message),
                    );
                }
                return;
            }
        };
        let fdt = node.fdt();
        let gic = platform::gic_node(&fdt).map(|n| n.offset());
        for dev in &frag.devices {
            if let Some(d) = self.device(&fdt, gic, dom, dt, dev) {
                dom.devices.push(d);
            }
        }
    }

    /// One device node of the fragment.
    fn device(
        &mut self,
        fdt: &Fdt<'_>,
        gic: Option<usize>,
        dom: &Domain,
        dt: &Module,
        dev: &PtDevice,
    ) -> Option<Device> {
        let mut ok = true;
        let regions: Vec<DeviceRegion> = dev
            .regs
            .iter()
            .map(|r| DeviceRegion {
                host: r.host,
                guest: r.guest,
            })
            .collect();
        for r in &regions {
            ok &= self.guest_region(dom, dt, dev, r);
        }
        let mut irqs = Vec::new();
        if let Some(hp) = &dev.host_path {
            ok &= self.host_interrupts(fdt, gic, dt, dev, hp, &mut irqs)?;
        }
        ok.then(|| Device {
            node: dev.node.clone(),
            host_path: dev.host_path.clone(),
            regions,
            irqs,
        })
    }

    /// The SPIs of the host node `hp` (`xen,path`), into `irqs`: the node
    /// exists (None: it does not, and the device is refused), the device is
    /// forced without an IOMMU, its interrupts decode through the host GIC
    /// and none is private. False if any of that failed.
    fn host_interrupts(
        &mut self,
        fdt: &Fdt<'_>,
        gic: Option<usize>,
        dt: &Module,
        dev: &PtDevice,
        hp: &str,
        irqs: &mut Vec<DeviceIrq>,
    ) -> Option<bool> {
        let at = |what: &str| format!("in the partial device tree, {}: {what}", dev.node);
        let Some(loc) = platform::locate(fdt, hp) else {
            self.d.error(
                &dt.path,
                Some("xen,path"),
                Kind::NoNode,
                at(&format!("\"{hp}\" names no node of the host device tree")),
            );
            return None;
        };
        let mut ok = true;
        if !dev.force {
            self.d.error(
                &dt.path,
                Some("xen,force-assign-without-iommu"),
                Kind::NoIommu,
                at(&format!(
                    "{hp} is not behind an IOMMU dtvisor drives (it drives none), so the device could reach all memory by DMA: add xen,force-assign-without-iommu to assign it anyway"
                )),
            );
            ok = false;
        }
        let decoded = match gic {
            Some(g) => loc.gic_interrupts(fdt, g),
            None if loc.node.prop("interrupts").is_none()
                && loc.node.prop("interrupts-extended").is_none() =>
            {
                Ok(Vec::new())
            }
            None => Err("the host device tree has no GIC to route them from".into()),
        };
        let list = match decoded {
            Ok(list) => list,
            Err(e) => {
                self.d.error(
                    &dt.path,
                    Some("xen,path"),
                    Kind::BadValue,
                    at(&format!("{hp}: {e}")),
                );
                return Some(false);
            }
        };
        for GicIrq { intid, edge } in list {
            if intid < 32 {
                self.d.error(
                    &dt.path,
                    Some("xen,path"),
                    Kind::BadValue,
                    at(&format!("{hp} has the private interrupt (PPI) {intid}, which cannot be assigned to a domain")),
                );
                ok = false;
            } else if !irqs.iter().any(|i| i.intid == intid) {
                irqs.push(DeviceIrq { intid, edge });
            }
        }
        Some(ok)
    }

    /// Where a region appears in the guest: not over its RAM, vGIC or
    /// vPL011; at its host address in a direct-mapped guest.
    fn guest_region(
        &mut self,
        dom: &Domain,
        dt: &Module,
        dev: &PtDevice,
        r: &DeviceRegion,
    ) -> bool {
        let Some(g) = Range::from_base_size(r.guest, r.host.size()) else {
            return true; // partial::read checked it does not wrap
        };
        let mut clash = |what: String| {
            self.d.error(
                &dt.path,
                Some("xen,reg"),
                Kind::Overlap,
                format!(
                    "in the partial device tree, {}: guest range {g} overlaps {what}",
                    dev.node
                ),
            );
            false
        };
        if dom.direct_map {
            if r.guest != r.host.start {
                return clash(format!(
                    "nothing, but the domain is direct-mapped: the guest address must be the host address {:#x}",
                    r.host.start
                ));
            }
            return true;
        }
        if let Some(b) = guest_banks(dom.memory_kib << 10)
            .iter()
            .find(|b| b.overlaps(&g))
        {
            return clash(format!("the guest's RAM {b}"));
        }
        if g.overlaps(&VGIC_FRAMES) {
            return clash(format!("the guest's GIC {VGIC_FRAMES}"));
        }
        if dom.vpl011 && g.overlaps(&VPL011_FRAME) {
            return clash(format!("the guest's vpl011 {VPL011_FRAME}"));
        }
        true
    }
}

/// One region or interrupt and who has it, for the ownership checks.
struct Owner<'d> {
    dom: &'d Domain,
    dev: &'d Device,
}

impl Owner<'_> {
    fn at(&self) -> String {
        match &self.dom.device_tree {
            Some(m) => format!("{} ({} {})", self.dom.name, m.path, self.dev.node),
            // The hardware domain's devices are host nodes.
            None => format!(
                "the hardware domain {} (host node {}: add xen,passthrough to it to take it from the hardware domain)",
                self.dom.name, self.dev.node
            ),
        }
    }
}

/// Across domains: every region and SPI has one owner and none is the
/// hypervisor's; static memory overlaps nothing.
pub(super) fn check(domains: &[Domain], fdt: &Fdt<'_>, p: &mut Parser<'_, '_>) {
    static_memory(domains, p);
    if domains.iter().all(|d| d.devices.is_empty()) {
        return;
    }
    let hyp = HypDevices::of(fdt);
    let mut regions: Vec<(Range, Owner<'_>)> = Vec::new();
    let mut irqs: Vec<(u32, Owner<'_>)> = Vec::new();
    for dom in domains {
        let mpath = dom
            .device_tree
            .as_ref()
            .map_or(dom.path.as_str(), |m| m.path.as_str());
        for dev in &dom.devices {
            for r in &dev.regions {
                let me = Owner { dom, dev };
                let at = format!(
                    "in the partial device tree, {}: host range {}",
                    dev.node, r.host
                );
                if let Some(b) = p.host.ram.iter().find(|b| b.overlaps(&r.host)) {
                    p.d.error(
                        mpath,
                        Some("xen,reg"),
                        Kind::Overlap,
                        format!("{at} overlaps host RAM {b}"),
                    );
                }
                for (what, f) in &hyp.frames {
                    if f.overlaps(&r.host) {
                        p.d.error(
                            mpath,
                            Some("xen,reg"),
                            Kind::Conflict,
                            format!("{at} overlaps {what} {f}, which the hypervisor owns"),
                        );
                    }
                }
                if let Some((o, other)) = regions.iter().find(|(o, _)| o.overlaps(&r.host)) {
                    p.d.error(
                        mpath,
                        Some("xen,reg"),
                        Kind::Overlap,
                        format!("{at} overlaps {o}, also given to {}", other.at()),
                    );
                }
                regions.push((r.host, me));
            }
            for i in &dev.irqs {
                let at = format!(
                    "in the partial device tree, {}: interrupt {} of {}",
                    dev.node,
                    i.intid,
                    dev.host_path.as_deref().unwrap_or("?")
                );
                if hyp.console_irq == Some(i.intid) {
                    p.d.error(
                        mpath,
                        Some("xen,path"),
                        Kind::Conflict,
                        format!("{at} is the hypervisor console's ({})", hyp.console),
                    );
                }
                if let Some((_, other)) = irqs
                    .iter()
                    .find(|(o, w)| *o == i.intid && w.dom.path != dom.path)
                {
                    p.d.error(
                        mpath,
                        Some("xen,path"),
                        Kind::Conflict,
                        format!("{at} is also given to {}", other.at()),
                    );
                }
                irqs.push((i.intid, Owner { dom, dev }));
            }
        }
    }
}

/// Static memory of two domains, or of a domain and a boot module.
fn static_memory(domains: &[Domain], p: &mut Parser<'_, '_>) {
    for (i, dom) in domains.iter().enumerate() {
        for r in &dom.static_mem {
            for o in &domains[..i] {
                if let Some(x) = o.static_mem.iter().find(|x| x.overlaps(r)) {
                    p.d.error(
                        &dom.path,
                        Some("xen,static-mem"),
                        Kind::Overlap,
                        format!("range {r} overlaps {x}, the static memory of {}", o.path),
                    );
                }
            }
            for o in domains {
                let mods = core::iter::once(&o.kernel)
                    .chain(&o.ramdisk)
                    .chain(&o.device_tree);
                for m in mods.filter(|m| m.range.overlaps(r)) {
                    p.d.error(
                        &dom.path,
                        Some("xen,static-mem"),
                        Kind::Overlap,
                        format!("range {r} overlaps module {} ({})", m.path, m.range),
                    );
                }
            }
        }
    }
}

/// What the hypervisor keeps for itself: the GIC (its node and frames),
/// the console (its node, frame and interrupt).
pub(super) struct HypDevices {
    /// The GIC's node offset.
    pub gic: Option<usize>,
    pub frames: Vec<(String, Range)>,
    /// The console UART's node offset and path.
    pub console_node: Option<usize>,
    pub console: String,
    pub console_irq: Option<u32>,
}

impl HypDevices {
    pub fn of(fdt: &Fdt<'_>) -> HypDevices {
        let gic = platform::gic_node(fdt).map(|g| g.offset());
        let mut frames = Vec::new();
        if let Some(l) = gic.and_then(|g| platform::find_located(fdt, &mut |n| n.offset() == g)) {
            let path = l.path();
            frames.extend(
                (0..)
                    .map_while(|i| l.reg(i))
                    .map(|r| (format!("the GIC {path}"), r)),
            );
        }
        let mut console = String::new();
        let mut console_node = None;
        let mut console_irq = None;
        if let Some((loc, uart, _)) = platform::find_console(fdt) {
            console = loc.path();
            console_node = Some(loc.node.offset());
            if let Some(u) = uart {
                if let Some(r) = Range::from_base_size(u.base, u.size) {
                    frames.push((format!("the console UART {console}"), r));
                }
            }
            console_irq = gic
                .and_then(|g| loc.gic_interrupts(fdt, g).ok())
                .and_then(|v| v.first().map(|i| i.intid));
        }
        HypDevices {
            gic,
            frames,
            console_node,
            console,
            console_irq,
        }
    }
}
