//! The boards of `platform/`, on the host: each board's real DTB
//! (Debian's arm64 board DTBs, fetched by scripts/fetch-test-dtbs; QEMU
//! virt's own dump), discovery, then the board's `config` through
//! `dtvisor-plan mkboot` and the generated script through the pre-flight
//! check (`dtvisor-plan check --script`): console, GIC, RAM and CPUs are
//! found and the two example domains' plan fits. Files are stand-ins of
//! the real sizes (an arm64 Image header, sparse); the plan does not read
//! them beyond their size and header.

use dtvisor::fdt::Fdt;
use dtvisor::hw::{GicVersion, Platform, UartKind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository (this package is src/bin/dtvisor-plan in it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

struct Board {
    dir: &'static str,
    dtb: &'static str,
    cpus: usize,
    gic: GicVersion,
    uart: UartKind,
    console: u64,
    /// Boards whose firmware fills /memory (the Pi 4): RAM to put there, as
    /// U-Boot passes the DTB.
    memory: Option<(u64, u64)>,
    /// dts/<this>/partial holds the sources of the partial device trees
    /// the config passes through (`DOMU_PASSTHROUGH_DTB[n]="NAME.dtb"`
    /// from NAME.dts).
    partials: Option<&'static str>,
}

const BOARDS: &[Board] = &[
    Board {
        dir: "qemu-virt",
        dtb: QEMU_VIRT,
        cpus: 4,
        gic: GicVersion::V3,
        uart: UartKind::Pl011,
        console: 0x0900_0000,
        memory: None,
        partials: None,
    },
    Board {
        dir: "raspberrypi4",
        dtb: "debian/broadcom/bcm2711-rpi-4-b.dtb",
        cpus: 4,
        gic: GicVersion::V2,
        uart: UartKind::Ns16550 {
            reg_shift: 2,
            reg_io_width: 4,
        },
        console: 0xfe21_5040,
        memory: Some((0, 0x3b40_0000)),
        partials: Some("raspi4b"),
    },
    Board {
        dir: "xilinx-zcu102",
        dtb: "debian/xilinx/zynqmp-zcu102-rev1.0.dtb",
        cpus: 4,
        gic: GicVersion::V2,
        uart: UartKind::Cadence,
        console: 0xff00_0000,
        memory: None,
        partials: None,
    },
    Board {
        dir: "nxp-imx8mq-evk",
        dtb: "debian/freescale/imx8mq-evk.dtb",
        cpus: 4,
        gic: GicVersion::V3,
        uart: UartKind::Imx,
        console: 0x3086_0000,
        memory: None,
        partials: None,
    },
    Board {
        dir: "nxp-imx8mp-evk",
        dtb: "debian/freescale/imx8mp-evk.dtb",
        cpus: 4,
        gic: GicVersion::V3,
        uart: UartKind::Imx,
        console: 0x3089_0000,
        memory: None,
        partials: Some("imx8mp-evk"),
    },
];

/// QEMU virt's own DTB (dumped by QEMU: the tests' machine shape).
const QEMU_VIRT: &str = "qemu";

fn dtb_path(rel: &str) -> Option<PathBuf> {
    if rel == QEMU_VIRT {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-virt.dtb");
        let o = sh(Command::new("qemu-system-aarch64")
            .arg("-machine")
            .arg(format!(
                "virt,virtualization=on,gic-version=3,dumpdtb={}",
                p.display()
            ))
            .args([
                "-cpu",
                "cortex-a57",
                "-smp",
                "4",
                "-m",
                "2G",
                "-nographic",
                "-nic",
                "none",
            ]));
        assert!(
            p.exists(),
            "QEMU did not dump its DTB: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return Some(p);
    }
    let p = root().join("cache/dtbs").join(rel);
    if p.exists() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "{} missing: scripts/fetch-test-dtbs fetches it",
            p.display()
        );
    } else {
        eprintln!("skipped: {} missing (scripts/fetch-test-dtbs)", p.display());
        None
    }
}

fn sh(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("runs")
}

/// The DTB as U-Boot passes it: `/memory@0` filled in where the firmware
/// does that.
fn board_dtb(b: &Board, src: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("board.dtb");
    match b.memory {
        None => {
            std::fs::copy(src, &out).unwrap();
        }
        Some((start, size)) => {
            let dts = sh(Command::new("dtc")
                .args(["-q", "-I", "dtb", "-O", "dts"])
                .arg(src));
            let mut text = String::from_utf8(dts.stdout).unwrap();
            // The root's cells as the board sets them (the Pi: 2 and 1).
            let raw = std::fs::read(src).unwrap();
            let f = Fdt::new(&raw).unwrap();
            let (ac, sc) = f.root().cells();
            let cells = |v: u64, n: u32| match n {
                1 => format!("{v:#x}"),
                _ => format!("{:#x} {:#x}", v >> 32, v & 0xffff_ffff),
            };
            text += &format!(
                "/ {{ memory@0 {{ reg = <{} {}>; }}; }};\n",
                cells(start, ac.unwrap_or(2)),
                cells(size, sc.unwrap_or(1))
            );
            let file = dir.join("board.dts");
            std::fs::write(&file, text).unwrap();
            let o = sh(Command::new("dtc")
                .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
                .arg(&out)
                .arg(&file));
            assert!(
                o.status.success(),
                "dtc: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    out
}

/// Files of a deployment, as stand-ins: the image and the kernel with an
/// arm64 Image header (image_size as the real ones), sparse to their size.
fn stage(dir: &Path, board_dtb: &Path, dtb_name: &str) {
    let image = |path: &Path, size: u64, image_size: u64| {
        let mut h = vec![0u8; 64];
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&0xau64.to_le_bytes());
        h[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(path, &h).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(size)
            .unwrap();
    };
    image(&dir.join("dtvisor.bin"), 230 << 10, 0xae000);
    image(&dir.join("Image"), 33 << 20, 35 << 20);
    let rd = std::fs::File::create(dir.join("initramfs.cpio.gz")).unwrap();
    rd.set_len(1536 << 10).unwrap();
    std::fs::copy(board_dtb, dir.join(dtb_name)).unwrap();
}

/// The partial device trees the config names, compiled from the board's
/// sources in dts/ as a user deploying it does (`dtc -o NAME.dtb NAME.dts`).
fn stage_partials(b: &Board, cfg: &str, dir: &Path) {
    for line in cfg
        .lines()
        .filter(|l| l.starts_with("DOMU_PASSTHROUGH_DTB["))
    {
        let name = line.split_once('=').unwrap().1.trim_matches('"');
        let src = root()
            .join("dts")
            .join(
                b.partials
                    .expect("the board's partial device trees in dts/"),
            )
            .join("partial")
            .join(name.replace(".dtb", ".dts"));
        let o = sh(Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
            .arg(dir.join(name))
            .arg(&src));
        assert!(
            o.status.success(),
            "dtc {}: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn plan_tool() -> &'static str {
    env!("CARGO_BIN_EXE_dtvisor-plan")
}

#[test]
fn boards_are_found_and_their_example_scripts_plan() {
    for b in BOARDS {
        let Some(src) = dtb_path(b.dtb) else { continue };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("board-{}", b.dir));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dtb = board_dtb(b, &src, &dir);
        // Discovery on the board's DTB.
        let blob = std::fs::read(&dtb).unwrap();
        let p = Platform::discover(&Fdt::new(&blob).unwrap())
            .unwrap_or_else(|e| panic!("{}: discovery failed: {e:?}", b.dir));
        assert_eq!(p.cpus.len(), b.cpus, "{}: CPUs", b.dir);
        assert_eq!(
            p.gic.as_ref().map(|g| g.version),
            Some(b.gic),
            "{}: GIC",
            b.dir
        );
        let u = p
            .console
            .as_ref()
            .and_then(|c| c.uart)
            .expect("a console UART");
        assert_eq!((u.kind, u.base), (b.uart, b.console), "{}: console", b.dir);
        assert!(!p.memory.ram.is_empty(), "{}: no RAM", b.dir);
        // The board's config: a script that fits, and its plan.
        let cfg_text =
            std::fs::read_to_string(root().join("platform").join(b.dir).join("config")).unwrap();
        let dtb_name = cfg_text
            .lines()
            .find_map(|l| l.strip_prefix("DEVICE_TREE="))
            .map(|v| v.trim_matches('"').to_string())
            .expect("DEVICE_TREE in the config");
        stage(&dir, &dtb, &dtb_name);
        stage_partials(b, &cfg_text, &dir);
        let cfg = dir.join("config");
        std::fs::write(&cfg, &cfg_text).unwrap();
        let o = sh(Command::new(plan_tool()).arg("mkboot").arg(&cfg));
        assert!(
            o.status.success(),
            "{}: mkboot failed:\n{}{}",
            b.dir,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = sh(Command::new(plan_tool())
            .arg("check")
            .arg(&dtb)
            .arg("--script")
            .arg(dir.join("boot.cmd"))
            .arg("--files")
            .arg(&dir));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{}: the plan of its script:\n{text}",
            b.dir
        );
        assert!(
            text.starts_with("boot plan: 2 domains (dom0less)"),
            "{}:\n{text}",
            b.dir
        );
        assert!(!text.contains("error:"), "{}:\n{text}", b.dir);
        if b.partials.is_some() {
            assert!(
                text.contains("  device /passthrough/serial@"),
                "{}: the passed-through UART is not in the plan:\n{text}",
                b.dir
            );
        }
        fits(b, &dir, &blob);
    }
}

/// The edited DTB placed as the image places it: guest RAM, kernel,
/// initrd and DTB slots, pCPUs.
fn fits(b: &Board, dir: &Path, board: &[u8]) {
    let script = std::fs::read_to_string(dir.join("boot.cmd")).unwrap();
    let size = |f: &str| std::fs::metadata(dir.join(f)).ok().map(|m| m.len());
    let out = dtvisor_plan::uboot::run(&script, board, &size, &[]);
    assert!(out.errors.is_empty(), "{}: {:?}", b.dir, out.errors);
    let dtb = out.tree.expect("fdt addr").to_dtb().unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let plat = Platform::discover(&fdt).unwrap();
    let plan = dtvisor::config::parse(&fdt, &plat.memory)
        .plan
        .expect("a plan");
    let heads: Vec<(u64, Vec<u8>)> = out
        .loads
        .iter()
        .map(|l| {
            // Headers of the big files; small ones (partial device
            // trees, which the build copies into a guest's DTB) whole.
            let mut h = std::fs::read(dir.join(&l.file)).unwrap();
            if h.len() > 64 << 10 {
                h.truncate(64);
            }
            (l.addr, h)
        })
        .collect();
    let head = |r: dtvisor::mm::Range| -> &[u8] {
        heads
            .iter()
            .find(|(a, _)| *a == r.start)
            .map_or(&[][..], |(_, h)| &h[..h.len().min(r.size() as usize)])
    };
    let gic = plat.gic.as_ref().map_or(GicVersion::V3, |g| g.version);
    let mpidrs: Vec<u64> = plat.cpus.iter().map(|c| c.mpidr).collect();
    let built = dtvisor::vm::build::build(&plat, &plan, &mpidrs, gic, &head, &mut |_| 0);
    let (layout, specs) = built.unwrap_or_else(|e| panic!("{}: does not fit: {e:?}", b.dir));
    assert_eq!(specs.len(), 2, "{}", b.dir);
    for (d, s) in layout.domains.iter().zip(&specs) {
        let ram: u64 = d.ram.iter().map(|m| m.ipa.size()).sum();
        assert!(ram >= 192 << 20, "{}: {} got {ram:#x} bytes", b.dir, s.name);
    }
}

/// The pre-flight check's errors name the script line behind them: a
/// property the parser refuses, a module `reg` shorter than the file the
/// script loads there, and a command U-Boot scripts use that the check
/// cannot follow.
#[test]
fn preflight_errors_name_the_script_line() {
    let b = &BOARDS[0];
    let src = dtb_path(b.dtb).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("board-preflight");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dtb = board_dtb(b, &src, &dir);
    stage(&dir, &dtb, "virt.dtb");
    let cfg = dir.join("config");
    std::fs::copy(root().join("platform/qemu-virt/config"), &cfg).unwrap();
    assert!(sh(Command::new(plan_tool()).arg("mkboot").arg(&cfg))
        .status
        .success());
    let good = std::fs::read_to_string(dir.join("boot.cmd")).unwrap();
    let line_of = |needle: &str| good.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let mem = line_of("fdt set /chosen/domU1 memory");
    let reg = good
        .lines()
        .position(|l| l.contains("multiboot,ramdisk"))
        .map(|i| i + 2)
        .unwrap();
    let edit = |f: &dyn Fn(usize, &str) -> String| -> String {
        good.lines().enumerate().map(|(i, l)| f(i + 1, l)).collect()
    };
    let run = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap();
        let o = sh(Command::new(plan_tool())
            .arg("check")
            .arg(&dtb)
            .arg("--script")
            .arg(dir.join(name))
            .arg("--files")
            .arg(&dir));
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = run(
        "bad1.cmd",
        edit(&|n, l| match n {
            _ if n == mem => "fdt set /chosen/domU1 memory <0x30000>\n".into(),
            _ if l.starts_with("setenv fdt_high") => format!("if true; then echo x; fi\n{l}\n"),
            _ => format!("{l}\n"),
        }),
    );
    assert!(
        text.contains("memory: expected 2 cells")
            && text.contains(&format!("bad1.cmd line {mem}:")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("error: bad1.cmd line") && l.contains("if true")),
        "{text}"
    );
    // The shared ramdisk's reg, cut in both domains.
    let reg_text = good.lines().nth(reg - 1).unwrap();
    let reg_value = &reg_text[reg_text.find("reg <").unwrap()..];
    let text = run(
        "bad2.cmd",
        edit(&|_, l| match l.strip_suffix(reg_value) {
            Some(head) => format!("{head}{} 0x1000>\n", reg_value.rsplit_once(' ').unwrap().0),
            None => format!("{l}\n"),
        }),
    );
    assert!(
        text.contains("the module is cut short") && text.contains(&format!("bad2.cmd line {reg}:")),
        "{text}"
    );
}
