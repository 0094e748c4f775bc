//! Words that try to break out of the guest or to slow the others down
//! (the hypervisor's isolation and containment tests), and the measured
//! loop and the guarded pattern the other guest runs meanwhile.
//!
//! Isolation: `probe=` reads and writes addresses outside the guest's
//! map, `cross` aims PSCI CPU_ON and SGIs at vCPUs it does not have,
//! `guard=` keeps checking a pattern in its own RAM (and an assigned
//! RTC). Containment: `exc-loop`, `hvc-loop`, `hammer`, `flood` misbehave
//! forever; `measure` is the loop whose rate is the figure.

use core::fmt::Write;
use core::ptr::{read_volatile, write_volatile};

use crate::fdt::{self, GicVersion};
use crate::irq::{self, get, now, put};
use crate::{parse_hex, psci, word_value, Console, CPU_ON, INVALID_PARAMETERS};

/// Exceptions the quiet handler skipped (`exc-loop`, `hammer`).
static mut SKIPPED: u64 = 0;
/// Set: on_sync_exception skips every exception without a word.
static mut QUIET: u64 = 0;

/// Called by on_sync_exception first: whether it handled the exception
/// quietly (counted, and the instruction skipped where it must be).
pub fn quiet_exception(esr: u64, elr: u64) -> bool {
    if get(&raw const QUIET) == 0 {
        return false;
    }
    put(&raw mut SKIPPED, get(&raw const SKIPPED).wrapping_add(1));
    // An SVC returns after itself already; anything else is skipped.
    if esr >> 26 != 0x15 {
        // SAFETY: the return address of the exception being handled.
        unsafe { core::arch::asm!("msr elr_el1, {}", in(reg) elr + 4) };
    }
    true
}

fn skipped() -> u64 {
    get(&raw const SKIPPED)
}

/// One load of `width` bytes (1, 2, 4, 8) as a single plain `ldr*` from a
/// base register (an access the hypervisor can decode, ESR ISV = 1).
///
/// # Safety
/// `a` is aligned to `width`; any abort is the caller's plan.
unsafe fn load(a: usize, width: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller's.
    unsafe {
        match width {
            1 => {
                core::arch::asm!("ldrb {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack))
            }
            2 => {
                core::arch::asm!("ldrh {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack))
            }
            4 => {
                core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack))
            }
            _ => {
                core::arch::asm!("ldr {v}, [{a}]", a = in(reg) a, v = out(reg) v, options(nostack))
            }
        }
    }
    v
}

/// One store of `width` bytes (see `load`).
///
/// # Safety
/// As for `load`.
unsafe fn store(a: usize, width: usize, v: u64) {
    // SAFETY: the caller's.
    unsafe {
        match width {
            1 => {
                core::arch::asm!("strb {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack))
            }
            2 => {
                core::arch::asm!("strh {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack))
            }
            4 => {
                core::arch::asm!("str {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack))
            }
            _ => core::arch::asm!("str {v}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)),
        }
    }
}

/// `probe=A,B,..`: a 32-bit read, then a 32-bit write, of each address;
/// each must abort (the exception handler reports and skips it).
pub fn probe(args: &str) {
    let Some(list) = word_value(args, "probe") else {
        return;
    };
    let (mut n, mut aborted) = (0, 0);
    for a in list.split(',').filter_map(parse_hex) {
        let a = a as usize & !3;
        for write in [false, true] {
            let before = crate::caught();
            let what = if write { "write" } else { "read" };
            say!("guest: probe {what} {a:#x}");
            // SAFETY: deliberately outside the guest's map: the abort is
            // what the test wants; on_sync_exception skips the access.
            let v = unsafe {
                if write {
                    store(a, 4, 0x5a5a_5a5a);
                    0
                } else {
                    load(a, 4)
                }
            };
            n += 1;
            if crate::caught() != before {
                aborted += 1;
                say!("guest: probe {what} {a:#x} aborted");
            } else {
                say!("guest: probe {what} {a:#x} NOT aborted value={v:#x}");
            }
        }
    }
    say!("guest: probe done aborted={aborted}/{n}");
}

/// `nisv`: accesses to its vGIC distributor and vPL011 that carry no
/// syndrome for the hypervisor to emulate them from (ESR ISV = 0): a load
/// pair, a post-indexed load and a post-indexed store at each. Each must
/// abort: `guest: nisv <what> <addr> aborted` (or `NOT aborted`), then
/// `guest: nisv done aborted=<n>/<m>`.
pub fn nisv(info: &fdt::Info) {
    let mut bases = [(crate::uart(), "vpl011"), (0, "gicd")];
    if let Some(g) = info.gic {
        bases[1].0 = g.dist;
    }
    let (mut n, mut aborted) = (0, 0);
    for &(base, dev) in bases.iter().filter(|b| b.0 != 0) {
        for what in ["ldp", "ldr-post", "str-post"] {
            let before = crate::caught();
            let mut p = base;
            let (mut a, mut b) = (0u64, 0u64);
            // SAFETY: the guest's own emulated device; the hypervisor
            // aborts each access (on_sync_exception reports and skips it).
            unsafe {
                match what {
                    "ldp" => {
                        core::arch::asm!("ldp {a:w}, {b:w}, [{p}]", p = in(reg) p, a = out(reg) a,
                        b = out(reg) b, options(nostack))
                    }
                    "ldr-post" => {
                        core::arch::asm!("ldr {a:w}, [{p}], #4", p = inout(reg) p, a = out(reg) a,
                        options(nostack))
                    }
                    _ => {
                        core::arch::asm!("str {a:w}, [{p}], #4", p = inout(reg) p, a = in(reg) 0u64,
                        options(nostack))
                    }
                }
            }
            n += 1;
            if crate::caught() != before {
                aborted += 1;
                say!("guest: nisv {what} {dev} {base:#x} aborted");
            } else {
                say!(
                    "guest: nisv {what} {dev} {base:#x} NOT aborted values={a:#x},{b:#x} p={p:#x}"
                );
            }
        }
    }
    say!("guest: nisv done aborted={aborted}/{n}");
}

/// `cross`: PSCI CPU_ON of MPIDRs this guest does not have, and SGIs to
/// every target an SGI register can name. The CPU_ONs must fail with
/// INVALID_PARAMETERS; the SGIs must reach no other domain (its `guard`
/// counts every interrupt it takes).
pub fn cross(info: &fdt::Info) {
    let mine = info.cpus();
    let (mut ok, mut n) = (0, 0);
    for m in [
        0u64,
        1,
        2,
        3,
        4,
        7,
        0xf,
        0x100,
        0x101,
        0x1_0000,
        0x1_0000_0000,
    ] {
        if mine.contains(&m) {
            continue;
        }
        let r = psci(CPU_ON, m, 0x4000_0000, 0);
        n += 1;
        if r == INVALID_PARAMETERS {
            ok += 1;
        } else {
            say!("guest: FAIL cross cpu_on {m:#x} ({r})");
        }
    }
    say!("guest: cross cpu_on invalid={ok}/{n}");
    let gic = match irq::setup(info) {
        Ok(g) => g,
        Err(e) => {
            say!("guest: FAIL cross (gic: {e})");
            return;
        }
    };
    let mut sent = 0;
    if gic.version == GicVersion::V3 {
        // IRM = 1 (every other PE), then target lists 0xffff at every
        // Aff3.Aff2.Aff1 up to 3 and RS 0..3 (the upper Aff0 ranges).
        let mut values = [0u64; 1 + 4 * 4 * 4];
        values[0] = 1 << 40 | 8 << 24;
        let mut i = 1;
        for aff in 0..4u64 {
            for rs in 0..4u64 {
                values[i] = aff << 48 | rs << 44 | aff << 32 | 9 << 24 | aff << 16 | 0xffff;
                i += 1;
            }
        }
        for v in values.iter().take(i) {
            // SAFETY: generating group 1 SGIs; the hypervisor decides
            // whom they reach.
            unsafe { core::arch::asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) *v) };
            sent += 1;
        }
    } else {
        // Target list 0xff, then "all but self", then "self" (filter 0-2).
        for v in [0xff << 16 | 8, 1 << 24 | 9, 2 << 24 | 10u32] {
            // SAFETY: GICD_SGIR of the guest's distributor.
            unsafe { crate::mmio_write32(gic.dist + 0xf00, v) };
            sent += 1;
        }
    }
    say!("guest: cross sgis sent={sent}");
}

const PATTERN: u64 = 0xd7a5_0f1e_c0de_0000;
const GUARD_WORDS: usize = 8192; // 64 KiB

/// `guard=IPA` (optional `rtc=IPA`): fills 64 KiB of its own RAM at IPA
/// with a pattern, sets up its GIC with every SGI enabled and IRQs
/// unmasked, then checks the pattern (and that an assigned PL031 RTC
/// still counts forward) forever: `guest: guard ok checks=<n> irqs=<k>
/// rtc=<v>` every 16 checks, or `guest: FAIL guard ...` once.
pub fn guard(info: &fdt::Info, args: &str) -> ! {
    let base = word_value(args, "guard")
        .and_then(parse_hex)
        .unwrap_or(0x4200_0000) as usize;
    let rtc = word_value(args, "rtc")
        .and_then(parse_hex)
        .map(|a| a as usize);
    let p = base as *mut u64;
    for i in 0..GUARD_WORDS {
        // SAFETY: the guest's own RAM (the test gives an address in it).
        unsafe { write_volatile(p.add(i), PATTERN ^ i as u64) };
    }
    // SAFETY: the RTC's data register, when the test assigned one.
    let rtc_read = |a: usize| unsafe { crate::mmio_read32(a) };
    let rtc0 = rtc.map(rtc_read);
    let gic = irq::setup(info).is_ok();
    say!("guest: guard set base={base:#x} words={GUARD_WORDS} gic={gic} rtc={rtc0:?}");
    let mut checks = 0u64;
    loop {
        if gic {
            // SAFETY: interrupts on for a while; on_irq counts them.
            unsafe { core::arch::asm!("msr daifclr, #2", "isb") };
        }
        let t = now();
        while now().wrapping_sub(t) < irq::freq() / 100 {
            core::hint::spin_loop();
        }
        // SAFETY: as above.
        unsafe { core::arch::asm!("msr daifset, #2") };
        for i in 0..GUARD_WORDS {
            // SAFETY: as for the fill.
            let v = unsafe { read_volatile(p.add(i)) };
            if v != PATTERN ^ i as u64 {
                say!("guest: FAIL guard changed at {:#x}: {v:#x}", base + 8 * i);
                crate::halt()
            }
        }
        let r = rtc.map(rtc_read);
        if let (Some(a), Some(b)) = (rtc0, r) {
            if b < a || b > a + 3600 {
                say!("guest: FAIL guard rtc went from {a} to {b}");
                crate::halt()
            }
        }
        checks += 1;
        if checks % 16 == 1 {
            let irqs: u32 = (0..=32).map(|i| irq::count(0, i)).sum();
            say!("guest: guard ok checks={checks} irqs={irqs} rtc={r:?}");
        }
    }
}

/// Loop iterations in one measured chunk (about 4000 instructions).
const CHUNK: u32 = 1000;

/// Chunks between two moves of the virtual timer (about 100 us).
const TURN: u32 = 25;

/// One chunk of the measured loop: a fixed amount of work.
fn chunk(seed: u64) -> u64 {
    let mut x = seed;
    for i in 0..CHUNK {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i as u64);
    }
    core::hint::black_box(x)
}

/// The longest pause between two chunks that still counts as running:
/// twice the fastest of 64 chunks, at most 20 us. Under `-icount` a chunk
/// takes the same number of ticks every time, so anything longer is
/// another vCPU's turn; QEMU 10 ends turns early whenever a device wakes
/// its round-robin loop (a console write does), and such turns last less
/// than 20 us, which a fixed limit would count as this vCPU's run time.
fn gap_limit(f: u64) -> u64 {
    let mut fastest = u64::MAX;
    let mut last = now();
    for i in 0..64 {
        chunk(i);
        let t = now();
        fastest = fastest.min(t.wrapping_sub(last));
        last = t;
    }
    (2 * fastest).min(f / 50_000)
}

/// `measure` (windows: `measure=N`, default 20): the measured loop. It
/// runs chunks of a fixed loop and reads the virtual counter between
/// them (a chunk takes about 4 us); a gap longer than `gap_limit` between
/// two chunks is time the vCPU did not run (another vCPU's turn under QEMU,
/// or the hypervisor holding its pCPU that long) and is counted apart.
///
/// Every `TURN` chunks it moves its virtual timer to 100 us ahead, masked
/// (CNTV_CTL IMASK: no interrupt, nothing for the hypervisor to do).
/// Under `-icount` QEMU runs all vCPUs in turns on one thread; a busy
/// vCPU's turn ends at a timer deadline, or when it moves the earliest
/// deadline (QEMU then recomputes its instruction budget), and the next
/// vCPU's turn lasts until the next deadline. Without a deadline the
/// other pCPUs would run only every 100 ms. So this vCPU runs `TURN`
/// chunks, moves its timer and so ends its turn, and the other vCPU
/// runs up to 100 us; the counter is read again after the move, so the
/// other vCPU's turn is neither run time nor a gap. Every 20 ms of
/// running time: `guest: measure window=<k> chunks=<n> run=<ticks>
/// gap=<ticks> span=<ticks>` (span: the window's length in counter
/// ticks, the other vCPUs' turns included), then `guest: measure done
/// chunks=<n> run=<ticks> gap=<ticks> gaps=<count> max_gap=<ticks>` and
/// it idles.
pub fn measure(args: &str) -> ! {
    let windows: u32 = word_value(args, "measure")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let f = irq::freq();
    let (window, slice) = (f / 50, f / 10_000);
    let gap_limit = gap_limit(f);
    // Moves the timer `slice` ahead and returns the counter after it.
    let arm = || {
        // SAFETY: the guest's own virtual timer: enabled, interrupt masked.
        unsafe {
            core::arch::asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb",
                in(reg) now() + slice, in(reg) 3u64)
        };
        now()
    };
    say!("guest: measure start windows={windows} cntfrq={f} gap_limit={gap_limit}");
    let (mut all_chunks, mut all_run, mut all_gap, mut gaps, mut max_gap) = (0u64, 0, 0, 0u64, 0);
    for k in 0..windows {
        let (mut chunks, mut run, mut gap) = (0u64, 0u64, 0u64);
        let mut last = arm();
        let begin = last;
        while run < window {
            chunk(last);
            let t = now();
            let d = t.wrapping_sub(last);
            if d > gap_limit {
                gap += d;
                gaps += 1;
                max_gap = max_gap.max(d);
            } else {
                run += d;
                chunks += 1;
            }
            last = if (chunks + gaps) % TURN as u64 == 0 {
                arm()
            } else {
                t
            };
        }
        let span = now().wrapping_sub(begin);
        say!("guest: measure window={k} chunks={chunks} run={run} gap={gap} span={span}");
        all_chunks += chunks;
        all_run += run;
        all_gap += gap;
    }
    say!(
        "guest: measure done chunks={all_chunks} run={all_run} gap={all_gap} gaps={gaps} max_gap={max_gap}"
    );
    // SAFETY: the guest's own virtual timer, off.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb") };
    crate::halt()
}

/// `exc-loop`: exceptions forever, alternating a load from an address
/// outside its map (`fault=`, default 0x10000000: a stage-2 abort the
/// hypervisor turns into an external abort) and an undefined instruction
/// (taken at EL1 without the hypervisor). `guest: exc-loop n=<taken>`
/// every 2^16.
pub fn exc_loop(args: &str) -> ! {
    let addr = word_value(args, "fault")
        .and_then(parse_hex)
        .unwrap_or(0x1000_0000) as usize;
    put(&raw mut QUIET, 1);
    say!("guest: exc-loop at {addr:#x}");
    let mut i = 0u64;
    loop {
        // SAFETY: both fault on purpose; the quiet handler skips them.
        unsafe {
            load(addr, 4);
            core::arch::asm!("udf #0");
        }
        i += 1;
        if i.is_multiple_of(1 << 15) {
            say!("guest: exc-loop n={}", skipped());
        }
    }
}

/// `hvc-loop`: SMCCC calls forever with function ids nothing implements
/// (pseudo-random, every owner and type, never a PSCI or Arm
/// architecture call), and random arguments; each must return
/// NOT_SUPPORTED (-1). `guest: hvc-loop n=<calls> last=<id>` every 2^16.
pub fn hvc_loop() -> ! {
    say!("guest: hvc-loop");
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut n = 0u64;
    loop {
        let r = next();
        let fid = r & 0xffff_ffff | 0x8000_0000;
        let owner = (fid >> 24) & 0x3f;
        // Arm architecture (0) and standard secure service (4: PSCI)
        // calls are implemented; a few others might be one day.
        if owner == 0 || owner == 4 {
            continue;
        }
        let ret = psci(fid, next(), next(), next());
        n += 1;
        if ret != -1 {
            say!("guest: FAIL hvc-loop {fid:#x} returned {ret}");
        }
        if n.is_multiple_of(1 << 16) {
            say!("guest: hvc-loop n={n} last={fid:#x}");
        }
    }
}

/// `hammer`: every aligned offset of its vGIC distributor, its
/// redistributor (GICv3) or CPU interface (GICv2) region and its vPL011,
/// with every width (1, 2, 4, 8 bytes), read and then written with all
/// ones and zeros; aborts are counted and skipped. Forever, a line per
/// round: `guest: hammer round=<k> accesses=<n> aborts=<m>`.
pub fn hammer(info: &fdt::Info) -> ! {
    put(&raw mut QUIET, 1);
    let uart = crate::uart();
    let mut regions = [(0usize, 0usize); 3];
    if let Some(g) = info.gic {
        regions[0] = (g.dist, 0x1_0000);
        regions[1] = (g.cpu, (g.cpu_size as usize).min(0x4_0000));
    }
    regions[2] = (uart, 0x1000);
    say!(
        "guest: hammer gicd={:#x} gicr/gicc={:#x}+{:#x} uart={uart:#x}",
        regions[0].0,
        regions[1].0,
        regions[1].1
    );
    let mut round = 0u64;
    loop {
        let (mut accesses, before) = (0u64, skipped());
        for &(base, size) in regions.iter().filter(|r| r.0 != 0) {
            for write in [false, true] {
                for width in [1usize, 2, 4, 8] {
                    for off in (0..size).step_by(width) {
                        // SAFETY: the guest's own emulated devices: the
                        // hypervisor answers or aborts (skipped).
                        unsafe {
                            if write {
                                let v = if off & width != 0 { !0 } else { 0 };
                                store(base + off, width, v);
                            } else {
                                load(base + off, width);
                            }
                        }
                        accesses += 1;
                    }
                }
            }
        }
        // The vPL011 as the console needs it again: enabled, TX and RX on,
        // no interrupts.
        // SAFETY: UARTIMSC (0x38) and UARTCR (0x30) of its own UART.
        unsafe {
            crate::mmio_write32(uart + 0x38, 0);
            crate::mmio_write32(uart + 0x30, 0x301);
        }
        say!(
            "guest: hammer round={round} accesses={accesses} aborts={}",
            skipped() - before
        );
        round += 1;
    }
}

/// `flood`: console output forever, as fast as the vPL011 takes it.
pub fn flood() -> ! {
    let mut n = 0u64;
    loop {
        say!("guest: flood {n} the quick brown fox jumps over the lazy dog 0123456789");
        n += 1;
    }
}
