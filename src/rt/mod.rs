//! The run-time: running domains once the plan is built. Which pCPU runs
//! which vCPU, interrupt and MMIO dispatch to the emulated devices, the
//! console's input focus and the guests' output queues, power and
//! lifecycle actions (CPU_ON/OFF, SYSTEM_OFF/RESET), loading, resets and
//! copy on write. Generic over [`Hw`], so all of it runs on the host
//! against a fake machine (`tests`); the image implements `Hw` and keeps
//! only what touches the CPU (the entry and exit of a guest, the trap
//! decoding, the idle loop).
//!
//! # State and locks
//!
//! One [`Runtime`] object holds everything; the image keeps it in a single
//! `Once`. It is built before the secondary pCPUs start and *published*
//! once all of them did ([`Runtime::publish`]); before that no pCPU sees a
//! vCPU to run and console input waits.
//!
//! | state | who writes | how |
//! | --- | --- | --- |
//! | [`PerCpu`] | its own pCPU (MPIDR, list registers), `publish` (what it runs) | atomics |
//! | a vCPU's power state | PSCI calls, the stop protocol (`vm::lifecycle`) | atomics (CAS) |
//! | a domain's vGIC | any of its vCPUs' traps | its lock |
//! | a domain's vPL011 | its traps, console input | its lock (taken before the vGIC's) |
//! | a domain's output queue | its vPL011 writes, the console drain | its lock |
//! | a domain's stage-2 tables | copy on write, a reset | its lock |
//! | console focus | the holder of the console's receive side | its lock (never contended) |
//! | boot totals | each domain's first load | a lock |

pub mod domain;
pub mod hw;
mod input;
mod irq;
mod life;
mod output;

#[cfg(test)]
mod tests;

pub use domain::{vcpu_mpidr, vmpidr_aff, Vcpu, Vm};
pub use hw::Hw;
pub use life::ResetEnd;

use crate::emul::console::Input;
use crate::vgic::MAX_LRS;
use crate::vm::load::Work;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Physical CPUs the run-time can run on.
pub const MAX_CPUS: usize = 16;

/// The run-time's spin lock: waits the way the machine says (`Hw::Relax`).
pub type Lock<T, H> = spin::mutex::Mutex<T, <H as Hw>::Relax>;

/// What each pCPU is and runs.
pub struct PerCpu {
    /// Domain index + 1 (0 = none) and vCPU it runs (set at publish).
    vm: AtomicUsize,
    vcpu: AtomicUsize,
    /// MPIDR affinity (set at boot, read by kickers).
    mpidr: AtomicU64,
    /// List registers of this CPU, and how many the current vCPU uses.
    nr_lrs: AtomicUsize,
    lrs_used: AtomicUsize,
    /// Under `Settings::virq_by_hcr`: list registers written active whose
    /// interrupt is also pending (bit per list register).
    lrs_hidden_pending: AtomicUsize,
}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            vm: AtomicUsize::new(0),
            vcpu: AtomicUsize::new(0),
            mpidr: AtomicU64::new(0),
            nr_lrs: AtomicUsize::new(0),
            lrs_used: AtomicUsize::new(0),
            lrs_hidden_pending: AtomicUsize::new(0),
        }
    }
}

/// Settings the run-time takes from the boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// The physical console's interrupt, taken at EL2 (0 = none: guests'
    /// vPL011 accesses fetch input).
    pub console_irq: u32,
    /// `bootscrub=`: whether a domain's first start scrubs its RAM.
    pub boot_scrub: bool,
    /// Bytes of boot modules kept reserved (each once), for the report.
    pub modules_kept: u64,
    /// The GIC's virtual IRQ does not reach the CPUs (the boot probe saw
    /// so): the run-time raises it with HCR_EL2.VI while a list register
    /// is pending, and asks for the maintenance interrupt that says when
    /// none is.
    pub virq_by_hcr: bool,
}

/// Everything that runs the domains.
pub struct Runtime<H: Hw> {
    pub hw: H,
    vms: Vec<Vm<H>>,
    /// Fixed size, so the trap path indexes it without a bounds check;
    /// those beyond the MPIDRs given to `new` are never run on.
    cpus: [PerCpu; MAX_CPUS],
    settings: Settings,
    published: AtomicBool,
    first_entry: AtomicBool,
    /// Console input focus, Ctrl-a count and drop report; locked only by
    /// the holder of the console's receive side.
    input: Lock<Input, H>,
    /// A CPU found the console's receive side held: the holder reads
    /// again before it lets go.
    input_wanted: AtomicBool,
    /// That CPU disabled the console's interrupt at the distributor.
    irq_off: AtomicBool,
    /// A CPU queued a line while another held the console's output: the
    /// holder writes queued lines again before it lets go.
    out_wanted: AtomicBool,
    /// Lines queued in all domains' buffers (a cheap test for idle CPUs).
    queued: AtomicUsize,
    /// Bytes moved by the first loads, and how many domains loaded.
    work: Lock<(Work, usize), H>,
}

impl<H: Hw> Runtime<H> {
    /// The run-time for `vms` on pCPUs of affinities `mpidrs` (index 0:
    /// the boot CPU, which has `nr_lrs` list registers). Nothing runs
    /// until [`Runtime::publish`].
    pub fn new(hw: H, vms: Vec<Vm<H>>, mpidrs: &[u64], nr_lrs: usize, settings: Settings) -> Self {
        let cpus = [const { PerCpu::new() }; MAX_CPUS];
        for (c, &m) in cpus.iter().zip(mpidrs) {
            c.mpidr.store(m, Ordering::Relaxed);
        }
        if let Some(c) = cpus.first() {
            c.nr_lrs.store(nr_lrs.min(MAX_LRS), Ordering::Relaxed);
        }
        Runtime {
            hw,
            vms,
            cpus,
            settings,
            published: AtomicBool::new(false),
            first_entry: AtomicBool::new(false),
            input: Lock::<_, H>::new(Input::new()),
            input_wanted: AtomicBool::new(false),
            irq_off: AtomicBool::new(false),
            out_wanted: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            work: Lock::<_, H>::new((Work::default(), 0)),
        }
    }

    /// The domains, in plan order.
    pub fn vms(&self) -> &[Vm<H>] {
        &self.vms
    }

    /// The MPIDR of pCPU `cpu` (0 if unknown).
    pub fn mpidr_of(&self, cpu: usize) -> u64 {
        self.cpus
            .get(cpu)
            .map_or(0, |p| p.mpidr.load(Ordering::Relaxed))
    }

    /// A secondary pCPU set its GIC CPU interface up: it has `nr_lrs`
    /// list registers.
    pub fn cpu_ready(&self, nr_lrs: usize) {
        self.this_cpu()
            .nr_lrs
            .store(nr_lrs.min(MAX_LRS), Ordering::Relaxed);
    }

    /// Pins every vCPU to its pCPU: from now on they run.
    pub fn publish(&self) {
        for (d, vm) in self.vms.iter().enumerate() {
            for (v, c) in vm.vcpus.iter().enumerate() {
                if let Some(p) = self.cpus.get(c.pcpu) {
                    p.vcpu.store(v, Ordering::Relaxed);
                    p.vm.store(d + 1, Ordering::Release);
                }
            }
        }
        self.published.store(true, Ordering::Release);
    }

    fn published(&self) -> bool {
        self.published.load(Ordering::Acquire)
    }

    /// The domain and vCPU this pCPU runs, if any.
    #[inline]
    pub fn current(&self) -> Option<(&Vm<H>, usize)> {
        let pc = self.cpus.get(self.hw.cpu())?;
        let d = pc.vm.load(Ordering::Acquire).checked_sub(1)?;
        Some((self.vms.get(d)?, pc.vcpu.load(Ordering::Relaxed)))
    }

    /// The per-CPU state of the calling pCPU.
    #[inline]
    fn this_cpu(&self) -> &PerCpu {
        &self.cpus[self.hw.cpu().min(MAX_CPUS - 1)]
    }

    /// True the first time a vCPU is entered (for the boot-time line).
    pub fn first_entry(&self) -> bool {
        !self.first_entry.swap(true, Ordering::Relaxed)
    }
}
