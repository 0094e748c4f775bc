//! Tests of the boot-script interpreter, on a QEMU-virt-like board DTB.

use super::*;
use alloc::vec;
use dtvisor::fdt::tree::Node;
use dtvisor::fdt::Fdt;
use dtvisor::testing::dtc;
use std::collections::HashMap;

const BOARD: &str = r#"/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    compatible = "linux,dummy-virt";
    interrupt-parent = <&gic>;
    aliases { serial0 = "/pl011@9000000"; };
    chosen { stdout-path = "/pl011@9000000"; };
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    cpus {
        #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; compatible = "arm,cortex-a57"; reg = <1>; enable-method = "psci"; };
    };
    psci { compatible = "arm,psci-1.0"; method = "hvc"; };
    gic: intc@8000000 {
        compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
        reg = <0x0 0x8000000 0x0 0x10000 0x0 0x80a0000 0x0 0xf60000>;
    };
    timer { compatible = "arm,armv8-timer"; interrupts = <1 13 4 1 14 4 1 11 4 1 10 4>; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x9000000 0x0 0x1000>; interrupts = <0 1 4>; };
};
"#;

/// U-Boot qemu_arm64's defaults for the variables scripts use.
const QEMU_ENV: &[(&str, &str)] = &[
    ("fdt_addr", "40000000"),
    ("kernel_addr_r", "0x40400000"),
    ("ramdisk_addr_r", "0x44000000"),
    ("scriptaddr", "0x40200000"),
    ("loadaddr", "0x40200000"),
    ("devtype", "virtio"),
    ("devnum", "0"),
];

fn board() -> Vec<u8> {
    dtc(BOARD)
}

fn script(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

fn run_with(lines: &[&str], sizes: &[(&str, u64)]) -> Outcome {
    let sizes: HashMap<String, u64> = sizes.iter().map(|&(f, s)| (f.to_string(), s)).collect();
    run(
        &script(lines),
        &board(),
        &|f| sizes.get(f).copied(),
        QEMU_ENV,
    )
}

fn run_lines(lines: &[&str]) -> Outcome {
    run_with(lines, &[])
}

fn node<'t>(o: &'t Outcome, path: &str) -> &'t Node {
    o.tree
        .as_ref()
        .expect("a tree")
        .find(path)
        .unwrap_or_else(|| panic!("no {path}"))
}

fn children(n: &Node) -> Vec<&str> {
    n.children.iter().map(|c| c.name.as_str()).collect()
}

fn props(n: &Node) -> Vec<&str> {
    n.props.iter().map(|(p, _)| p.as_str()).collect()
}

fn cells(v: &[u8]) -> Vec<u32> {
    v.chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn env<'o>(o: &'o Outcome, name: &str) -> Option<&'o str> {
    o.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn assert_clean(o: &Outcome) {
    assert!(o.errors.is_empty(), "errors: {:#?}", o.errors);
    assert!(o.warnings.is_empty(), "warnings: {:#?}", o.warnings);
}

/// Line numbers (1-based) of the errors.
fn error_lines(o: &Outcome) -> Vec<usize> {
    o.errors.iter().map(|e| e.line).collect()
}

fn has_error(o: &Outcome, line: usize, needle: &str) -> bool {
    o.errors
        .iter()
        .any(|e| e.line == line && e.message.contains(needle))
}

fn has_warning(o: &Outcome, line: usize, needle: &str) -> bool {
    o.warnings
        .iter()
        .any(|e| e.line == line && e.message.contains(needle))
}

/// The shape Xilinx ImageBuilder's uboot-script-gen writes for two
/// dom0less domUs (no dom0), loaded with `LOAD_CMD="load virtio 0:1"`:
/// `load` lines from MEMORY_START + 4 MiB in 2 MiB steps, `fdt addr` on
/// the device tree it loaded last, `fdt resize 1024`, `dt_set` lines with
/// `\#` for `#`-properties, `str_a` lists with a doubled space, `int`
/// cells in decimal, `module@<addr>` nodes with `reg` split into 32-bit
/// halves (split_addr_size), then `fdt_high` and `booti`.
const IMAGEBUILDER: &[&str] = &[
    "load virtio 0:1 0x40400000 domU0/Image",
    "load virtio 0:1 0x41200000 domU0/initrd.cpio",
    "load virtio 0:1 0x41600000 domU1/Image",
    "load virtio 0:1 0x42400000 xen",
    "load virtio 0:1 0x42600000 virt.dtb",
    "fdt addr 0x42600000",
    "fdt resize 1024",
    "fdt set /chosen \\#address-cells <0x2>",
    "fdt set /chosen \\#size-cells <0x2>",
    "fdt set /chosen xen,xen-bootargs \"console=dtuart dtuart=serial0 bootscrub=0 vwfi=native sched=null\"",
    "fdt mknod /chosen domU0",
    "fdt set /chosen/domU0 compatible \"xen,domain\"",
    "fdt set /chosen/domU0 \\#address-cells <0x2>",
    "fdt set /chosen/domU0 \\#size-cells <0x2>",
    "fdt set /chosen/domU0 memory <0 131072>",
    "fdt set /chosen/domU0 cpus <2>",
    "fdt set /chosen/domU0 vpl011 <0x1>",
    "fdt mknod /chosen/domU0 module@40400000",
    "fdt set /chosen/domU0/module@40400000 compatible  \"multiboot,kernel\" \"multiboot,module\"",
    "fdt set /chosen/domU0/module@40400000 reg <0x0 0x40400000 0x0 0xD48A00>",
    "fdt set /chosen/domU0/module@40400000 bootargs \"console=ttyAMA0\"",
    "fdt mknod /chosen/domU0 module@41200000",
    "fdt set /chosen/domU0/module@41200000 compatible  \"multiboot,ramdisk\" \"multiboot,module\"",
    "fdt set /chosen/domU0/module@41200000 reg <0x0 0x41200000 0x0 0x2F0000>",
    "fdt mknod /chosen domU1",
    "fdt set /chosen/domU1 compatible \"xen,domain\"",
    "fdt set /chosen/domU1 \\#address-cells <0x2>",
    "fdt set /chosen/domU1 \\#size-cells <0x2>",
    "fdt set /chosen/domU1 memory <0 65536>",
    "fdt set /chosen/domU1 cpus <1>",
    "fdt set /chosen/domU1 vpl011 <0x1>",
    "fdt mknod /chosen/domU1 module@41600000",
    "fdt set /chosen/domU1/module@41600000 compatible  \"multiboot,kernel\" \"multiboot,module\"",
    "fdt set /chosen/domU1/module@41600000 reg <0x0 0x41600000 0x0 0xD48A00>",
    "fdt set /chosen/domU1/module@41600000 bootargs \"console=ttyAMA0\"",
    "setenv fdt_high 0xffffffffffffffff",
    "booti 0x42400000 - 0x42600000",
];

const IMAGEBUILDER_SIZES: &[(&str, u64)] = &[
    ("domU0/Image", 0xD4_8A00),
    ("domU0/initrd.cpio", 0x2F_0000),
    ("domU1/Image", 0xD4_8A00),
    ("xen", 0x10_0000),
    ("virt.dtb", 0x1000),
];

#[test]
fn imagebuilder_two_domus() {
    let o = run_with(IMAGEBUILDER, IMAGEBUILDER_SIZES);
    assert_clean(&o);

    // New nodes come first, in reverse script order, before the board's.
    assert_eq!(children(node(&o, "/chosen")), ["domU1", "domU0"]);
    assert_eq!(
        props(node(&o, "/chosen")),
        [
            "xen,xen-bootargs",
            "#size-cells",
            "#address-cells",
            "stdout-path"
        ]
    );
    let d0 = node(&o, "/chosen/domU0");
    assert_eq!(
        props(d0),
        [
            "vpl011",
            "cpus",
            "memory",
            "#size-cells",
            "#address-cells",
            "compatible"
        ]
    );
    assert_eq!(children(d0), ["module@41200000", "module@40400000"]);
    assert_eq!(d0.prop("compatible"), Some(&b"xen,domain\0"[..]));
    assert_eq!(cells(d0.prop("memory").unwrap()), [0, 131072]);
    assert_eq!(cells(d0.prop("cpus").unwrap()), [2]);
    let k = node(&o, "/chosen/domU0/module@40400000");
    assert_eq!(props(k), ["bootargs", "reg", "compatible"]);
    assert_eq!(
        k.prop("compatible"),
        Some(&b"multiboot,kernel\0multiboot,module\0"[..])
    );
    assert_eq!(
        cells(k.prop("reg").unwrap()),
        [0, 0x4040_0000, 0, 0xD4_8A00]
    );
    let d1 = node(&o, "/chosen/domU1");
    assert_eq!(children(d1), ["module@41600000"]);
    assert_eq!(cells(d1.prop("memory").unwrap()), [0, 65536]);

    let loaded: Vec<_> = o.loads.iter().map(|l| (l.line, l.addr, l.size)).collect();
    assert_eq!(
        loaded,
        [
            (1, 0x4040_0000, Some(0xD4_8A00)),
            (2, 0x4120_0000, Some(0x2F_0000)),
            (3, 0x4160_0000, Some(0xD4_8A00)),
            (4, 0x4240_0000, Some(0x10_0000)),
            (5, 0x4260_0000, Some(0x1000)),
        ]
    );
    assert_eq!(o.loads[1].file, "domU0/initrd.cpio");
    let boot = o.boot.as_ref().unwrap();
    assert_eq!(
        (boot.line, boot.kernel, boot.initrd, boot.fdt),
        (37, 0x4240_0000, None, Some(0x4260_0000))
    );
    assert_eq!(boot.command, "booti 0x42400000 - 0x42600000");
    assert_eq!(o.fdt_addr, Some(0x4260_0000));
    assert_eq!(env(&o, "fdt_high"), Some("0xffffffffffffffff"));
    assert_eq!(env(&o, "filesize"), Some("1000"));

    // Back to script lines.
    assert_eq!(o.line_of("/chosen/domU0", Some("cpus")), Some(16));
    assert_eq!(o.line_of("/chosen/domU0", None), Some(11));
    assert_eq!(
        o.line_of("/chosen/domU0/module@40400000", Some("reg")),
        Some(20)
    );
    assert_eq!(o.line_of("/chosen/domU1/module", None), Some(32));
    // A property the script never set: the node's line; below a created
    // node: the closest one.
    assert_eq!(o.line_of("/chosen/domU1", Some("xen,enhanced")), Some(25));
    assert_eq!(
        o.line_of("/chosen/domU1/module@41600000/nothing", None),
        Some(32)
    );
    assert_eq!(o.line_of("/chosen", Some("xen,xen-bootargs")), Some(10));
    assert_eq!(o.line_of("/chosen", None), None);
    assert_eq!(o.line_of("/memory", None), None);

    // The pre-flight check proper: dtvisor's parser accepts the result.
    let blob = o.tree.as_ref().unwrap().to_dtb().unwrap();
    let report = dtvisor::config::parse_blob(&blob);
    let errors: Vec<_> = report.errors().collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let plan = report.plan.expect("a boot plan");
    let names: Vec<_> = plan.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["domU1", "domU0"]);
}

/// A parser diagnostic maps back to the `fdt set` that caused it.
#[test]
fn parser_diagnostics_map_to_lines() {
    let mut lines = IMAGEBUILDER.to_vec();
    lines[15] = "fdt set /chosen/domU0 cpus <0>";
    let o = run_with(&lines, IMAGEBUILDER_SIZES);
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    let blob = o.tree.as_ref().unwrap().to_dtb().unwrap();
    let report = dtvisor::config::parse_blob(&blob);
    let d = report.errors().next().expect("zero vCPUs is an error");
    assert_eq!(o.line_of(&d.path, d.property.as_deref()), Some(16), "{d:?}");
}

/// ImageBuilder's `-s` mode computes addresses in U-Boot: `${filesize}`
/// after each load, `setexpr` arithmetic, `reg` from the halves.
#[test]
fn filesize_and_setexpr_after_loads() {
    let lines = [
        "setenv memaddr 0x40400000",
        "load virtio 0:1 ${memaddr} domU0/Image",
        "setenv domU0_kernel_addr ${memaddr}",
        "setenv domU0_kernel_size ${filesize}",
        "setexpr memaddr ${memaddr} \\+ ${filesize}",
        "setexpr memaddr ${memaddr} \\+ 0x1FFFFF",
        "setexpr memaddr ${memaddr} \\& 0xFFFFFFFFFFE00000",
        "load virtio 0:1 ${memaddr} virt.dtb",
        "setenv host_fdt_addr ${memaddr}",
        "fdt addr ${host_fdt_addr}",
        "fdt resize 1024",
        "fdt mknod /chosen domU0",
        "fdt mknod /chosen/domU0 module@40400000",
        "setexpr addr_hi ${domU0_kernel_addr} / 0x100000000",
        "setexpr addr_lo ${domU0_kernel_addr} \\& 0xFFFFFFFF",
        "setexpr size_hi ${domU0_kernel_size} / 0x100000000",
        "setexpr size_lo ${domU0_kernel_size} \\& 0xFFFFFFFF",
        "fdt set /chosen/domU0/module@40400000 reg <0x${addr_hi} 0x${addr_lo} 0x${size_hi} 0x${size_lo}>",
        "booti ${kernel_addr_r} - ${host_fdt_addr}",
    ];
    let o = run_with(&lines, &[("domU0/Image", 0x1d4_8a01), ("virt.dtb", 0x800)]);
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    assert_eq!(env(&o, "domU0_kernel_size"), Some("1d48a01"));
    assert_eq!(env(&o, "memaddr"), Some("42200000"));
    assert_eq!(o.loads[1].addr, 0x4220_0000);
    let reg = node(&o, "/chosen/domU0/module@40400000")
        .prop("reg")
        .unwrap();
    assert_eq!(cells(reg), [0, 0x4040_0000, 0, 0x1d4_8a01]);
    let boot = o.boot.as_ref().unwrap();
    assert_eq!((boot.kernel, boot.fdt), (0x4040_0000, Some(0x4220_0000)));
    assert_eq!(boot.command, "booti 0x40400000 - 42200000");
    // The boot's address matches `fdt addr`, so no warning about that.
    assert!(o.warnings.is_empty(), "{:#?}", o.warnings);
}

#[test]
fn unknown_sizes_leave_filesize_undefined() {
    let lines = [
        "load virtio 0:1 ${kernel_addr_r} Image",
        "setenv size ${filesize}",
        "load virtio 0:1 0x48000000 known",
        "load virtio 0:1 0x49000000 unknown",
        "echo ${filesize}",
    ];
    let o = run_with(&lines, &[("known", 0x10)]);
    assert!(o.errors.is_empty());
    assert_eq!(o.loads[0].size, None);
    assert_eq!(o.loads[1].size, Some(0x10));
    assert_eq!(o.loads[2].size, None);
    assert!(has_warning(&o, 2, "`filesize` is not defined"));
    assert!(has_warning(&o, 5, "`filesize` is not defined"));
    assert_eq!(o.warnings.len(), 2);
    assert_eq!(env(&o, "size"), None, "setenv without value unsets");
    assert_eq!(env(&o, "fileaddr"), Some("49000000"));
}

#[test]
fn load_forms() {
    let lines = [
        "fatload mmc 0:1 0x48000000 part 0x100 0x20",
        "ext4load mmc 0:2 48100000 whole",
        "setenv bootfile dflt",
        "load mmc 0:1",
        "tftpb other",
        "tftpboot 0x48200000 10.0.0.1:remote",
        "tftp 0x48300000",
        "load 0x48400000 vfs/file",
        "dhcp 0x48500000 viadhcp",
        "dhcp",
    ];
    let sizes = [
        ("part", 0x1000),
        ("whole", 0x200),
        ("dflt", 0x10),
        ("other", 1),
        ("remote", 2),
        ("vfs/file", 3),
        ("viadhcp", 4),
    ];
    let o = run_with(&lines, &sizes);
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    let got: Vec<_> = o
        .loads
        .iter()
        .map(|l| (l.addr, l.file.as_str(), l.size))
        .collect();
    assert_eq!(
        got,
        [
            (0x4800_0000, "part", Some(0x100)),
            (0x4810_0000, "whole", Some(0x200)),
            (0x4020_0000, "dflt", Some(0x10)),
            (0x4020_0000, "other", Some(1)),
            (0x4820_0000, "remote", Some(2)),
            (0x4830_0000, "dflt", Some(0x10)),
            (0x4840_0000, "vfs/file", Some(3)),
            (0x4850_0000, "viadhcp", Some(4)),
        ]
    );
}

#[test]
fn overlapping_loads_warn() {
    let lines = [
        "load virtio 0:1 0x40400000 a",
        "load virtio 0:1 0x40500000 b",
        "fdt addr 0x44000000",
        "load virtio 0:1 0x43fff000 c",
    ];
    let o = run_with(&lines, &[("a", 0x20_0000), ("b", 0x10), ("c", 0x2000)]);
    assert!(has_warning(&o, 2, "overlaps `a` loaded at line 1"));
    assert!(has_warning(&o, 4, "overwrites the working FDT"));
}

#[test]
fn quoting_and_escaping() {
    let lines = [
        "fdt addr ${fdt_addr}; fdt resize",
        "setenv two '1 2'",
        "fdt set /chosen list \"x y\" z",
        "fdt set /chosen single 'q$two'",
        "fdt set /chosen quoted \"$two\"",
        "fdt set /chosen split $two",
        "fdt set /chosen cells < 1 0x2 010 >",
        "fdt set /chosen bytes [00 11 2233]",
        "fdt set /chosen semi \"a;b\" # a comment; fdt set /chosen never x",
        "fdt set /chosen \\#hash <5>",
        "fdt set /chosen def ${nosuch:-fallback}",
        "fdt set /chosen empty",
        "fdt set /chosen cells <0x7 ?>",
        "n=v; fdt set /chosen local ${n}",
        "fdt set /chosen bs \"a\\\"b\"",
        "fdt set /chosen args ${two} ''",
    ];
    let o = run_lines(&lines);
    assert_clean(&o);
    let c = node(&o, "/chosen");
    let p = |n: &str| c.prop(n).unwrap_or_else(|| panic!("no {n}"));
    assert_eq!(p("list"), b"x y\0z\0");
    assert_eq!(p("single"), b"q$two\0");
    assert_eq!(p("quoted"), b"1 2\0");
    assert_eq!(p("split"), b"1\x002\0");
    assert_eq!(p("bytes"), [0, 0x11, 0x33]);
    assert_eq!(p("semi"), b"a;b\0");
    assert!(c.prop("never").is_none());
    assert_eq!(cells(p("#hash")), [5]);
    assert_eq!(p("def"), b"fallback\0");
    assert_eq!(p("empty"), b"");
    // `?` kept the cell `<1 2 8>` had at that place.
    assert_eq!(cells(p("cells")), [7, 2]);
    assert_eq!(p("local"), b"v\0");
    assert_eq!(p("bs"), b"a\\\"b\0");
    assert_eq!(p("args"), b"1\x002\0\0");
}

/// In U-Boot a command with a variable is parsed a second time, where an
/// unquoted `#` at the start of a word is a comment again: the escaped
/// property name vanishes and `fdt set` lacks arguments.
#[test]
fn escaped_hash_is_lost_on_a_line_with_variables() {
    let lines = [
        "fdt addr ${fdt_addr}",
        "fdt resize 0x400",
        "setenv node /chosen",
        "fdt set /chosen \\#works <1>",
        "fdt set ${node} \\#lost <1>",
        "fdt set ${node} '#kept' <1>",
    ];
    let o = run_lines(&lines);
    assert_eq!(error_lines(&o), [5], "{:#?}", o.errors);
    assert!(has_error(&o, 5, "usage: fdt set"));
    let c = node(&o, "/chosen");
    assert!(c.prop("#works").is_some());
    assert!(c.prop("#lost").is_none());
    assert!(c.prop("#kept").is_some());
}

#[test]
fn backslash_newline_is_not_a_continuation() {
    let lines = [
        "setenv args console=ttyAMA0 \\",
        "root=/dev/vda",
        "setenv v x",
        "setenv lost ${v} \\",
        "after",
    ];
    let o = run_lines(&lines);
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    assert!(has_warning(&o, 1, "does not join lines"));
    // The newline stays in the value...
    assert_eq!(env(&o, "args"), Some("console=ttyAMA0 \nroot=/dev/vda"));
    // ... and with a variable on the line, the second parse stops at it.
    assert_eq!(env(&o, "lost"), Some("x"));
}

#[test]
fn and_or_lists() {
    let lines = [
        "fdt addr ${fdt_addr}; fdt resize",
        "false && fdt set /chosen a x; fdt set /chosen b x",
        "true || fdt set /chosen c x || fdt set /chosen d x; fdt set /chosen e x",
        "fdt mknod /chosen b || fdt set /chosen f x",
        "false; fdt set /chosen status$? x",
        "env exists devtype && fdt set /chosen g x",
    ];
    let o = run_lines(&lines);
    let c = node(&o, "/chosen");
    for (p, set) in [
        ("a", false),
        ("b", true),
        ("c", false),
        ("d", false),
        ("e", true),
        ("f", false),
        ("status1", true),
        ("g", true),
    ] {
        assert_eq!(c.prop(p).is_some(), set, "{p}");
    }
    // `fdt mknod /chosen b` succeeds (`b` so far is only a property), so
    // `f` is skipped.
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
}

#[test]
fn run_executes_variables() {
    let lines = [
        "setenv setup 'fdt addr ${fdt_addr}; fdt resize'",
        // A quoted newline: the command spans lines 2 and 3.
        "setenv mk 'fdt mknod /chosen domU0\nfdt set /chosen/domU0 cpus <1>'",
        "run setup mk",
        "run missing",
        "setenv loop 'run loop'",
        "run loop",
    ];
    let o = run_lines(&lines);
    assert_eq!(cells(node(&o, "/chosen/domU0").prop("cpus").unwrap()), [1]);
    // Inside `run`, lines are the `run`'s.
    assert_eq!(o.line_of("/chosen/domU0", Some("cpus")), Some(4));
    assert!(has_error(&o, 5, "\"missing\" not defined"));
    assert!(has_error(&o, 7, "nested more than"));
}

#[test]
fn fdt_get_sets_variables() {
    let lines = [
        "fdt addr ${fdt_addr}",
        "fdt get value compat / compatible",
        "fdt get value cells /cpus \\#address-cells",
        "fdt get size n /cpus",
        "fdt get name first /cpus 1",
        "fdt get size len /psci method",
        "fdt get value gone /intc interrupt-controller",
        "fdt header get total totalsize",
        "fdt get value x /nowhere y",
    ];
    let o = run_lines(&lines);
    assert_eq!(env(&o, "compat"), Some("linux,dummy-virt"));
    assert_eq!(env(&o, "cells"), Some("0x00000001"));
    assert_eq!(env(&o, "n"), Some("2"));
    assert_eq!(env(&o, "first"), Some("cpu@1"));
    assert_eq!(env(&o, "len"), Some("0x00000004"));
    assert_eq!(env(&o, "gone"), None);
    let total = board().len();
    assert_eq!(env(&o, "total"), Some(format!("{total:x}").as_str()));
    assert_eq!(error_lines(&o), [9]);
}

#[test]
fn boot_commands() {
    let o = run_lines(&["booti"]);
    assert_eq!(o.boot.as_ref().unwrap().kernel, 0x4020_0000);
    assert!(has_warning(&o, 1, "no device tree address"));

    let o = run_lines(&[
        "fdt addr 0x48000000",
        "setenv bootargs console=ttyAMA0",
        "bootm 0x40400000#conf 0x44000000:0x1000 0x40000000",
        "fdt set /chosen never x",
        "echo",
    ]);
    let b = o.boot.as_ref().unwrap();
    assert_eq!(
        (b.kernel, b.initrd, b.fdt),
        (0x4040_0000, Some(0x4400_0000), Some(0x4000_0000))
    );
    assert!(has_warning(
        &o,
        3,
        "the script edited the one at 0x48000000"
    ));
    assert!(has_warning(&o, 3, "/chosen/bootargs"));
    assert!(has_warning(&o, 4, "not run"));
    assert!(node(&o, "/chosen").prop("never").is_none());
    assert_eq!(o.warnings.len(), 3, "{:#?}", o.warnings);

    let o = run_lines(&["bootz ${nosuch} - ${fdt_addr}"]);
    let b = o.boot.as_ref().unwrap();
    // The empty word vanishes: `-` becomes the kernel address.
    assert_eq!((b.kernel, b.initrd, b.fdt), (0, Some(0x4000_0000), None));
    assert!(has_warning(&o, 1, "`nosuch` is not defined"));
    assert!(has_warning(&o, 1, "`-` is not a hex address"));
}

#[test]
fn exit_and_boot_inside_run() {
    let o = run_lines(&[
        "setenv b 'exit; fdt addr 0'",
        "run b",
        "fdt addr ${fdt_addr}",
        "exit",
        "fdt resize",
    ]);
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    // `exit` in `run` ends only the `run`; at the top it ends the script.
    assert_eq!(o.fdt_addr, Some(0x4000_0000));
    assert!(o.warnings.is_empty());

    let o = run_lines(&[
        "setenv go 'booti 0x40400000 - 0x40000000; echo'",
        "run go",
        "echo",
    ]);
    assert!(o.boot.is_some());
    assert!(has_warning(&o, 2, "not run"));
}

// ---- errors ----

#[test]
fn fdt_before_fdt_addr() {
    let o = run_lines(&[
        "fdt mknod /chosen domU0",
        "fdt set /chosen x y",
        "fdt print",
    ]);
    assert_eq!(error_lines(&o), [1, 2, 3]);
    assert!(o.errors[0].message.contains("no working FDT"));
    assert_eq!(o.errors[0].text, "fdt mknod /chosen domU0");
    assert!(o.tree.is_none());
    assert_eq!(
        o.errors[0].to_string(),
        format!(
            "line 1: {} (`fdt mknod /chosen domU0`)",
            o.errors[0].message
        )
    );
}

#[test]
fn fdt_edit_errors() {
    let lines = [
        "fdt addr ${fdt_addr}",
        "fdt resize 0x400",
        "fdt mknod /chosen domU0",
        "fdt mknod /chosen domU0",
        "fdt mknod /nosuch x",
        "fdt set /chosen/domU9 cpus <1>",
        "fdt set /chosen/domU0 cpus <1 zz>",
        "fdt set /chosen/domU0 cpus <1",
        "fdt rm /chosen nosuch",
        "fdt rm /nosuch",
        "fdt rm /",
        "fdt apply 0x48000000",
        "fdt frobnicate",
        "fdt set /chosen",
        "fdt mknod /chosen",
        "fdt get value v /chosen",
        "fdt rsvmem delete 5",
        "fdt set /chosen/domU0 ok <1>",
    ];
    let o = run_lines(&lines);
    for (line, needle) in [
        (4, "FDT_ERR_EXISTS: /chosen already has a node `domU0`"),
        (
            5,
            "fdt_path_offset() returned FDT_ERR_NOTFOUND: no node `nosuch` in /",
        ),
        (6, "no node `domU9` in /chosen"),
        (7, "Sorry, I could not convert \"zz>\""),
        (8, "no closing `>`"),
        (9, "fdt_delprop(): FDT_ERR_NOTFOUND"),
        (10, "FDT_ERR_NOTFOUND"),
        (11, "root"),
        (12, "overlays are not applied"),
        (13, "not an fdt subcommand"),
        (14, "usage: fdt set"),
        (15, "usage: fdt mknode"),
        (16, "usage: fdt get"),
        (17, "FDT_ERR_NOTFOUND: there are 0 reservations"),
    ] {
        assert!(has_error(&o, line, needle), "line {line}: {:#?}", o.errors);
    }
    // Failures do not stop a script; the last line still ran.
    assert!(node(&o, "/chosen/domU0").prop("ok").is_some());
    assert!(node(&o, "/chosen/domU0").prop("cpus").is_none());
}

#[test]
fn running_out_of_fdt_space() {
    // dtc leaves no free space in the blob, so without `fdt resize` the
    // first edit fails, as it does in U-Boot.
    let o = run_lines(&["fdt addr ${fdt_addr}", "fdt mknod /chosen domU0"]);
    assert!(has_error(&o, 2, "FDT_ERR_NOSPACE"), "{:#?}", o.errors);

    // `fdt resize 1024` adds 0x1024 bytes (the argument is hex), then
    // rounds up to a page: 8 KiB for this board.
    let o = run_lines(&[
        "fdt addr 0x40000000",
        "fdt resize 1024",
        "fdt header get t totalsize",
    ]);
    assert_eq!(env(&o, "t"), Some("2000"));
    // Thirty domains with long command lines do not fit in that.
    let mut lines = vec![
        "fdt addr 0x40000000".to_string(),
        "fdt resize 1024".to_string(),
    ];
    for i in 0..30 {
        lines.push(format!("fdt mknod /chosen domU{i}"));
        lines.push(format!(
            "fdt set /chosen/domU{i} bootargs \"{}\"",
            "x".repeat(300)
        ));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let o = run_lines(&refs);
    let first = o.errors.first().expect("NOSPACE");
    assert!(first.message.contains("FDT_ERR_NOSPACE"), "{first:?}");
    assert!(first.line > 3);
    // A failing `fdt rsvmem add` returns -FDT_ERR_NOSPACE, which U-Boot's
    // shell takes as `exit`.
    let mut more = refs.clone();
    more.extend(["fdt rsvmem add 0x50000000 0x1000", "fdt bootcpu 1"]);
    let o = run_lines(&more);
    let n = more.len();
    assert!(has_error(&o, n - 1, "as `exit`"), "{:#?}", o.errors);
    assert_eq!(o.tree.as_ref().unwrap().boot_cpuid, 0);
}

#[test]
fn unsupported_commands_and_constructs() {
    let lines = [
        "if test -e virtio 0:1 Image; then",
        "  echo yes",
        "fi",
        "for f in a b; do echo $f; done",
        "source ${scriptaddr}",
        "setexpr x sub a b",
        "setexpr y *0x40000000",
        "itest 1 == 1",
        "usb start; mmc dev 0; virtio scan; pci enum; sleep 1; dcache flush",
        "env default -a",
    ];
    let o = run_lines(&lines);
    assert_eq!(error_lines(&o), [1, 4, 5, 6, 7, 8, 10], "{:#?}", o.errors);
    assert!(o.errors[0]
        .message
        .contains("not supported by the pre-flight check"));
    assert!(o.errors[2].message.contains("`source` is not supported"));
}

#[test]
fn environment_errors() {
    let lines = [
        "setenv a=b c",
        "setenv",
        "setenv -x y",
        "setexpr z 1 ++ 2",
        "setexpr q 5 / 0",
        "load virtio 0:1 nothex file",
        "load",
        "tftpb 1 2 3",
        "run",
    ];
    let o = run_lines(&lines);
    assert_eq!(error_lines(&o), [1, 2, 3, 4, 6, 7, 8, 9], "{:#?}", o.errors);
    assert!(has_warning(&o, 5, "division by zero"));
    assert_eq!(env(&o, "q"), Some("0"));

    // No loadaddr and no bootfile to fall back on.
    let o = run(
        "load virtio 0:1\ntftpb 0x40000000\n",
        &board(),
        &|_| None,
        &[],
    );
    assert!(has_error(&o, 1, "loadaddr"));
    assert!(has_error(&o, 2, "bootfile"));
}

#[test]
fn syntax_errors_stop_the_script() {
    let o = run_lines(&["fdt addr ${fdt_addr}", "echo 'unterminated", "fdt resize"]);
    assert_eq!(error_lines(&o), [2]);
    assert!(o.errors[0].message.contains("syntax error"));
    assert_eq!(o.fdt_addr, Some(0x4000_0000));
    for bad in ["a & b", "a | b", "fi", "echo ${x", "while true; do echo"] {
        let o = run_lines(&["echo", bad, "echo"]);
        assert_eq!(error_lines(&o), [2], "{bad}: {:#?}", o.errors);
    }
    // In U-Boot's hush a single quote opens a quote even inside double
    // quotes, so this is a syntax error...
    let o = run_lines(&["setenv q \"it's\"", "fdt addr ${fdt_addr}"]);
    assert_eq!(error_lines(&o), [1]);
    assert!(o.fdt_addr.is_none());
    // ... and a quote that a variable's value brings is one in the second
    // parse only: that command is skipped, the script goes on.
    let o = run_lines(&["setenv q it\\'s", "echo $q", "fdt addr ${fdt_addr}"]);
    assert_eq!(error_lines(&o), [2]);
    assert!(has_error(&o, 2, "reads `echo it's`, a syntax error"));
    assert_eq!(o.fdt_addr, Some(0x4000_0000));
}

#[test]
fn bad_inputs() {
    let o = run("fdt addr 0\n", b"not a dtb", &|_| None, &[]);
    assert!(has_error(&o, 1, "not a valid FDT"));
    let big = "#".repeat(MAX_SCRIPT_LEN + 1);
    let o = run(&big, &board(), &|_| None, &[]);
    assert_eq!(error_lines(&o), [0]);
    let o = run("echo \u{3}x\n", &board(), &|_| None, &[]);
    assert_eq!(error_lines(&o), [1]);
    let o = run("fdt addr 0\0fdt resize\n", &board(), &|_| None, &[]);
    assert!(has_warning(&o, 1, "NUL"));
    assert!(o.fdt_addr.is_some());
    let o = run("fdt addr 0\r\nfdt resize\r\n", &board(), &|_| None, &[]);
    assert!(has_warning(&o, 1, "carriage return"));
    let o = run("\"unterminated\nfdt addr 0\n", &board(), &|_| None, &[]);
    assert!(has_warning(&o, 1, "unterminated double quote"));
    assert!(o.fdt_addr.is_none());
}

#[test]
fn command_count_is_bounded() {
    let many = "echo\n".repeat(MAX_COMMANDS + 10);
    let o = run(&many, &board(), &|_| None, &[]);
    assert_eq!(error_lines(&o), [MAX_COMMANDS + 1]);
    // Expansion does not grow without bound either.
    let mut lines =
        vec!["setenv a aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"];
    lines.extend(["setenv a ${a}${a}"; 12]);
    let o = run_lines(&lines);
    assert!(o.errors.iter().any(|e| e.message.contains("longer than")));
    assert!(env(&o, "a").is_some_and(|a| a.len() <= MAX_EXPANDED_LEN));
    // Loads, and the script text quoted in diagnostics.
    let o = run(
        &"load virtio 0 0x48000000 f\n".repeat(MAX_LOADS + 1),
        &board(),
        &|_| None,
        &[],
    );
    assert_eq!(o.loads.len(), MAX_LOADS);
    assert_eq!(error_lines(&o), [MAX_LOADS + 1]);
    let long = format!("nosuch {}", "x".repeat(10_000));
    let o = run(&long, &board(), &|_| None, &[]);
    assert!(o.errors[0].text.len() < 300);
}

#[test]
fn other_fdt_subcommands() {
    let o = run_lines(&[
        "fdt addr ${fdt_addr} 0x10000",
        "fdt rsvmem add 0x48000000 0x1000",
        "fdt bootcpu 1",
        "fdt chosen",
        "fdt boardsetup",
        "fdt print /cpus",
        "fdt list / compatible",
        "fdt header",
        "fdt move 0x40000000 0x48000000",
        "fdt rsvmem delete 0",
        "fdt rsvmem add 0x49000000 0x1000",
        "fdt rm /psci",
        "fdt rm /chosen stdout-path",
        "fdt rsvmem add 0x4a000000 0",
    ]);
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    assert!(has_warning(&o, 4, "does not model"));
    assert!(has_warning(&o, 5, "does not model"));
    let t = o.tree.as_ref().unwrap();
    assert_eq!(t.boot_cpuid, 1);
    assert_eq!(t.reserved, [(0x4900_0000, 0x1000)]);
    assert!(t.find("/psci").is_none());
    assert_eq!(o.fdt_addr, Some(0x4800_0000));
    assert_eq!(env(&o, "fdtaddr"), Some("48000000"));
    let blob = t.to_dtb().unwrap();
    let f = Fdt::new(&blob).unwrap();
    assert_eq!(f.boot_cpuid(), 1);
    assert_eq!(o.line_of("/chosen", Some("stdout-path")), Some(13));
}

// ---- boot.scr ----

/// A legacy script image as `mkimage -A arm64 -T script -C none` makes it.
fn scr_image(text: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0; 4]);
    data.extend_from_slice(text);
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let mut h = vec![0u8; 64];
    h[0..4].copy_from_slice(&0x2705_1956u32.to_be_bytes());
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    h[24..28].copy_from_slice(&scr::crc32(&data).to_be_bytes());
    h[28] = 5; // Linux
    h[29] = 22; // arm64
    h[30] = 6; // script
    h[32..36].copy_from_slice(b"boot");
    let hcrc = scr::crc32(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());
    h.extend_from_slice(&data);
    h
}

#[test]
fn crc32_is_zlibs() {
    assert_eq!(scr::crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn boot_scr_round_trip_and_errors() {
    let text = script(IMAGEBUILDER);
    let img = scr_image(text.as_bytes());
    assert_eq!(script_of_scr(&img).unwrap(), text);

    let mut bad = img.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(script_of_scr(&bad).unwrap_err().contains("data checksum"));
    let mut bad = img.clone();
    bad[40] ^= 1;
    assert!(script_of_scr(&bad).unwrap_err().contains("header checksum"));
    assert!(script_of_scr(&img[..30]).unwrap_err().contains("header"));
    assert!(script_of_scr(&img[..img.len() - 8])
        .unwrap_err()
        .contains("announces"));
    assert!(script_of_scr(b"\xd0\x0d\xfe\xed....")
        .unwrap_err()
        .contains("FIT"));
    assert!(
        script_of_scr(b"hello world, not an image at all, really not one..................")
            .unwrap_err()
            .contains("bad magic")
    );
    assert!(script_of_scr(&[]).is_err());
    let empty = scr_image(b"");
    assert!(script_of_scr(&empty).unwrap_err().contains("empty"));
    let nul = scr_image(b"echo a\0echo b\n");
    assert_eq!(script_of_scr(&nul).unwrap(), "echo a");
}

/// The real mkimage writes what `script_of_scr` reads (skipped if
/// u-boot-tools is not installed).
#[test]
fn boot_scr_from_mkimage() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("dtvisor-scr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, out) = (dir.join("boot.cmd"), dir.join("boot.scr"));
    let text = script(IMAGEBUILDER);
    std::fs::write(&src, &text).unwrap();
    let made = Command::new("mkimage")
        .args([
            "-A", "arm64", "-T", "script", "-C", "none", "-n", "boot", "-d",
        ])
        .arg(&src)
        .arg(&out)
        .output();
    match made {
        Ok(m) if m.status.success() => {
            let img = std::fs::read(&out).unwrap();
            assert_eq!(script_of_scr(&img).unwrap(), text);
            let mut img = img;
            img[30] = 2; // a kernel image
            assert!(script_of_scr(&img).is_err());
        }
        _ => eprintln!("mkimage not available: skipped"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Arbitrary bytes as a script: never a panic, and the tree always writes.
#[test]
fn garbage_never_panics() {
    let board = board();
    let mut seed = 0x1234_5678u32;
    let alphabet = b"fdt set mknod rm addr resize /chosen <>[]'\"\\$#;&|{}?:-=\n 0x12 booti load run setenv setexpr";
    for _ in 0..300 {
        let mut s = String::new();
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            s.push(alphabet[(seed as usize) % alphabet.len()] as char);
        }
        let script = format!("fdt addr 0\nfdt resize 4096\n{s}");
        let o = run(&script, &board, &|_| Some(0x100), QEMU_ENV);
        if let Some(t) = &o.tree {
            let blob = t.to_dtb().unwrap();
            Fdt::new(&blob).unwrap();
        }
        for e in o.errors.iter().chain(&o.warnings) {
            let _ = e.to_string();
        }
    }
}
