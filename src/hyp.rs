//! The boot path of the image: from the bootloader's DTB to the boot plan.

use crate::arch::boot;
use crate::arch::{self, mmu};
use crate::drivers::{Cadence, Imx, Ns16550, Pl011, Uart};
use crate::{console, fatal, heap, time, vmm};
use aarch64_cpu::registers::Writeable;
use dtvisor::config::{self, hypopts, render};
use dtvisor::fdt::Fdt;
use dtvisor::hw::{early, platform, Platform, Reserved, ReservedKind, UartKind};
use dtvisor::mm::range::Size;
use dtvisor::mm::Range;

/// Largest DTB accepted from the bootloader.
const MAX_DTB: usize = 2 << 20;
/// QEMU virt's PL011: the console of last resort when the DTB is unusable.
const FALLBACK_UART: usize = 0x0900_0000;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    if crate::efi::report_panic(info) {
        arch::halt()
    }
    let _ = writeln!(
        console::PanicWriter,
        "\ndtvisor: panic on CPU {}: {info}",
        arch::cpu_index()
    );
    arch::halt()
}

/// The bootloader's DTB as a byte slice (not yet validated).
fn dtb_slice(pa: u64) -> &'static [u8] {
    if pa == 0 || !pa.is_multiple_of(8) {
        return &[];
    }
    // SAFETY: the boot protocol puts a DTB at `pa` in RAM; only its header
    // (8 bytes) is read before the declared size is bounded.
    let head = unsafe { core::slice::from_raw_parts(pa as *const u8, 8) };
    let len = Fdt::total_size(head).unwrap_or(8).clamp(8, MAX_DTB);
    // SAFETY: as above, `len` bytes bounded by MAX_DTB.
    unsafe { core::slice::from_raw_parts(pa as *const u8, len) }
}

/// The console UART named by the DTB (no allocation: runs before the heap).
fn find_console(fdt: &Fdt) -> Option<Uart> {
    let (_, info, _) = platform::find_console(fdt)?;
    let info = info?;
    // A UART "in RAM" is a broken DTB: writing there would corrupt memory.
    let mut in_ram = false;
    early::for_each_ram(fdt, |r| in_ram |= r.contains(info.base));
    if in_ram {
        return None;
    }
    let base = info.base as usize;
    Some(match info.kind {
        // SAFETY: the DTB names this a PL011; all of low memory is mapped
        // (or the MMU is off).
        UartKind::Pl011 => Uart::Pl011(unsafe { Pl011::new(base) }),
        UartKind::Ns16550 {
            reg_shift,
            reg_io_width,
        } => {
            // SAFETY: the DTB names this a 16550-style UART.
            Uart::Ns16550(unsafe { Ns16550::new(base, reg_shift, reg_io_width) })
        }
        UartKind::Cadence => {
            // SAFETY: the DTB names this a Cadence UART.
            let mut u = unsafe { Cadence::new(base) };
            u.enable();
            Uart::Cadence(u)
        }
        UartKind::Imx => {
            // SAFETY: the DTB names this an i.MX UART.
            let u = unsafe { Imx::new(base) };
            u.enable();
            Uart::Imx(u)
        }
    })
}

/// Carves the heap from free RAM: never the image, the DTB, reserved
/// memory or anything the DTB places under /chosen (boot modules).
fn init_heap(fdt: &Fdt, ram: &[Range], image: Range, dtb: Range) -> Range {
    let mut busy = [Range::default(); 128];
    busy[0] = image;
    busy[1] = dtb;
    // Address 0 is the null pointer: no heap block may start there (RAM
    // begins at 0 on boards such as the ZCU102).
    busy[2] = Range::new(0, 64 << 10);
    let mut n = 3;
    let mut overflow = false;
    early::for_each_busy(fdt, |r| {
        if n < busy.len() {
            busy[n] = r;
            n += 1;
        } else {
            overflow = true;
        }
    });
    if overflow {
        fatal::fatal("more than 125 reserved ranges and modules in the device tree");
    }
    let size = early::heap_size(fdt);
    let Some(heap) = early::find_free(ram, &busy[..n], size, 64 << 10) else {
        fatal::fatal("no free RAM for the hypervisor heap (1 MiB and more)");
    };
    // SAFETY: `heap` is RAM that nothing else uses (checked above), mapped
    // Normal by the identity map, and handed to the allocator once.
    unsafe { heap::init_at(heap.start, heap.size() as usize) };
    heap
}

/// Entered from arch/aarch64/entry.S at EL1 (or EL3): say why we stop, then park.
#[unsafe(no_mangle)]
extern "C" fn wrong_el_entry(dtb: u64, _load: u64) -> ! {
    let uart = Fdt::new(dtb_slice(dtb)).ok().and_then(|f| find_console(&f));
    // SAFETY: QEMU virt's PL011 as last resort (MMU off: device memory).
    console::set(uart.unwrap_or(Uart::Pl011(unsafe { Pl011::new(FALLBACK_UART) })));
    console::write_str("\ndtvisor must be entered at EL2 (QEMU: -machine virtualization=on)\n");
    arch::halt()
}

/// A secondary pCPU's Rust entry (arch/aarch64/entry.S, after PSCI
/// CPU_ON): its own setup, its GIC CPU interface, then its idle loop.
#[unsafe(no_mangle)]
extern "C" fn secondary_main(idx: u64) -> ! {
    arch::smp::secondary_setup(idx);
    vmm::init_secondary_gic(idx as usize);
    vmm::idle()
}

/// The boot CPU's Rust entry, MMU off, DAIF masked: the device tree and
/// console, the EL2 translation, the heap, the machine, the boot plan,
/// then the domains (`vmm::boot`).
#[unsafe(no_mangle)]
extern "C" fn primary_main(dtb_pa: u64, load: u64, t_entry: u64) -> ! {
    // The boot CPU is pCPU 0 (TPIDR_EL2 is UNKNOWN at reset).
    aarch64_cpu::registers::TPIDR_EL2.set(0);
    boot::paint_canaries();
    let fdt = match Fdt::new(dtb_slice(dtb_pa)) {
        Ok(f) => f,
        Err(e) => {
            // SAFETY: no usable DTB: QEMU virt's PL011 is the best guess.
            console::set(Uart::Pl011(unsafe { Pl011::new(FALLBACK_UART) }));
            println!("\ndtvisor: no usable device tree at {dtb_pa:#x}: {e}");
            arch::halt()
        }
    };
    // The console first (MMU off, device accesses), so anything after can report.
    if let Some(u) = find_console(&fdt) {
        console::set(u);
    }
    let mut ram = [Range::default(); 32];
    let ram = enable_mmu(&fdt, &mut ram);
    let (img_start, img_end) = boot::image_range();
    let image = Range::new(img_start, img_end);
    let dtb = Range::from_base_size(dtb_pa, fdt.as_bytes().len() as u64).unwrap_or_default();
    let heap = init_heap(&fdt, ram, image, dtb);
    console::init_log(log::LevelFilter::Info);
    time::set_entry(t_entry);
    // Timestamps from the first line when `xen,xen-bootargs` asks (the
    // whole command line is read again once the plan names it).
    let early_cmdline = fdt
        .find("/chosen")
        .and_then(|c| c.prop("xen,xen-bootargs"))
        .and_then(|p| p.str())
        .unwrap_or("");
    let early_opts = hypopts::parse(early_cmdline);
    console::set_timestamps(early_opts.timestamps);
    println!();
    println!("dtvisor {} (EL2)", env!("CARGO_PKG_VERSION"));
    println!(
        "  loaded at {load:#x}, image {image} ({})",
        Size(image.size())
    );
    println!("  device tree at {dtb}");
    let plat = discover(&fdt, [image, dtb, heap]);
    println!(
        "  discovery took {} us (system counter)",
        time::micros(arch::counter() - t_entry)
    );
    selftests(early_opts.selftest);
    let (plan, boot_scrub) = boot_plan(&fdt, &plat);
    let virq_by_hcr = early_opts.selftest == Some("virq-by-hcr");
    vmm::boot(&plat, &plan, boot_scrub, virq_by_hcr)
}

/// The host's RAM (into `ram`, sorted: no heap yet) and the EL2 identity
/// map over it, enabled (also for the secondaries); every EL2 control
/// register as dtvisor decides it, none as firmware left it.
fn enable_mmu<'a>(fdt: &Fdt, ram: &'a mut [Range; 32]) -> &'a [Range] {
    let mut nram = 0;
    early::for_each_ram(fdt, |r| {
        if nram < ram.len() {
            ram[nram] = r;
            nram += 1;
        }
    });
    let ram = &mut ram[..nram];
    ram.sort_unstable();
    if ram.is_empty() {
        fatal::fatal("the device tree has no memory node with a usable reg");
    }
    let m = mmu::build(ram);
    mmu::enable(&m, true);
    arch::smp::publish_mmu(m);
    console::locks_ready();
    arch::vcpu::write_el2_controls();
    ram
}

/// The machine the device tree describes, with the hypervisor's own
/// image, DTB and heap reserved; printed. Unusable: it stays up saying so.
fn discover(fdt: &Fdt, [image, dtb, heap]: [Range; 3]) -> Platform {
    let mut plat = match Platform::discover(fdt) {
        Ok(p) => p,
        Err(errs) => {
            for e in &errs {
                println!("  {e}");
            }
            fatal::stay_up("the machine description is unusable")
        }
    };
    for (range, kind) in [
        (image, ReservedKind::Image),
        (dtb, ReservedKind::Dtb),
        (heap, ReservedKind::Heap),
    ] {
        plat.memory.reserved.push(Reserved { range, kind });
    }
    let errs = plat.check_release_addrs();
    if !errs.is_empty() {
        for e in &errs {
            println!("  {e}");
        }
        fatal::stay_up("a CPU's spin-table release address cannot be used");
    }
    println!("  machine: {}", plat.summary());
    for line in alloc::format!("{plat}").lines() {
        println!("  {line}");
    }
    println!("  heap {heap} {}", Size(heap.size()));
    for w in &plat.warnings {
        println!("  {w}");
    }
    plat
}

/// `dtvisor.selftest=...` (tests only, never in production): heap-grow
/// (the heap grows past its size), el2-fault (an EL2 data abort, for the
/// unexpected-exception report), write-text (W^X at EL2: a write to the
/// hypervisor's own code must fault), virq-by-hcr (guests' interrupts
/// raised through HCR_EL2.VI, as where the GIC's virtual IRQ is not
/// wired: that path tested on any machine).
fn selftests(which: Option<&str>) {
    heap::set_selftest(which == Some("heap-grow"));
    if which == Some("el2-fault") {
        log::warn!("dtvisor.selftest=el2-fault: reading an unmapped address");
        // SAFETY: deliberately faults; the exception handler halts this CPU.
        unsafe { core::ptr::read_volatile(0xdead_0000_0000 as *const u64) };
    }
    if which == Some("write-text") {
        let code = primary_main as *const () as u64;
        log::warn!("dtvisor.selftest=write-text: writing to the hypervisor's code at {code:#x}");
        // SAFETY: deliberately faults (the code is mapped read-only); were
        // it writable, the word written is the one already there.
        unsafe {
            let p = code as *mut u32;
            core::ptr::write_volatile(p, core::ptr::read_volatile(p));
        }
        log::error!("dtvisor.selftest=write-text: the write did NOT fault");
    }
}

/// The boot plan from the device tree (modules read where they lie in
/// RAM), printed with its diagnostics, and `bootscrub=` from the
/// hypervisor's command line. Invalid: it stays up saying why.
fn boot_plan(fdt: &Fdt, plat: &Platform) -> (config::BootPlan, bool) {
    let t0 = arch::counter();
    let ram = plat.memory.ram.clone();
    let peek = move |pa: u64| {
        let r = Range::from_base_size(pa, 4)?;
        // SAFETY: a word of RAM (checked), identity mapped; modules are
        // only read here.
        (pa.is_multiple_of(4) && ram.iter().any(|b| b.contains_range(&r)))
            .then(|| unsafe { core::ptr::read_volatile(pa as *const u32) })
    };
    let ram = plat.memory.ram.clone();
    let contents = move |_: &str, r: Range, visit: &mut dyn FnMut(&[u8])| {
        if !ram.iter().any(|b| b.contains_range(&r)) {
            return false;
        }
        // SAFETY: a module the DTB places inside RAM (checked), identity
        // mapped; modules are only read.
        visit(unsafe { core::slice::from_raw_parts(r.start as *const u8, r.size() as usize) });
        true
    };
    let report = config::parse_with(fdt, &plat.memory, Some(&peek), Some(&contents));
    let parse_us = time::micros(arch::counter() - t0);
    let Some(plan) = report.plan else {
        print!("{}", render::Diagnostics(&report.diagnostics));
        println!(
            "configuration invalid: {} errors (parsed in {parse_us} us)",
            report.errors().count()
        );
        fatal::stay_up("invalid configuration")
    };
    let boot_scrub = apply_options(fdt, plan.hyp_cmdline.as_deref().unwrap_or(""));
    println!("boot plan parsed in {parse_us} us:");
    print!("{plan}");
    print!("{}", render::Diagnostics(&report.diagnostics));
    (plan, boot_scrub)
}

/// Acts on the hypervisor's command line (see `config::hypopts`) and
/// lists, once, what it does not act on. Returns `bootscrub=`.
fn apply_options(fdt: &Fdt, cmdline: &str) -> bool {
    let o = hypopts::parse(cmdline);
    if let Some(v) = o.loglvl {
        log::set_max_level(match v {
            "none" => log::LevelFilter::Off,
            "error" => log::LevelFilter::Error,
            "warning" => log::LevelFilter::Warn,
            "debug" => log::LevelFilter::Debug,
            "all" => log::LevelFilter::Trace,
            _ => log::LevelFilter::Info,
        });
    }
    console::set_timestamps(o.timestamps);
    if let Some(d) = o.dtuart {
        match platform::is_console(fdt, d) {
            Some(true) => {}
            Some(false) => log::warn!(
                "dtuart={d}: another UART than the console; dtvisor writes to the one /chosen/stdout-path names"
            ),
            None => log::warn!(
                "dtuart={d}: no such path or alias; dtvisor writes to the UART /chosen/stdout-path names"
            ),
        }
    }
    for (w, want) in &o.invalid {
        log::warn!("hypervisor command line: {w}: ignored, takes {want}");
    }
    if !o.ignored.is_empty() {
        log::info!(
            "hypervisor command line: ignored (no effect in dtvisor): {}",
            o.ignored.join(" ")
        );
    }
    if !o.bootscrub {
        log::info!("bootscrub=0: guest RAM is not scrubbed before each domain's first start");
    }
    o.bootscrub
}
