//! `dtvisor-plan mkboot CONFIG`: writes a U-Boot boot script (`boot.cmd`,
//! and `boot.scr` with mkimage) that loads the hypervisor, the board's DTB
//! and every domain's files, builds the domain nodes with `fdt` commands,
//! and runs `booti`; optionally a partitioned FAT disk image holding it all.
//!
//! The config is ImageBuilder's (`uboot-script-gen`): shell-style
//! `KEY=value` and `KEY[n]=value` lines, so an existing ImageBuilder config
//! works (`XEN=` names the hypervisor image, here dtvisor's). Every file is
//! loaded at a 2 MiB aligned address from MEMORY_START + 2 MiB up, in the
//! order hypervisor, DTB, then each domain's kernel, ramdisk and partial
//! DTB; the hypervisor's slot covers its header's image_size (BSS and
//! stacks included). Nothing may overlap or pass MEMORY_END.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB2: u64 = 2 << 20;
/// Bytes `fdt resize` adds to the board DTB for the domain nodes.
const DTB_ROOM: u64 = 64 << 10;

/// The config, as ImageBuilder writes it: scalars and indexed arrays.
#[derive(Default, Debug)]
pub struct Config {
    vars: BTreeMap<String, String>,
    /// Where relative file names are looked up (the config's directory).
    pub base: PathBuf,
}

impl Config {
    /// Parses `text`: `KEY=value` / `KEY[n]=value`, values optionally in
    /// single or double quotes, `#` comments, blank lines.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let mut c = Config {
            base: base.to_path_buf(),
            ..Config::default()
        };
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected KEY=value, found {raw:?}", n + 1));
            };
            let key = key.trim();
            let ok_key = key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_[]".contains(ch));
            if key.is_empty() || !ok_key {
                return Err(format!("line {}: {key:?} is not a variable name", n + 1));
            }
            let v = value.trim();
            let v = match (v.chars().next(), v.chars().last()) {
                (Some(q @ ('"' | '\'')), Some(e)) if v.len() >= 2 && e == q => &v[1..v.len() - 1],
                _ => v.split(" #").next().unwrap_or(v).trim(),
            };
            c.vars.insert(key.to_string(), v.to_string());
        }
        Ok(c)
    }

    /// Keys this generator does not use (ImageBuilder has more: dom0,
    /// overlays, Xen-only settings), for a warning each.
    pub fn unused(&self) -> Vec<&str> {
        const KNOWN: &[&str] = &[
            "MEMORY_START",
            "MEMORY_END",
            "LOAD_CMD",
            "DEVICE_TREE",
            "XEN",
            "DTVISOR",
            "XEN_CMD",
            "DTVISOR_CMD",
            "NUM_DOMUS",
            "DOMU_KERNEL",
            "DOMU_RAMDISK",
            "DOMU_PASSTHROUGH_DTB",
            "DOMU_MEM",
            "DOMU_VCPUS",
            "DOMU_CMD",
            "DOMU_NAME",
            "DOMU_VPL011",
            "DOMU_STATIC_MEM",
            "DOMU_DIRECT_MAP",
            "DTVISOR_FORM",
            "UBOOT_SOURCE",
            "UBOOT_SCRIPT",
        ];
        self.vars
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN.contains(&k.split('[').next().unwrap_or(k)))
            .collect()
    }

    /// A file name setting, or its default.
    pub fn file<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn at(&self, key: &str, i: usize) -> Option<&str> {
        self.get(&format!("{key}[{i}]"))
    }

    fn num(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key).map(|v| parse_num(key, v)).transpose()
    }

    fn num_at(&self, key: &str, i: usize) -> Result<Option<u64>, String> {
        let k = format!("{key}[{i}]");
        self.get(&k).map(|v| parse_num(&k, v)).transpose()
    }

    fn path(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

fn parse_num(key: &str, v: &str) -> Result<u64, String> {
    let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("{key}: expected a number, found {v:?}"))
}

/// One file the script loads.
#[derive(Clone, Debug)]
pub struct Item {
    /// Its name as the script loads it (relative to the partition root).
    pub name: String,
    pub path: PathBuf,
    pub addr: u64,
    pub size: u64,
    /// The bytes reserved for it (its slot).
    pub slot: u64,
    pub what: String,
}

/// The generated script and what it loads.
pub struct Generated {
    pub script: String,
    pub items: Vec<Item>,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn cells(v: u64) -> String {
    format!("0x{:x} 0x{:x}", v >> 32, v & 0xffff_ffff)
}

/// A `fdt set` string value, quoted for U-Boot's shell.
fn quoted(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
    )
}

/// The arm64 Image header's image_size (0: unknown), from a file.
fn image_size(path: &Path) -> u64 {
    let Ok(b) = std::fs::read(path) else { return 0 };
    dtvisor::vm::image::ImageHeader::parse(&b).map_or(0, |h| h.image_size)
}

/// Files placed one after the other in 2 MiB aligned slots.
struct Placer<'c> {
    c: &'c Config,
    next: u64,
    items: Vec<Item>,
}

impl Placer<'_> {
    /// Places file `name`; `extra` bytes of room after it, a slot of at
    /// least `min_slot`. Returns its index.
    fn add(
        &mut self,
        name: &str,
        what: String,
        extra: u64,
        min_slot: u64,
        errors: &mut Vec<String>,
    ) -> usize {
        // The same file for two domains (a shared kernel): loaded once,
        // one read-only source for both.
        if let Some(i) = self.items.iter().position(|i| i.name == name && extra == 0) {
            return i;
        }
        let path = self.c.path(name);
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) => {
                errors.push(format!("{what}: {}: {e}", path.display()));
                0
            }
        };
        let slot = align_up((size + extra).max(min_slot).max(1), MIB2);
        self.items.push(Item {
            name: name.to_string(),
            path,
            addr: self.next,
            size,
            slot,
            what,
        });
        self.next += slot;
        self.items.len() - 1
    }
}

fn num_or(errors: &mut Vec<String>, r: Result<Option<u64>, String>) -> Option<u64> {
    r.unwrap_or_else(|e| {
        errors.push(e);
        None
    })
}

/// Builds the script from the config; every problem is returned.
pub fn generate(c: &Config, config_name: &str) -> Result<Generated, Vec<String>> {
    let mut errors = Vec::new();
    let start = num_or(&mut errors, c.num("MEMORY_START"));
    let end = num_or(&mut errors, c.num("MEMORY_END"));
    let (Some(start), Some(end)) = (start, end) else {
        errors.push("MEMORY_START and MEMORY_END (the board's RAM) are required".into());
        return Err(errors);
    };
    let hyperlaunch = match c.get("DTVISOR_FORM").unwrap_or("dom0less") {
        "dom0less" => false,
        "hyperlaunch" => true,
        other => {
            errors.push(format!(
                "DTVISOR_FORM: expected dom0less or hyperlaunch, found {other:?}"
            ));
            false
        }
    };
    let mut pl = Placer {
        c,
        next: start + MIB2,
        items: Vec::new(),
    };
    let Some(hyp) = c.get("DTVISOR").or(c.get("XEN")) else {
        errors.push("XEN (or DTVISOR): the hypervisor image is required".into());
        return Err(errors);
    };
    let hyp_i = pl.add(
        hyp,
        "hypervisor".into(),
        0,
        image_size(&c.path(hyp)),
        &mut errors,
    );
    let Some(dt) = c.get("DEVICE_TREE") else {
        errors.push("DEVICE_TREE: the board's DTB is required".into());
        return Err(errors);
    };
    let dt_i = pl.add(dt, "device tree".into(), DTB_ROOM, 0, &mut errors);
    let n = match c.num("NUM_DOMUS") {
        Ok(Some(n)) if n > 0 && n <= 64 => n as usize,
        Ok(_) => {
            errors.push("NUM_DOMUS: expected 1 to 64 domains".into());
            0
        }
        Err(e) => {
            errors.push(e);
            0
        }
    };
    let mut w = Writer {
        out: String::new(),
        load: c.get("LOAD_CMD").unwrap_or("load virtio 0:1").to_string(),
        hyperlaunch,
    };
    let parent = w.header(c, config_name, &pl.items[hyp_i], &pl.items[dt_i]);
    for k in 0..n {
        w.domain(c, &mut pl, parent, k, &mut errors);
    }
    let items = pl.items;
    let dt_addr = items[dt_i].addr;
    let out = &mut w.out;
    let _ = writeln!(out, "setenv fdt_high 0xffffffffffffffff");
    let _ = writeln!(out, "booti 0x{:x} - 0x{dt_addr:x}", items[hyp_i].addr);
    check_slots(&items, hyp_i, end, &mut errors);
    if errors.is_empty() {
        Ok(Generated {
            script: w.out,
            items,
        })
    } else {
        Err(errors)
    }
}

/// The script being written: its text, the load command, the form.
struct Writer {
    out: String,
    load: String,
    hyperlaunch: bool,
}

impl Writer {
    /// Loads the hypervisor and the board's DTB, gives the DTB room and
    /// /chosen its cells, bootargs and (hyperlaunch) container. Returns
    /// the domains' parent node.
    fn header(&mut self, c: &Config, config_name: &str, hyp: &Item, d: &Item) -> &'static str {
        let (out, load) = (&mut self.out, &self.load);
        let _ = writeln!(
            out,
            "# U-Boot boot script written by dtvisor-plan mkboot from {config_name}."
        );
        let _ = writeln!(
            out,
            "# For U-Boot: mkimage -A arm64 -T script -C none -d THIS_FILE boot.scr"
        );
        let _ = writeln!(out, "{load} 0x{:x} {}", hyp.addr, hyp.name);
        let _ = writeln!(out, "{load} 0x{:x} {}", d.addr, d.name);
        let _ = writeln!(out, "fdt addr 0x{:x}", d.addr);
        let _ = writeln!(out, "fdt resize {DTB_ROOM:#x}");
        let _ = writeln!(out, "fdt set /chosen \\#address-cells <0x2>");
        let _ = writeln!(out, "fdt set /chosen \\#size-cells <0x2>");
        if let Some(cmd) = c.get("DTVISOR_CMD").or(c.get("XEN_CMD")) {
            let _ = writeln!(out, "fdt set /chosen xen,xen-bootargs {}", quoted(cmd));
        }
        if !self.hyperlaunch {
            return "/chosen";
        }
        let _ = writeln!(out, "fdt mknod /chosen hypervisor");
        let _ = writeln!(
            out,
            "fdt set /chosen/hypervisor compatible \"hypervisor,xen\""
        );
        let _ = writeln!(out, "fdt set /chosen/hypervisor \\#address-cells <0x2>");
        let _ = writeln!(out, "fdt set /chosen/hypervisor \\#size-cells <0x2>");
        "/chosen/hypervisor"
    }

    /// Domain `k`: its node and properties, then its modules.
    fn domain(
        &mut self,
        c: &Config,
        pl: &mut Placer,
        parent: &str,
        k: usize,
        errors: &mut Vec<String>,
    ) {
        let name = c
            .at("DOMU_NAME", k)
            .map_or(format!("domU{k}"), str::to_string);
        let node = format!("{parent}/{name}");
        let mem = num_or(errors, c.num_at("DOMU_MEM", k));
        let vcpus = num_or(errors, c.num_at("DOMU_VCPUS", k));
        let out = &mut self.out;
        let _ = writeln!(out, "fdt mknod {parent} {name}");
        let _ = writeln!(out, "fdt set {node} compatible \"xen,domain\"");
        let _ = writeln!(out, "fdt set {node} \\#address-cells <0x2>");
        let _ = writeln!(out, "fdt set {node} \\#size-cells <0x2>");
        let kib = mem.unwrap_or(512) << 10;
        let _ = writeln!(out, "fdt set {node} memory <{}>", cells(kib));
        let _ = writeln!(out, "fdt set {node} cpus <{}>", vcpus.unwrap_or(1));
        if c.at("DOMU_VPL011", k).is_none_or(|v| v != "0" && v != "n") {
            let _ = writeln!(out, "fdt set {node} vpl011");
        }
        if let Some(sm) = c.at("DOMU_STATIC_MEM", k) {
            let mut v = Vec::new();
            for w in sm.split_whitespace() {
                match parse_num(&format!("DOMU_STATIC_MEM[{k}]"), w) {
                    Ok(x) => v.push(cells(x)),
                    Err(e) => errors.push(e),
                }
            }
            let _ = writeln!(out, "fdt set {node} xen,static-mem <{}>", v.join(" "));
        }
        if c.at("DOMU_DIRECT_MAP", k)
            .is_some_and(|v| v == "1" || v == "y" || v == "true")
        {
            let _ = writeln!(out, "fdt set {node} direct-map");
        }
        let kinds = [
            ("DOMU_KERNEL", "kernel", true),
            ("DOMU_RAMDISK", "ramdisk", false),
            ("DOMU_PASSTHROUGH_DTB", "device-tree", false),
        ];
        for (key, kind, required) in kinds {
            let Some(file) = c.at(key, k) else {
                if required {
                    errors.push(format!("{key}[{k}]: the kernel of {name} is required"));
                }
                continue;
            };
            let before = pl.items.len();
            let idx = pl.add(file, format!("{key}[{k}]"), 0, 0, errors);
            let cmd = (kind == "kernel").then(|| c.at("DOMU_CMD", k).unwrap_or("console=ttyAMA0"));
            self.module(&node, &pl.items[idx], idx >= before, kind, cmd);
        }
    }

    /// A module node for `it` (loaded here unless an earlier domain did).
    fn module(&mut self, node: &str, it: &Item, new: bool, kind: &str, bootargs: Option<&str>) {
        let (out, load) = (&mut self.out, &self.load);
        let m = format!("{node}/module@{:x}", it.addr);
        if new {
            let _ = writeln!(out, "{load} 0x{:x} {}", it.addr, it.name);
        }
        let _ = writeln!(out, "fdt mknod {node} module@{:x}", it.addr);
        let compat = if self.hyperlaunch {
            format!("\"module,{kind}\" \"module,addr\"")
        } else {
            format!("\"multiboot,{kind}\" \"multiboot,module\"")
        };
        let _ = writeln!(out, "fdt set {m} compatible {compat}");
        let _ = writeln!(
            out,
            "fdt set {m} reg <{} {}>",
            cells(it.addr),
            cells(it.size)
        );
        if let Some(args) = bootargs {
            let _ = writeln!(out, "fdt set {m} bootargs {}", quoted(args));
        }
    }
}

/// Slots: inside RAM (below `end`), the hypervisor's image_size inside
/// its own, no two overlapping.
fn check_slots(items: &[Item], hyp_i: usize, end: u64, errors: &mut Vec<String>) {
    for it in items {
        if it.addr + it.slot > end {
            errors.push(format!(
                "{} ({}) at 0x{:x}, {} bytes: does not fit below MEMORY_END 0x{end:x}",
                it.what, it.name, it.addr, it.size
            ));
        }
    }
    let hyp_item = &items[hyp_i];
    let need = image_size(&hyp_item.path).max(hyp_item.size);
    if need > hyp_item.slot {
        errors.push(format!(
            "hypervisor: image_size {need:#x} does not fit its {:#x}-byte slot",
            hyp_item.slot
        ));
    }
    for (a, x) in items.iter().enumerate() {
        for y in &items[a + 1..] {
            if x.addr < y.addr + y.slot && y.addr < x.addr + x.slot {
                errors.push(format!("{} and {} overlap", x.what, y.what));
            }
        }
    }
}

/// `mkimage` the script into a legacy U-Boot script image.
pub fn mkimage(cmd: &Path, scr: &Path) -> Result<(), String> {
    let out = Command::new("mkimage")
        .args([
            "-A",
            "arm64",
            "-O",
            "linux",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            "dtvisor boot",
        ])
        .arg("-d")
        .arg(cmd)
        .arg(scr)
        .output()
        .map_err(|e| format!("mkimage: {e} (install u-boot-tools, or run scripts/setup)"))?;
    if !out.status.success() {
        return Err(format!(
            "mkimage failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A disk image with an MBR and one bootable FAT32 partition from 1 MiB
/// holding `files` (name on the disk, host path), for QEMU's virtio disk
/// (`load virtio 0:1`) or an SD card. Needs mtools.
pub fn fat_disk(img: &Path, files: &[(String, PathBuf)]) -> Result<(), String> {
    let total: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let size = align_up(total + (48 << 20), 1 << 20).max(64 << 20);
    let mut disk = vec![0u8; 512];
    let sectors = (size / 512 - 2048) as u32;
    let entry = &mut disk[446..462];
    entry[0] = 0x80; // bootable
    entry[4] = 0x0c; // FAT32, LBA
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    std::fs::write(img, &disk).map_err(|e| format!("{}: {e}", img.display()))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .map_err(|e| format!("{}: {e}", img.display()))?;
    f.set_len(size)
        .map_err(|e| format!("{}: {e}", img.display()))?;
    let part = format!("{}@@1M", img.display());
    let run = |args: &[&str]| -> Result<(), String> {
        let o = Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .map_err(|e| format!("{}: {e} (install mtools, or run scripts/setup)", args[0]))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    };
    run(&["mformat", "-i", &part, "-F", "::"])?;
    let mut dirs: Vec<String> = Vec::new();
    for (name, path) in files {
        let mut d = String::new();
        for comp in Path::new(name)
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
        {
            d = format!("{d}/{}", comp.as_os_str().to_string_lossy());
            if !dirs.contains(&d) {
                run(&["mmd", "-i", &part, &format!("::{d}")])?;
                dirs.push(d.clone());
            }
        }
        run(&[
            "mcopy",
            "-i",
            &part,
            &path.to_string_lossy(),
            &format!("::/{name}"),
        ])?;
    }
    Ok(())
}
