//! Host discovery over real device trees: QEMU virt dumps and the board
//! DTBs of Debian's arm64 kernel package (fetched by
//! scripts/fetch-test-dtbs into the ignored cache/).

use dtvisor::fdt::Fdt;
use dtvisor::hw::{Conduit, GicVersion, Platform, UartKind};
use std::path::{Path, PathBuf};

fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cache/dtbs")
}

fn load(rel: &str) -> Option<Vec<u8>> {
    let p = cache().join(rel);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) if std::env::var("DTVISOR_SKIP_DTB_CORPUS").is_ok() => {
            eprintln!("skipped: {} missing", p.display());
            None
        }
        Err(e) => panic!(
            "{}: {e}: run scripts/fetch-test-dtbs (or set DTVISOR_SKIP_DTB_CORPUS=1)",
            p.display()
        ),
    }
}

fn discover(b: &[u8]) -> Platform {
    Platform::discover(&Fdt::new(b).unwrap()).unwrap()
}

#[test]
fn qemu_virt_gicv3() {
    let Some(b) = load("qemu/virt-gicv3-smp4.dtb") else {
        return;
    };
    let p = discover(&b);
    assert_eq!(p.memory.ram.iter().map(|r| r.size()).sum::<u64>(), 2 << 30);
    assert_eq!(p.memory.ram[0].start, 0x4000_0000);
    assert_eq!(
        p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let g = p.gic.as_ref().unwrap();
    assert_eq!(g.version, GicVersion::V3);
    assert_eq!(g.gicd.start, 0x0800_0000);
    assert_eq!(g.gicr[0].start, 0x080a_0000);
    assert_eq!(p.psci, Some(Conduit::Smc));
    let c = p.console.as_ref().unwrap();
    assert_eq!(c.uart.unwrap().kind, UartKind::Pl011);
    assert_eq!(c.uart.unwrap().base, 0x0900_0000);
    assert_eq!(p.timer.as_ref().unwrap().intids.len(), 4);
    assert_eq!(
        p.summary(),
        "4 CPUs, 2 GiB RAM, GICv3, console pl011 at 0x9000000"
    );
}

#[test]
fn qemu_virt_gicv2_and_smp1() {
    let Some(b) = load("qemu/virt-gicv2-smp4.dtb") else {
        return;
    };
    let p = discover(&b);
    let g = p.gic.as_ref().unwrap();
    assert_eq!(g.version, GicVersion::V2);
    assert_eq!(g.gicd.start, 0x0800_0000);
    assert_eq!(g.gicc.unwrap().start, 0x0801_0000);
    assert!(g.gich.is_some() && g.gicv.is_some());
    let Some(b) = load("qemu/virt-gicv3-smp1.dtb") else {
        return;
    };
    assert_eq!(discover(&b).cpus.len(), 1);
}

/// Every board DTB Debian ships: discovery returns Ok or Err, never panics.
#[test]
fn debian_board_corpus_never_panics() {
    let dir = cache().join("debian");
    if !dir.exists() {
        if std::env::var("DTVISOR_SKIP_DTB_CORPUS").is_ok() {
            return;
        }
        panic!("{} missing: run scripts/fetch-test-dtbs", dir.display());
    }
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dtb") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(
        files.len() > 500,
        "expected Debian's ~577 board DTBs, found {}",
        files.len()
    );
    let (mut ok, mut err, mut bad_fdt) = (0, 0, 0);
    let mut panics = Vec::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for f in &files {
        let blob = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| {
            let Ok(fdt) = Fdt::new(&blob) else {
                return None;
            };
            let _ = fdt.root().descendants().count();
            let _ = dtvisor::config::parse_blob(&blob);
            Some(
                Platform::discover(&fdt)
                    .map(|p| p.summary())
                    .map_err(|e| e[0].message.clone()),
            )
        });
        match r {
            Err(_) => panics.push(f.display().to_string()),
            Ok(None) => bad_fdt += 1,
            Ok(Some(Ok(_))) => ok += 1,
            Ok(Some(Err(m))) => {
                err += 1;
                *kinds
                    .entry(m.split(',').next().unwrap_or("").to_string())
                    .or_default() += 1;
            }
        }
    }
    println!(
        "discovery over {} Debian DTBs: {ok} ok, {err} refused, {bad_fdt} invalid FDT",
        files.len()
    );
    for (k, n) in &kinds {
        println!("  {n:4}  {k}");
    }
    assert!(
        panics.is_empty(),
        "discovery panicked on {} files:\n{}",
        panics.len(),
        panics.join("\n")
    );
    assert_eq!(bad_fdt, 0);
}

fn board(rel: &str) -> Option<Platform> {
    load(&format!("debian/{rel}.dtb")).map(|b| discover(&b))
}

#[test]
fn raspberry_pi_4() {
    let Some(p) = board("broadcom/bcm2711-rpi-4-b") else {
        return;
    };
    assert_eq!(p.cpus.len(), 4);
    let g = p.gic.unwrap();
    assert_eq!(g.version, GicVersion::V2);
    // GIC-400 at 0x40041000 on the ARM side of the /soc ranges translation.
    assert_eq!(g.gicd.start, 0xff84_1000);
    // What the vGICv2 needs: the CPU interface, GICH, GICV, maintenance.
    println!(
        "rpi4 gic {:?} {:?} {:?} {:?}",
        g.gicc, g.gich, g.gicv, g.maintenance
    );
    assert_eq!(g.gicc.map(|r| r.start), Some(0xff84_2000));
    assert_eq!(g.gich.map(|r| r.start), Some(0xff84_4000));
    assert_eq!(g.gicv.map(|r| r.start), Some(0xff84_6000));
    assert!(
        g.gicv.unwrap().size() >= 0x2000,
        "GICV covers the guest's 8 KiB GICC"
    );
    assert_eq!(g.maintenance, Some(25), "PPI 9");
    let c = p.console.unwrap();
    let u = c.uart.unwrap();
    println!("rpi4 console {} {:?} {:#x}", c.path, u.kind, u.base);
    assert_eq!(u.base, 0xfe21_5040);
    assert!(matches!(u.kind, UartKind::Ns16550 { reg_shift: 2, .. }));
}

#[test]
fn imx8mq_evk() {
    let Some(p) = board("freescale/imx8mq-evk") else {
        return;
    };
    assert_eq!(p.cpus.len(), 4);
    assert_eq!(p.gic.unwrap().version, GicVersion::V3);
    let c = p.console.unwrap();
    println!("imx8mq console {}", c.path);
    let u = c.uart.unwrap();
    assert_eq!(
        u.kind,
        UartKind::Imx,
        "fsl,imx6q-uart after fsl,imx8mq-uart"
    );
    assert_eq!(u.base, 0x3086_0000);
}

#[test]
fn zynqmp_zcu102() {
    let Some(p) = board("xilinx/zynqmp-zcu102-rev1.0") else {
        return;
    };
    assert_eq!(p.cpus.len(), 4);
    let g = p.gic.unwrap();
    assert_eq!(g.version, GicVersion::V2);
    assert_eq!(g.gicd.start, 0xf901_0000);
    println!(
        "zcu102 gic {:?} {:?} {:?} {:?}",
        g.gicc, g.gich, g.gicv, g.maintenance
    );
    assert_eq!(g.gicc.map(|r| r.start), Some(0xf902_0000));
    assert_eq!(g.gich.map(|r| r.start), Some(0xf904_0000));
    assert_eq!(g.gicv.map(|r| r.start), Some(0xf906_0000));
    assert!(g.gicv.unwrap().size() >= 0x2000);
    assert_eq!(g.maintenance, Some(25), "PPI 9");
    let u = p.console.unwrap().uart.unwrap();
    assert_eq!(u.kind, UartKind::Cadence);
    assert_eq!(u.base, 0xff00_0000);
}

#[test]
fn juno() {
    let Some(p) = board("arm/juno") else { return };
    assert_eq!(p.cpus.len(), 6);
    assert!(p.cpus.iter().any(|c| c.mpidr == 0x100));
    assert_eq!(p.gic.unwrap().version, GicVersion::V2);
    assert_eq!(p.console.unwrap().uart.unwrap().kind, UartKind::Pl011);
}
