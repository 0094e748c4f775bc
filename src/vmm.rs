//! Running domains on the image: which pCPU runs which vCPU, power state
//! changes (CPU_ON/OFF, SYSTEM_OFF/RESET), emulated MMIO and the console
//! input focus. Built once at boot; afterwards shared read-only except
//! for atomics and the per-device locks.

use crate::arch::stage2::{self, HeapPages};
use crate::arch::{self, gic, mmu, smp, vcpu};
use crate::boot;
use crate::console;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use dtvisor::config::BootPlan;
use dtvisor::emul::mmio::Access;
use dtvisor::emul::vpl011::{self, Vpl011};
use dtvisor::hw::{Conduit, GicVersion, Platform};
use dtvisor::mm::stage2::Stage2Tables;
use dtvisor::mm::Range;
use dtvisor::placement::{self, DomainLayout, Needs};
use dtvisor::psci::{Power, VcpuPower};
use dtvisor::vm::guest_dtb::{self, GuestDtbSpec};
use dtvisor::vm::image::ImageHeader;
use spin::{Mutex, Once};

/// A copy made when a domain (re)starts: `len` bytes from host `src` to host `dst`.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub src: u64,
    pub dst: u64,
    pub len: u64,
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
    /// Per vCPU: power state, and the pCPU it is pinned to.
    pub power: Vec<VcpuPower>,
    pub pcpu: Vec<usize>,
    pub vpl011: Option<Mutex<Vpl011>>,
    /// What to copy into guest RAM at each (re)start, and where to enter.
    pub loads: Vec<Load>,
    pub entry_ipa: u64,
    pub dtb_ipa: u64,
    /// Host RAM of the guest (zeroed before each start).
    pub ram_host: Vec<Range>,
    state: AtomicU8,
}

const RUNNING: u8 = 0;
const OFF: u8 = 1;
const RESETTING: u8 = 2;
/// Built, not yet loaded: the pCPU of vCPU 0 loads it (domains load in
/// parallel, each on its own pCPU).
const LOADING: u8 = 3;

impl Vm {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        id: u16,
        vtcr: u64,
        vttbr: u64,
        ram_ipa: Vec<Range>,
        ram_host: Vec<Range>,
        pcpu: Vec<usize>,
        vpl011: bool,
        loads: Vec<Load>,
        entry_ipa: u64,
        dtb_ipa: u64,
    ) -> Vm {
        let power = (0..pcpu.len() as u64)
            .map(|n| VcpuPower::new(vmpidr_aff(n)))
            .collect();
        Vm {
            name,
            id,
            vtcr,
            vttbr,
            ram_ipa,
            power,
            pcpu,
            vpl011: vpl011.then(|| Mutex::new(Vpl011::new())),
            loads,
            entry_ipa,
            dtb_ipa,
            ram_host,
            state: AtomicU8::new(LOADING),
        }
    }

    /// SYSTEM_OFF or a reset is under way: vCPUs park at their next trap.
    pub fn stopping(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    fn loading(&self) -> bool {
        self.state.load(Ordering::Acquire) == LOADING
    }
}

/// Guest MPIDR affinity of vCPU `n` (Xen's rule: Aff0 = n & 0xf, Aff1 = n >> 4).
pub fn vmpidr_aff(n: u64) -> u64 {
    (n & 0xf) | ((n >> 4) << 8)
}

static VMS: Once<Vec<Vm>> = Once::new();
/// Per pCPU: (domain index + 1, vCPU index); 0 = no vCPU.
static ASSIGN: [(AtomicUsize, AtomicUsize); boot::MAX_CPUS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; boot::MAX_CPUS];
/// Console input focus: 0 = hypervisor, n = domain index + 1.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
static CTRL_A: AtomicUsize = AtomicUsize::new(0);
static FIRST_ENTRY: AtomicBool = AtomicBool::new(false);
static INPUT: Mutex<()> = Mutex::new(());
/// Per pCPU: its MPIDR (for kicks) and its GIC redistributor index.
static PCPU_MPIDR: [AtomicU64; boot::MAX_CPUS] = [const { AtomicU64::new(0) }; boot::MAX_CPUS];
static PCPU_REDIST: [AtomicUsize; boot::MAX_CPUS] = [const { AtomicUsize::new(0) }; boot::MAX_CPUS];

/// The GIC redistributor index of pCPU `cpu`.
pub fn redistributor_of(cpu: usize) -> usize {
    PCPU_REDIST
        .get(cpu)
        .map_or(0, |r| r.load(Ordering::Relaxed))
}

/// Makes every other vCPU of `vm` that is running leave its guest, so it
/// sees the domain stopping at once.
fn kick_others(vm: &Vm, vi: usize) {
    for (i, p) in vm.power.iter().enumerate() {
        if i != vi && p.state() == Power::On {
            gic::kick(PCPU_MPIDR[vm.pcpu[i]].load(Ordering::Relaxed));
        }
    }
}

/// Publishes the domains and pins every vCPU to its pCPU.
pub fn install(vms: Vec<Vm>) -> &'static [Vm] {
    let vms = VMS.call_once(|| vms);
    for (d, vm) in vms.iter().enumerate() {
        for (v, &p) in vm.pcpu.iter().enumerate() {
            ASSIGN[p].1.store(v, Ordering::Relaxed);
            ASSIGN[p].0.store(d + 1, Ordering::Release);
        }
    }
    vms
}

/// The domain and vCPU this pCPU runs, if any.
pub fn current() -> Option<(&'static Vm, usize)> {
    let cpu = arch::cpu_index();
    let slot = ASSIGN.get(cpu)?;
    let d = slot.0.load(Ordering::Acquire).checked_sub(1)?;
    Some((VMS.get()?.get(d)?, slot.1.load(Ordering::Relaxed)))
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
    let cpu = arch::cpu_index();
    let stack_top = boot::stack_top(cpu);
    loop {
        if !boot::stack_intact(cpu) {
            arch::early_fatal("stack overflow on this CPU");
        }
        if let Some((vm, vi)) = current() {
            if vi == 0 && vm.loading() {
                start(vm);
            }
            if !vm.stopping() {
                if let Some((entry, ctx)) = vm.power[vi].take_pending() {
                    if !FIRST_ENTRY.swap(true, Ordering::Relaxed) {
                        let us = crate::hyp::micros(arch::counter() - crate::hyp::t_entry());
                        log::info!(
                            "hypervisor entry to first guest instruction: {us} us (system counter)"
                        );
                    }
                    vcpu::configure_el2(vm.vtcr, vm.vttbr);
                    vcpu::El1Regs::reset(vcpu_mpidr(vi as u64)).load();
                    vcpu::run(entry, ctx, stack_top);
                }
            }
        }
        poll_console();
        // SAFETY: waiting for an event (SEV or the timer event stream).
        unsafe { core::arch::asm!("wfe") };
    }
}

fn vcpu_mpidr(n: u64) -> u64 {
    (1 << 31) | vmpidr_aff(n)
}

/// Stops the calling vCPU for good (until CPU_ON) and idles its pCPU.
pub fn park(vm: &Vm, vi: usize) -> ! {
    if !vm.stopping() {
        vm.power[vi].set(Power::Off);
    } else {
        vm.power[vi].set(Power::Stopped);
    }
    idle()
}

/// SYSTEM_OFF: this domain only. The other domains keep running.
pub fn system_off(vm: &Vm, vi: usize) -> ! {
    vm.state.store(OFF, Ordering::Release);
    kick_others(vm, vi);
    for p in &vm.power {
        if p.state() != Power::On {
            p.set(Power::Stopped);
        }
    }
    park(vm, vi)
}

/// SYSTEM_RESET: restart this domain from its pristine images once every
/// one of its vCPUs has stopped.
pub fn system_reset(vm: &Vm, vi: usize) -> ! {
    vm.state.store(RESETTING, Ordering::Release);
    vm.power[vi].set(Power::Stopped);
    kick_others(vm, vi);
    // The other vCPUs were kicked (an SGI to their pCPUs) and park in
    // their trap handler; without a usable GIC they park at their next trap.
    let mut warned = false;
    let t0 = arch::counter();
    while vm
        .power
        .iter()
        .any(|p| p.state() == Power::On || p.state() == Power::Pending)
    {
        if !warned && arch::counter() - t0 > arch::counter_freq() {
            log_vm(vm, format_args!("reset waits for its other vCPUs to trap"));
            warned = true;
        }
        core::hint::spin_loop();
    }
    start(vm);
    idle()
}

/// Loads the pristine images and powers on vCPU 0 at the kernel entry.
/// Runs on the pCPU of the domain's vCPU 0.
fn start(vm: &Vm) {
    // The domain's host RAM, used by no one else while all its vCPUs are
    // stopped: scrubbed, so no data crosses domains or boots.
    for r in &vm.ram_host {
        mmu::zero_range(r.start, r.end);
    }
    for l in &vm.loads {
        // SAFETY: placement made `src` (pristine copy) and `dst` (guest
        // RAM) disjoint host ranges of `len` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(l.src as *const u8, l.dst as *mut u8, l.len as usize)
        };
    }
    // The guest starts with its MMU off: its accesses bypass the caches.
    for r in &vm.ram_host {
        mmu::clean_dcache_range(r.start, r.end);
    }
    // SAFETY: invalidating the instruction cache has no memory effects.
    unsafe { core::arch::asm!("ic iallu", "dsb ish", "isb") };
    for p in &vm.power {
        p.set(Power::Off);
    }
    vm.state.store(RUNNING, Ordering::Release);
    log::info!(
        "{} (id {}): loaded, vCPU 0 starts at {:#x} with its device tree at {:#x}",
        vm.name,
        vm.id,
        vm.entry_ipa,
        vm.dtb_ipa
    );
    vm.power[0].start(vm.entry_ipa, vm.dtb_ipa);
    wake_all();
}

/// Emulated MMIO: Some(value read) if the access hit a device.
pub fn mmio(vm: &Vm, a: &Access, val: u64) -> Option<u64> {
    if a.ipa >= vpl011::BASE && a.ipa < vpl011::BASE + vpl011::SIZE {
        let u = vm.vpl011.as_ref()?;
        poll_console();
        let off = a.ipa - vpl011::BASE;
        let mut u = u.lock();
        if a.write {
            u.write(off, val as u32, &mut |line| print_line(vm, line));
            return Some(0);
        }
        return Some(u.read(off) as u64);
    }
    None
}

fn print_line(vm: &Vm, line: &[u8]) {
    let text = core::str::from_utf8(line).unwrap_or("<non-UTF-8 output>");
    println!("({}) {}", vm.name, text);
}

/// A physical interrupt arrived while a guest ran: only kicks are enabled.
pub fn irq() {
    gic::ack();
}

/// Reads console input: Ctrl-a three times moves the focus on (the
/// hypervisor, then each domain with a vpl011); other bytes go to the
/// focused domain's vpl011.
pub fn poll_console() {
    let Some(vms) = VMS.get() else { return };
    // One CPU at a time reads and dispatches, so bytes keep their order
    // relative to focus changes.
    let Some(_input) = INPUT.try_lock() else {
        return;
    };
    while let Some(b) = console::try_getc() {
        if b == 0x01 {
            if CTRL_A.fetch_add(1, Ordering::Relaxed) + 1 >= 3 {
                CTRL_A.store(0, Ordering::Relaxed);
                switch_focus(vms);
            }
            continue;
        }
        CTRL_A.store(0, Ordering::Relaxed);
        let f = FOCUS.load(Ordering::Relaxed);
        match f
            .checked_sub(1)
            .and_then(|d| vms.get(d))
            .and_then(|vm| vm.vpl011.as_ref())
        {
            Some(u) => {
                u.lock().push_rx(b);
            }
            None => {
                if b == b'\r' || b == b'\n' {
                    log::info!("input goes to the hypervisor; press Ctrl-a three times to switch");
                }
            }
        }
    }
}

fn switch_focus(vms: &[Vm]) {
    let mut f = FOCUS.load(Ordering::Relaxed);
    loop {
        f = (f + 1) % (vms.len() + 1);
        if f == 0 || vms[f - 1].vpl011.is_some() {
            break;
        }
    }
    FOCUS.store(f, Ordering::Relaxed);
    let name = if f == 0 {
        "the hypervisor"
    } else {
        vms[f - 1].name.as_str()
    };
    log::info!("console input now goes to {name} (Ctrl-a three times to switch)");
}

/// Splits a copy of `len` bytes from host `src` to guest `ipa` along the
/// host blocks that back the guest RAM.
fn loads_for(l: &DomainLayout, src: u64, ipa: u64, len: u64, out: &mut Vec<Load>) -> bool {
    let mut done = 0;
    while done < len {
        let Some(m) = l.ram.iter().find(|m| m.ipa.contains(ipa + done)) else {
            return false;
        };
        let off = ipa + done - m.ipa.start;
        let n = (m.ipa.size() - off).min(len - done);
        out.push(Load {
            src: src + done,
            dst: m.pa + off,
            len: n,
        });
        done += n;
    }
    true
}

/// Turns the plan into running domains on this machine; never returns.
pub fn boot(plat: &Platform, plan: &BootPlan) -> ! {
    // pCPU indices: the boot CPU is 0, then the DTB's order.
    let me = arch::mpidr();
    let mut cpus: Vec<u64> = plat
        .cpus
        .iter()
        .map(|c| c.mpidr)
        .filter(|&m| m != me)
        .collect();
    cpus.insert(0, me);
    cpus.truncate(boot::MAX_CPUS);
    let usable = if plat.psci.is_some() { cpus.len() } else { 1 };

    let mut needs = Vec::new();
    let mut bad = false;
    for d in &plan.domains {
        let k = d.kernel.range;
        // SAFETY: a module the plan checked to lie inside RAM (identity mapped).
        let head =
            unsafe { core::slice::from_raw_parts(k.start as *const u8, k.size().min(64) as usize) };
        match ImageHeader::parse(head) {
            Ok(h) => needs.push(Needs {
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
            }),
            Err(e) => {
                println!("error: {}: reg: {e}", d.kernel.path);
                bad = true;
            }
        }
    }
    if bad {
        crate::hyp::stay_up("a kernel module is not usable");
    }
    let mut busy: Vec<Range> = plat.memory.reserved.iter().map(|r| r.range).collect();
    busy.extend(
        plan.domains.iter().flat_map(|d| {
            core::iter::once(d.kernel.range).chain(d.ramdisk.as_ref().map(|r| r.range))
        }),
    );
    busy.extend(plan.hyp_modules.iter().map(|m| m.range));
    let layout = match placement::place(&plat.memory.ram, &busy, usable, &needs) {
        Ok(l) => l,
        Err(errs) => {
            for e in &errs {
                println!("error: {e}");
            }
            crate::hyp::stay_up("the domains do not fit this machine")
        }
    };
    print!("{layout}");

    let vtcr = stage2::vtcr();
    let gic = match plat.gic.as_ref().map(|g| g.version) {
        Some(GicVersion::V2) => guest_dtb::GicVersion::V2,
        _ => guest_dtb::GicVersion::V3,
    };
    let mut vms = Vec::new();
    for (d, l) in plan.domains.iter().zip(&layout.domains) {
        let mut s2 = Stage2Tables::new(HeapPages);
        for m in &l.ram {
            if s2.map_ram(m.ipa, m.pa).is_err() {
                crate::hyp::stay_up("stage-2 mapping failed");
            }
        }
        // Pristine copies of the kernel and ramdisk, for SYSTEM_RESET.
        let sources = core::iter::once(d.kernel.range).chain(d.ramdisk.as_ref().map(|r| r.range));
        for (src, dst) in sources.zip(&l.pristine) {
            // SAFETY: module and reset copy are disjoint host RAM (placement).
            unsafe {
                core::ptr::copy_nonoverlapping(
                    src.start as *const u8,
                    dst.start as *mut u8,
                    src.size() as usize,
                )
            };
        }
        let spec = GuestDtbSpec {
            bootargs: d.cmdline.as_deref(),
            initrd: l.initrd_ipa,
            ram: &l.banks,
            vcpus: d.vcpus,
            cpu_compatible: plat.cpu_compatible.as_deref().unwrap_or("arm,armv8"),
            gic,
            timer_clock_frequency: plat.timer.as_ref().and_then(|t| t.clock_frequency),
            vpl011: d.vpl011,
        };
        let dtb = match guest_dtb::build(&spec) {
            Ok(b) if (b.len() as u64) <= placement::DTB_MAX => Vec::leak(b),
            _ => crate::hyp::stay_up("the guest device tree does not fit in 2 MiB"),
        };
        let mut loads = Vec::new();
        let mut ok = loads_for(
            l,
            l.pristine[0].start,
            l.kernel_ipa.start,
            d.kernel.range.size(),
            &mut loads,
        );
        if let (Some(rd), Some(src)) = (l.initrd_ipa, l.pristine.get(1)) {
            ok &= loads_for(l, src.start, rd.start, rd.size(), &mut loads);
        }
        ok &= loads_for(
            l,
            dtb.as_ptr() as u64,
            l.dtb_ipa.start,
            dtb.len() as u64,
            &mut loads,
        );
        if !ok {
            crate::hyp::stay_up("a load falls outside guest RAM");
        }
        let ram_host = l
            .ram
            .iter()
            .map(|m| Range::new(m.pa, m.pa + m.ipa.size()))
            .collect();
        vms.push(Vm::new(
            d.name.clone(),
            d.domid,
            vtcr,
            s2.into_vttbr(l.vmid),
            l.banks.clone(),
            ram_host,
            l.pcpus.clone(),
            d.vpl011,
            loads,
            l.kernel_ipa.start,
            l.dtb_ipa.start,
        ));
    }
    for (i, &m) in cpus.iter().enumerate() {
        PCPU_MPIDR[i].store(m, Ordering::Relaxed);
        let redist = plat.cpus.iter().position(|c| c.mpidr == m).unwrap_or(i);
        PCPU_REDIST[i].store(redist, Ordering::Relaxed);
    }
    let kicks = match &plat.gic {
        Some(g) if g.version == GicVersion::V3 && !g.gicr.is_empty() => gic::init_boot(
            g.gicd.start,
            g.gicr[0].start,
            plat.cpus.len().min(boot::MAX_CPUS),
            redistributor_of(0),
        ),
        _ => false,
    };
    if !kicks {
        log::warn!("no GICv3 kicks: SYSTEM_OFF/RESET wait for the domain's other vCPUs to trap");
    }
    // Every pCPU a vCPU needs is started before any domain is published,
    // so a CPU that fails to start leaves nothing half started.
    let highest = vms
        .iter()
        .flat_map(|v| v.pcpu.iter().copied())
        .max()
        .unwrap_or(0);
    let conduit = match plat.psci {
        Some(Conduit::Hvc) => smp::Conduit::Hvc,
        _ => smp::Conduit::Smc,
    };
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
    wake_all();
    idle()
}
