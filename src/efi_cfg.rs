//! The EFI configuration file beside the image (`<image name>.cfg`), in
//! Xen's format (Xen's `docs/misc/efi.pandoc`):
//!
//! ```text
//! [global]
//! default=dtvisor
//!
//! [dtvisor]
//! options=loglvl=info
//! dtb=virt-system.dtb
//! ```
//!
//! `[global]` names the section to boot with `default=` (else the first
//! section). In a section, `options=` is the hypervisor's command line and
//! `dtb=` the system DTB, a file beside the image (without it, the
//! firmware's DTB). Xen's dom0 keys (`kernel=`, `ramdisk=`, `xsm=`,
//! `ucode=`) describe a dom0 that dtvisor does not boot this way: they are
//! errors naming the line (dom0less domains come from the DTB, with
//! `xen,uefi-binary` modules). `#` starts a comment. Everything is
//! checked, every problem is reported with its line.

use crate::fdt::Fdt;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The section the stub boots with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boot {
    pub section: String,
    pub options: Option<String>,
    pub dtb: Option<String>,
}

/// A problem on line `line` (1-based; 0 for the file as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CfgError {
    pub line: usize,
    pub message: String,
}

/// Parses the file and picks the section to boot with; every error.
pub fn parse(text: &str) -> Result<(Boot, Vec<CfgError>), Vec<CfgError>> {
    let mut r = Reader::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            r.section(n, line, rest);
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) => r.key(n, key.trim(), value.trim()),
            None => r.error(
                n,
                format!("expected key=value or [section], found {line:?}"),
            ),
        }
    }
    r.finish()
}

/// One section of the file: its name, `options=` and `dtb=`.
struct Section {
    name: String,
    options: Option<String>,
    dtb: Option<String>,
}

/// The file as read so far.
#[derive(Default)]
struct Reader {
    errors: Vec<CfgError>,
    warnings: Vec<CfgError>,
    sections: Vec<Section>,
    /// `[global] default=`, and its line.
    default: Option<(String, usize)>,
    /// Index in `sections`; None: `[global]` or before any section.
    current: Option<usize>,
    in_global: bool,
}

impl Reader {
    fn error(&mut self, line: usize, message: String) {
        self.errors.push(CfgError { line, message });
    }

    fn warn(&mut self, line: usize, message: String) {
        self.warnings.push(CfgError { line, message });
    }

    /// `[name]` at line `n` (`rest`: after the bracket).
    fn section(&mut self, n: usize, line: &str, rest: &str) {
        let Some(name) = rest
            .strip_suffix(']')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return self.error(
                n,
                format!("expected a section name in brackets, found {line:?}"),
            );
        };
        self.in_global = name == "global";
        self.current = None;
        if self.in_global {
            return;
        }
        if self.sections.iter().any(|s| s.name == name) {
            return self.error(n, format!("section [{name}] appears twice"));
        }
        self.sections.push(Section {
            name: name.to_string(),
            options: None,
            dtb: None,
        });
        self.current = Some(self.sections.len() - 1);
    }

    /// `key=value` at line `n`.
    fn key(&mut self, n: usize, key: &str, value: &str) {
        if self.in_global {
            match key {
                "default" => self.default = Some((value.to_string(), n)),
                _ => self.warn(
                    n,
                    format!("[global] key {key} is not used by dtvisor, ignored"),
                ),
            }
            return;
        }
        let Some(s) = self.current else {
            if !self.errors.iter().any(|e| e.line == n) {
                self.error(n, format!("{key}= outside any section"));
            }
            return;
        };
        match key {
            "options" => self.sections[s].options = Some(value.to_string()),
            "dtb" if value.is_empty() => self.error(n, "dtb= names no file".into()),
            "dtb" => self.sections[s].dtb = Some(value.to_string()),
            "kernel" | "ramdisk" | "xsm" | "ucode" => self.error(
                n,
                format!(
                    "{key}= describes a Xen dom0, which dtvisor does not boot from the .cfg: give the domains in the DTB, their modules with xen,uefi-binary"
                ),
            ),
            _ => self.warn(n, format!("key {key} is not used by dtvisor, ignored")),
        }
    }

    /// The section to boot with (`default=`, else the first), or every
    /// error.
    fn finish(mut self) -> Result<(Boot, Vec<CfgError>), Vec<CfgError>> {
        let chosen = match &self.default {
            Some((name, n)) => {
                let found = self.sections.iter().position(|s| &s.name == name);
                if found.is_none() {
                    let (name, n) = (name.clone(), *n);
                    self.error(n, format!("default={name}: there is no section [{name}]"));
                }
                found
            }
            None => (!self.sections.is_empty()).then_some(0),
        };
        if chosen.is_none() && self.errors.is_empty() {
            self.error(
                0,
                "no section to boot with: add [global] default=NAME and a [NAME] section".into(),
            );
        }
        match chosen {
            Some(i) if self.errors.is_empty() => {
                let s = self.sections.swap_remove(i);
                Ok((
                    Boot {
                        section: s.name,
                        options: s.options,
                        dtb: s.dtb,
                    },
                    self.warnings,
                ))
            }
            _ => Err(self.errors),
        }
    }
}

/// Xen's rule: a firmware DTB (`fw`) that already holds boot modules is
/// the whole configuration and the `.cfg` is not read, unless its /chosen
/// has `xen,uefi-cfg-load`.
pub fn reads_cfg(fw: Option<&Fdt<'_>>) -> bool {
    let Some(chosen) = fw.and_then(|f| f.find("/chosen")) else {
        return true;
    };
    let modules = chosen.descendants().take(4096).any(|n| {
        n.prop("compatible").is_some_and(|c| {
            c.strings()
                .any(|s| s == "multiboot,module" || s.starts_with("module,"))
        })
    });
    !modules || chosen.prop("xen,uefi-cfg-load").is_some()
}

/// RAM ranges (start, bytes) sorted, and adjacent ones merged: the memory
/// node the stub writes from the firmware's memory map.
pub fn merge_ram(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.into_iter().collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, s) in v {
        match out.last_mut() {
            Some((la, ls)) if *la + *ls == a => *ls += s,
            _ => out.push((a, s)),
        }
    }
    out
}

/// The `.cfg` beside an image at `path` (an EFI path, `\` separated):
/// `\EFI\BOOT\BOOTAA64.EFI` -> `\EFI\BOOT\BOOTAA64.cfg`.
pub fn cfg_path(image_path: &str) -> String {
    let stem = match image_path.rfind('.') {
        Some(dot) if !image_path[dot..].contains('\\') => &image_path[..dot],
        _ => image_path,
    };
    format!("{stem}.cfg")
}

/// A file named in the `.cfg` or a DTB, relative to the image's
/// directory unless it starts with `\` (or `/`, taken as `\`).
pub fn beside(image_path: &str, file: &str) -> String {
    let file = file.replace('/', "\\");
    if file.starts_with('\\') {
        return file;
    }
    match image_path.rfind('\\') {
        Some(i) => format!("{}\\{file}", &image_path[..i]),
        None => format!("\\{file}"),
    }
}

/// A `reg` value: each (address, size) in `cells` (#address-cells,
/// #size-cells; 1 or 2 each, big-endian as the DT spec has it).
pub fn reg(ranges: &[(u64, u64)], cells: (u32, u32)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |v: u64, n: u32| {
        if n >= 2 {
            out.extend_from_slice(&((v >> 32) as u32).to_be_bytes());
        }
        out.extend_from_slice(&(v as u32).to_be_bytes());
    };
    for &(a, s) in ranges {
        push(a, cells.0);
        push(s, cells.1);
    }
    out
}

/// A module node that names its file with `xen,uefi-binary`: the EFI
/// stub loads the file and writes the node's `reg` in `cells` (its
/// parent's `#address-cells`/`#size-cells`, inherited as the parser
/// reads them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UefiBinary {
    pub node: String,
    pub file: String,
    pub cells: (u32, u32),
}

/// Every `xen,uefi-binary` node under /chosen (domains, their modules,
/// the hyperlaunch container; as deep as the parser reads), in path order.
pub fn uefi_binaries(fdt: &crate::fdt::Fdt<'_>) -> Vec<UefiBinary> {
    let mut out = Vec::new();
    let Some(chosen) = fdt.find("/chosen") else {
        return out;
    };
    let mut stack = alloc::vec![(chosen, String::from("/chosen"), (2u32, 2u32), 0usize)];
    while let Some((n, path, inherited, depth)) = stack.pop() {
        let (a, s) = n.cells();
        let cells = (a.unwrap_or(inherited.0), s.unwrap_or(inherited.1));
        for c in n.children() {
            let cpath = format!("{path}/{}", c.name());
            if let Some(file) = c.prop("xen,uefi-binary").and_then(|p| p.str()) {
                out.push(UefiBinary {
                    node: cpath.clone(),
                    file: file.to_string(),
                    cells,
                });
            }
            if depth < 4 {
                stack.push((c, cpath, cells, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firmware_dtb_with_modules_is_the_whole_configuration() {
        let dtb = |chosen: &str| {
            crate::testing::dtc(&format!(
                "/dts-v1/; / {{ #address-cells = <2>; #size-cells = <2>; chosen {{ {chosen} }}; }};"
            ))
        };
        let module = r#"domU1 { compatible = "xen,domain"; k { compatible = "multiboot,kernel", "multiboot,module"; }; };"#;
        let hl = r#"hypervisor { compatible = "hypervisor,xen"; d { m { compatible = "module,kernel"; }; }; };"#;
        assert!(reads_cfg(None));
        let plain = dtb("");
        assert!(reads_cfg(Some(&Fdt::new(&plain).unwrap())));
        for m in [module, hl] {
            let b = dtb(m);
            assert!(!reads_cfg(Some(&Fdt::new(&b).unwrap())), "{m}");
            let b = dtb(&format!("xen,uefi-cfg-load; {m}"));
            assert!(reads_cfg(Some(&Fdt::new(&b).unwrap())), "{m}");
        }
    }

    #[test]
    fn memory_map_ranges_sorted_and_merged() {
        let got = merge_ram([
            (0x5000, 0x1000),
            (0x4000_0000, 0x1000),
            (0x4000, 0x1000),
            (0x7000, 0x1000),
        ]);
        assert_eq!(
            got,
            [(0x4000, 0x2000), (0x7000, 0x1000), (0x4000_0000, 0x1000)]
        );
        assert!(merge_ram([]).is_empty());
    }

    #[test]
    fn xen_style_file() {
        let (b, w) = parse(
            "# dtvisor\n[global]\ndefault=two\n\n[one]\noptions=loglvl=debug\n[two]\noptions=console=dtuart loglvl=info\ndtb=virt.dtb # the system\n",
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(b.section, "two");
        assert_eq!(b.options.as_deref(), Some("console=dtuart loglvl=info"));
        assert_eq!(b.dtb.as_deref(), Some("virt.dtb"));
    }

    #[test]
    fn first_section_without_default_and_no_dtb() {
        let (b, _) = parse("[dtvisor]\noptions=\n").unwrap();
        assert_eq!(b.section, "dtvisor");
        assert_eq!(b.dtb, None);
        assert_eq!(b.options.as_deref(), Some(""));
    }

    #[test]
    fn every_error_with_its_line() {
        let e =
            parse("[global]\ndefault=nope\n[a]\nkernel=vmlinuz\njunk\n[a]\n[\ndtb=\n").unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8, 2], "{e:?}");
        assert!(e[0].message.contains("dom0"));
        assert!(e[5].message.contains("no section [nope]"));
    }

    #[test]
    fn unknown_keys_are_warnings_and_empty_file_is_an_error() {
        let (_, w) = parse("[global]\ntimeout=3\n[x]\nchain=foo\n").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(parse("").unwrap_err()[0].line, 0);
    }

    #[test]
    fn uefi_binary_nodes_with_their_cells() {
        let blob = crate::fdt::tests::dtc(
            r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
  chosen { #address-cells = <2>; #size-cells = <2>;
    domU1 { compatible = "xen,domain"; #size-cells = <1>;
      kernel { compatible = "multiboot,kernel", "multiboot,module"; xen,uefi-binary = "Image"; };
      rd { compatible = "multiboot,ramdisk", "multiboot,module"; reg = <0x0 0x1000 0x100>; }; };
    hypervisor { compatible = "hypervisor,xen"; #address-cells = <1>; #size-cells = <1>;
      d { k { compatible = "module,kernel"; xen,uefi-binary = "k.bin"; }; }; };
  };
};
"#,
        );
        let f = crate::fdt::Fdt::new(&blob).unwrap();
        let v = uefi_binaries(&f);
        assert_eq!(
            v,
            [
                UefiBinary {
                    node: "/chosen/domU1/kernel".into(),
                    file: "Image".into(),
                    cells: (2, 1)
                },
                UefiBinary {
                    node: "/chosen/hypervisor/d/k".into(),
                    file: "k.bin".into(),
                    cells: (1, 1)
                },
            ]
        );
    }

    #[test]
    fn reg_values_in_one_and_two_cells() {
        assert_eq!(
            reg(&[(0x1_2345_6789, 0x10)], (2, 1)),
            [0, 0, 0, 1, 0x23, 0x45, 0x67, 0x89, 0, 0, 0, 0x10]
        );
        assert_eq!(reg(&[(0x40, 8), (0x80, 4)], (1, 1)).len(), 16);
    }

    #[test]
    fn paths_beside_the_image() {
        assert_eq!(
            cfg_path("\\EFI\\BOOT\\BOOTAA64.EFI"),
            "\\EFI\\BOOT\\BOOTAA64.cfg"
        );
        assert_eq!(cfg_path("\\dtvisor"), "\\dtvisor.cfg");
        assert_eq!(
            beside("\\EFI\\BOOT\\BOOTAA64.EFI", "virt.dtb"),
            "\\EFI\\BOOT\\virt.dtb"
        );
        assert_eq!(
            beside("\\EFI\\BOOT\\BOOTAA64.EFI", "/boot/Image"),
            "\\boot\\Image"
        );
        assert_eq!(
            beside("\\EFI\\BOOT\\BOOTAA64.EFI", "sub/x.dtb"),
            "\\EFI\\BOOT\\sub\\x.dtb"
        );
    }
}
