//! What the run-time asks of the machine: the [`Hw`] trait. The image
//! implements it over the CPU and the physical GIC; host tests implement
//! it with a recording fake. Everything behind it touches hardware;
//! everything the run-time decides is in front of it.

use crate::mm::stage2::PageSource;
use crate::mm::Range;
use crate::vgic::{Lr, LrState};
use core::fmt;
use core::ops::Deref;

/// SGI 0: "leave the guest and look at your vCPU".
pub const KICK: u32 = 0;
/// The GIC maintenance interrupt (PPI 9).
pub const MAINTENANCE: u32 = 25;
/// EL1 virtual timer (PPI 11) and non-secure physical timer (PPI 14).
pub const VTIMER: u32 = 27;
pub const PTIMER: u32 = 30;

/// ICH_HCR_EL2 / GICH_HCR bits the run-time sets (the same places in
/// both GIC versions): enable, underflow and no-pending maintenance.
pub const ICH_HCR_EN: u64 = 1 << 0;
pub const ICH_HCR_UIE: u64 = 1 << 1;
pub const ICH_HCR_NPIE: u64 = 1 << 3;

/// An acknowledged physical interrupt: `raw` is what EOI and deactivation
/// want back (GICv2 SGIs carry their source), `id` its INTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    pub raw: u32,
    pub id: u32,
}

/// The hypervisor's own memory, for the boot report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypMemory {
    pub image: u64,
    pub heap: u64,
    /// Heap bytes in use now, and at most so far.
    pub used: u64,
    pub peak: u64,
}

/// The console's receive side, held by one CPU at a time.
pub trait ConsoleRx {
    /// One byte of input, if there is one.
    fn getc(&self) -> Option<u8>;
}

/// The console's output side, held: lines written through it never
/// interleave with another CPU's.
pub trait ConsoleOut {
    fn write_fmt(&self, args: fmt::Arguments);
}

/// The machine under the run-time. Every method acts on the calling pCPU
/// unless it names another; none of them blocks for long.
pub trait Hw: Sync {
    /// How a CPU waits for another inside a spin lock.
    type Relax: spin::relax::RelaxStrategy;
    /// Where stage-2 table pages come from.
    type Pages: PageSource + Send;
    /// The console's output, and the guard that holds it.
    type Output: ConsoleOut + ?Sized;
    type OutGuard<'a>: Deref<Target = Self::Output>
    where
        Self: 'a;
    /// The console's receive side, held.
    type Rx<'a>: ConsoleRx
    where
        Self: 'a;

    // ---- this CPU and time -------------------------------------------------
    /// The calling pCPU's index (0 = boot CPU).
    fn cpu(&self) -> usize;
    /// The system counter, and its frequency in Hz.
    fn counter(&self) -> u64;
    fn counter_freq(&self) -> u64;
    /// One turn of a wait for another CPU.
    fn relax(&self) {
        <Self::Relax as spin::relax::RelaxStrategy>::relax();
    }
    /// Wakes CPUs waiting for an event (a vCPU was made pending).
    fn wake_all(&self);
    /// CNTV_CTL_EL0 and CNTP_CTL_EL0 of the guest on this CPU.
    fn timer_controls(&self) -> (u64, u64);
    /// Ends the hypervisor after an error it cannot recover from.
    fn fatal(&self, msg: &str) -> !;

    // ---- the physical GIC --------------------------------------------------
    /// Whether a usable physical GIC was set up.
    fn gic_present(&self) -> bool;
    /// Makes pCPU `pcpu` (affinity `mpidr`) take an interrupt to EL2.
    fn kick(&self, pcpu: usize, mpidr: u64);
    /// Routes SPI `id` to pCPU `pcpu` (affinity `mpidr`).
    fn route_spi(&self, id: u32, pcpu: usize, mpidr: u64);
    /// Enables or disables SPI `id` at the distributor (lock free).
    fn set_spi_enabled(&self, id: u32, on: bool);
    /// Clears the active state of SPI `id`.
    fn clear_active_spi(&self, id: u32);
    /// Clears the active state of private interrupts `mask` of this pCPU.
    fn clear_active_private(&self, mask: u32);
    /// Acknowledges the highest pending interrupt, if any.
    fn ack(&self) -> Option<Acked>;
    /// Drops the running priority (the interrupt stays active).
    fn eoi(&self, a: Acked);
    fn deactivate(&self, a: Acked);
    /// List register `n` of this CPU: its state, write, clear.
    fn lr_state(&self, n: usize) -> LrState;
    fn set_lr(&self, n: usize, lr: &Lr);
    fn clear_lr(&self, n: usize);
    /// ICH_HCR_EL2 (or GICH_HCR): the `ICH_HCR_*` bits.
    fn write_hcr(&self, v: u64);
    /// A fresh virtual CPU interface for a vCPU about to start.
    fn reset_virtual_interface(&self);
    /// Raises (or drops) the virtual IRQ of the guest on this pCPU by
    /// HCR_EL2.VI, for a GIC whose virtual IRQ output does not reach the
    /// CPU (`Settings::virq_by_hcr`).
    fn set_virtual_irq(&self, on: bool);

    // ---- memory (host physical addresses, identity mapped) -----------------
    /// Copies `len` bytes from `src` to `dst`.
    ///
    /// # Safety
    /// Both are host RAM ranges that do not overlap; `dst` is RAM no one
    /// else uses while the copy runs (a stopped domain's, or a page its
    /// guest cannot reach yet).
    unsafe fn copy(&self, src: u64, dst: u64, len: u64);
    /// Writes zeroes over `r`.
    ///
    /// # Safety
    /// `r` is host RAM no one else uses meanwhile (a stopped domain's).
    unsafe fn zero(&self, r: Range);
    /// Data-cache maintenance to the point of coherency, by address.
    fn clean_invalidate_dcache(&self, r: Range);
    fn clean_dcache(&self, r: Range);
    /// Instruction caches: `r` only, or everything on every CPU.
    fn invalidate_icache(&self, r: Range);
    fn invalidate_icache_all(&self);
    /// Stage-2 TLB maintenance for the current VMID (the calling vCPU's
    /// domain): after new mappings, for one page, for everything.
    fn tables_updated(&self);
    fn invalidate_ipa(&self, ipa: u64);
    fn invalidate_vmid(&self);

    // ---- the console -------------------------------------------------------
    /// The output side if no other CPU holds it, or if `wait`, once it is
    /// this CPU's turn. None: there is no console.
    fn output(&self, wait: bool) -> Option<Self::OutGuard<'_>>;
    /// The receive side, if no other CPU holds it.
    fn try_rx(&self) -> Option<Self::Rx<'_>>;

    /// The hypervisor's own memory now.
    fn memory(&self) -> HypMemory;
}
