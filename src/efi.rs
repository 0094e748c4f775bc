//! The EFI stub: the same image started as an EFI application
//! (`EFI/BOOT/BOOTAA64.EFI`, or U-Boot's `bootefi`). boot/entry.S has the
//! PE/COFF header and `efi_pe_entry`, which applies the image's
//! relocations and calls `efi_main` here, with the firmware's MMU, stack
//! and services. The stub, with rust-osdev's `uefi` crate:
//!
//! 1. refuses EL1 (prints why on the EFI console, returns to the firmware);
//! 2. reads `<image name>.cfg` beside the image (Xen's format,
//!    `dtvisor::efi_cfg`): `options=` is the hypervisor command line,
//!    `dtb=` the system DTB (else the firmware's, from the configuration
//!    table); without a `.cfg`, the firmware's DTB as it is;
//! 3. loads every module whose node has `xen,uefi-binary = "FILE"` from
//!    the ESP (beside the image) at a 2 MiB aligned address and writes its
//!    `reg`;
//! 4. exits boot services; the EFI memory map becomes the DTB's `/memory`
//!    (the DTB's own memory nodes are dropped, as Linux does under UEFI;
//!    runtime-services and reserved regions are not RAM, so nothing is
//!    placed there);
//! 5. copies the image to a 2 MiB aligned address, cleans what it wrote to
//!    the point of coherency, turns the MMU off and enters the image the
//!    way `booti` does (boot/entry.S `efi_enter`).
//!
//! Any error (a file that is missing or unreadable, a bad config line, a
//! module that does not fit) is printed naming the line, node and file,
//! and the stub returns to the firmware: nothing is half started.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;
use core::ptr::NonNull;
use dtvisor::efi_cfg;
use dtvisor::fdt::tree::Tree;
use dtvisor::fdt::Fdt;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::mem::memory_map::MemoryMap;
use uefi::proto::device_path::DevicePathNodeEnum;
use uefi::proto::loaded_image::LoadedImage;
use uefi::{CString16, Handle, Status};

const MIB2: u64 = 2 << 20;
/// The stub's own heap (EFI loader data; free RAM once the image runs).
const STUB_HEAP: usize = 16 << 20;
/// Room the final DTB gets beyond the edited tree (memory nodes).
const DTB_SLACK: usize = 64 << 10;
/// The firmware's DTB in the EFI configuration table.
const DTB_GUID: uefi::Guid = uefi::guid!("b1b621d5-f19c-41a5-830b-d9152c69aae0");

unsafe extern "C" {
    fn efi_enter(entry: u64, dtb: u64) -> !;
    fn primary_entry();
    static _start: u8;
    static __file_end: u8;
}

macro_rules! say {
    ($($a:tt)*) => {
        uefi::system::with_stdout(|o| {
            let _ = o.write_fmt(format_args!($($a)*));
            let _ = o.write_str("\r\n");
        })
    };
}

/// Set while the stub runs with boot services (a panic then reports on
/// the EFI console, where the user is looking).
static ACTIVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A panic in the stub: said on the EFI console. False if not in the stub.
pub fn report_panic(info: &core::panic::PanicInfo) -> bool {
    if !ACTIVE.load(core::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    say!("dtvisor: EFI stub panic: {info}");
    true
}

/// Called by `efi_pe_entry` with the image handle and the system table.
#[unsafe(no_mangle)]
extern "C" fn efi_main(image: *mut core::ffi::c_void, st: *const core::ffi::c_void) -> usize {
    // SAFETY: the firmware passes a valid image handle and system table;
    // they are recorded once, before any other use of the crate.
    unsafe {
        let Some(h) = Handle::from_ptr(image) else {
            return Status::INVALID_PARAMETER.0;
        };
        uefi::table::set_system_table(st.cast());
        boot::set_image_handle(h);
    }
    ACTIVE.store(true, core::sync::atomic::Ordering::Relaxed);
    say!("dtvisor {}: EFI stub", env!("CARGO_PKG_VERSION"));
    let el = (crate::arch::current_el() >> 2) & 3;
    if el != 2 {
        say!("dtvisor must be entered at EL2, and this firmware runs it at EL{el}: returning to the firmware");
        say!("(on QEMU: -machine virt,virtualization=on; the firmware must run at EL2)");
        return Status::UNSUPPORTED.0;
    }
    match stub() {
        Ok(never) => match never {},
        Err(e) => {
            say!("dtvisor: {e}");
            say!("dtvisor: nothing started; returning to the firmware");
            Status::ABORTED.0
        }
    }
}

/// The stub's steps; any error returns to the firmware.
fn stub() -> Result<core::convert::Infallible, String> {
    let heap = alloc_pages(STUB_HEAP as u64, 1 << 12)?;
    // SAFETY: pages the firmware just gave us, used only as this heap.
    unsafe { crate::heap::init_at(heap, STUB_HEAP) };
    let me = image_path()?;
    let fw = firmware_dtb().ok();
    let cfg = read_cfg(&me, fw.as_deref())?;
    let dtb = match cfg.as_ref().and_then(|c| c.dtb.as_deref()) {
        Some(f) => {
            let path = efi_cfg::beside(&me, f);
            read_file(&path).map_err(|e| format!("{}: dtb={f}: {e}", efi_cfg::cfg_path(&me)))?
        }
        None => fw.ok_or("no dtb= in the .cfg and no DTB from the firmware")?,
    };
    let fdt = Fdt::new(&dtb).map_err(|e| format!("the system DTB is not a device tree: {e}"))?;
    let mut tree = Tree::from_fdt(&fdt);
    if let Some(opts) = cfg.as_ref().and_then(|c| c.options.clone()) {
        tree.set_prop("/chosen", "xen,xen-bootargs", cstr(&opts))?;
    }
    load_modules(&fdt, &mut tree, &me)?;
    // The final DTB's home, and the image's 2 MiB aligned copy, are
    // allocated while boot services still run.
    let size = tree.to_dtb()?.len() + DTB_SLACK;
    let dtb_buf = alloc_pages(size as u64, 1 << 12)?;
    let image_size = crate::arch::boot::image_range().1 - crate::arch::boot::image_range().0;
    let copy = alloc_pages(image_size, MIB2)?;
    say!("dtvisor: leaving boot services; the image continues at {copy:#x}");
    ACTIVE.store(false, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: nothing of boot services is used from here on.
    let mmap = unsafe { boot::exit_boot_services(Some(MemoryType::LOADER_DATA)) };
    set_memory(&mut tree, &usable_ram(&mmap));
    let Ok(blob) = tree.to_dtb() else {
        crate::arch::halt()
    };
    if blob.len() > size {
        crate::arch::halt();
    }
    enter_copy(&blob, dtb_buf, copy)
}

/// The section of the `.cfg` beside the image to boot with, if it is
/// read. Xen's rule: a firmware DTB that already holds boot modules is
/// the whole configuration, and the .cfg is not read, unless its /chosen
/// has xen,uefi-cfg-load. A .cfg with errors says them and stops.
fn read_cfg(me: &str, fw: Option<&[u8]>) -> Result<Option<efi_cfg::Boot>, String> {
    let cfg_file = efi_cfg::cfg_path(me);
    let fw_fdt = fw.and_then(|b| Fdt::new(b).ok());
    if !efi_cfg::reads_cfg(fw_fdt.as_ref()) {
        say!("dtvisor: the firmware's DTB holds the boot modules: {cfg_file} not read (xen,uefi-cfg-load in /chosen reads it)");
        return Ok(None);
    }
    let Ok(text) = read_file(&cfg_file) else {
        return Ok(None);
    };
    let text = String::from_utf8(text).map_err(|_| format!("{cfg_file}: not text"))?;
    match efi_cfg::parse(&text) {
        Ok((boot, warnings)) => {
            for w in warnings {
                say!(
                    "dtvisor: {cfg_file} line {}: {} (warning)",
                    w.line,
                    w.message
                );
            }
            Ok(Some(boot))
        }
        Err(errs) => {
            for e in &errs {
                say!("dtvisor: {cfg_file} line {}: {}", e.line, e.message);
            }
            Err(format!("{cfg_file}: {} errors", errs.len()))
        }
    }
}

/// The DTB's memory nodes replaced by one that lists the RAM the firmware
/// leaves usable (`ram`, from its memory map). No RAM: no console any
/// more, so the CPU parks.
fn set_memory(tree: &mut Tree, ram: &[(u64, u64)]) {
    for n in tree
        .root
        .children
        .iter()
        .filter(|n| is_memory(n))
        .map(|n| n.name.clone())
        .collect::<Vec<_>>()
    {
        let _ = tree.rm(&format!("/{n}"), None);
    }
    let Some(first) = ram.first() else {
        crate::arch::halt();
    };
    let name = format!("memory@{:x}", first.0);
    let _ = tree.mknod("/", &name);
    let reg = efi_cfg::reg(ram, root_cells(tree));
    let _ = tree.set_prop(&format!("/{name}"), "device_type", cstr("memory"));
    let _ = tree.set_prop(&format!("/{name}"), "reg", reg);
}

/// Copies the final DTB to `dtb_buf` and the image to `copy` (2 MiB
/// aligned), then enters the copy as a bootloader would.
fn enter_copy(blob: &[u8], dtb_buf: u64, copy: u64) -> ! {
    // Linker symbols: the image's first and one past its last loaded byte.
    let (start, file_end) = (&raw const _start as u64, &raw const __file_end as u64);
    // SAFETY: `dtb_buf` holds the blob (the caller checked its size), and
    // `copy` the image; the image's loaded bytes are [start, file_end).
    unsafe {
        core::ptr::copy_nonoverlapping(blob.as_ptr(), dtb_buf as *mut u8, blob.len());
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            copy as *mut u8,
            (file_end - start) as usize,
        );
    }
    clean(dtb_buf, blob.len() as u64);
    clean(copy, file_end - start);
    // The booti entry of the copy (primary_entry, where code1 branches).
    let entry = copy + (primary_entry as *const () as u64 - start);
    // SAFETY: the copy is a complete image at a 2 MiB aligned address;
    // efi_enter turns the MMU off and enters it as a bootloader would.
    unsafe { efi_enter(entry, dtb_buf) }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn is_memory(n: &dtvisor::fdt::tree::Node) -> bool {
    n.props
        .iter()
        .any(|(k, v)| k == "device_type" && v.as_slice() == b"memory\0")
}

/// The root's #address-cells and #size-cells (DT spec defaults 2 and 1).
fn root_cells(t: &Tree) -> (u32, u32) {
    let get = |name: &str, d: u32| {
        t.root
            .prop(name)
            .and_then(|v| v.get(..4))
            .map_or(d, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    (get("#address-cells", 2), get("#size-cells", 1))
}

/// RAM after ExitBootServices: what the memory map says is free or was
/// the loader's and boot services' (merged, sorted). Runtime services,
/// ACPI, MMIO and reserved regions are left out.
fn usable_ram(m: &impl MemoryMap) -> Vec<(u64, u64)> {
    let v = m
        .entries()
        .filter(|d| {
            matches!(
                d.ty,
                MemoryType::CONVENTIONAL
                    | MemoryType::LOADER_CODE
                    | MemoryType::LOADER_DATA
                    | MemoryType::BOOT_SERVICES_CODE
                    | MemoryType::BOOT_SERVICES_DATA
            )
        })
        .map(|d| (d.phys_start, d.page_count * 4096));
    efi_cfg::merge_ram(v)
}

/// Cleans and invalidates [start, start + len) to the point of coherency.
fn clean(start: u64, len: u64) {
    let mut a = start & !63;
    while a < start + len {
        // SAFETY: a cache maintenance operation on memory the stub owns.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a) };
        a += 64;
    }
    // SAFETY: a barrier has no memory effects.
    unsafe { core::arch::asm!("dsb sy") };
}

/// `size` bytes of loader data at an `align`-aligned address.
fn alloc_pages(size: u64, align: u64) -> Result<u64, String> {
    let pages = (size + align).div_ceil(4096) as usize;
    let p: NonNull<u8> =
        boot::allocate_pages(AllocateType::AnyPages, MemoryType::LOADER_DATA, pages)
            .map_err(|e| format!("out of memory for {size:#x} bytes: {e:?}"))?;
    let a = p.as_ptr() as u64;
    Ok(a.div_ceil(align) * align)
}

/// The image's own path on its device (`\EFI\BOOT\BOOTAA64.EFI`).
fn image_path() -> Result<String, String> {
    let li = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle())
        .map_err(|e| format!("no LoadedImage protocol: {e:?}"))?;
    let dp = li
        .file_path()
        .ok_or("the firmware gives no path of this image")?;
    let mut path = String::new();
    for node in dp.node_iter() {
        if let Ok(DevicePathNodeEnum::MediaFilePath(f)) = node.as_enum() {
            let name = f
                .path_name()
                .to_cstring16()
                .map(|c| c.to_string())
                .unwrap_or_default();
            if !name.starts_with('\\') && !path.ends_with('\\') {
                path.push('\\');
            }
            path.push_str(&name);
        }
    }
    if path.is_empty() {
        return Err("the firmware gives no file path of this image".into());
    }
    Ok(path)
}

/// A file of the image's own file system, opened: the file and its size.
fn open_file(path: &str) -> Result<(uefi::proto::media::file::RegularFile, u64), String> {
    use uefi::proto::media::file::{File, FileAttribute, FileInfo, FileMode};
    let mut sfs = boot::get_image_file_system(boot::image_handle())
        .map_err(|e| format!("no file system beside the image: {:?}", e.status()))?;
    let mut root = sfs
        .open_volume()
        .map_err(|e| format!("the image's volume cannot be opened: {:?}", e.status()))?;
    let name = CString16::try_from(path).map_err(|_| format!("{path}: not a valid file name"))?;
    let handle = root
        .open(&name, FileMode::Read, FileAttribute::empty())
        .map_err(|e| format!("{path}: cannot be opened ({:?})", e.status()))?;
    let mut file = handle
        .into_regular_file()
        .ok_or_else(|| format!("{path}: not a regular file"))?;
    let info = file
        .get_boxed_info::<FileInfo>()
        .map_err(|e| format!("{path}: no file information ({:?})", e.status()))?;
    let size = info.file_size();
    Ok((file, size))
}

/// Reads all of an opened file into `buf` (its size).
fn read_all(
    file: &mut uefi::proto::media::file::RegularFile,
    path: &str,
    buf: &mut [u8],
) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        let n = file
            .read(&mut buf[done..])
            .map_err(|e| format!("{path}: read failed ({:?})", e.status()))?;
        if n == 0 {
            return Err(format!("{path}: ends after {done} of {} bytes", buf.len()));
        }
        done += n;
    }
    Ok(())
}

/// A small file (the .cfg, a DTB) from the image's own file system.
fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let (mut file, size) = open_file(path)?;
    if size > 16 << 20 {
        return Err(format!(
            "{path}: {size} bytes is too large for a configuration file or DTB"
        ));
    }
    let mut v = alloc::vec![0u8; size as usize];
    read_all(&mut file, path, &mut v)?;
    Ok(v)
}

/// A module file read straight into loader pages at a 2 MiB aligned
/// address (a kernel is larger than the stub's heap): (address, size).
fn load_file(path: &str) -> Result<(u64, u64), String> {
    let (mut file, size) = open_file(path)?;
    let at = alloc_pages(size.max(1), MIB2).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: `at` has room for `size` bytes (allocated just above).
    let buf = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, size as usize) };
    read_all(&mut file, path, buf)?;
    Ok((at, size))
}

/// The firmware's DTB (EFI configuration table), copied.
fn firmware_dtb() -> Result<Vec<u8>, String> {
    let addr = uefi::system::with_config_table(|t| {
        t.iter()
            .find(|e| e.guid == DTB_GUID)
            .map(|e| e.address as u64)
    })
    .ok_or("no dtb= in the .cfg and no DTB from the firmware")?;
    // SAFETY: the firmware's DTB: its header first, then `totalsize` bytes.
    let head = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let len = Fdt::total_size(head).map_err(|e| format!("the firmware's DTB: {e}"))?;
    // SAFETY: as above.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len) }.to_vec())
}

/// Every node under /chosen (domains and their modules, hyperlaunch's
/// container included) with `xen,uefi-binary`: its file loaded at a
/// 2 MiB aligned address, its `reg` written in the parent's cells.
fn load_modules(fdt: &Fdt<'_>, tree: &mut Tree, me: &str) -> Result<(), String> {
    for efi_cfg::UefiBinary {
        node,
        file,
        cells: (ac, sc),
    } in efi_cfg::uefi_binaries(fdt)
    {
        let path = efi_cfg::beside(me, &file);
        let (at, len) = load_file(&path).map_err(|e| format!("{node}: xen,uefi-binary: {e}"))?;
        clean(at, len);
        let reg = efi_cfg::reg(&[(at, len)], (ac, sc));
        if (ac == 1 && at >> 32 != 0) || (sc == 1 && len >> 32 != 0) {
            return Err(format!(
                "{node}: {path} loaded at {at:#x} does not fit 1 address cell"
            ));
        }
        tree.set_prop(&node, "reg", reg)?;
        say!("dtvisor: {node}: {path} ({len} bytes) at {at:#x}");
    }
    Ok(())
}
