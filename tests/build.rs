//! The domain-building step (plan + machine to domains), on a small
//! dtc-compiled host tree: pCPU order, loads split along guest RAM blocks,
//! device trees kept, SPIs offered, and errors named by node path.

use dtvisor::config;
use dtvisor::fdt::Fdt;
use dtvisor::hw::platform::EnableMethod;
use dtvisor::hw::Platform;
use dtvisor::mm::Range;
use dtvisor::vm::build::{self, Load};
use dtvisor::vm::guest_dtb::GicVersion;

const HOST: &str = r#"
/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    compatible = "linux,dummy-virt";
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <0x0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <0x1>; enable-method = "psci"; };
        cpu@2 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <0x2>; enable-method = "psci"; };
        cpu@3 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <0x3>; enable-method = "psci"; };
    };
    psci { compatible = "arm,psci-1.0"; method = "smc"; };
    intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000>, <0x0 0x80a0000 0x0 0xf60000>; };
    timer { compatible = "arm,armv8-timer"; interrupts = <1 13 4>, <1 14 4>, <1 11 4>, <1 10 4>; };
    chosen { #address-cells = <2>; #size-cells = <2>;
        DOMAINS
    };
};
"#;

fn domain(name: &str, kib: u64, cpus: u32, kernel: u64, extra: &str) -> String {
    format!(
        r#"{name} {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
            memory = <0x0 {kib:#x}>; cpus = <{cpus}>; vpl011; {extra}
            kernel {{ compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {kernel:#x} 0x0 0x200000>; bootargs = "console=ttyAMA0"; }}; }};"#
    )
}

fn dtb(domains: &str) -> Vec<u8> {
    dtvisor::testing::dtc(&HOST.replace("DOMAINS", domains))
}

/// A valid arm64 Image header (text_offset 0, image_size 4 MiB).
fn image_header() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[16..24].copy_from_slice(&(4u64 << 20).to_le_bytes());
    h[24..32].copy_from_slice(&0xau64.to_le_bytes());
    h[56..60].copy_from_slice(b"ARM\x64");
    h
}

struct Built {
    result: Result<(dtvisor::placement::Layout, Vec<build::DomainSpec>), Vec<String>>,
    dtbs: Vec<Vec<u8>>,
}

fn run(domains: &str, header: &[u8], pcpus: usize) -> Built {
    let blob = dtb(domains);
    let fdt = Fdt::new(&blob).unwrap();
    let plat = Platform::discover(&fdt).unwrap();
    let plan = config::parse_blob(&blob).plan.expect("a valid plan");
    let mut dtbs = Vec::new();
    let mut next = 0x7000_0000u64;
    let cpus: Vec<u64> = (0..pcpus as u64).collect();
    let result = build::build(
        &plat,
        &plan,
        &cpus,
        GicVersion::V3,
        &|_r: Range| header,
        &mut |b| {
            let at = next;
            next += 0x20_0000;
            dtbs.push(b);
            at
        },
    );
    Built { result, dtbs }
}

#[test]
fn boot_cpu_first_then_dtb_order() {
    let blob = dtb("");
    let plat = Platform::discover(&Fdt::new(&blob).unwrap()).unwrap();
    assert_eq!(build::cpu_order(&plat, 2, 16), [2, 0, 1, 3]);
    assert_eq!(build::cpu_order(&plat, 0, 2), [0, 1]);
}

#[test]
fn two_domains_get_their_pcpus_loads_and_device_trees() {
    let doms = domain("domU1", 0x40000, 2, 0x5000_0000, "")
        + &domain("domU2", 0x20000, 1, 0x5040_0000, "nr_spis = <64>;");
    let b = run(&doms, &image_header(), 4);
    let (_, specs) = b.result.expect("builds");
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].layout.pcpus, [0, 1]);
    assert_eq!(specs[1].layout.pcpus, [2]);
    assert_eq!(
        (specs[0].spis, specs[1].spis),
        (32, 64),
        "nr_spis honoured, 32 at least"
    );
    for (s, dtb_at) in specs.iter().zip([0x7000_0000u64, 0x7020_0000]) {
        // The kernel's pages are the module itself (the reset source),
        // shared; the DTB is copied from where it was kept.
        let r = &s.restart;
        assert_eq!(r.shared.len(), 1);
        assert_eq!(r.shared[0].module, s.layout.pristine[0].start);
        assert_eq!(r.shared[0].ipa, Range::new(0x4000_0000, 0x4020_0000));
        let last: &Load = r.copies.last().unwrap();
        assert_eq!(last.src, dtb_at);
        assert_eq!(s.entry_ipa, 0x4000_0000);
        // Every copy lands in the domain's own host RAM, and so does what
        // the shared pages are copied to on write.
        let ram = s.ram_host();
        assert!(ram
            .iter()
            .any(|m| m.contains_range(&r.shared[0].backing_range())));
        for l in &r.copies {
            assert!(
                ram.iter()
                    .any(|r| r.contains_range(&Range::new(l.dst, l.dst + l.len))),
                "{l:?}"
            );
        }
    }
    assert_eq!(b.dtbs.len(), 2);
    let g = Fdt::new(&b.dtbs[0]).unwrap();
    assert!(g.find("/interrupt-controller@3001000").is_some());
}

#[test]
fn a_bad_kernel_header_names_the_module() {
    let b = run(&domain("domU1", 0x40000, 1, 0x5000_0000, ""), &[0u8; 64], 4);
    let errs = b.result.unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/chosen/domU1/kernel: reg: "),
        "{}",
        errs[0]
    );
}

#[test]
fn too_few_pcpus_is_an_error_naming_the_domains() {
    let doms = domain("domU1", 0x40000, 2, 0x5000_0000, "")
        + &domain("domU2", 0x20000, 2, 0x5040_0000, "");
    let errs = run(&doms, &image_header(), 3).result.unwrap_err();
    assert!(errs.iter().any(|e| e.contains("domU2")), "{errs:?}");
}

#[test]
fn a_load_split_across_host_blocks_covers_every_byte() {
    let l = dtvisor::placement::DomainLayout {
        name: "d".into(),
        ram: vec![
            dtvisor::placement::RamMap {
                ipa: Range::new(0x4000_0000, 0x4020_0000),
                pa: 0x8000_0000,
            },
            dtvisor::placement::RamMap {
                ipa: Range::new(0x4020_0000, 0x4040_0000),
                pa: 0x6000_0000,
            },
        ],
        banks: vec![Range::new(0x4000_0000, 0x4040_0000)],
        kernel_ipa: Range::new(0x4000_0000, 0x4030_0000),
        initrd_ipa: None,
        dtb_ipa: Range::new(0x4020_0000, 0x4040_0000),
        pristine: vec![],
        pcpus: vec![0],
        vmid: 1,
    };
    let mut out = Vec::new();
    assert!(build::loads_for(&l, 0x5000_0000, 0x401f_0000, 0x2_0000, &mut out).is_some());
    assert_eq!(
        out,
        [
            Load {
                src: 0x5000_0000,
                dst: 0x801f_0000,
                len: 0x1_0000
            },
            Load {
                src: 0x5001_0000,
                dst: 0x6000_0000,
                len: 0x1_0000
            },
        ]
    );
    assert!(
        build::loads_for(&l, 0, 0x403f_0000, 0x2_0000, &mut Vec::new()).is_none(),
        "past guest RAM"
    );
}

/// SPIs offered: raised to cover assigned interrupts and a direct-mapped
/// vPL011's (the host console's); an explicit nr_spis too small for an
/// assigned interrupt is an error naming it. A direct-mapped domain sees
/// its vGIC and vPL011 at the host's addresses.
#[test]
fn spis_and_guest_map_follow_assigned_devices_and_direct_map() {
    use dtvisor::config::{Device, DeviceIrq, Domain, Module, ModuleKind, Origin};
    use dtvisor::vm::guest_dtb::GuestMap;
    let src = HOST.replace("DOMAINS", "").replace(
        "timer {",
        r#"pl011@9000000 { compatible = "arm,pl011"; reg = <0x0 0x9000000 0x0 0x1000>; interrupts = <0 1 4>; };
        timer {"#,
    );
    let blob = dtvisor::testing::dtc(&src);
    let plat = Platform::discover(&Fdt::new(&blob).unwrap()).unwrap();
    let k = Module {
        kind: ModuleKind::Kernel,
        range: Range::new(0x5000_0000, 0x5020_0000),
        path: "/chosen/d/kernel".into(),
        bootargs: None,
    };
    let mut d = Domain::new("d".into(), "/chosen/d".into(), Origin::Dom0less, k);
    d.vpl011 = true;
    assert_eq!(build::guest_map(&plat, &d), GuestMap::XEN);
    assert_eq!(build::spis(&d, &GuestMap::XEN), Ok(build::DEFAULT_SPIS));
    d.devices.push(Device {
        node: "/passthrough/virtio@a003e00".into(),
        host_path: Some("/virtio_mmio@a003e00".into()),
        regions: vec![],
        irqs: vec![DeviceIrq {
            intid: 79,
            edge: true,
        }],
    });
    assert_eq!(build::spis(&d, &GuestMap::XEN), Ok(48));
    d.nr_spis = Some(40);
    let e = build::spis(&d, &GuestMap::XEN).unwrap_err();
    assert!(
        e.contains("nr_spis: 40 SPIs do not reach interrupt 79"),
        "{e}"
    );
    d.nr_spis = None;
    d.direct_map = true;
    let m = build::guest_map(&plat, &d);
    assert_eq!(
        (m.gicd, m.gicr, m.vpl011, m.vpl011_intid),
        (0x800_0000, 0x80a_0000, 0x900_0000, 33)
    );
}

/// A CPU that cannot be started ends the pCPUs vCPUs can use; a plan that
/// needs more is refused with that CPU's node named.
#[test]
fn vcpus_stop_at_the_first_cpu_that_cannot_be_started() {
    let blob = dtb(&domain("d", 0x10000, 3, 0x5000_0000, ""));
    let fdt = Fdt::new(&blob).unwrap();
    let mut plat = Platform::discover(&fdt).unwrap();
    plat.cpus[2].enable = EnableMethod::Unusable("\"brcm,bcm2836-smp\" is not a method".into());
    let order = [0, 1, 2, 3];
    assert_eq!(
        build::startable(&plat, &order),
        (
            2,
            Some(("/cpus/cpu@2", "\"brcm,bcm2836-smp\" is not a method"))
        )
    );
    let plan = config::parse_blob(&blob).plan.expect("a valid plan");
    let header = image_header();
    let built = build::build(
        &plat,
        &plan,
        &order,
        GicVersion::V3,
        &|_r: Range| &header[..],
        &mut |_| 0,
    );
    let Err(errs) = built else {
        panic!("3 vCPUs on 2 startable pCPUs were accepted");
    };
    assert!(
        errs.iter()
            .any(|e| e.starts_with("/cpus/cpu@2: \"brcm,bcm2836-smp\"")),
        "{errs:?}"
    );
}
