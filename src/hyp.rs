//! The boot path of the image: from the bootloader's DTB to the boot plan.

use crate::arch::{self, mmu};
use crate::drivers::{Ns16550, Pl011, Uart};
use crate::{boot, console};
use buddy_system_allocator::LockedHeap;
use dtvisor::fdt::Fdt;
use dtvisor::hw::{early, HostMemory};
use dtvisor::mm::range::Size;
use dtvisor::mm::Range;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Heap size carved from free RAM at boot.
const HEAP_SIZE: u64 = 16 << 20;
/// Largest DTB accepted from the bootloader.
const MAX_DTB: usize = 2 << 20;
/// QEMU virt's PL011: the console of last resort when the DTB is unusable.
const FALLBACK_UART: usize = 0x0900_0000;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let _ = writeln!(
        console::PanicWriter,
        "\ndtvisor: panic on CPU {}: {info}",
        arch::cpu_index()
    );
    arch::halt()
}

/// The bootloader's DTB as a byte slice (not yet validated).
fn dtb_slice(pa: u64) -> &'static [u8] {
    if pa == 0 || pa % 8 != 0 {
        return &[];
    }
    // SAFETY: the boot protocol puts a DTB at `pa` in RAM; only its header
    // (8 bytes) is read before the declared size is bounded.
    let head = unsafe { core::slice::from_raw_parts(pa as *const u8, 8) };
    let len = Fdt::total_size(head).unwrap_or(8).clamp(8, MAX_DTB);
    // SAFETY: as above, `len` bytes bounded by MAX_DTB.
    unsafe { core::slice::from_raw_parts(pa as *const u8, len) }
}

/// The console UART named by the DTB (stdout-path, else the first serial node).
fn find_console(fdt: &Fdt) -> Option<Uart> {
    let chosen = fdt.find("/chosen");
    let by_path = chosen
        .and_then(|c| {
            c.prop("stdout-path")
                .or_else(|| c.prop("linux,stdout-path"))
        })
        .and_then(|p| p.str())
        .and_then(|s| {
            let name = s.split(':').next().unwrap_or(s);
            if name.starts_with('/') {
                fdt.find(name)
            } else {
                fdt.alias(name)
            }
        });
    let node = by_path.or_else(|| {
        fdt.root().descendants().find(|n| {
            n.is_enabled()
                && [
                    "arm,pl011",
                    "arm,sbsa-uart",
                    "ns16550a",
                    "ns16550",
                    "snps,dw-apb-uart",
                ]
                .iter()
                .any(|c| n.is_compatible(c))
        })
    })?;
    let base = node.prop("reg")?.read_cells(0, 2)? as usize;
    if node.is_compatible("arm,pl011") || node.is_compatible("arm,sbsa-uart") {
        // SAFETY: the DTB names this a PL011; all of low memory is mapped.
        Some(Uart::Pl011(unsafe { Pl011::new(base) }))
    } else {
        let shift = node.prop("reg-shift").and_then(|p| p.u32()).unwrap_or(0);
        let width = node.prop("reg-io-width").and_then(|p| p.u32()).unwrap_or(1);
        // SAFETY: the DTB names this a 16550-style UART.
        Some(Uart::Ns16550(unsafe { Ns16550::new(base, shift, width) }))
    }
}

/// Carves the heap from free RAM: never the image, the DTB, reserved
/// memory or anything the DTB places under /chosen (boot modules).
fn init_heap(fdt: &Fdt, ram: &[Range], image: Range, dtb: Range) -> Range {
    let mut busy = [Range::default(); 128];
    busy[0] = image;
    busy[1] = dtb;
    let mut n = 2;
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
        arch::early_fatal("more than 126 reserved ranges and modules in the device tree");
    }
    let Some(heap) = early::find_free(ram, &busy[..n], HEAP_SIZE, 2 << 20) else {
        arch::early_fatal("no free 16 MiB block of RAM for the hypervisor heap");
    };
    // SAFETY: `heap` is RAM that nothing else uses (checked above), mapped
    // Normal by the identity map, and handed to the allocator once.
    unsafe { HEAP.lock().init(heap.start as usize, heap.size() as usize) };
    heap
}

/// Entered from boot/entry.S at EL1 (or EL3): say why we stop, then park.
#[unsafe(no_mangle)]
extern "C" fn wrong_el_entry(dtb: u64, _load: u64) -> ! {
    let uart = Fdt::new(dtb_slice(dtb)).ok().and_then(|f| find_console(&f));
    // SAFETY: QEMU virt's PL011 as last resort (MMU off: device memory).
    console::set(uart.unwrap_or(Uart::Pl011(unsafe { Pl011::new(FALLBACK_UART) })));
    console::write_str("\ndtvisor must be entered at EL2 (QEMU: -machine virtualization=on)\n");
    arch::halt()
}

/// The boot CPU's Rust entry, MMU off, DAIF masked.
#[unsafe(no_mangle)]
extern "C" fn primary_main(dtb_pa: u64, load: u64, t_entry: u64) -> ! {
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
    // No heap yet: fixed arrays.
    let mut ram = [Range::default(); 32];
    let mut nram = 0;
    early::for_each_ram(&fdt, |r| {
        if nram < ram.len() {
            ram[nram] = r;
            nram += 1;
        }
    });
    let ram = &mut ram[..nram];
    ram.sort_unstable();
    if ram.is_empty() {
        arch::early_fatal("the device tree has no memory node with a usable reg");
    }
    let m = mmu::build(ram);
    mmu::enable(&m, true);
    console::locks_ready();

    let (img_start, img_end) = boot::image_range();
    let image = Range::new(img_start, img_end);
    let dtb = Range::from_base_size(dtb_pa, fdt.as_bytes().len() as u64).unwrap_or_default();
    let heap = init_heap(&fdt, ram, image, dtb);
    console::init_log(log::LevelFilter::Info);
    let mut host = HostMemory::from_fdt(&fdt);
    host.reserved.push(dtvisor::hw::Reserved {
        range: image,
        kind: dtvisor::hw::ReservedKind::Image,
    });
    host.reserved.push(dtvisor::hw::Reserved {
        range: dtb,
        kind: dtvisor::hw::ReservedKind::Dtb,
    });

    println!();
    println!("dtvisor {} (EL2)", env!("CARGO_PKG_VERSION"));
    println!(
        "  loaded at {load:#x}, image {} ({})",
        image,
        Size(image.size())
    );
    println!("  device tree at {dtb}");
    for r in &host.ram {
        println!("  RAM {r} {}", Size(r.size()));
    }
    let ram_total: u64 = host.ram.iter().map(|r| r.size()).sum();
    println!(
        "  machine: ? CPUs, {} RAM, GIC?, console ?",
        Size(ram_total)
    );
    let t_now = arch::counter();
    let freq = arch::counter_freq().max(1);
    println!(
        "  discovery took {} us (system counter)",
        (t_now - t_entry) * 1_000_000 / freq
    );
    println!("  heap {heap} {}", Size(heap.size()));
    arch::halt()
}
