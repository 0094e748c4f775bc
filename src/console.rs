//! The physical console: one UART chosen from the DTB, shared by all CPUs,
//! and the `log` backend on top of it. Output is behind one lock taken in
//! turn (a ticket lock: a domain printing without pause cannot starve
//! another) and input behind another (`try_rx`), so a CPU that reads
//! input never waits for one that prints.

use crate::arch::{FairMutex, Mutex};
use crate::drivers::Uart;
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use dtvisor::stamp::Stamper;

/// The UART itself: set during boot, before other CPUs run; then only
/// shared references. Writers hold LOCK (except the panic path), readers
/// of input hold RX.
struct Cell(UnsafeCell<Option<Uart>>);
// SAFETY: replaced only by `set` on the boot CPU before the others start;
// the drivers' transmit and receive sides are serialised by LOCK and RX.
unsafe impl Sync for Cell {}
static CONSOLE: Cell = Cell(UnsafeCell::new(None));
static LOCK: FairMutex<()> = FairMutex::new(());
static RX: Mutex<()> = Mutex::new(());

fn uart() -> Option<&'static Uart> {
    // SAFETY: see Cell: no `set` runs once more than one CPU does.
    unsafe { (*CONSOLE.0.get()).as_ref() }
}

/// Set once the MMU is on: before that, no atomics (hence no lock).
static LOCKS_OK: AtomicBool = AtomicBool::new(false);

/// Installs the console UART (boot CPU only, before the others start).
pub fn set(uart: Uart) {
    let _g = LOCKS_OK.load(Ordering::Relaxed).then(|| LOCK.lock());
    // SAFETY: LOCK is held, or only the boot CPU runs (MMU still off).
    unsafe { *CONSOLE.0.get() = Some(uart) };
}

/// Called once the MMU and caches are on.
pub fn locks_ready() {
    LOCKS_OK.store(true, Ordering::Relaxed);
}

fn emit_raw(uart: &Uart, s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            uart.putc(b'\r');
        }
        uart.putc(b);
    }
}

/// `console_timestamps=boot`: each line carries the time since entry.
static STAMPS: AtomicBool = AtomicBool::new(false);

/// The line state of the timestamps; only touched with LOCK held.
struct StampCell(UnsafeCell<Stamper>);
// SAFETY: only reached from `emit`, whose callers hold LOCK.
unsafe impl Sync for StampCell {}
static STAMPER: StampCell = StampCell(UnsafeCell::new(Stamper::new()));

/// Turns `console_timestamps=boot` on or off.
pub fn set_timestamps(on: bool) {
    STAMPS.store(on, Ordering::Relaxed);
}

/// Writes `s`; the caller holds LOCK (see `write_fmt`).
fn emit(uart: &Uart, s: &str) {
    if !STAMPS.load(Ordering::Relaxed) {
        return emit_raw(uart, s);
    }
    // SAFETY: LOCK is held by the caller, so no other CPU is here.
    let st = unsafe { &mut *STAMPER.0.get() };
    let now = || crate::time::micros(crate::arch::counter().saturating_sub(crate::time::t_entry()));
    for b in s.bytes() {
        st.push(b, &now, &mut |c| {
            if c == b'\n' {
                uart.putc(b'\r');
            }
            uart.putc(c);
        });
    }
}

/// Writes to the console (nothing if none is set yet), as `write_fmt`.
pub fn write_str(s: &str) {
    write_fmt(format_args!("{s}"));
}

/// The console's receive side, held by one CPU at a time.
pub struct Rx {
    _held: spin::MutexGuard<'static, ()>,
}

/// The receive side, if no other CPU holds it; it never waits for output.
pub fn try_rx() -> Option<Rx> {
    RX.try_lock().map(|g| Rx { _held: g })
}

impl Rx {
    /// One byte of input, if there is one.
    pub fn getc(&self) -> Option<u8> {
        uart().and_then(|u| u.getc())
    }

    /// Makes the UART interrupt when input arrives (the GIC takes it at
    /// EL2), or stop doing so while nobody can take more input.
    pub fn set_irq(&self, on: bool) {
        if let Some(u) = uart() {
            u.set_rx_irq(on);
        }
    }
}

/// Writes formatted text holding the console lock throughout, so lines
/// from different CPUs never interleave. Guests' queued lines are written
/// first (`set_before_line`), so a hypervisor line about a domain never
/// comes before what that domain printed earlier.
pub fn write_fmt(args: fmt::Arguments) {
    let _g = LOCKS_OK.load(Ordering::Relaxed).then(|| LOCK.lock());
    let Some(u) = uart() else { return };
    let out = Output { uart: u };
    if let Some(hook) = BEFORE_LINE.get() {
        hook(&out);
    }
    out.write_fmt(args);
}

/// The console's output side, held: lines written through it never
/// interleave with another CPU's.
pub struct Output {
    uart: &'static Uart,
}

impl Output {
    /// Writes formatted text.
    pub fn write_fmt(&self, args: fmt::Arguments) {
        struct Locked<'a>(&'a Uart);
        impl Write for Locked<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                emit(self.0, s);
                Ok(())
            }
        }
        let _ = Locked(self.uart).write_fmt(args);
    }
}

/// Held output: the guard and what it gives.
pub struct OutputGuard {
    out: Output,
    _held: spin::mutex::TicketMutexGuard<'static, ()>,
}

impl core::ops::Deref for OutputGuard {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.out
    }
}

/// The output side if no other CPU holds it (never waits), or if
/// `wait`, once it is this CPU's turn.
pub fn output(wait: bool) -> Option<OutputGuard> {
    let u = uart()?;
    let held = if wait {
        Some(LOCK.lock())
    } else {
        LOCK.try_lock()
    }?;
    Some(OutputGuard {
        out: Output { uart: u },
        _held: held,
    })
}

/// Called with the output held before each hypervisor line (set once, by
/// the run-time: it writes the guests' queued lines).
static BEFORE_LINE: spin::Once<fn(&Output)> = spin::Once::new();

/// Sets what runs before each hypervisor line.
pub fn set_before_line(f: fn(&Output)) {
    BEFORE_LINE.call_once(|| f);
}

/// Writes without taking the lock: for exception reports and panics, where
/// the lock may be held by the code that faulted.
pub struct PanicWriter;

impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Deliberately without LOCK: output may interleave, but a CPU that
        // is about to halt must still be able to say why.
        if let Some(u) = uart() {
            emit_raw(u, s);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    () => { $crate::console::write_str("\n") };
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let tag = match r.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        write_fmt(format_args!("(dtvisor) {tag}{}\n", r.args()));
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the `log` backend with the given level filter.
pub fn init_log(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!($($arg)*))
    };
}
