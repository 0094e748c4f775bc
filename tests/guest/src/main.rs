//! dtvisor's test guest: a bare-metal AArch64 EL1 program that reads its
//! DTB, prints what it was given, exercises PSCI and reports each check as
//! PASS or FAIL on its console. Bootargs words select what happens after
//! the checks (see README.md). Runs with the MMU off throughout.
#![no_std]
#![no_main]

mod fdt;

use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};

core::arch::global_asm!(include_str!("entry.S"));

const PSCI_VERSION: u64 = 0x8400_0000;
const CPU_OFF: u64 = 0x8400_0002;
const CPU_ON: u64 = 0xc400_0003;
const AFFINITY_INFO: u64 = 0xc400_0004;
const SYSTEM_OFF: u64 = 0x8400_0008;
const SYSTEM_RESET: u64 = 0x8400_0009;
const PSCI_FEATURES: u64 = 0x8400_000a;
const INVALID_PARAMETERS: i64 = -2;

static mut UART: usize = 0;
static mut USE_SMC: bool = false;
/// Set by a secondary vCPU once it runs (index = its context id).
static mut ONLINE: [u64; SLOTS as usize] = [0; SLOTS as usize];
/// Data aborts the exception handler caught and skipped.
static mut CAUGHT: u64 = 0;
/// `hold`: secondaries spin forever (no traps) instead of CPU_OFF.
static mut HOLD: u64 = 0;

/// A 32-bit device register read as one plain `ldr` from a base register.
/// A volatile access in a loop may otherwise become a writeback
/// (post-indexed) form, whose data abort has no instruction syndrome (ESR
/// ISV = 0), so a hypervisor cannot emulate it.
///
/// # Safety
/// `a` is a 4-byte-aligned device register (or memory) the guest may read.
pub unsafe fn mmio_read32(a: usize) -> u32 {
    let v: u32;
    // SAFETY: the caller's; a single load.
    unsafe {
        core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack))
    };
    v
}

/// `mmio_read32`, 64 bits.
///
/// # Safety
/// `a` is an 8-byte-aligned device register the guest may read.
pub unsafe fn mmio_read64(a: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller's; a single load.
    unsafe { core::arch::asm!("ldr {v}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack)) };
    v
}

/// A 32-bit device register write as one plain `str` (see `mmio_read32`).
///
/// # Safety
/// `a` is a 4-byte-aligned device register (or memory) the guest may write.
pub unsafe fn mmio_write32(a: usize, v: u32) {
    // SAFETY: the caller's; a single store.
    unsafe { core::arch::asm!("str {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)) };
}

fn uart() -> usize {
    // SAFETY: written once by the boot vCPU before anything reads it.
    unsafe { read_volatile(&raw const UART) }
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let base = uart();
        if base == 0 {
            return Ok(());
        }
        for b in s.bytes() {
            // SAFETY: the UART the DTB names; FR (0x18) and DR (0x00) are
            // the SBSA UART registers.
            unsafe {
                while mmio_read32(base + 0x18) & (1 << 5) != 0 {}
                mmio_write32(base, b as u32);
            }
        }
        Ok(())
    }
}

macro_rules! say {
    ($($a:tt)*) => {{ let _ = writeln!(Console, $($a)*); }};
}

// After `say!`, which they use.
mod attack;
mod bench;
mod irq;
mod leak;

fn getc() -> Option<u8> {
    let base = uart();
    // SAFETY: as in Console.
    unsafe {
        if mmio_read32(base + 0x18) & (1 << 4) != 0 {
            None
        } else {
            Some(mmio_read32(base) as u8)
        }
    }
}

fn psci(f: u64, a: u64, b: u64, c: u64) -> i64 {
    let r: u64;
    // SAFETY: an SMCCC call; x0-x3 carry arguments, x0 the result; the
    // callee may clobber x4-x17 (SMCCC 1.1 preserves them, but be safe).
    unsafe {
        if read_volatile(&raw const USE_SMC) {
            core::arch::asm!("smc #0", inout("x0") f => r, inout("x1") a => _, inout("x2") b => _,
                inout("x3") c => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _);
        } else {
            core::arch::asm!("hvc #0", inout("x0") f => r, inout("x1") a => _, inout("x2") b => _,
                inout("x3") c => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _);
        }
    }
    r as i64
}

struct Checks {
    pass: u32,
    fail: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, name: fmt::Arguments) {
        if ok {
            self.pass += 1;
            say!("guest: PASS {name}");
        } else {
            self.fail += 1;
            say!("guest: FAIL {name}");
        }
    }
}

fn has_word(args: &str, w: &str) -> bool {
    args.split(' ').any(|x| x == w)
}

fn word_value<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split(' ')
        .find_map(|x| x.strip_prefix(key)?.strip_prefix('='))
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// Stack slots in link.ld: 0 is the boot vCPU's, 1..=7 the secondaries'
/// (the CPU_ON context id is the slot).
const SLOTS: u64 = 8;

/// Waits up to 5 s for `done()` (IRQs masked: before `irqs` or `bench`
/// there is no GIC set up), in `wfe` (irq::wait_wfe).
fn wait_event(done: impl FnMut() -> bool) -> bool {
    irq::wait_wfe(done, irq::five_seconds(), false)
}

/// Turns on this CPU's event stream from the virtual counter: an event
/// each time its bit 6 goes from 0 to 1 (every 128 ticks), so `wfe` never
/// waits longer than that.
fn event_stream() {
    // SAFETY: CNTKCTL_EL1 is the guest's own; only EVNTEN (bit 2), EVNTDIR
    // (bit 3, 0 = rising) and EVNTI (bits 7:4) change.
    unsafe {
        core::arch::asm!(
            "mrs {t}, cntkctl_el1",
            "bic {t}, {t}, #0xfc",
            "mov {u}, #(1 << 2 | 6 << 4)",
            "orr {t}, {t}, {u}",
            "msr cntkctl_el1, {t}",
            "isb",
            t = out(reg) _,
            u = out(reg) _,
        );
    }
}

/// Loop iterations between two `spin` ticks.
const TICK_SPINS: u32 = 1 << 26;

/// Called from entry.S with the DTB address, the address the image runs
/// at, and how many R_AARCH64_RELATIVE relocations entry.S applied.
#[unsafe(no_mangle)]
extern "C" fn guest_main(dtb: usize, base: usize, relocs: usize) -> ! {
    let info = match fdt::Info::read(dtb) {
        Some(i) => i,
        None => {
            psci(SYSTEM_OFF, 0, 0, 0);
            halt()
        }
    };
    // SAFETY: single-threaded until secondaries are started below.
    unsafe {
        write_volatile(&raw mut UART, info.uart);
        write_volatile(&raw mut USE_SMC, info.smc);
    }
    event_stream();
    let args = info.bootargs;
    let mem = info.memory;
    if mem % (1 << 20) == 0 {
        say!(
            "guest: hello bootargs=\"{args}\" mem={}MiB cpus={}",
            mem >> 20,
            info.ncpus
        );
    } else {
        say!(
            "guest: hello bootargs=\"{args}\" mem={}KiB cpus={}",
            mem >> 10,
            info.ncpus
        );
    }
    say!("guest: image base={base:#x} relocs={relocs}");
    if has_word(args, "onreset") {
        // CPU_ON and SYSTEM_RESET at once: the secondary is still pending
        // (or just starting) when the reset comes. Every boot does it.
        let me = read_mpidr();
        if let Some(&m) = info.cpus().iter().find(|&&m| m != me) {
            let r = psci(CPU_ON, m, secondary as *const () as u64, 1);
            say!("guest: cpu_on {m:#x} ({r}) then SYSTEM_RESET at once");
        }
        let r = psci(SYSTEM_RESET, 0, 0, 0);
        say!("guest: FAIL system_reset returned {r}");
        halt()
    }
    let mut c = Checks { pass: 0, fail: 0 };
    let v = psci(PSCI_VERSION, 0, 0, 0);
    c.check(
        v >> 16 >= 1,
        format_args!("psci-version {}.{}", v >> 16, v & 0xffff),
    );
    let f = psci(PSCI_FEATURES, CPU_ON, 0, 0);
    c.check(f >= 0, format_args!("psci-features cpu_on ({f})"));
    let entry = secondary as *const () as u64;
    let hold = has_word(args, "hold");
    // SAFETY: read by the secondaries after CPU_ON.
    unsafe { write_volatile(&raw mut HOLD, hold as u64) };
    let me = read_mpidr();
    let secondaries = info.cpus().iter().filter(|&&m| m != me);
    for (slot, &mpidr) in (1..).zip(secondaries) {
        if slot >= SLOTS {
            say!("guest: skip cpu_on {mpidr:#x} (no stack slot)");
            continue;
        }
        let r = psci(CPU_ON, mpidr, entry, slot);
        // SAFETY: written by the secondary, read here (no MMU: device memory).
        let online = r == 0
            && wait_event(|| unsafe { read_volatile(&raw const ONLINE[slot as usize]) } != 0);
        c.check(
            r == 0 && online,
            format_args!("cpu_on {mpidr:#x} (psci {r})"),
        );
        if hold {
            continue;
        }
        let off = wait_event(|| psci(AFFINITY_INFO, mpidr, 0, 0) == 1);
        c.check(off, format_args!("cpu_off {mpidr:#x}"));
    }
    let r = psci(CPU_ON, 0xff00, entry, SLOTS - 1);
    c.check(
        r == INVALID_PARAMETERS,
        format_args!("cpu_on-invalid ({r})"),
    );
    say!("guest: summary pass={} fail={}", c.pass, c.fail);

    if has_word(args, "irqs") {
        irq::run(&info, args, hold, entry);
    }
    if has_word(args, "timer-off") {
        irq::timer_off(&info);
    }
    if has_word(args, "leak") {
        leak::run();
    }
    if has_word(args, "bench") {
        bench::run(&info, entry);
    }

    if has_word(args, "fault") {
        let addr = word_value(args, "fault")
            .and_then(parse_hex)
            .unwrap_or(0x1000_0000);
        say!("guest: reading {addr:#x}");
        // SAFETY: deliberately touching an address outside RAM; the
        // hypervisor injects an abort that on_sync_exception skips.
        let v = unsafe { read_volatile(addr as *const u32) };
        // SAFETY: set by the exception handler.
        let caught = unsafe { read_volatile(&raw const CAUGHT) };
        say!("guest: after fault value={v:#x} caught={caught}");
    }
    attack::probe(args);
    if has_word(args, "cross") {
        attack::cross(&info);
    }
    if has_word(args, "nisv") {
        attack::nisv(&info);
    }
    if word_value(args, "guard").is_some() {
        attack::guard(&info, args)
    }
    if has_word(args, "measure") || word_value(args, "measure").is_some() {
        attack::measure(args)
    }
    if has_word(args, "exc-loop") {
        attack::exc_loop(args)
    }
    if has_word(args, "hvc-loop") {
        attack::hvc_loop()
    }
    if has_word(args, "hammer") {
        attack::hammer(&info)
    }
    if has_word(args, "flood") {
        attack::flood()
    }
    if has_word(args, "reset") {
        say!("guest: calling SYSTEM_RESET");
        let r = psci(SYSTEM_RESET, 0, 0, 0);
        say!("guest: FAIL system_reset returned {r}");
        halt()
    }
    if has_word(args, "escape") {
        // Control sequences a hostile guest could send a terminal: clear
        // the screen, cursor home, a carriage return and a line that looks
        // like the hypervisor's, a window title, a bell, a C1 CSI.
        say!("guest: escape \x1b[2J\x1b[H\r(dtvisor) fake\x1b]0;owned\x07 \u{9b}31m end");
        say!("guest: escape done");
    }
    if has_word(args, "echo") {
        say!("guest: echo ready");
        loop {
            if let Some(b) = getc() {
                say!("guest: rx {}", b as char);
                if b == b'q' {
                    // `q` powers the domain off (console focus tests).
                    psci(SYSTEM_OFF, 0, 0, 0);
                }
            }
        }
    }
    if has_word(args, "spin") {
        say!("guest: spinning");
        for n in 0..1000u32 {
            for _ in 0..TICK_SPINS {
                core::hint::spin_loop();
            }
            say!("guest: tick {n}");
        }
        halt()
    }
    psci(SYSTEM_OFF, 0, 0, 0);
    say!("guest: FAIL system_off returned");
    halt()
}

// SAFETY: `secondary` is entry.S's CPU_ON entry point; Rust only takes its
// address (PC-relative), never calls it.
unsafe extern "C" {
    fn secondary();
}

#[unsafe(no_mangle)]
extern "C" fn secondary_main(slot: u64) -> ! {
    event_stream();
    if bench::is_bench_slot(slot) {
        // Started again, after the checks, for `bench`'s SGIs.
        bench::secondary(slot)
    }
    if irq::is_irq_slot(slot) {
        // Started again, after the checks, for the `irqs` SGI test.
        irq::secondary(slot)
    }
    say!("guest: cpu {slot} (mpidr {:#x}) online", read_mpidr());
    // SAFETY: this vCPU's own flag.
    unsafe { write_volatile(&raw mut ONLINE[(slot % SLOTS) as usize], 1) };
    // SAFETY: written by the boot vCPU before CPU_ON.
    if unsafe { read_volatile(&raw const HOLD) } != 0 {
        loop {
            // `irqs` and `bench` pick up a held CPU for their SGIs.
            if irq::is_irq_slot(slot) {
                irq::secondary(slot)
            }
            if bench::is_bench_slot(slot) {
                bench::secondary(slot)
            }
            core::hint::spin_loop();
        }
    }
    psci(CPU_OFF, 0, 0, 0);
    say!("guest: FAIL cpu_off returned");
    halt()
}

fn read_mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) v) };
    v & 0xff_00ff_ffff
}

fn sysreg_esr_far_elr() -> (u64, u64, u64) {
    let (esr, far, elr): (u64, u64, u64);
    // SAFETY: reading exception syndrome registers.
    unsafe {
        core::arch::asm!("mrs {}, esr_el1", "mrs {}, far_el1", "mrs {}, elr_el1",
            out(reg) esr, out(reg) far, out(reg) elr);
    }
    (esr, far, elr)
}

#[unsafe(no_mangle)]
extern "C" fn on_sync_exception() {
    let (esr, far, elr) = sysreg_esr_far_elr();
    if attack::quiet_exception(esr, elr) {
        return;
    }
    say!("guest: exception esr={esr:#x} far={far:#x} elr={elr:#x}");
    if esr >> 26 == 0x25 {
        say!("guest: caught data abort");
        // SAFETY: skipping the faulting load; flag for the main flow.
        unsafe {
            write_volatile(&raw mut CAUGHT, caught() + 1);
            core::arch::asm!("msr elr_el1, {}", in(reg) elr + 4);
        }
    } else {
        halt()
    }
}

#[unsafe(no_mangle)]
extern "C" fn on_unexpected_exception() {
    let (esr, far, elr) = sysreg_esr_far_elr();
    say!("guest: unexpected exception esr={esr:#x} far={far:#x} elr={elr:#x}");
}

fn caught() -> u64 {
    // SAFETY: written only by the exception handler, on this CPU.
    unsafe { read_volatile(&raw const CAUGHT) }
}

fn halt() -> ! {
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfi") };
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    say!("guest: FAIL panic");
    halt()
}
