//! `dtvisor-plan check SYSTEM.dtb --esp DIR`: the host check of a UEFI
//! deployment. Every module node with `xen,uefi-binary = "FILE"` gets the
//! `reg` the EFI stub will give it: FILE's size from DIR (the image's
//! directory on the ESP), at a 2 MiB aligned address from the top of the
//! first RAM bank down (the firmware picks the real addresses; the plan
//! shows these). A file that is missing is an error naming the node.

use dtvisor::config::{self, Report};
use dtvisor::efi_cfg;
use dtvisor::fdt::tree::Tree;
use dtvisor::fdt::Fdt;
use dtvisor::hw::HostMemory;
use std::path::{Path, PathBuf};

const MIB2: u64 = 2 << 20;

pub struct Checked {
    pub report: Report,
    /// Missing or unreadable files, naming the node.
    pub errors: Vec<String>,
}

pub fn check(blob: &[u8], esp: &Path) -> Result<Checked, String> {
    let fdt = Fdt::new(blob).map_err(|e| format!("not a device tree: {e}"))?;
    let host = HostMemory::from_fdt(&fdt);
    let mut tree = Tree::from_fdt(&fdt);
    let mut errors = Vec::new();
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    let mut top = host.ram.first().map_or(0, |r| r.end & !(MIB2 - 1));
    for efi_cfg::UefiBinary {
        node,
        file,
        cells: (ac, sc),
    } in efi_cfg::uefi_binaries(&fdt)
    {
        let path = esp.join(file.trim_start_matches(['/', '\\']).replace('\\', "/"));
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) => {
                errors.push(format!("{node}: xen,uefi-binary: {}: {e}", path.display()));
                continue;
            }
        };
        let at = top.saturating_sub(size.div_ceil(MIB2) * MIB2);
        top = at;
        tree.set_prop(&node, "reg", efi_cfg::reg(&[(at, size)], (ac, sc)))?;
        files.push((at, path));
    }
    let edited = tree.to_dtb()?;
    let contents = |_: &str, r: dtvisor::mm::Range, visit: &mut dyn FnMut(&[u8])| {
        let Some((_, p)) = files.iter().find(|(a, _)| *a == r.start) else {
            return false;
        };
        let Ok(b) = std::fs::read(p) else {
            return false;
        };
        visit(&b[..b.len().min(r.size() as usize)]);
        true
    };
    let report = config::parse_blob_with(&edited, Some(&contents));
    Ok(Checked { report, errors })
}
