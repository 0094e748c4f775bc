//! U-Boot boot scripts through the pre-flight check: the interpreter on a
//! small fixed board DTB, the edited tree written out, read back and given
//! to dtvisor's parser, diagnostics mapped back to script lines. Nothing
//! may panic, and an edited tree must always write out as a blob that
//! reads back as the same tree.
//!
//! Input: one byte of settings, then the script (lossy UTF-8).
//! Settings bit 0: file sizes are known (else every size is unknown);
//! bit 1: start from QEMU-like variables (else an empty environment);
//! bit 2: prepend `fdt addr` with room to edit, so that mutations reach
//! the `fdt` commands quickly.
#![no_main]

use std::sync::OnceLock;

use dtvisor::fdt::tree::{Node, Tree};
use dtvisor::fdt::Fdt;
use dtvisor_plan::uboot;
use libfuzzer_sys::fuzz_target;

fn node(name: &str, props: &[(&str, &[u8])], children: Vec<Node>) -> Node {
    Node {
        name: name.into(),
        props: props
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
        children,
    }
}

fn board() -> &'static [u8] {
    static BOARD: OnceLock<Vec<u8>> = OnceLock::new();
    BOARD.get_or_init(|| {
        let two = [0, 0, 0, 2];
        let tree = Tree {
            root: node(
                "",
                &[
                    ("#address-cells", &two),
                    ("#size-cells", &two),
                    ("model", b"fuzz\0"),
                ],
                vec![
                    node(
                        "aliases",
                        &[("serial0", b"/uart@9000000\0"), ("ch", b"/chosen\0")],
                        vec![],
                    ),
                    node("chosen", &[("stdout-path", b"serial0\0")], vec![]),
                    node(
                        "memory@40000000",
                        &[
                            ("device_type", b"memory\0"),
                            (
                                "reg",
                                &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0],
                            ),
                        ],
                        vec![],
                    ),
                    node(
                        "cpus",
                        &[("#address-cells", &[0, 0, 0, 1]), ("#size-cells", &[0; 4])],
                        vec![node(
                            "cpu@0",
                            &[("reg", &[0; 4]), ("device_type", b"cpu\0")],
                            vec![],
                        )],
                    ),
                    node(
                        "uart@9000000",
                        &[("compatible", b"arm,pl011\0arm,primecell\0")],
                        vec![],
                    ),
                ],
            ),
            reserved: vec![(0x4800_0000, 0x1000)],
            boot_cpuid: 0,
        };
        tree.to_dtb().expect("the fuzz board writes")
    })
}

const ENV: &[(&str, &str)] = &[
    ("fdt_addr", "40000000"),
    ("kernel_addr_r", "0x40400000"),
    ("loadaddr", "0x40200000"),
    ("devtype", "virtio"),
    ("devnum", "0"),
    ("bootfile", "Image"),
];

fuzz_target!(|data: &[u8]| {
    let _ = uboot::script_of_scr(data);
    let (settings, rest) = match data.split_first() {
        Some((s, r)) => (*s, r),
        None => (0, data),
    };
    let mut script = String::new();
    if settings & 4 != 0 {
        script.push_str("fdt addr 40000000 10000\n");
    }
    script.push_str(&String::from_utf8_lossy(rest));
    let sizes_known = settings & 1 != 0;
    let size = |f: &str| sizes_known.then(|| (f.len() as u64) << 12);
    let env = if settings & 2 != 0 { ENV } else { &[] };

    let out = uboot::run(&script, board(), &size, env);
    for d in out.errors.iter().chain(&out.warnings) {
        let _ = d.to_string();
    }
    let Some(tree) = &out.tree else {
        return;
    };
    let blob = tree.to_dtb().expect("an edited tree always writes");
    let fdt = Fdt::new(&blob).expect("a written tree always reads back");
    assert_eq!(&Tree::from_fdt(&fdt), tree, "the tree survives writing");
    let report = dtvisor::config::parse_blob(&blob);
    for d in &report.diagnostics {
        let _ = out.line_of(&d.path, d.property.as_deref());
    }
});
