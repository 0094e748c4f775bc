//! A fake machine for the run-time's host tests: it records what the
//! run-time asks of the hardware, holds list registers per pCPU, a
//! console with typed input and captured output, and a queue of pending
//! physical interrupts. The calling "pCPU" is a per-thread number.

extern crate std;

use crate::mm::stage2::HostPages;
use crate::mm::Range;
use crate::rt::hw::{Acked, ConsoleOut, ConsoleRx, Hw, HypMemory};
use crate::vgic::{Lr, LrState, MAX_LRS};
use core::cell::Cell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::VecDeque;
use std::string::String;
use std::sync::{Mutex, MutexGuard};
use std::vec::Vec;

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
    /// Log lines this thread wrote (see `Capture`).
    static LOG: core::cell::RefCell<Vec<String>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Makes the calling thread pCPU `n`.
pub fn on_cpu(n: usize) {
    CPU.with(|c| c.set(n));
}

/// What the run-time asked of the machine, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Kick(usize),
    Route { id: u32, pcpu: usize },
    SpiEnabled { id: u32, on: bool },
    ClearActiveSpi(u32),
    ClearActivePrivate { pcpu: usize, mask: u32 },
    Eoi(u32),
    Deactivate(u32),
    Hcr { pcpu: usize, v: u64 },
    Vi { pcpu: usize, on: bool },
    ResetVif(usize),
    Copy { src: u64, dst: u64, len: u64 },
    Zero(Range),
    InvalidateIpa(u64),
    InvalidateVmid,
    TablesUpdated,
    Wake,
}

/// The fake machine.
#[derive(Default)]
pub struct Fake {
    pub events: Mutex<Vec<Ev>>,
    /// List registers of each pCPU: what was written, and the state a
    /// read returns.
    pub lrs: Mutex<Vec<[Option<Lr>; MAX_LRS]>>,
    /// Interrupts waiting to be acknowledged, per pCPU.
    pub pending: Mutex<Vec<VecDeque<u32>>>,
    /// CNTV_CTL_EL0, CNTP_CTL_EL0.
    pub timers: Mutex<(u64, u64)>,
    pub input: Mutex<VecDeque<u8>>,
    rx: Mutex<()>,
    out: Mutex<()>,
    pub console: FakeConsole,
    now: AtomicU64,
    /// Copies and zeroing really write host memory (tests give the
    /// run-time real buffers as "host RAM").
    pub real_memory: bool,
    /// A CPU disabling an SPI waits here twice before it writes: the test
    /// runs another CPU's steps in between (then lets it go on).
    pub disable_gate: Mutex<Option<std::sync::Arc<std::sync::Barrier>>>,
}

/// The captured console output.
#[derive(Default)]
pub struct FakeConsole(pub Mutex<String>);

impl ConsoleOut for FakeConsole {
    fn write_fmt(&self, args: fmt::Arguments) {
        let _ = self.0.lock().unwrap().write_fmt(args);
    }
}

pub struct FakeRx<'a> {
    input: &'a Mutex<VecDeque<u8>>,
    _held: MutexGuard<'a, ()>,
}

impl ConsoleRx for FakeRx<'_> {
    fn getc(&self) -> Option<u8> {
        self.input.lock().unwrap().pop_front()
    }
}

pub struct FakeOut<'a> {
    console: &'a FakeConsole,
    _held: MutexGuard<'a, ()>,
}

impl core::ops::Deref for FakeOut<'_> {
    type Target = FakeConsole;
    fn deref(&self) -> &FakeConsole {
        self.console
    }
}

/// Waiters yield their thread (the tests' "pCPUs" are threads).
pub struct YieldThread;

impl spin::relax::RelaxStrategy for YieldThread {
    fn relax() {
        std::thread::yield_now();
    }
}

impl Fake {
    pub fn new(cpus: usize) -> Fake {
        Fake {
            lrs: Mutex::new(std::vec![[None; MAX_LRS]; cpus]),
            pending: Mutex::new(std::vec![VecDeque::new(); cpus]),
            ..Fake::default()
        }
    }

    fn ev(&self, e: Ev) {
        self.events.lock().unwrap().push(e);
    }

    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<Ev> {
        core::mem::take(&mut *self.events.lock().unwrap())
    }

    /// Interrupt `id` is pending at pCPU `pcpu`.
    pub fn raise(&self, pcpu: usize, id: u32) {
        self.pending.lock().unwrap()[pcpu].push_back(id);
    }

    /// The guest moved list register `n` of pCPU `pcpu` to `state`.
    pub fn set_lr_state(&self, pcpu: usize, n: usize, state: LrState) {
        if let Some(l) = self.lrs.lock().unwrap()[pcpu][n].as_mut() {
            l.state = state;
        }
    }

    /// The INTIDs in pCPU `pcpu`'s list registers.
    pub fn lr_intids(&self, pcpu: usize) -> Vec<u32> {
        self.lrs.lock().unwrap()[pcpu]
            .iter()
            .flatten()
            .map(|l| l.intid)
            .collect()
    }

    pub fn type_bytes(&self, b: &[u8]) {
        self.input.lock().unwrap().extend(b.iter().copied());
    }

    pub fn output(&self) -> String {
        self.console.0.lock().unwrap().clone()
    }
}

impl Hw for Fake {
    type Relax = YieldThread;
    type Pages = HostPages;
    type Output = FakeConsole;
    type OutGuard<'a> = FakeOut<'a>;
    type Rx<'a> = FakeRx<'a>;

    fn cpu(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn counter(&self) -> u64 {
        self.now.fetch_add(1, Ordering::Relaxed)
    }
    fn counter_freq(&self) -> u64 {
        1_000_000
    }
    fn wake_all(&self) {
        self.ev(Ev::Wake);
    }
    fn timer_controls(&self) -> (u64, u64) {
        *self.timers.lock().unwrap()
    }
    fn fatal(&self, msg: &str) -> ! {
        panic!("fatal: {msg}")
    }
    fn gic_present(&self) -> bool {
        true
    }
    fn kick(&self, pcpu: usize, _mpidr: u64) {
        self.ev(Ev::Kick(pcpu));
    }
    fn route_spi(&self, id: u32, pcpu: usize, _mpidr: u64) {
        self.ev(Ev::Route { id, pcpu });
    }
    fn set_spi_enabled(&self, id: u32, on: bool) {
        let gate = if on {
            None
        } else {
            self.disable_gate.lock().unwrap().take()
        };
        if let Some(g) = gate {
            g.wait();
            g.wait();
        }
        self.ev(Ev::SpiEnabled { id, on });
    }
    fn clear_active_spi(&self, id: u32) {
        self.ev(Ev::ClearActiveSpi(id));
    }
    fn clear_active_private(&self, mask: u32) {
        if mask != 0 {
            let pcpu = self.cpu();
            self.ev(Ev::ClearActivePrivate { pcpu, mask });
        }
    }
    fn ack(&self) -> Option<Acked> {
        let id = self.pending.lock().unwrap()[self.cpu()].pop_front()?;
        Some(Acked { raw: id, id })
    }
    fn eoi(&self, a: Acked) {
        self.ev(Ev::Eoi(a.id));
    }
    fn deactivate(&self, a: Acked) {
        self.ev(Ev::Deactivate(a.id));
    }
    fn lr_state(&self, n: usize) -> LrState {
        self.lrs.lock().unwrap()[self.cpu()][n].map_or(LrState::Invalid, |l| l.state)
    }
    fn set_lr(&self, n: usize, lr: &Lr) {
        let c = self.cpu();
        self.lrs.lock().unwrap()[c][n] = Some(*lr);
    }
    fn clear_lr(&self, n: usize) {
        let c = self.cpu();
        self.lrs.lock().unwrap()[c][n] = None;
    }
    fn write_hcr(&self, v: u64) {
        let pcpu = self.cpu();
        self.ev(Ev::Hcr { pcpu, v });
    }
    fn set_virtual_irq(&self, on: bool) {
        let pcpu = self.cpu();
        self.ev(Ev::Vi { pcpu, on });
    }
    fn reset_virtual_interface(&self) {
        let c = self.cpu();
        self.lrs.lock().unwrap()[c] = [None; MAX_LRS];
        self.ev(Ev::ResetVif(c));
    }
    unsafe fn copy(&self, src: u64, dst: u64, len: u64) {
        if self.real_memory {
            // SAFETY: the caller's contract; the tests' "host RAM" is
            // buffers they own.
            unsafe {
                core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len as usize)
            };
        }
        self.ev(Ev::Copy { src, dst, len });
    }
    unsafe fn zero(&self, r: Range) {
        self.ev(Ev::Zero(r));
    }
    fn clean_invalidate_dcache(&self, _r: Range) {}
    fn clean_dcache(&self, _r: Range) {}
    fn invalidate_icache(&self, _r: Range) {}
    fn invalidate_icache_all(&self) {}
    fn tables_updated(&self) {
        self.ev(Ev::TablesUpdated);
    }
    fn invalidate_ipa(&self, ipa: u64) {
        self.ev(Ev::InvalidateIpa(ipa));
    }
    fn invalidate_vmid(&self) {
        self.ev(Ev::InvalidateVmid);
    }
    fn output(&self, wait: bool) -> Option<FakeOut<'_>> {
        let held = if wait {
            self.out.lock().ok()
        } else {
            self.out.try_lock().ok()
        }?;
        Some(FakeOut {
            console: &self.console,
            _held: held,
        })
    }
    fn try_rx(&self) -> Option<FakeRx<'_>> {
        Some(FakeRx {
            input: &self.input,
            _held: self.rx.try_lock().ok()?,
        })
    }
    fn memory(&self) -> HypMemory {
        HypMemory::default()
    }
}

/// Captures `log` lines written by the calling thread.
pub struct Capture;

static LOGGER: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        LOG.with(|l| l.borrow_mut().push(std::format!("{}", r.args())));
    }
    fn flush(&self) {}
}

/// Starts capturing this thread's log lines (and drops earlier ones).
pub fn capture_log() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    LOG.with(|l| l.borrow_mut().clear());
}

/// The log lines this thread wrote since `capture_log`.
pub fn log_lines() -> Vec<String> {
    LOG.with(|l| l.borrow().clone())
}
