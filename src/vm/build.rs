//! From the boot plan and the machine to the domains the image runs: one
//! plain-data step. The pCPU order, each kernel's Image header, what is
//! busy in host RAM, placement, each guest's device tree and the copies a
//! (re)start makes. The image only adds what needs the CPU (stage-2
//! tables, the vGIC, running it).

use crate::config::{partial, BootPlan, Device, Domain};
use crate::hw::platform::{Cpu, EnableMethod};
use crate::hw::Platform;
use crate::mm::Range;
use crate::placement::{self, DomainLayout, Layout, Needs};
use crate::vm::guest_dtb::{self, GicVersion, GuestDtbSpec, GuestMap, HostTree};
use crate::vm::image::ImageHeader;
use crate::vm::load::{self, Image, Restart};
pub use crate::vm::load::{loads_for, Load};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// SPIs a guest's vGIC offers unless its node says `nr_spis`: INTIDs
/// 32..63, for the vPL011 (SPI 0) and the virtio SPIs of Xen's guest map.
pub const DEFAULT_SPIS: u32 = 32;

/// One domain, ready for the image to run.
#[derive(Clone, Debug)]
pub struct DomainSpec {
    pub name: String,
    pub id: u16,
    pub layout: DomainLayout,
    pub vpl011: bool,
    /// Where it sees its vGIC and vPL011.
    pub map: GuestMap,
    /// SPIs its vGIC offers.
    pub spis: u32,
    /// Devices assigned to it: MMIO regions mapped, SPIs routed to it.
    pub devices: Vec<Device>,
    /// Host memory mapped 1:1 besides its RAM (the hardware domain's
    /// `/reserved-memory`), never zeroed or reloaded.
    pub reserved_memory: Vec<Range>,
    /// What a (re)start does to its memory: the kernel and initrd shared
    /// with their modules or copied, the device tree copied, the rest zeroed.
    pub restart: Restart,
    pub entry_ipa: u64,
    pub dtb_ipa: u64,
}

impl DomainSpec {
    /// Host RAM of the guest (zeroed before each start).
    pub fn ram_host(&self) -> Vec<Range> {
        self.layout.host_ram()
    }
}

/// pCPU order: the boot CPU is pCPU 0, then the DTB's CPUs in their order,
/// at most `max`.
pub fn cpu_order(plat: &Platform, boot_mpidr: u64, max: usize) -> Vec<u64> {
    let mut cpus: Vec<u64> = plat
        .cpus
        .iter()
        .map(|c| c.mpidr)
        .filter(|&m| m != boot_mpidr)
        .collect();
    cpus.insert(0, boot_mpidr);
    cpus.truncate(max);
    cpus
}

/// How many pCPUs of `order` (pCPU 0 the boot CPU, as `cpu_order` gives
/// them) can run vCPUs: the boot CPU, then each CPU that can be started,
/// up to the first that cannot; that one's node and why.
pub fn startable<'p>(plat: &'p Platform, order: &[u64]) -> (usize, Option<(&'p str, &'p str)>) {
    for (i, &m) in order.iter().enumerate().skip(1) {
        let cpu = plat.cpus.iter().find(|c| c.mpidr == m);
        if let Some(Cpu {
            path,
            enable: EnableMethod::Unusable(why),
            ..
        }) = cpu
        {
            return (i, Some((path.as_str(), why.as_str())));
        }
    }
    (order.len().max(1), None)
}

/// What each domain needs from placement; errors name the kernel module.
/// `head` reads the first bytes of a module (its Image header).
pub fn needs<'a>(
    plan: &BootPlan,
    head: &dyn Fn(Range) -> &'a [u8],
) -> Result<Vec<Needs>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for d in &plan.domains {
        let k = d.kernel.range;
        let h = head(Range::new(k.start, k.start + k.size().min(64)));
        match ImageHeader::parse(h) {
            Ok(h) => out.push(Needs {
                name: d.name.clone(),
                path: d.path.clone(),
                memory: d.memory_kib << 10,
                vcpus: d.vcpus,
                kernel: k,
                text_offset: h.text_offset,
                image_size: if h.image_size == 0 {
                    k.size() + (1 << 20)
                } else {
                    h.image_size
                },
                ramdisk: d.ramdisk.as_ref().map(|r| r.range),
                static_mem: d.static_mem.clone(),
                direct_map: d.direct_map,
            }),
            Err(e) => errors.push(format!("{}: reg: {e}", d.kernel.path)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Host RAM nothing may be placed over: reserved memory, every module.
pub fn busy(plat: &Platform, plan: &BootPlan) -> Vec<Range> {
    let mut busy: Vec<Range> = plat.memory.reserved.iter().map(|r| r.range).collect();
    busy.extend(
        plan.domains.iter().flat_map(|d| {
            core::iter::once(d.kernel.range).chain(d.ramdisk.as_ref().map(|r| r.range))
        }),
    );
    busy.extend(plan.hyp_modules.iter().map(|m| m.range));
    busy
}

/// Where domain `d` sees its virtual devices: Xen's guest map, or with
/// `direct-map` the host's GIC and console addresses (Xen's rule).
pub fn guest_map(plat: &Platform, d: &Domain) -> GuestMap {
    let mut m = GuestMap::XEN;
    if !d.direct_map {
        return m;
    }
    if let Some(g) = &plat.gic {
        m.gicd = g.gicd.start;
        if let Some(r) = g.gicr.first() {
            m.gicr = r.start;
        }
        if let Some(c) = g.gicc {
            m.gicc = c.start;
        }
    }
    if let Some(c) = &plat.console {
        if let (Some(u), Some(irq)) = (c.uart, c.irq) {
            m.vpl011 = u.base;
            m.vpl011_intid = irq;
        }
    }
    m
}

/// SPIs domain `d`'s vGIC offers: `nr_spis` (at least DEFAULT_SPIS), raised
/// to cover its vPL011 and every assigned interrupt, unless `nr_spis`
/// was given too small for an assigned one (an error).
pub fn spis(d: &Domain, map: &GuestMap) -> Result<u32, String> {
    let base = d.nr_spis.unwrap_or(DEFAULT_SPIS).max(DEFAULT_SPIS);
    let uart = if d.vpl011 { map.vpl011_intid - 31 } else { 0 };
    let mut need = base.max(uart);
    for dev in &d.devices {
        for i in &dev.irqs {
            let n = i.intid - 31;
            if let Some(given) = d.nr_spis.filter(|&g| n > g.max(DEFAULT_SPIS)) {
                return Err(format!(
                    "{}: nr_spis: {given} SPIs do not reach interrupt {} of {}",
                    d.path, i.intid, dev.node
                ));
            }
            need = need.max(n);
        }
    }
    Ok(need)
}

/// The guest device tree of domain `d` placed as `l`. `partial` is the
/// contents of its partial device tree, if it has one; `host` the boot
/// DTB, for the hardware domain.
pub fn guest_dtb(
    plat: &Platform,
    d: &Domain,
    l: &DomainLayout,
    gic: GicVersion,
    map: GuestMap,
    partial: Option<&[u8]>,
    host: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    // The hardware domain's tree is the host's (the boot DTB, read where
    // it lies), its vGIC under the host GIC's phandle (`build_hardware`).
    let removed: Vec<String> = d.removed.iter().map(|r| r.node.clone()).collect();
    let gic_phandle = partial
        .and_then(|p| partial::read(p, p.len() as u64).ok())
        .and_then(|f| f.gic_phandle)
        .unwrap_or(guest_dtb::GIC_PHANDLE);
    let spec = GuestDtbSpec {
        map,
        partial,
        gic_phandle,
        bootargs: d.cmdline.as_deref(),
        initrd: l.initrd_ipa,
        ram: &l.banks,
        vcpus: d.vcpus,
        cpu_compatible: plat.cpu_compatible.as_deref().unwrap_or("arm,armv8"),
        gic,
        timer_clock_frequency: plat.timer.as_ref().and_then(|t| t.clock_frequency),
        vpl011: d.vpl011,
        host: host.map(|dtb| HostTree {
            dtb,
            removed: &removed,
            console: plat.console.as_ref().map(|c| c.path.as_str()),
        }),
    };
    match guest_dtb::build(&spec) {
        Ok(b) if (b.len() as u64) <= placement::DTB_MAX => Ok(b),
        Ok(b) => Err(format!(
            "{}: its device tree ({} bytes) does not fit in 2 MiB",
            d.path,
            b.len()
        )),
        Err(e) => Err(format!(
            "{}: its device tree could not be written: {e:?}",
            d.path
        )),
    }
}

/// The boot DTB's bytes when `d` is the hardware domain (None for the
/// others, and when `head` cannot read it).
fn hardware_source<'a>(
    plat: &Platform,
    d: &Domain,
    head: &dyn Fn(Range) -> &'a [u8],
) -> Option<&'a [u8]> {
    if d.caps.0 & crate::config::Caps::HARDWARE == 0 {
        return None;
    }
    let r = plat
        .memory
        .reserved
        .iter()
        .find(|r| r.kind == crate::hw::ReservedKind::Dtb)?;
    Some(head(r.range)).filter(|b| b.len() as u64 == r.range.size())
}

/// Plan + machine to domains. `head` reads a module's first bytes; `keep`
/// takes each finished guest DTB and returns the host address where it
/// now stays for good (the image leaks it on its heap). Every error is
/// returned, with the node path.
pub fn build<'a>(
    plat: &Platform,
    plan: &BootPlan,
    cpus: &[u64],
    gic: GicVersion,
    head: &dyn Fn(Range) -> &'a [u8],
    keep: &mut dyn FnMut(Vec<u8>) -> u64,
) -> Result<(Layout, Vec<DomainSpec>), Vec<String>> {
    let needs = needs(plan, head)?;
    let (pcpus, blocker) = startable(plat, cpus);
    let vcpus: usize = needs.iter().map(|n| n.vcpus as usize).sum();
    let layout =
        placement::place(&plat.memory.ram, &busy(plat, plan), pcpus, &needs).map_err(|errs| {
            let mut out: Vec<String> = errs.iter().map(|e| format!("{}", e.at())).collect();
            if let Some((path, why)) = blocker.filter(|_| vcpus > pcpus) {
                out.push(format!(
                    "{path}: {why}: the CPUs before it ({pcpus}, the boot CPU first) are all the domains can use"
                ));
            }
            out
        })?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (d, l) in plan.domains.iter().zip(&layout.domains) {
        let map = guest_map(plat, d);
        let spis = match spis(d, &map) {
            Ok(n) => n,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let frag = d.device_tree.as_ref().map(|m| head(m.range));
        let dtb = match guest_dtb(plat, d, l, gic, map, frag, hardware_source(plat, d, head)) {
            Ok(b) => b,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let dtb_len = dtb.len() as u64;
        let dtb_host = keep(dtb);
        let mut images = vec![Image {
            src: l.pristine[0].start,
            ipa: l.kernel_ipa.start,
            len: d.kernel.range.size(),
            module: true,
        }];
        if let (Some(rd), Some(src)) = (l.initrd_ipa, l.pristine.get(1)) {
            images.push(Image {
                src: src.start,
                ipa: rd.start,
                len: rd.size(),
                module: true,
            });
        }
        images.push(Image {
            src: dtb_host,
            ipa: l.dtb_ipa.start,
            len: dtb_len,
            module: false,
        });
        // Without an IOMMU an assigned device writes the guest's own RAM,
        // which a page shared with a module would hide from the guest.
        let share = d.devices.is_empty() && !d.direct_map;
        let Some(restart) = load::plan(l, &images, l.kernel_ipa, share) else {
            errors.push(format!("{}: a load falls outside its guest RAM", d.path));
            continue;
        };
        out.push(DomainSpec {
            name: d.name.clone(),
            id: d.domid,
            layout: l.clone(),
            vpl011: d.vpl011,
            map,
            spis,
            devices: d.devices.clone(),
            reserved_memory: d.reserved_memory.clone(),
            restart,
            entry_ipa: l.kernel_ipa.start,
            dtb_ipa: l.dtb_ipa.start,
        });
    }
    if errors.is_empty() {
        Ok((layout, out))
    } else {
        Err(errors)
    }
}
