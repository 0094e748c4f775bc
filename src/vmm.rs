//! The image's side of the run-time (`dtvisor::rt`): the machine it runs
//! on ([`ImageHw`], over the CPU, the physical GIC and the console), the
//! idle loop that enters vCPUs, and the boot step that turns the plan
//! into domains. Everything the run-time decides is in the library and
//! tested on the host; this file only touches the hardware.

use crate::arch::boot;
use crate::arch::gic::{self, Driver as _};
use crate::arch::stage2::{self, HeapPages};
use crate::arch::{self, mmu, smp, vcpu, Yield};
use crate::console;
use alloc::string::String;
use alloc::vec::Vec;
use arm_gic::Trigger;
use dtvisor::config::BootPlan;
use dtvisor::hw::{Conduit, GicVersion, Platform};
use dtvisor::mm::stage2::Stage2Tables;
use dtvisor::mm::Range;
use dtvisor::rt::hw::{Acked, ConsoleOut, ConsoleRx, HypMemory};
use dtvisor::rt::{self, vcpu_mpidr, Hw, ResetEnd, Runtime, Settings};
use dtvisor::vgic::{v2, Lr, LrState};
use dtvisor::vm::build::{self, DomainSpec};
use spin::Once;

/// A domain as the image runs it.
pub type Vm = rt::Vm<ImageHw>;

/// The machine: this CPU, the physical GIC, the console.
pub struct ImageHw {
    /// The host's GIC (none usable: guests get no interrupts).
    gic: Option<gic::Gic>,
    /// CPUs in the host DTB, for finding redistributors.
    host_cpus: usize,
}

impl ImageHw {
    /// `f` on the host GIC's driver; nothing without one.
    fn with_gic(&self, f: impl FnOnce(&gic::Gic)) {
        if let Some(g) = &self.gic {
            f(g);
        }
    }
}

/// The one run-time object. A `Once` because it is built on the boot CPU
/// after the plan and read by every CPU afterwards; the only other
/// mutable statics of the image are the drivers' (console, GIC, heap).
static RT: Once<Runtime<ImageHw>> = Once::new();

/// The run-time, once the domains are built.
pub fn runtime() -> Option<&'static Runtime<ImageHw>> {
    RT.get()
}

impl ConsoleOut for console::Output {
    fn write_fmt(&self, args: core::fmt::Arguments) {
        console::Output::write_fmt(self, args)
    }
}

impl ConsoleRx for console::Rx {
    fn getc(&self) -> Option<u8> {
        console::Rx::getc(self)
    }
}

impl Hw for ImageHw {
    type Relax = Yield;
    type Pages = HeapPages;
    type Output = console::Output;
    type OutGuard<'a> = console::OutputGuard;
    type Rx<'a> = console::Rx;

    fn cpu(&self) -> usize {
        arch::cpu_index()
    }
    fn counter(&self) -> u64 {
        arch::counter()
    }
    fn counter_freq(&self) -> u64 {
        arch::counter_freq()
    }
    fn wake_all(&self) {
        wake_all();
    }
    fn timer_controls(&self) -> (u64, u64) {
        vcpu::timer_controls()
    }
    fn fatal(&self, msg: &str) -> ! {
        crate::fatal::fatal(msg)
    }
    fn gic_present(&self) -> bool {
        self.gic.is_some()
    }
    fn kick(&self, pcpu: usize, mpidr: u64) {
        self.with_gic(|g| g.kick(pcpu, mpidr));
    }
    fn route_spi(&self, id: u32, pcpu: usize, mpidr: u64) {
        self.with_gic(|g| g.route_spi(id, pcpu, mpidr));
    }
    fn set_spi_enabled(&self, id: u32, on: bool) {
        self.with_gic(|g| gic::spi_bit(g, if on { 0x100 } else { 0x180 }, id));
    }
    fn clear_active_spi(&self, id: u32) {
        self.with_gic(|g| gic::spi_bit(g, 0x380, id));
    }
    fn clear_active_private(&self, mask: u32) {
        self.with_gic(|g| g.clear_active_private(arch::cpu_index(), mask));
    }
    fn ack(&self) -> Option<Acked> {
        self.gic?.ack()
    }
    fn eoi(&self, a: Acked) {
        self.with_gic(|g| g.eoi(a));
    }
    fn deactivate(&self, a: Acked) {
        self.with_gic(|g| g.deactivate(a));
    }
    fn lr_state(&self, n: usize) -> LrState {
        self.gic.map_or(LrState::Invalid, |g| g.lr_state(n))
    }
    fn set_lr(&self, n: usize, lr: &Lr) {
        self.with_gic(|g| g.set_lr(n, lr));
    }
    fn clear_lr(&self, n: usize) {
        self.with_gic(|g| g.clear_lr(n));
    }
    fn write_hcr(&self, v: u64) {
        self.with_gic(|g| g.write_hcr(v));
    }
    fn reset_virtual_interface(&self) {
        self.with_gic(|g| g.reset_virtual_interface());
    }
    fn set_virtual_irq(&self, on: bool) {
        vcpu::set_virtual_irq(on);
    }
    unsafe fn copy(&self, src: u64, dst: u64, len: u64) {
        // SAFETY: the caller's contract (disjoint host RAM, `dst` unused
        // meanwhile); RAM is identity mapped.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len as usize) };
    }
    unsafe fn zero(&self, r: Range) {
        mmu::zero_range(r.start, r.end);
    }
    fn clean_invalidate_dcache(&self, r: Range) {
        mmu::clean_invalidate_dcache_range(r.start, r.end);
    }
    fn clean_dcache(&self, r: Range) {
        mmu::clean_dcache_range(r.start, r.end);
    }
    fn invalidate_icache(&self, r: Range) {
        mmu::invalidate_icache_range(r.start, r.end);
    }
    fn invalidate_icache_all(&self) {
        // SAFETY: invalidating instruction caches has no memory effects.
        unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb") };
    }
    fn tables_updated(&self) {
        stage2::tables_updated();
    }
    fn invalidate_ipa(&self, ipa: u64) {
        stage2::invalidate_ipa(ipa);
    }
    fn invalidate_vmid(&self) {
        stage2::invalidate_vmid();
    }
    fn output(&self, wait: bool) -> Option<console::OutputGuard> {
        console::output(wait)
    }
    fn try_rx(&self) -> Option<console::Rx> {
        console::try_rx()
    }
    fn memory(&self) -> HypMemory {
        let (used, peak, heap) = crate::heap::heap_stats();
        let (start, end) = boot::image_range();
        HypMemory {
            image: end - start,
            heap,
            used,
            peak,
        }
    }
}

/// Per-CPU GIC setup on a secondary pCPU.
pub fn init_secondary_gic(cpu: usize) {
    let Some(rt) = RT.get() else { return };
    let Some(g) = rt.hw.gic else {
        return rt.cpu_ready(0);
    };
    if !g.init_secondary(cpu, rt.mpidr_of(cpu), rt.hw.host_cpus) {
        log::error!("pCPU {cpu}: its GIC CPU interface cannot be set up (no redistributor with its affinity?)");
    }
    rt.cpu_ready(gic::nr_lrs(&g));
}

/// Wakes CPUs waiting in `idle` (after a vCPU was made pending).
pub fn wake_all() {
    // SAFETY: SEV only signals an event to all CPUs.
    unsafe { core::arch::asm!("dsb ish", "sev") };
}

/// This pCPU's life from now on: wait until its vCPU is powered on, then
/// run it. Never returns; re-entered whenever the vCPU stops.
pub fn idle() -> ! {
    // A trap that stopped its vCPU ends here (see exception::trap_done).
    arch::exception::trap_done();
    let cpu = arch::cpu_index();
    let stack_top = boot::stack_top(cpu);
    loop {
        if !boot::stack_intact(cpu) {
            crate::fatal::fatal("stack overflow on this CPU");
        }
        if let Some(rt) = RT.get() {
            if let Some((vm, vi, (entry, ctx))) = rt.next_run() {
                if rt.first_entry() {
                    let us = crate::time::micros(arch::counter() - crate::time::t_entry());
                    log::info!(
                        "hypervisor entry to first guest instruction: {us} us (system counter)"
                    );
                }
                vcpu::configure_el2(vm.vtcr, vm.vttbr, vm.cntvoff());
                // Nothing of an earlier life on this pCPU reaches the next.
                vcpu::clear_cpu_state();
                vcpu::El1Regs::reset(vcpu_mpidr(vi as u64)).load();
                rt.vcpu_starts(vm, vi);
                vcpu::run(entry, ctx, stack_top);
            }
            rt.poll_console();
            rt.drain_output(None);
        }
        // SAFETY: waiting for an event (SEV or the timer event stream).
        unsafe { core::arch::asm!("wfe") };
    }
}

/// The calling vCPU leaves its guest: Off (CPU_OFF: CPU_ON may start it
/// again) or, if its domain is stopping, Stopped. Its pCPU idles.
pub fn park(rt: &Runtime<ImageHw>, vm: &Vm, vi: usize) -> ! {
    // Its timers must not fire at EL2 for a vCPU that is not running.
    vcpu::El1Regs::reset(vcpu_mpidr(vi as u64)).load();
    rt.leave(vm, vi);
    idle()
}

/// SYSTEM_OFF (or an SError): this domain only; then the vCPU parks.
pub fn system_off(rt: &Runtime<ImageHw>, vm: &Vm, vi: usize, why: &str) -> ! {
    rt.system_off(vm, vi, why);
    park(rt, vm, vi)
}

/// SYSTEM_RESET: the domain restarts (this pCPU idles until its vCPU is
/// started again) or, overtaken by a SYSTEM_OFF, the vCPU parks.
pub fn system_reset(rt: &Runtime<ImageHw>, vm: &Vm, vi: usize) -> ! {
    match rt.system_reset(vm, vi) {
        ResetEnd::Restarted => idle(),
        ResetEnd::Park => park(rt, vm, vi),
    }
}

/// Turns the plan into running domains on this machine; never returns.
pub fn boot(plat: &Platform, plan: &BootPlan, boot_scrub: bool, virq_by_hcr: bool) -> ! {
    let me = arch::mpidr();
    let cpus = build::cpu_order(plat, me, boot::MAX_CPUS);
    let (specs, modules_kept) = build_specs(plat, plan, &cpus);
    let console_irq = plat.console.as_ref().and_then(|c| c.irq);
    let driver = init_host_gic(plat, me, console_irq);
    let vgic = driver.map(|d| d.version());
    let vtcr = stage2::vtcr();
    let vms: Vec<Vm> = specs
        .into_iter()
        .map(|s| {
            let s2 = map_domain(&s, driver, plat, &cpus);
            rt::Vm::new(s, vtcr, s2, vgic)
        })
        .collect();
    let settings = Settings {
        console_irq: vgic.and(console_irq).unwrap_or(0),
        boot_scrub,
        modules_kept,
        virq_by_hcr: driver.is_some_and(|d| virq_by_hcr || !virq_reaches_cpu(&d)),
    };
    let nr_lrs = driver.map_or(0, |d| gic::nr_lrs(&d));
    let hw = ImageHw {
        gic: driver,
        host_cpus: plat.cpus.len().min(boot::MAX_CPUS),
    };
    let rt = RT.call_once(|| Runtime::new(hw, vms, &cpus, nr_lrs, settings));
    start_secondaries(plat, rt, &cpus);
    rt.publish();
    console::set_before_line(|o| {
        if let Some(rt) = RT.get() {
            rt.write_all_queued(o);
        }
    });
    wake_all();
    idle()
}

/// The domains of the plan on this machine (their guest device trees on
/// the heap), and the bytes of boot modules kept as pristine images.
fn build_specs(plat: &Platform, plan: &BootPlan, cpus: &[u64]) -> (Vec<DomainSpec>, u64) {
    let guest_gic = plat.gic.as_ref().map_or(GicVersion::V3, |g| g.version);
    // SAFETY: modules the plan checked to lie inside RAM (identity mapped),
    // reserved and never written.
    let head =
        |r: Range| unsafe { core::slice::from_raw_parts(r.start as *const u8, r.size() as usize) };
    let built = build::build(plat, plan, cpus, guest_gic, &head, &mut |dtb| {
        Vec::leak(dtb).as_ptr() as u64
    });
    let (layout, specs) = match built {
        Ok(b) => b,
        Err(errs) => {
            for e in &errs {
                println!("error: {e}");
            }
            crate::fatal::stay_up("the domains cannot be built on this machine")
        }
    };
    print!("{layout}");
    crate::heap::donate_free(&layout.free);
    (specs, layout.kept.iter().map(|r| r.size()).sum())
}

/// Sets the physical GIC up from the boot CPU (affinity `me`), the
/// console's interrupt taken at EL2. Its driver, if the host GIC is
/// usable for a vGIC (its version is the guests').
fn init_host_gic(plat: &Platform, me: u64, console_irq: Option<u32>) -> Option<gic::Gic> {
    let host = plat.gic.as_ref().and_then(|g| match g.version {
        GicVersion::V3 => g.gicr.first().map(|r| gic::Host::V3 {
            gicd: g.gicd.start,
            gicr: r.start,
            cpus: plat.cpus.len().min(boot::MAX_CPUS),
        }),
        GicVersion::V2 => Some(gic::Host::V2 {
            gicd: g.gicd.start,
            gicc: g.gicc.map_or(0, |r| r.start),
            gich: g.gich.map_or(0, |r| r.start),
            maintenance: g.maintenance.unwrap_or(gic::MAINTENANCE),
        }),
    });
    let driver = host.and_then(|h| gic::init_boot(h, me, console_irq));
    // A GICv2 guest's CPU interface is the host's GICV frame, mapped at
    // the guest's GICC address; without one there is no vGICv2.
    let driver = driver.filter(|d| d.version() == GicVersion::V3 || gicv(plat).is_some());
    if driver.is_some() {
        if console_irq.is_some() {
            if let Some(rx) = console::try_rx() {
                rx.set_irq(true);
            }
        }
    } else {
        log::warn!(
            "the host GIC cannot be used (no GICv3 redistributors, or no GICv2 GICH/GICV frames): guests get no virtual GIC, and SYSTEM_OFF/RESET wait for the domain's other vCPUs to trap"
        );
    }
    driver
}

/// Whether the GIC's virtual IRQ output reaches this CPU (the probe of
/// `arch::virq`); when it does not, the run-time raises the virtual IRQ
/// itself (`Settings::virq_by_hcr`), and the log says so.
fn virq_reaches_cpu(g: &gic::Gic) -> bool {
    use arch::virq::Virq;
    match gic::probe_virq(g) {
        Virq::NotWired => {
            log::warn!(
                "GIC: a pending virtual interrupt does not interrupt the CPU (its virtual IRQ output \
                 is not wired: QEMU 10.0.2's imx8mp-evk is built so): dtvisor raises guests' \
                 interrupts through HCR_EL2.VI, one maintenance interrupt more per delivery"
            );
            false
        }
        Virq::Wired | Virq::Unknown => true,
    }
}

/// The host's GICv2 virtual CPU interface frame, if it is large enough.
fn gicv(plat: &Platform) -> Option<Range> {
    plat.gic
        .as_ref()
        .and_then(|g| g.gicv)
        .filter(|r| r.size() >= v2::GICC_SIZE)
}

/// A domain's stage-2 tables: its RAM, the pages shared with its boot
/// modules, the GICv2 virtual CPU interface, its assigned devices (whose
/// SPIs are set up and routed to vCPU 0's pCPU).
fn map_domain(
    s: &DomainSpec,
    gic: Option<gic::Gic>,
    plat: &Platform,
    cpus: &[u64],
) -> Stage2Tables<HeapPages> {
    let vgic = gic.map(|d| d.version());
    let mut s2 = Stage2Tables::new(HeapPages);
    for m in &s.layout.ram {
        if s2.map_ram(m.ipa, m.pa).is_err() {
            crate::fatal::stay_up("stage-2 mapping failed");
        }
    }
    for sh in &s.restart.shared {
        if s2.map_shared(sh.ipa, sh.module).is_err() {
            crate::fatal::stay_up("stage-2 mapping of a module's shared pages failed");
        }
    }
    if let (Some(GicVersion::V2), Some(v)) = (vgic, gicv(plat)) {
        let ipa = Range::new(s.map.gicc, s.map.gicc + v2::GICC_SIZE);
        if s2.map_device(ipa, v.start).is_err() {
            crate::fatal::stay_up("stage-2 mapping of the GICv2 virtual CPU interface failed");
        }
    }
    for r in &s.reserved_memory {
        if s2.map_ram(*r, r.start).is_err() {
            crate::fatal::stay_up("stage-2 mapping of reserved memory failed");
        }
        log::info!("{}: reserved memory {r} mapped 1:1", s.name);
    }
    let first = s.layout.pcpus[0];
    for dev in &s.devices {
        for r in &dev.regions {
            let ipa = Range::new(r.guest, r.guest + r.host.size());
            if s2.map_device(ipa, r.host.start).is_err() {
                crate::fatal::stay_up("stage-2 mapping of an assigned device failed");
            }
            log::info!(
                "{}: {} mmio host {} at guest {:#x}",
                s.name,
                dev.node,
                r.host,
                r.guest
            );
        }
        for i in &dev.irqs {
            if let Some(g) = gic {
                let trigger = if i.edge {
                    Trigger::Edge
                } else {
                    Trigger::Level
                };
                g.assign_spi(
                    i.intid,
                    trigger,
                    first,
                    cpus.get(first).copied().unwrap_or(0),
                );
            }
            log::info!(
                "{}: {} interrupt {} ({}) routed to the domain",
                s.name,
                dev.node,
                i.intid,
                if i.edge { "edge" } else { "level" }
            );
        }
    }
    log_placement(s, vgic);
    s2
}

/// "<domain>: vCPUs 0..n on pCPUs ...; guest GIC ...".
fn log_placement(s: &DomainSpec, vgic: Option<GicVersion>) {
    let pcpus: Vec<String> = s
        .layout
        .pcpus
        .iter()
        .map(|p| alloc::format!("{p}"))
        .collect();
    let gic = match vgic {
        Some(v) => alloc::format!(
            "v{} (distributor {:#x}, {} SPIs from INTID 32)",
            if v == GicVersion::V3 { 3 } else { 2 },
            s.map.gicd,
            s.spis
        ),
        None => "none usable (no interrupts)".into(),
    };
    log::info!(
        "{}: vCPUs 0..{} on pCPUs {}; guest GIC {gic}",
        s.name,
        s.layout.pcpus.len(),
        pcpus.join(" ")
    );
}

/// Starts every pCPU a vCPU needs before any domain is published, so a
/// CPU that fails to start leaves nothing half started; decides this
/// CPU's speculation mitigations first (each secondary decides its own).
fn start_secondaries(plat: &Platform, rt: &Runtime<ImageHw>, cpus: &[u64]) {
    let highest = rt
        .vms()
        .iter()
        .flat_map(|v| v.vcpus.iter().map(|c| c.pcpu))
        .max()
        .unwrap_or(0);
    let spectre = arch::spectre::init_this_cpu(arch::cpu_index(), plat.psci == Some(Conduit::Smc));
    log::info!("speculation: {spectre}");
    let mut failed = false;
    // A second per CPU to arrive: under TCG a CPU's first instructions
    // take milliseconds, never seconds.
    let wait = arch::counter_freq();
    for (i, &mpidr) in cpus.iter().enumerate().take(highest + 1).skip(1) {
        let Some(cpu) = plat.cpus.iter().find(|c| c.mpidr == mpidr) else {
            continue;
        };
        if let Err(e) = smp::start_cpu(&cpu.enable, plat.psci, i, mpidr, wait) {
            let how = match e {
                smp::StartError::Psci(e) => alloc::format!("PSCI CPU_ON failed: {e:?}"),
                smp::StartError::Unusable => {
                    alloc::format!("it cannot be started ({})", cpu.enable)
                }
                smp::StartError::Silent => alloc::format!(
                    "released by {}, it did not arrive within a second",
                    cpu.enable
                ),
            };
            log::error!("pCPU {i} ({}, MPIDR {mpidr:#x}): {how}", cpu.path);
            failed = true;
        }
    }
    if failed {
        crate::fatal::stay_up("a physical CPU the domains need did not start");
    }
    log::info!(
        "CPUs up: {} of {} (the boot CPU and {} started)",
        highest + 1,
        plat.cpus.len(),
        highest
    );
}
