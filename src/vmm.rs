//! Running domains on the image: which pCPU runs which vCPU, power state
//! changes (CPU_ON/OFF, SYSTEM_OFF/RESET), emulated MMIO and the console
//! input focus. Built once at boot; afterwards shared read-only except
//! for atomics and the per-device locks.

use crate::arch::stage2::{self, HeapPages};
use crate::arch::{self, gic, mmu, smp, vcpu, Mutex};
use crate::boot;
use crate::console;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use dtvisor::config::BootPlan;
use dtvisor::emul::console::{self as console_in, LineQueue, Step};
use dtvisor::emul::mmio::Access;
use dtvisor::emul::vpl011::{self, Vpl011};
use dtvisor::hw::{Conduit, GicVersion, Platform};
use dtvisor::mm::range::Bytes;
use dtvisor::mm::stage2::Stage2Tables;
use dtvisor::mm::Range;
use dtvisor::psci::{Power, VcpuPower};
use dtvisor::vgic::{v2, v3, Lr, LrState, VcpuMask, Version as VgicVersion, Vgic, MAX_LRS};
use dtvisor::vm::build::{self, DomainSpec};
use dtvisor::vm::guest_dtb::{self, GuestMap};
use dtvisor::vm::lifecycle::{self, After, DomainState, Entry, Lifecycle, Request};
use dtvisor::vm::load::{Restart, Work, PAGE};
use dtvisor::vm::ratelimit::LogLimit;
use spin::Once;

/// One vCPU: its power state (PSCI), the pCPU it is pinned to, and
/// whether its list registers are stale (something was posted to it).
pub struct Vcpu {
    pub power: VcpuPower,
    pub pcpu: usize,
    posted: AtomicBool,
}

impl AsRef<VcpuPower> for Vcpu {
    fn as_ref(&self) -> &VcpuPower {
        &self.power
    }
}

/// One domain as the image runs it.
pub struct Vm {
    pub name: String,
    /// Domain id from the plan.
    pub id: u16,
    pub vtcr: u64,
    pub vttbr: u64,
    /// Guest-physical RAM banks.
    pub ram_ipa: Vec<Range>,
    pub vcpus: Vec<Vcpu>,
    pub vpl011: Option<Mutex<Vpl011>>,
    /// Its whole lines of console output waiting for the shared UART.
    out: Mutex<LineQueue<OUT_QUEUE>>,
    /// The virtual GIC (none when the host GIC is unusable). Locked only
    /// inside trap handling, never across a guest entry.
    pub vgic: Option<Mutex<Vgic>>,
    /// Its version (immutable: read without the lock).
    vgic_version: Option<VgicVersion>,
    /// Where the guest sees its vGIC and vPL011.
    map: GuestMap,
    /// Bytes of the GICv3 redistributor region that trap to the vGIC: Xen's
    /// 16 MiB window, or in a direct-mapped domain (at the host's
    /// redistributor address) only the frames of its vCPUs, so that the
    /// vPL011 or a device the host has above them is not taken for one.
    gicr_size: u64,
    /// SPIs of assigned devices, and the pCPU each is routed to now.
    hw_spis: Vec<(u32, AtomicUsize)>,
    /// What each (re)start does to its memory: pages shared with its boot
    /// modules, copies, scrubbing, cleaning.
    restart: Restart,
    /// Its stage-2 tables: a copy on write changes them while it runs.
    s2: Mutex<Stage2Tables<HeapPages>>,
    /// Pages copied on write since it last started.
    cow_pages: AtomicU32,
    pub entry_ipa: u64,
    pub dtb_ipa: u64,
    /// CNTVOFF_EL2: the system counter when the domain last started, so
    /// its virtual counter starts at zero at every (re)start.
    cntvoff: AtomicU64,
    /// Log lines a guest can cause, rate limited: unhandled traps and
    /// stray interrupts, its accesses that hit nothing, SMCCC calls it
    /// made with function ids nothing implements, its accesses to the vGIC
    /// frames the GIC does not allow.
    pub unhandled: LogLimit,
    pub faults: LogLimit,
    pub unknown_calls: LogLimit,
    pub bad_gic: LogLimit,
    /// Its resets: their lines are rate limited too.
    resets: LogLimit,
    /// Loading (built; the pCPU of vCPU 0 loads it, domains load in
    /// parallel, each on its own pCPU), running, stopping, off, resetting.
    life: Lifecycle,
}

impl Vm {
    /// The domain `s` with its stage-2 translation and a vGIC of `vgic`'s
    /// version (none: the host GIC is not usable).
    pub fn new(
        s: DomainSpec,
        vtcr: u64,
        s2: Stage2Tables<HeapPages>,
        vgic: Option<VgicVersion>,
    ) -> Vm {
        let vttbr = s2.vttbr(s.layout.vmid);
        let affinities: Vec<u64> = (0..s.layout.pcpus.len() as u64).map(vmpidr_aff).collect();
        let vcpus = s
            .layout
            .pcpus
            .iter()
            .zip(&affinities)
            .map(|(&p, &a)| Vcpu {
                power: VcpuPower::new(a),
                pcpu: p,
                posted: AtomicBool::new(false),
            })
            .collect();
        let mut vgic_state = vgic.map(|v| Vgic::new(v, &affinities, s.spis));
        let mut hw_spis = Vec::new();
        for i in s.devices.iter().flat_map(|d| &d.irqs) {
            if let Some(g) = vgic_state.as_mut() {
                if g.link_spi(i.intid, i.edge) {
                    hw_spis.push((i.intid, AtomicUsize::new(s.layout.pcpus[0])));
                }
            }
        }
        Vm {
            name: s.name,
            id: s.id,
            vtcr,
            vttbr,
            ram_ipa: s.layout.banks,
            vcpus,
            vpl011: s.vpl011.then(|| Mutex::new(Vpl011::new())),
            out: Mutex::new(LineQueue::new()),
            vgic: vgic_state.map(Mutex::new),
            vgic_version: vgic,
            gicr_size: if s.map.gicr == GuestMap::XEN.gicr {
                v3::GICR_SIZE
            } else {
                s.layout.pcpus.len() as u64 * guest_dtb::GICR_STRIDE
            },
            map: s.map,
            hw_spis,
            restart: s.restart,
            s2: Mutex::new(s2),
            cow_pages: AtomicU32::new(0),
            entry_ipa: s.entry_ipa,
            dtb_ipa: s.dtb_ipa,
            cntvoff: AtomicU64::new(0),
            unhandled: LogLimit::new(),
            faults: LogLimit::new(),
            unknown_calls: LogLimit::new(),
            bad_gic: LogLimit::new(),
            resets: LogLimit::new(),
            life: Lifecycle::new(),
        }
    }

    /// SYSTEM_OFF or a reset is under way (or done): vCPUs park at their
    /// next trap.
    pub fn stopping(&self) -> bool {
        self.life.stopping()
    }

    fn powers(&self) -> impl Iterator<Item = &VcpuPower> + Clone {
        self.vcpus.iter().map(|c| &c.power)
    }
}

/// Guest MPIDR affinity of vCPU `n` (Xen's rule: Aff0 = n & 0xf, Aff1 = n >> 4).
pub fn vmpidr_aff(n: u64) -> u64 {
    (n & 0xf) | ((n >> 4) << 8)
}

/// What each pCPU is and runs; written by its own CPU except where noted.
pub struct PerCpu {
    /// Domain index + 1 (0 = none) and vCPU it runs (set at install).
    vm: AtomicUsize,
    vcpu: AtomicUsize,
    /// MPIDR affinity (set at boot, read by kickers).
    mpidr: AtomicU64,
    /// List registers of this CPU, and how many the current vCPU uses.
    nr_lrs: AtomicUsize,
    lrs_used: AtomicUsize,
}

static PERCPU: [PerCpu; boot::MAX_CPUS] = [const {
    PerCpu {
        vm: AtomicUsize::new(0),
        vcpu: AtomicUsize::new(0),
        mpidr: AtomicU64::new(0),
        nr_lrs: AtomicUsize::new(0),
        lrs_used: AtomicUsize::new(0),
    }
}; boot::MAX_CPUS];

fn this_cpu() -> &'static PerCpu {
    &PERCPU[arch::cpu_index().min(boot::MAX_CPUS - 1)]
}

static VMS: Once<Vec<Vm>> = Once::new();
/// Console input focus, Ctrl-a count and drop report; locked only by the
/// holder of the console's receive side.
static INPUT: Mutex<console_in::Input> = Mutex::new(console_in::Input::new());
static FIRST_ENTRY: AtomicBool = AtomicBool::new(false);
/// A CPU found the console's receive side held: the holder reads again
/// before it lets go.
static INPUT_WANTED: AtomicBool = AtomicBool::new(false);
/// That CPU disabled the console's interrupt at the distributor.
static IRQ_OFF: AtomicBool = AtomicBool::new(false);
/// The physical console's interrupt, taken at EL2 (0 = none).
static CONSOLE_IRQ: AtomicU32 = AtomicU32::new(0);
/// CPUs in the host DTB, for finding redistributors.
static HOST_CPUS: AtomicUsize = AtomicUsize::new(1);

/// The MPIDR of pCPU `cpu`.
pub fn mpidr_of(cpu: usize) -> u64 {
    PERCPU
        .get(cpu)
        .map_or(0, |p| p.mpidr.load(Ordering::Relaxed))
}

/// Per-CPU GIC setup on a secondary pCPU.
pub fn init_secondary_gic(cpu: usize) {
    if gic::present() && !gic::init_secondary(cpu, mpidr_of(cpu), HOST_CPUS.load(Ordering::Relaxed))
    {
        log::error!("pCPU {cpu}: its GIC CPU interface cannot be set up (no redistributor with its affinity?)");
    }
    this_cpu().nr_lrs.store(
        if gic::present() {
            gic::nr_lrs().min(MAX_LRS)
        } else {
            0
        },
        Ordering::Relaxed,
    );
}

/// Marks vCPUs `mask` of `vm` as having stale list registers and kicks
/// the pCPUs of those running elsewhere, so they refill at once.
fn post(vm: &Vm, mask: VcpuMask, me: Option<usize>) {
    for (v, c) in vm.vcpus.iter().enumerate() {
        if mask & (1 << v) == 0 {
            continue;
        }
        c.posted.store(true, Ordering::Release);
        if Some(v) != me && c.power.state() == Power::On {
            gic::kick(c.pcpu, mpidr_of(c.pcpu));
        }
    }
}

/// Makes every other vCPU of `vm` that is running leave its guest, so it
/// sees the domain stopping at once.
fn kick_others(vm: &Vm, vi: usize) {
    for (i, c) in vm.vcpus.iter().enumerate() {
        if i != vi && c.power.state() == Power::On {
            gic::kick(c.pcpu, mpidr_of(c.pcpu));
        }
    }
}

/// Publishes the domains and pins every vCPU to its pCPU.
pub fn install(vms: Vec<Vm>) -> &'static [Vm] {
    let vms = VMS.call_once(|| vms);
    for (d, vm) in vms.iter().enumerate() {
        for (v, c) in vm.vcpus.iter().enumerate() {
            PERCPU[c.pcpu].vcpu.store(v, Ordering::Relaxed);
            PERCPU[c.pcpu].vm.store(d + 1, Ordering::Release);
        }
    }
    vms
}

/// The domain and vCPU this pCPU runs, if any.
pub fn current() -> Option<(&'static Vm, usize)> {
    let pc = PERCPU.get(arch::cpu_index())?;
    let d = pc.vm.load(Ordering::Acquire).checked_sub(1)?;
    Some((VMS.get()?.get(d)?, pc.vcpu.load(Ordering::Relaxed)))
}

/// "(dtvisor) <domain>: <message>" on the console.
pub fn log_vm(vm: &Vm, args: fmt::Arguments) {
    log::info!("{}: {}", vm.name, args);
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
            arch::early_fatal("stack overflow on this CPU");
        }
        if let Some((vm, vi)) = current() {
            if vi == 0 && vm.life.state() == DomainState::Loading {
                load(vm, true, true);
                vm.life.loaded();
                power_on_first(vm);
            }
            if lifecycle::try_enter(&vm.life, &vm.vcpus[vi].power) == Entry::Run {
                let (entry, ctx) = vm.vcpus[vi].power.entry();
                if !FIRST_ENTRY.swap(true, Ordering::Relaxed) {
                    let us = crate::hyp::micros(arch::counter() - crate::hyp::t_entry());
                    log::info!(
                        "hypervisor entry to first guest instruction: {us} us (system counter)"
                    );
                }
                vcpu::configure_el2(vm.vtcr, vm.vttbr, vm.cntvoff.load(Ordering::Acquire));
                // Nothing of an earlier life on this pCPU reaches the next.
                vcpu::clear_cpu_state();
                vcpu::El1Regs::reset(vcpu_mpidr(vi as u64)).load();
                if vm.vgic.is_some() {
                    // A fresh CPU interface; timers left active by an
                    // earlier life of this vCPU are deactivated.
                    gic::reset_virtual_interface();
                    this_cpu().lrs_used.store(0, Ordering::Relaxed);
                    gic::clear_active_private(cpu, (1 << gic::VTIMER) | (1 << gic::PTIMER));
                    vm.vcpus[vi].posted.store(true, Ordering::Release);
                    resume(vm, vi);
                }
                vcpu::run(entry, ctx, stack_top);
            }
        }
        poll_console();
        drain_output(None);
        // SAFETY: waiting for an event (SEV or the timer event stream).
        unsafe { core::arch::asm!("wfe") };
    }
}

fn vcpu_mpidr(n: u64) -> u64 {
    (1 << 31) | vmpidr_aff(n)
}

/// The calling vCPU leaves its guest: Off (CPU_OFF: CPU_ON may start it
/// again) or, if its domain is stopping, Stopped. Its pCPU idles.
pub fn park(vm: &Vm, vi: usize) -> ! {
    // Its timers must not fire at EL2 for a vCPU that is not running.
    vcpu::El1Regs::reset(vcpu_mpidr(vi as u64)).load();
    lifecycle::leave(&vm.life, &vm.vcpus[vi].power);
    idle()
}

/// Waits until every vCPU of `vm` but `vi` has stopped, kicking those
/// still running (see `vm::lifecycle`: pending ones are cancelled).
fn wait_stopped(vm: &Vm, vi: usize) {
    kick_others(vm, vi);
    let t0 = arch::counter();
    let mut warned = false;
    while !lifecycle::poll_stopped(vm.powers(), vi) {
        if !warned && arch::counter() - t0 > arch::counter_freq() {
            log_vm(
                vm,
                format_args!("still waiting for its other vCPUs to stop"),
            );
            kick_others(vm, vi);
            warned = true;
        }
        arch::relax();
    }
}

/// SYSTEM_OFF (or an SError): this domain only. The other domains keep
/// running. `why` is said once, when the domain starts stopping.
pub fn system_off(vm: &Vm, vi: usize, why: &str) -> ! {
    if vm.life.request_off() == Request::Accepted {
        // Said once the domain is stopping: from this line on, console
        // input no longer goes to it.
        log_vm(vm, format_args!("{why}"));
        wait_stopped(vm, vi);
        vm.life.finish_stop();
    }
    park(vm, vi)
}

/// SYSTEM_RESET: restart this domain from its pristine images once every
/// one of its vCPUs has stopped. A SYSTEM_OFF that comes in meanwhile
/// wins: the domain then stays off.
pub fn system_reset(vm: &Vm, vi: usize) -> ! {
    // A domain resetting in a loop must not flood the console every domain
    // shares: its reset and reload lines are rate limited (the first ten
    // resets, then one per power of two, with the count).
    let say = vm.resets.due();
    match say {
        Some(n) if n > 10 => log_vm(
            vm,
            format_args!(
                "SYSTEM_RESET: restarting the domain (reset {n}; lines of other resets left out)"
            ),
        ),
        Some(_) => log_vm(vm, format_args!("SYSTEM_RESET: restarting the domain")),
        None => {}
    }
    if vm.life.request_reset() == Request::Accepted {
        wait_stopped(vm, vi);
        if vm.life.finish_stop() == Some(After::Reset) {
            load(vm, false, say.is_some());
            lifecycle::power_off_all(vm.powers());
            vm.life.restarted();
            power_on_first(vm);
            idle();
        }
        log_vm(
            vm,
            format_args!("powered off (a SYSTEM_OFF overtook the reset)"),
        );
    }
    park(vm, vi)
}

/// Scrub guest RAM before a domain's first start (Xen's `bootscrub`).
static BOOT_SCRUB: AtomicBool = AtomicBool::new(true);

/// `bootscrub=`: whether a domain's first start scrubs its RAM.
pub fn set_boot_scrub(on: bool) {
    BOOT_SCRUB.store(on, Ordering::Relaxed);
}

/// Loads the pristine images and resets the domain's devices. Runs on
/// any pCPU of the domain while none of its vCPUs runs. `first`: its first
/// start (its stage-2 tables are fresh; `bootscrub=0` may skip the scrub).
/// `say`: print what the reload did (a reset's lines are rate limited).
fn load(vm: &Vm, first: bool, say: bool) {
    let scrub = !first || BOOT_SCRUB.load(Ordering::Relaxed);
    let r = &vm.restart;
    if !first {
        reshare(vm);
    }
    // The domain's host RAM that no image overwrites, used by no one else
    // while all its vCPUs are stopped: scrubbed, so no data crosses
    // domains or boots.
    if scrub {
        for z in &r.zero {
            mmu::zero_range(z.start, z.end);
        }
    }
    for l in &r.copies {
        // SAFETY: placement made `src` (a boot module, reserved and never
        // written, or the domain's DTB on the heap) and `dst` (guest RAM)
        // disjoint host ranges of `len` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(l.src as *const u8, l.dst as *mut u8, l.len as usize)
        };
    }
    // The guest starts with its MMU off: memory must hold its images, and
    // the scrubbed RAM must hold zeroes for a guest that reads it
    // non-cacheably (no stale line of its RAM may stay cached either).
    for c in r.clean_ranges(scrub) {
        mmu::clean_invalidate_dcache_range(c.start, c.end);
    }
    // Every CPU may fetch the new images: invalidate the instruction
    // caches of the whole inner-shareable domain.
    // SAFETY: invalidating instruction caches has no memory effects.
    unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb") };
    let w = r.work(scrub);
    if first {
        // The boot's totals count each domain's first load only. The line
        // is printed with WORK held, so every domain's line comes before
        // the totals that the last domain to finish prints.
        let mut b = WORK.lock();
        b.add(w);
        log_vm(vm, format_args!("{}", WorkLine(w)));
        if b.domains == VMS.get().map_or(0, |v| v.len()) {
            boot_memory_report(b.work);
        }
    } else {
        let n = vm.cow_pages.swap(0, Ordering::Relaxed);
        if say {
            log_vm(
                vm,
                format_args!(
                    "its last life copied {n} shared pages on write ({})",
                    Bytes(n as u64 * PAGE)
                ),
            );
            log_vm(vm, format_args!("{}", WorkLine(w)));
        }
    }
    if let Some(u) = &vm.vpl011 {
        let mut u = u.lock();
        if u.has_partial_line() {
            u.flush(&mut |line| print_line(vm, line));
        }
        *u = Vpl011::new();
    }
    if let Some(g) = &vm.vgic {
        g.lock().reset();
    }
    // Assigned devices' SPIs: whatever an earlier life left active is
    // deactivated; they go to vCPU 0's pCPU, as on a first boot, until the
    // guest routes them (whichever vCPU asked for the reset).
    let first = vm.vcpus[0].pcpu;
    for (id, at) in &vm.hw_spis {
        gic::clear_active_spi(*id);
        at.store(first, Ordering::Relaxed);
        gic::route_spi(*id, first, mpidr_of(first));
    }
    for c in &vm.vcpus {
        c.posted.store(false, Ordering::Relaxed);
    }
    vm.cntvoff.store(arch::counter(), Ordering::Release);
}

/// Bytes moved by the first loads, by kind, over every domain loaded so far.
struct BootWork {
    work: Work,
    domains: usize,
}

impl BootWork {
    fn add(&mut self, w: Work) {
        self.work += w;
        self.domains += 1;
    }
}

static WORK: Mutex<BootWork> = Mutex::new(BootWork {
    work: Work {
        shared: 0,
        copied: 0,
        zeroed: 0,
        cleaned: 0,
    },
    domains: 0,
});

/// "memory: 33554432 B (32.0 MiB) shared with its modules (copy on
/// write), 6976 B (6.8 KiB) copied, ... zeroed, ... cleaned".
struct WorkLine(Work);

impl fmt::Display for WorkLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.0;
        write!(
            f,
            "memory: {} shared with its modules (copy on write), {} copied, {} zeroed, {} cleaned",
            Bytes(w.shared),
            Bytes(w.copied),
            Bytes(w.zeroed),
            Bytes(w.cleaned)
        )
    }
}

/// Once every domain is loaded: what the boot moved, and what the
/// hypervisor keeps for itself.
fn boot_memory_report(total: Work) {
    log::info!("all domains loaded, {}", WorkLine(total));
    let (used, peak, heap) = crate::hyp::heap_stats();
    let (start, end) = boot::image_range();
    let image = end - start;
    log::info!(
        "hypervisor memory: image {} + heap {} = {} ({} of the heap in use, at most {}, incl. stage-2 tables and guest device trees); boot modules kept once as the pristine images: {}",
        Bytes(image),
        Bytes(heap),
        Bytes(image + heap),
        Bytes(used),
        Bytes(peak),
        Bytes(MODULES_KEPT.load(Ordering::Relaxed))
    );
}

/// Bytes of boot modules kept reserved (each once).
static MODULES_KEPT: AtomicU64 = AtomicU64::new(0);

/// Maps every shared page back onto its module, read-only (a restart:
/// the pages copied on write are left behind, unseen).
fn reshare(vm: &Vm) {
    let mut t = vm.s2.lock();
    for s in &vm.restart.shared {
        let mut p = s.ipa.start;
        while p < s.ipa.end {
            let _ = t.unmap_page(p);
            p += PAGE;
        }
    }
    stage2::invalidate_vmid();
    for s in &vm.restart.shared {
        if t.map_shared(s.ipa, s.module).is_err() {
            arch::early_fatal("stage-2: a shared page cannot be mapped again");
        }
    }
    stage2::tables_updated();
}

/// A guest access to `ipa` faulted. If the page is shared with a boot
/// module, the first write copies it into the domain's own RAM and maps
/// that instead; true: the access is to be retried (also when another
/// vCPU copied it meanwhile, or the fault was a read in the instant the
/// page was being switched).
pub fn shared_fault(vm: &Vm, ipa: u64) -> bool {
    let Some((page, module, own)) = vm.restart.shared_page(ipa) else {
        return false;
    };
    let mut t = vm.s2.lock();
    if t.writable(page) == Some(true) {
        return true;
    }
    // SAFETY: `module` is a page of a boot module (reserved, never
    // written) and `own` the domain's page behind the same guest page,
    // disjoint host RAM; the guest cannot write `own` until it is mapped.
    unsafe { core::ptr::copy_nonoverlapping(module as *const u8, own as *mut u8, PAGE as usize) };
    // The guest may read it with its MMU off, or execute it.
    mmu::clean_dcache_range(own, own + PAGE);
    mmu::invalidate_icache_range(own, own + PAGE);
    // Break before make: invalid, TLBs invalidated, then the new page.
    if t.unmap_page(page).is_err() {
        return false;
    }
    stage2::invalidate_ipa(page);
    if t.map_ram_page(page, own).is_err() {
        return false;
    }
    stage2::tables_updated();
    vm.cow_pages.fetch_add(1, Ordering::Relaxed);
    true
}

/// Powers on vCPU 0 at the kernel entry (the domain is running).
fn power_on_first(vm: &Vm) {
    log::info!(
        "{} (id {}): loaded, vCPU 0 starts at {:#x} with its device tree at {:#x}",
        vm.name,
        vm.id,
        vm.entry_ipa,
        vm.dtb_ipa
    );
    vm.vcpus[0].power.start(vm.entry_ipa, vm.dtb_ipa);
    wake_all();
}

// ---- the vGIC: list registers, MMIO, SGIs, physical interrupts -----------

/// Takes this pCPU's list registers back into the vGIC state and leaves
/// them empty in the hardware. The caller holds the vGIC lock.
fn sync_here(g: &mut Vgic, vi: usize) {
    let pc = this_cpu();
    let used = pc.lrs_used.load(Ordering::Relaxed);
    if used == 0 {
        return;
    }
    let mut states = [LrState::Invalid; MAX_LRS];
    for (n, s) in states.iter_mut().enumerate().take(used) {
        *s = gic::lr_state(n);
        gic::clear_lr(n);
    }
    g.sync_lrs(vi, &states[..used]);
    pc.lrs_used.store(0, Ordering::Relaxed);
}

/// Samples the outputs of this vCPU's EL1 timers (enabled, condition met,
/// not masked): a timer the guest disabled or masked no longer delivers an
/// interrupt it had raised, and the pending state the guest reads is the
/// line's. Called with the list registers taken back, the vGIC locked.
fn sample_timers(g: &mut Vgic, vi: usize) {
    const FIRING: u64 = 0b101; // ENABLE and ISTATUS set, IMASK clear
    let (v, p) = vcpu::timer_controls();
    g.set_hw_level(vi, gic::VTIMER, v & 0b111 == FIRING);
    g.set_hw_level(vi, gic::PTIMER, p & 0b111 == FIRING);
}

/// Just before the guest runs again: if anything was posted to this vCPU
/// or its list registers are in use, take them back and refill them,
/// highest priority first, and ask for the maintenance interrupts the
/// fill needs.
pub fn resume(vm: &Vm, vi: usize) {
    let Some(vg) = &vm.vgic else { return };
    let pc = this_cpu();
    let posted = vm.vcpus[vi].posted.swap(false, Ordering::AcqRel);
    if !posted && pc.lrs_used.load(Ordering::Relaxed) == 0 {
        return;
    }
    let n = pc.nr_lrs.load(Ordering::Relaxed);
    let mut out = [Lr::default(); MAX_LRS];
    let (fill, deactivate) = {
        let mut g = vg.lock();
        sync_here(&mut g, vi);
        sample_timers(&mut g, vi);
        let f = g.fill_lrs(vi, &mut out[..n]);
        (f, g.take_hw_deactivate(vi))
    };
    gic::clear_active_private(arch::cpu_index(), deactivate);
    for (i, lr) in out.iter().enumerate().take(fill.used) {
        gic::set_lr(i, lr);
    }
    pc.lrs_used.store(fill.used, Ordering::Relaxed);
    let mut hcr = gic::ICH_HCR_EN;
    if fill.no_pending_irq {
        hcr |= gic::ICH_HCR_NPIE;
    }
    if fill.underflow_irq {
        hcr |= gic::ICH_HCR_UIE;
    }
    gic::write_hcr(hcr);
}

/// An access to the vGIC's distributor or redistributors: Some(Some(v))
/// answered, Some(None) refused (bad size or alignment), None not a vGIC
/// address.
/// Which vGIC frame `ipa` is in: (offset in it, the distributor (either
/// version) or else a GICv3 redistributor).
fn vgic_frame(vm: &Vm, ipa: u64) -> Option<(u64, bool)> {
    vm.vgic.as_ref()?;
    let in_frame = |base: u64, size: u64| (base..base + size).contains(&ipa).then(|| ipa - base);
    let m = &vm.map;
    match vm.vgic_version? {
        VgicVersion::V3 => match in_frame(m.gicd, v3::GICD_SIZE) {
            Some(off) => Some((off, true)),
            None => Some((in_frame(m.gicr, vm.gicr_size)?, false)),
        },
        VgicVersion::V2 => Some((in_frame(m.gicd, v2::GICD_SIZE)?, true)),
    }
}

/// The device dtvisor emulates at `ipa` for this domain, by name.
pub fn emulated_device(vm: &Vm, ipa: u64) -> Option<&'static str> {
    let base = vm.map.vpl011;
    if vm.vpl011.is_some() && (base..base + vpl011::SIZE).contains(&ipa) {
        return Some("vPL011");
    }
    vgic_frame(vm, ipa).map(|(_, dist)| {
        if dist {
            "vGIC distributor"
        } else {
            "vGIC redistributor"
        }
    })
}

fn vgic_mmio(vm: &Vm, vi: usize, a: &Access, val: u64) -> Option<Option<u64>> {
    let vg = vm.vgic.as_ref()?;
    let version = vm.vgic_version?;
    let (off, dist) = vgic_frame(vm, a.ipa)?;
    let acc = v3::Access {
        off,
        size: a.size,
        write: a.write.then_some(val),
    };
    // A write, or a read of pending/active state, needs this vCPU's list
    // registers taken back first; other reads leave them alone (and need
    // no refill).
    let sync = a.write || dtvisor::vgic::read_sees_list_registers(version, dist, off);
    let out = {
        let mut g = vg.lock();
        if sync {
            sync_here(&mut g, vi);
            sample_timers(&mut g, vi);
        }
        let out = match (version, dist) {
            (VgicVersion::V2, _) => v2::distributor(&mut g, vi, &acc),
            (VgicVersion::V3, true) => v3::distributor(&mut g, vi, &acc),
            (VgicVersion::V3, false) => v3::redistributor(&mut g, vi, &acc),
        };
        if dist && a.write && !vm.hw_spis.is_empty() {
            follow_hw_spis(vm, &mut g);
        }
        out
    };
    // Our own list registers were taken back: refill them before entry.
    if sync {
        vm.vcpus[vi].posted.store(true, Ordering::Relaxed);
    }
    match out {
        v3::Outcome::Done { value, changed } => {
            post(vm, changed, Some(vi));
            Some(Some(value))
        }
        v3::Outcome::Abort => Some(None),
    }
}

/// After a distributor write: each assigned SPI is routed to the pCPU of
/// the vCPU the guest now targets, and those whose state the guest
/// cleared are deactivated. The caller holds the vGIC lock.
fn follow_hw_spis(vm: &Vm, g: &mut Vgic) {
    for id in g.take_spi_deactivate() {
        gic::clear_active_spi(id);
    }
    for (id, at) in &vm.hw_spis {
        let Some(p) = g
            .spi_target(*id)
            .and_then(|v| vm.vcpus.get(v))
            .map(|c| c.pcpu)
        else {
            continue;
        };
        if at.swap(p, Ordering::Relaxed) != p {
            gic::route_spi(*id, p, mpidr_of(p));
        }
    }
}

/// A trapped ICC_SGI1R_EL1 / ICC_ASGI1R_EL1 / ICC_SGI0R_EL1 write.
pub fn sgi(vm: &Vm, vi: usize, val: u64) {
    let Some(vg) = &vm.vgic else { return };
    let mask = {
        let mut g = vg.lock();
        let (sgi, targets) = v3::sgi_targets(&g, vi, val);
        g.send_sgi(vi, targets, sgi)
    };
    post(vm, mask, Some(vi));
}

/// Raises or lowers the vPL011's interrupt line after its state changed.
/// Called with the vPL011 locked (lock order: vPL011, then vGIC), so line
/// changes reach the vGIC in the order they happen.
fn uart_line(vm: &Vm, u: &Vpl011, me: Option<usize>) {
    let Some(vg) = &vm.vgic else { return };
    let mask = vg.lock().set_line(0, vm.map.vpl011_intid, u.irq_pending());
    post(vm, mask, me);
}

/// Physical interrupts taken at EL2 while vCPU `vi` of `vm` ran: kicks,
/// maintenance, the timers (forwarded to the guest, linked to the
/// physical interrupt) and console input.
pub fn irq(vm: &Vm, vi: usize) {
    if !gic::present() {
        return;
    }
    // A bounded batch: whatever is still pending is taken at the next
    // exception, so a flood of one source cannot hold this CPU at EL2.
    for _ in 0..16 {
        let Some(a) = gic::ack() else { break };
        let id = a.id;
        gic::eoi(a);
        match id {
            gic::VTIMER | gic::PTIMER => {
                // Stays active until the guest deactivates the virtual one.
                if let Some(vg) = &vm.vgic {
                    let mask = vg.lock().inject_hw(vi, id, id);
                    post(vm, mask, Some(vi));
                } else {
                    gic::deactivate(a);
                }
                continue;
            }
            // Level-sensitive, asserted while ICH_MISR_EL2 says why: it
            // drops once the list registers are taken back and refilled.
            gic::MAINTENANCE => {
                vm.vcpus[vi].posted.store(true, Ordering::Relaxed);
                resume(vm, vi);
            }
            gic::KICK => {}
            _ if id == CONSOLE_IRQ.load(Ordering::Relaxed) => poll_console(),
            // An assigned device's: stays active until the guest
            // deactivates the virtual one (hardware-linked).
            _ if vm.hw_spis.iter().any(|(s, _)| *s == id) => {
                if let Some(vg) = &vm.vgic {
                    let mask = vg.lock().inject_hw(vi, id, id);
                    post(vm, mask, Some(vi));
                    continue;
                }
            }
            _ => {
                if let Some(n) = vm.unhandled.due() {
                    log_vm(
                        vm,
                        format_args!("stray physical interrupt {id} ({n} unhandled so far)"),
                    );
                }
            }
        }
        gic::deactivate(a);
    }
}

/// Emulated MMIO: Some(value read) if the access hit a device.
pub fn mmio(vm: &Vm, vi: usize, a: &Access, val: u64) -> Option<u64> {
    // The vPL011 first: the hottest device (console output).
    let base = vm.map.vpl011;
    let uart = vm
        .vpl011
        .as_ref()
        .filter(|_| a.ipa >= base && a.ipa < base + vpl011::SIZE);
    if let Some(u) = uart {
        // Input comes by the console's interrupt; only while there is
        // none does a guest's access fetch it.
        if CONSOLE_IRQ.load(Ordering::Relaxed) == 0 {
            poll_console();
        }
        let off = a.ipa - base;
        let mut u = u.lock();
        let before = u.irq_pending();
        let v = if a.write {
            u.write(off, val as u32, &mut |line| print_line(vm, line));
            0
        } else {
            u.read(off) as u64
        };
        // Every other change of its line is followed by uart_line, so only
        // an access that changed it here needs the vGIC.
        if u.irq_pending() != before {
            uart_line(vm, &u, Some(vi));
        }
        return Some(v);
    }
    if let Some(r) = vgic_mmio(vm, vi, a, val) {
        if let Some(n) = r.is_none().then(|| vm.bad_gic.due()).flatten() {
            log_vm(
                vm,
                format_args!(
                    "{}-byte {} at vGIC address {:#x}: not an access the GIC allows, abort injected ({n} so far)",
                    a.size,
                    if a.write { "write" } else { "read" },
                    a.ipa
                ),
            );
        }
        return r;
    }
    None
}

/// Bytes of console output a domain may have waiting (whole lines).
const OUT_QUEUE: usize = 4096;
/// The longest line the vPL011 hands over (it splits longer ones).
const LINE: usize = 256;

/// A CPU queued a line while another held the console's output: the
/// holder writes queued lines again before it lets go.
static OUT_WANTED: AtomicBool = AtomicBool::new(false);

/// One line of a guest's output. It is queued in the domain's own buffer
/// and the vCPU goes back to its guest: it never waits for the UART while
/// another CPU writes. Only a domain whose buffer is full (it prints
/// faster than the console writes) waits, for its own lines.
fn print_line(vm: &Vm, line: &[u8]) {
    while !vm.out.lock().push(line) {
        // Full: wait for the console and write this domain's own lines. With
        // no console at all there is nowhere to write them: the line goes.
        let Some(o) = console::output(true) else {
            return;
        };
        let queued = vm.out.lock().lines();
        write_queued(&o, vm, queued);
    }
    QUEUED.fetch_add(1, Ordering::SeqCst);
    drain_output(Some(vm));
}

/// Lines queued in all domains' buffers (a cheap test for idle CPUs).
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Writes up to `max` of `vm`'s queued lines, as printable text only
/// (`console_in::Printable`): no guest writes control sequences to the
/// terminal, and every line starts with its domain's name.
fn write_queued(o: &console::Output, vm: &Vm, max: usize) {
    let mut buf = [0u8; LINE];
    for _ in 0..max {
        let Some(n) = vm.out.lock().pop(&mut buf) else {
            return;
        };
        QUEUED.fetch_sub(1, Ordering::SeqCst);
        o.write_fmt(format_args!(
            "({}) {}\n",
            vm.name,
            console_in::Printable(&buf[..n])
        ));
    }
}

/// Writes queued guest output if no other CPU holds the console: the
/// lines `first`'s domain had queued, then one line of each domain in
/// turn. A CPU that finds the console held leaves its line to the holder,
/// which looks again before it lets go (a few rounds at most, so no CPU
/// writes another domain's flood for long).
pub fn drain_output(first: Option<&Vm>) {
    let Some(vms) = VMS.get() else { return };
    if QUEUED.load(Ordering::SeqCst) == 0 {
        return;
    }
    OUT_WANTED.store(true, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    for _ in 0..3 {
        let Some(o) = console::output(false) else {
            return; // the holder sees OUT_WANTED
        };
        OUT_WANTED.store(false, Ordering::SeqCst);
        if let Some(vm) = first {
            let queued = vm.out.lock().lines();
            write_queued(&o, vm, queued);
        }
        for vm in vms {
            write_queued(&o, vm, 1);
        }
        drop(o);
        fence(Ordering::SeqCst);
        if !OUT_WANTED.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Before each hypervisor line: every line guests queued before it, so a
/// line about a domain never comes before what the domain printed.
fn write_all_queued(o: &console::Output) {
    for vm in VMS.get().into_iter().flatten() {
        let queued = vm.out.lock().lines();
        write_queued(o, vm, queued);
    }
}

/// Reads console input: Ctrl-a three times moves the focus on (the
/// hypervisor, then each domain with a vpl011); other bytes go to the
/// focused domain's vpl011, whose RX interrupt then rises.
pub fn poll_console() {
    let Some(vms) = VMS.get() else { return };
    // One CPU at a time reads and dispatches, so bytes keep their order
    // relative to focus changes. A CPU that finds another reading must not
    // wait for it, nor return with the UART's (level) interrupt still
    // asserted: it would take it again at once, in a loop, for as long as
    // the other holds the receive side (time taken from its guest). So it
    // disables the interrupt at the distributor (a lock-free write) and
    // leaves the input to the holder, which reads again before it lets go
    // and enables the interrupt once the UART is empty.
    let mut rx = match console::try_rx() {
        Some(rx) => rx,
        None => {
            let irq = CONSOLE_IRQ.load(Ordering::Relaxed);
            if irq != 0 && !IRQ_OFF.swap(true, Ordering::SeqCst) {
                gic::set_spi_enabled(irq, false);
            }
            INPUT_WANTED.store(true, Ordering::SeqCst);
            // The holder may have let go before it saw the request (the
            // fences order each side's store before its load: a store
            // buffer must not hide the request or the release).
            fence(Ordering::SeqCst);
            match console::try_rx() {
                Some(rx) => rx,
                None => return,
            }
        }
    };
    loop {
        INPUT_WANTED.store(false, Ordering::SeqCst);
        read_input(vms, &rx);
        if IRQ_OFF.swap(false, Ordering::SeqCst) {
            gic::set_spi_enabled(CONSOLE_IRQ.load(Ordering::Relaxed), true);
        }
        drop(rx);
        fence(Ordering::SeqCst);
        if !INPUT_WANTED.load(Ordering::SeqCst) {
            return;
        }
        rx = match console::try_rx() {
            Some(rx) => rx,
            None => return, // the new holder reads it
        };
    }
}

/// Reads console input until the UART is empty. Every byte is read,
/// whatever the focused domain does, so Ctrl-a three times always reaches
/// the hypervisor: a byte the focused domain cannot take (its receive FIFO
/// is full: it is not reading) is dropped, counted, and reported once per
/// burst; a domain that is powered off loses the focus.
fn read_input(vms: &[Vm], rx: &console::Rx) {
    let me = current();
    // Only the holder of the receive side (`rx`) locks it: never contended.
    let mut input = INPUT.lock();
    let takes_input = |d: usize| {
        vms[d].vpl011.is_some()
            && !matches!(
                vms[d].life.state(),
                DomainState::Off | DomainState::Stopping { then: After::Off }
            )
    };
    while let Some(b) = rx.getc() {
        match input.byte(b, vms.len(), takes_input) {
            Step::Nothing => {}
            Step::Focus { to } => {
                end_drop_burst(vms, &mut input);
                focus_moved(vms, to, None);
            }
            Step::Lost { from, to } => {
                end_drop_burst(vms, &mut input);
                focus_moved(vms, to, Some(from));
            }
            Step::Hypervisor(b) => {
                if b == b'\r' || b == b'\n' {
                    log::info!("input goes to the hypervisor; press Ctrl-a three times to switch");
                }
            }
            Step::Deliver { dom, byte } => {
                let vm = &vms[dom];
                let Some(u) = vm.vpl011.as_ref() else {
                    continue;
                };
                let mut u = u.lock();
                if !u.push_rx(byte) {
                    drop(u);
                    if input.dropped(dom) == console_in::DropReport::Started {
                        log_vm(vm, format_args!("takes no console input (its receive FIFO is full: it is not reading); what is typed for it is dropped until it reads again"));
                    }
                    continue;
                }
                let here = me.filter(|(m, _)| core::ptr::eq(*m, vm)).map(|(_, v)| v);
                uart_line(vm, &u, here);
                drop(u);
                end_drop_burst(vms, &mut input);
            }
        }
    }
}

/// The burst of dropped input bytes, if any, is over: say how many.
fn end_drop_burst(vms: &[Vm], input: &mut console_in::Input) {
    if let Some((d, n)) = input.burst_over() {
        log_vm(
            &vms[d],
            format_args!("{n} bytes of console input dropped (its receive FIFO was full)"),
        );
    }
}

/// The focus moved to `to` (None: the hypervisor), because Ctrl-a was
/// pressed three times or because domain `lost` went off. The console's
/// interrupt follows the focus to the pCPU of the domain's vCPU 0, so
/// typing for one domain takes no time from another's pCPUs. (With the
/// focus on the hypervisor it stays put.)
fn focus_moved(vms: &[Vm], to: Option<usize>, lost: Option<usize>) {
    let irq = CONSOLE_IRQ.load(Ordering::Relaxed);
    let (name, routed) = match to.map(|d| &vms[d]) {
        None => ("the hypervisor", None),
        Some(vm) => {
            let p = vm.vcpus[0].pcpu;
            if irq != 0 {
                gic::route_spi(irq, p, mpidr_of(p));
            }
            (vm.name.as_str(), (irq != 0).then_some(p))
        }
    };
    if let Some(d) = lost {
        log::info!(
            "{} is powered off: what was typed for it is dropped",
            vms[d].name
        );
    }
    match routed {
        Some(p) => log::info!(
            "console input now goes to {name} (Ctrl-a three times to switch); pCPU {p} takes its interrupt"
        ),
        None => log::info!("console input now goes to {name} (Ctrl-a three times to switch)"),
    }
}

/// Turns the plan into running domains on this machine; never returns.
pub fn boot(plat: &Platform, plan: &BootPlan) -> ! {
    let me = arch::mpidr();
    let cpus = build::cpu_order(plat, me, boot::MAX_CPUS);
    let usable = if plat.psci.is_some() { cpus.len() } else { 1 };
    let guest_gic = match plat.gic.as_ref().map(|g| g.version) {
        Some(GicVersion::V2) => guest_dtb::GicVersion::V2,
        _ => guest_dtb::GicVersion::V3,
    };
    // SAFETY: modules the plan checked to lie inside RAM (identity mapped),
    // reserved and never written.
    let head =
        |r: Range| unsafe { core::slice::from_raw_parts(r.start as *const u8, r.size() as usize) };
    let built = build::build(plat, plan, usable, guest_gic, &head, &mut |dtb| {
        Vec::leak(dtb).as_ptr() as u64
    });
    let (layout, specs) = match built {
        Ok(b) => b,
        Err(errs) => {
            for e in &errs {
                println!("error: {e}");
            }
            crate::hyp::stay_up("the domains cannot be built on this machine")
        }
    };
    print!("{layout}");
    crate::hyp::donate_free(&layout.free);
    MODULES_KEPT.store(
        layout.kept.iter().map(|r| r.size()).sum(),
        Ordering::Relaxed,
    );

    // The physical GIC: each pCPU finds its redistributor by affinity.
    for (i, &m) in cpus.iter().enumerate() {
        PERCPU[i].mpidr.store(m, Ordering::Relaxed);
    }
    HOST_CPUS.store(plat.cpus.len().min(boot::MAX_CPUS), Ordering::Relaxed);
    let console_irq = plat.console.as_ref().and_then(|c| c.irq);
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
    let vgic = match host {
        Some(h) if gic::init_boot(h, me, console_irq) => gic::version(),
        _ => None,
    };
    // A GICv2 guest's CPU interface is the host's GICV frame, mapped at the
    // guest's GICC address; without one there is no vGICv2.
    let gicv = plat
        .gic
        .as_ref()
        .and_then(|g| g.gicv)
        .filter(|r| r.size() >= v2::GICC_SIZE);
    let vgic = vgic.filter(|&v| v == VgicVersion::V3 || gicv.is_some());
    if vgic.is_some() {
        this_cpu().nr_lrs.store(gic::nr_lrs(), Ordering::Relaxed);
        if let Some(id) = console_irq {
            CONSOLE_IRQ.store(id, Ordering::Relaxed);
            if let Some(rx) = console::try_rx() {
                rx.set_irq(true);
            }
        }
    } else {
        log::warn!(
            "the host GIC cannot be used (no GICv3 redistributors, or no GICv2 GICH/GICV frames): guests get no virtual GIC, and SYSTEM_OFF/RESET wait for the domain's other vCPUs to trap"
        );
    }
    let vtcr = stage2::vtcr();
    let mut vms = Vec::new();
    for s in specs {
        let mut s2 = Stage2Tables::new(HeapPages);
        for m in &s.layout.ram {
            if s2.map_ram(m.ipa, m.pa).is_err() {
                crate::hyp::stay_up("stage-2 mapping failed");
            }
        }
        for sh in &s.restart.shared {
            if s2.map_shared(sh.ipa, sh.module).is_err() {
                crate::hyp::stay_up("stage-2 mapping of a module's shared pages failed");
            }
        }
        if let (Some(VgicVersion::V2), Some(v)) = (vgic, gicv) {
            let ipa = Range::new(s.map.gicc, s.map.gicc + v2::GICC_SIZE);
            if s2.map_device(ipa, v.start).is_err() {
                crate::hyp::stay_up("stage-2 mapping of the GICv2 virtual CPU interface failed");
            }
        }
        // Assigned devices: their MMIO regions, as Device memory.
        for dev in &s.devices {
            for r in &dev.regions {
                let ipa = Range::new(r.guest, r.guest + r.host.size());
                if s2.map_device(ipa, r.host.start).is_err() {
                    crate::hyp::stay_up("stage-2 mapping of an assigned device failed");
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
                gic::assign_spi(
                    i.intid,
                    i.edge,
                    s.layout.pcpus[0],
                    mpidr_of(s.layout.pcpus[0]),
                );
                log::info!(
                    "{}: {} interrupt {} ({}) routed to the domain",
                    s.name,
                    dev.node,
                    i.intid,
                    if i.edge { "edge" } else { "level" }
                );
            }
        }
        let pcpus: Vec<String> = s
            .layout
            .pcpus
            .iter()
            .map(|p| alloc::format!("{p}"))
            .collect();
        log::info!(
            "{}: vCPUs 0..{} on pCPUs {}; guest GIC {}",
            s.name,
            s.layout.pcpus.len(),
            pcpus.join(" "),
            match vgic {
                Some(VgicVersion::V3) => alloc::format!(
                    "v3 (distributor {:#x}, {} SPIs from INTID 32)",
                    s.map.gicd,
                    s.spis
                ),
                Some(VgicVersion::V2) => alloc::format!(
                    "v2 (distributor {:#x}, {} SPIs from INTID 32)",
                    s.map.gicd,
                    s.spis
                ),
                None => "none usable (no interrupts)".into(),
            }
        );
        vms.push(Vm::new(s, vtcr, s2, vgic));
    }
    // Every pCPU a vCPU needs is started before any domain is published,
    // so a CPU that fails to start leaves nothing half started.
    let highest = vms
        .iter()
        .flat_map(|v| v.vcpus.iter().map(|c| c.pcpu))
        .max()
        .unwrap_or(0);
    let conduit = match plat.psci {
        Some(Conduit::Hvc) => smp::Conduit::Hvc,
        _ => smp::Conduit::Smc,
    };
    // Speculation: this CPU's mitigations before any guest runs (each
    // secondary decides its own as it starts).
    let spectre = arch::spectre::init_this_cpu(arch::cpu_index(), plat.psci == Some(Conduit::Smc));
    log::info!("speculation: {spectre}");
    let mut failed = false;
    for (i, &mpidr) in cpus.iter().enumerate().take(highest + 1).skip(1) {
        if let Err(e) = smp::start_cpu(conduit, i, mpidr) {
            log::error!("pCPU {i} (MPIDR {mpidr:#x}) did not start: PSCI {e:?}");
            failed = true;
        }
    }
    if failed {
        crate::hyp::stay_up("a physical CPU the domains need did not start");
    }
    install(vms);
    console::set_before_line(write_all_queued);
    wake_all();
    idle()
}
