use super::*;

/// Compiles DTS source with dtc (the tests' only way of making blobs, so
/// they exercise real dtc output).
pub use crate::testing::dtc;

const SAMPLE: &str = r#"/dts-v1/;
/memreserve/ 0x48000000 0x100000;
/ {
    #address-cells = <2>; #size-cells = <2>;
    aliases { serial0 = "/pl011@9000000"; };
    chosen {
        stdout-path = "serial0:115200n8";
        domU1 { compatible = "xen,domain"; memory = <0 0x40000>; cpus = <2>;
            kernel { compatible = "multiboot,kernel", "multiboot,module"; reg = <0 0x50000000 0 0x200000>; };
        };
    };
    memory@40000000 { device_type = "memory"; reg = <0 0x40000000 0 0x80000000>; };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0 0x9000000 0 0x1000>; phandle = <7>; };
};
"#;

#[test]
fn walks_a_real_tree() {
    let blob = dtc(SAMPLE);
    let fdt = Fdt::new(&blob).unwrap();
    let names: Vec<_> = fdt.root().children().map(|n| n.name()).collect();
    assert_eq!(
        names,
        ["aliases", "chosen", "memory@40000000", "pl011@9000000"]
    );
    let all: Vec<_> = fdt
        .root()
        .descendants()
        .map(|n| (n.name(), n.depth()))
        .collect();
    assert_eq!(all[2], ("domU1", 2));
    assert_eq!(all[3], ("kernel", 3));
    assert_eq!(all[4], ("memory@40000000", 1));
    let mem = fdt.find("/memory").unwrap();
    let r: Vec<_> = mem.prop("reg").unwrap().ranges(2, 2).unwrap().collect();
    assert_eq!(r, [(0x4000_0000, 0x8000_0000)]);
    assert_eq!(
        fdt.reserved_entries().collect::<Vec<_>>(),
        [(0x4800_0000, 0x10_0000)]
    );
    assert_eq!(fdt.alias("serial0").unwrap().name(), "pl011@9000000");
    assert_eq!(fdt.find_phandle(7).unwrap().name(), "pl011@9000000");
    let d = fdt.find("/chosen/domU1").unwrap();
    assert!(d.is_compatible("xen,domain"));
    assert_eq!(d.prop("memory").unwrap().u64(), Some(0x40000));
    assert_eq!(d.prop("cpus").unwrap().u32(), Some(2));
    assert_eq!(d.prop("compatible").unwrap().str(), Some("xen,domain"));
    let k = d.child("kernel").unwrap();
    let compat: Vec<_> = k.prop("compatible").unwrap().strings().collect();
    assert_eq!(compat, ["multiboot,kernel", "multiboot,module"]);
    assert!(fdt.find("/chosen/nothing").is_none());
}

#[test]
fn header_errors() {
    let blob = dtc(SAMPLE);
    assert_eq!(
        Fdt::new(&blob[..10]).unwrap_err(),
        FdtError::TooShort { len: 10 }
    );
    let mut bad = blob.clone();
    bad[0] = 0;
    assert!(matches!(Fdt::new(&bad), Err(FdtError::BadMagic { .. })));
    assert!(matches!(
        Fdt::new(&blob[..blob.len() - 1]),
        Err(FdtError::TotalSize { .. })
    ));
}

/// Every truncation and every single-byte corruption is an error value or
/// a tree that can be walked entirely: never a panic or a hang.
#[test]
fn mutations_never_panic() {
    let blob = dtc(SAMPLE);
    let walk = |b: &[u8]| {
        if let Ok(f) = Fdt::new(b) {
            for n in f.root().descendants() {
                for p in n.props() {
                    let _ = (p.str(), p.u32(), p.strings().count());
                    if let Some(r) = p.ranges(2, 2) {
                        let _ = r.count();
                    }
                }
                let _ = n.children().count();
            }
            let _ = f.reserved_entries().count();
        }
    };
    for len in 0..blob.len() {
        let mut t = blob[..len].to_vec();
        // Keep totalsize consistent so truncation reaches the inner checks.
        if len >= 8 {
            t[4..8].copy_from_slice(&(len as u32).to_be_bytes());
        }
        walk(&t);
    }
    for i in 0..blob.len() {
        for v in [0x00, 0x01, 0x02, 0x03, 0x04, 0x09, 0x7f, 0xff] {
            let mut t = blob.clone();
            t[i] = v;
            walk(&t);
        }
    }
}

#[test]
fn deep_nesting_is_refused() {
    let mut src = String::from("/dts-v1/;\n/ {");
    for i in 0..40 {
        src += &format!(" n{i} {{");
    }
    src += &"};".repeat(40);
    src += "};\n";
    let blob = dtc(&src);
    assert!(matches!(Fdt::new(&blob), Err(FdtError::TooDeep { .. })));
}

/// A property after a subnode breaks the specification's order (a node's
/// properties, then its subnodes), and `props()` would never show it: the
/// blob is refused up front.
#[test]
fn property_after_subnode_is_refused() {
    let blob = dtc("/dts-v1/;\n/ { p = <1>; a { }; };");
    assert!(Fdt::new(&blob).is_ok());
    let st = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
    // Root BEGIN_NODE "" (8 bytes), PROP p (16), BEGIN_NODE "a" (8),
    // END_NODE (4): move the property after the subnode.
    let mut bad = blob.clone();
    let (prop, child) = (st + 8..st + 24, st + 24..st + 36);
    let mut moved = blob[child.clone()].to_vec();
    moved.extend_from_slice(&blob[prop]);
    bad[st + 8..st + 36].copy_from_slice(&moved);
    assert_eq!(
        Fdt::new(&bad).unwrap_err(),
        FdtError::BadToken {
            offset: 20,
            token: FDT_PROP
        }
    );
}
