//! Cross-checks our flattened-device-tree reader (`dtvisor::fdt`) against
//! an independent one, the `fdt-rs` crate (its `base` API), one trial per
//! blob (libtest-mimic, so a failure names the blob:
//! `cargo test --test fdt_crosscheck -- debian/broadcom`).
//!
//! Blobs: every board DTB of Debian's arm64 kernel package and the QEMU
//! virt dumps (cache/dtbs, fetched by scripts/fetch-test-dtbs, which
//! scripts/test runs before `cargo test`; as in tests/discovery.rs a
//! missing corpus fails unless DTVISOR_SKIP_DTB_CORPUS is set), every DTS
//! of the conformance suite (each case's input.dts and partial-*.dts,
//! compiled with dtc as tests/conformance.rs does), every committed *.dtb
//! and partial-*.bin under tests/conformance, and hand-made malformed
//! blobs (`made/*`, built below).
//!
//! Each reader either accepts a blob or rejects it. Ours accepts when
//! `Fdt::new` succeeds (it validates the whole structure block up front);
//! its nodes are walked with `root()` and `children()`, properties with
//! `props()`. fdt-rs is driven as its documentation says: `read_totalsize`,
//! the buffer cut to that size (when the blob is at least that long),
//! `DevTree::new` on a 4-byte aligned copy; it accepts when that and the
//! whole walk end without an error or a panic: `parse_iter()` for the
//! nesting (the item iterators do not report END_NODE), `nodes()` and each
//! node's `props()`, every `name()` and `raw()`. A panic (fdt-rs unwraps
//! header reads and has debug assertions on its offsets) counts as a
//! rejection.
//!
//! Where both accept, they must agree on every node (full path built from
//! the nesting, each component the name with its unit address as in the
//! blob; the node's offset in the structure block; in blob order) and on
//! every property (name and raw value bytes, in order). Where exactly one
//! accepts, the blob must be in [`EXPLAINED`] with the side that rejects
//! and the error it gives; an entry whose blob both now accept or both
//! reject, or that is rejected differently, is stale and fails too.

use dtvisor::fdt::{Fdt, Node};
use fdt_rs::base::parse::ParsedTok;
use fdt_rs::base::DevTree;
use fdt_rs::prelude::*;
use libtest_mimic::{Arguments, Failed, Trial};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Which reader rejects a blob the other accepts, and why.
#[derive(Clone, Copy, Debug)]
enum Rejects {
    /// Ours rejects with this `FdtError` variant; why fdt-rs does not.
    Ours(&'static str, &'static str),
    /// fdt-rs rejects with this error (`DevTreeError` as `Debug`, or
    /// "panicked"); why.
    FdtRs(&'static str, &'static str),
    /// fdt-rs rejects with `ParseError` exactly at the BEGIN_NODE of the
    /// first node whose name is [`FDT_RS_NAME_MAX`] bytes or more (checked).
    LongName,
}
use Rejects::{FdtRs, LongName, Ours};

impl Rejects {
    fn why(&self) -> &'static str {
        match self {
            Ours(_, why) | FdtRs(_, why) => why,
            LongName => LONG_NAME_WHY,
        }
    }
}

/// fdt-rs reads a node name with `nread_bstring0(off, MAX_NODE_NAME_LEN - 1)`
/// (MAX_NODE_NAME_LEN = 31): the NUL must be within 30 bytes, so a name
/// (unit address included) of 30 bytes or more is a `ParseError`. The
/// specification limits only the node-name part before `@` to 31
/// characters, and Linux's trees have longer full names.
const FDT_RS_NAME_MAX: usize = 30;
const LONG_NAME_WHY: &str = "fdt-rs rejects: a node name (with its unit address) of 30 bytes \
     or more; fdt-rs caps node names at MAX_NODE_NAME_LEN - 2 = 29 bytes, \
     the specification and ours do not";

/// Every blob exactly one reader accepts.
const EXPLAINED: &[(&str, Rejects)] = &[
    // The conformance case for long names, and the board DTBs of Debian's
    // arm64 kernel package (Linux 6.1) with a node name of 30 bytes or
    // more, most of them Qualcomm's (LONG_NAME_WHY).
    ("conformance/dl-long-names/input.dts", LongName),
    ("debian/apm/apm-merlin.dtb", LongName),
    ("debian/apm/apm-mustang.dtb", LongName),
    ("debian/cavium/thunder-88xx.dtb", LongName),
    ("debian/cavium/thunder2-99xx.dtb", LongName),
    ("debian/hisilicon/hi3798cv200-poplar.dtb", LongName),
    ("debian/hisilicon/hip07-d05.dtb", LongName),
    ("debian/marvell/ac5-98dx35xx-rd.dtb", LongName),
    ("debian/nvidia/tegra132-norrin.dtb", LongName),
    ("debian/nvidia/tegra210-p2371-0000.dtb", LongName),
    ("debian/nvidia/tegra210-p2371-2180.dtb", LongName),
    ("debian/nvidia/tegra210-p2571.dtb", LongName),
    ("debian/nvidia/tegra210-p2894-0050-a08.dtb", LongName),
    ("debian/nvidia/tegra210-p3450-0000.dtb", LongName),
    ("debian/nvidia/tegra210-smaug.dtb", LongName),
    ("debian/qcom/qrb5165-rb5.dtb", LongName),
    ("debian/qcom/sa8155p-adp.dtb", LongName),
    ("debian/qcom/sa8295p-adp.dtb", LongName),
    ("debian/qcom/sc7180-idp.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-coachz-r1-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-coachz-r1.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-coachz-r3-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-coachz-r3.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-homestar-r2.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-homestar-r3.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-homestar-r4.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-kingoftown-r0.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-kingoftown-r1.dtb", LongName),
    (
        "debian/qcom/sc7180-trogdor-lazor-limozeen-nots-r4.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-lazor-limozeen-nots-r5.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-lazor-limozeen-nots-r9.dtb",
        LongName,
    ),
    ("debian/qcom/sc7180-trogdor-lazor-limozeen-r4.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-limozeen-r9.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r0.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r1-kb.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r1-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r1.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r3-kb.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r3-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r3.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r9-kb.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r9-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-lazor-r9.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-mrbland-rev0-auo.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-mrbland-rev0-boe.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-mrbland-rev1-auo.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-mrbland-rev1-boe.dtb", LongName),
    (
        "debian/qcom/sc7180-trogdor-pazquel-lte-parade.dtb",
        LongName,
    ),
    ("debian/qcom/sc7180-trogdor-pazquel-lte-ti.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pazquel-parade.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pazquel-ti.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pompom-r1-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pompom-r1.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pompom-r2-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pompom-r2.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pompom-r3-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-pompom-r3.dtb", LongName),
    (
        "debian/qcom/sc7180-trogdor-quackingstick-r0-lte.dtb",
        LongName,
    ),
    ("debian/qcom/sc7180-trogdor-quackingstick-r0.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-r1-lte.dtb", LongName),
    ("debian/qcom/sc7180-trogdor-r1.dtb", LongName),
    (
        "debian/qcom/sc7180-trogdor-wormdingler-rev0-boe.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-wormdingler-rev0-inx.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-wormdingler-rev1-boe-rt5682s.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-wormdingler-rev1-boe.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-wormdingler-rev1-inx-rt5682s.dtb",
        LongName,
    ),
    (
        "debian/qcom/sc7180-trogdor-wormdingler-rev1-inx.dtb",
        LongName,
    ),
    ("debian/qcom/sc7280-crd-r3.dtb", LongName),
    ("debian/qcom/sc7280-herobrine-crd.dtb", LongName),
    ("debian/qcom/sc7280-herobrine-evoker-r0.dtb", LongName),
    ("debian/qcom/sc7280-herobrine-herobrine-r1.dtb", LongName),
    ("debian/qcom/sc7280-herobrine-villager-r0.dtb", LongName),
    ("debian/qcom/sc7280-herobrine-villager-r1-lte.dtb", LongName),
    ("debian/qcom/sc7280-herobrine-villager-r1.dtb", LongName),
    ("debian/qcom/sc7280-idp.dtb", LongName),
    ("debian/qcom/sc7280-idp2.dtb", LongName),
    ("debian/qcom/sc8280xp-crd.dtb", LongName),
    ("debian/qcom/sc8280xp-lenovo-thinkpad-x13s.dtb", LongName),
    ("debian/qcom/sdm845-cheza-r1.dtb", LongName),
    ("debian/qcom/sdm845-cheza-r2.dtb", LongName),
    ("debian/qcom/sdm845-cheza-r3.dtb", LongName),
    ("debian/qcom/sdm845-db845c.dtb", LongName),
    ("debian/qcom/sdm845-lg-judyln.dtb", LongName),
    ("debian/qcom/sdm845-lg-judyp.dtb", LongName),
    ("debian/qcom/sdm845-mtp.dtb", LongName),
    ("debian/qcom/sdm845-oneplus-enchilada.dtb", LongName),
    ("debian/qcom/sdm845-oneplus-fajita.dtb", LongName),
    ("debian/qcom/sdm845-shift-axolotl.dtb", LongName),
    ("debian/qcom/sdm845-sony-xperia-tama-akari.dtb", LongName),
    ("debian/qcom/sdm845-sony-xperia-tama-akatsuki.dtb", LongName),
    ("debian/qcom/sdm845-sony-xperia-tama-apollo.dtb", LongName),
    ("debian/qcom/sdm845-xiaomi-beryllium.dtb", LongName),
    ("debian/qcom/sdm845-xiaomi-polaris.dtb", LongName),
    ("debian/qcom/sdm850-lenovo-yoga-c630.dtb", LongName),
    ("debian/qcom/sdm850-samsung-w737.dtb", LongName),
    ("debian/qcom/sm6350-sony-xperia-lena-pdx213.dtb", LongName),
    ("debian/qcom/sm7225-fairphone-fp4.dtb", LongName),
    ("debian/qcom/sm8150-hdk.dtb", LongName),
    ("debian/qcom/sm8150-microsoft-surface-duo.dtb", LongName),
    ("debian/qcom/sm8150-mtp.dtb", LongName),
    (
        "debian/qcom/sm8150-sony-xperia-kumano-bahamut.dtb",
        LongName,
    ),
    (
        "debian/qcom/sm8150-sony-xperia-kumano-griffin.dtb",
        LongName,
    ),
    ("debian/qcom/sm8250-hdk.dtb", LongName),
    ("debian/qcom/sm8250-mtp.dtb", LongName),
    ("debian/qcom/sm8250-sony-xperia-edo-pdx203.dtb", LongName),
    ("debian/qcom/sm8250-sony-xperia-edo-pdx206.dtb", LongName),
    ("debian/qcom/sm8350-hdk.dtb", LongName),
    ("debian/qcom/sm8350-microsoft-surface-duo2.dtb", LongName),
    ("debian/qcom/sm8350-mtp.dtb", LongName),
    ("debian/qcom/sm8350-sony-xperia-sagami-pdx214.dtb", LongName),
    ("debian/qcom/sm8350-sony-xperia-sagami-pdx215.dtb", LongName),
    ("debian/qcom/sm8450-hdk.dtb", LongName),
    ("debian/qcom/sm8450-qrd.dtb", LongName),
    ("debian/qcom/sm8450-sony-xperia-nagara-pdx223.dtb", LongName),
    ("debian/ti/k3-am625-sk.dtb", LongName),
    ("debian/ti/k3-am6528-iot2050-basic-pg2.dtb", LongName),
    ("debian/ti/k3-am6528-iot2050-basic.dtb", LongName),
    ("debian/ti/k3-am6548-iot2050-advanced-pg2.dtb", LongName),
    ("debian/ti/k3-am6548-iot2050-advanced.dtb", LongName),
    // Hand-made blobs: ours is stricter by design.
    (
        "made/totalsize-past-buffer",
        Ours(
            "TotalSize",
            "ours rejects: totalsize is larger than the buffer; fdt-rs takes a \
             buffer no longer than totalsize and only bounds its reads by the buffer",
        ),
    ),
    (
        "made/version-15",
        Ours(
            "Version",
            "ours rejects: version 15 (ours reads 16 and 17); fdt-rs never checks the version",
        ),
    ),
    (
        "made/struct-size-past-blob",
        Ours(
            "Block",
            "ours rejects: size_dt_struct runs past totalsize; fdt-rs ignores size_dt_struct",
        ),
    ),
    (
        "made/struct-size-too-small",
        Ours(
            "Truncated",
            "ours rejects: a property runs past the end of the structure block \
             (size_dt_struct); fdt-rs ignores size_dt_struct and reads on to FDT_END",
        ),
    ),
    (
        "made/overlap-rsvmap-on-struct",
        Ours(
            "ReserveMap",
            "ours rejects: the reservation map (pointed at the structure block) has \
             no (0, 0) terminator before totalsize; fdt-rs does not read the map \
             while walking nodes",
        ),
    ),
    (
        "made/prop-name-outside-strings",
        Ours(
            "BadPropName",
            "ours rejects: property name offset outside the strings block; fdt-rs \
             reads the name anywhere in the blob",
        ),
    ),
    (
        "made/prop-name-unterminated-in-strings",
        Ours(
            "BadPropName",
            "ours rejects: the property name's NUL is past the strings block \
             (size_dt_strings); fdt-rs ignores size_dt_strings",
        ),
    ),
    (
        "made/end-inside-node",
        Ours(
            "Unbalanced",
            "ours rejects: FDT_END inside an open node; fdt-rs stops at FDT_END \
             without checking the nesting",
        ),
    ),
    (
        "made/extra-end-node",
        Ours(
            "Unbalanced",
            "ours rejects: END_NODE without BEGIN_NODE; fdt-rs does not track the nesting",
        ),
    ),
    (
        "made/two-roots",
        Ours(
            "BadToken",
            "ours rejects: a second BEGIN_NODE at depth 0 (two roots); fdt-rs walks on",
        ),
    ),
    (
        "made/too-deep",
        Ours(
            "TooDeep",
            "ours rejects: nodes nested deeper than MAX_DEPTH (32); fdt-rs has no limit",
        ),
    ),
    // Hand-made blobs fdt-rs cannot read.
    (
        "made/valid-strings-first",
        FdtRs(
            "panicked",
            "fdt-rs rejects (panicked): a valid blob whose structure block ends the \
             blob (strings first); next_devtree_token's \
             debug_assert!(buf.len() > off + 4) fails on FDT_END as the last word",
        ),
    ),
    (
        "made/no-strings",
        FdtRs(
            "panicked",
            "fdt-rs rejects (panicked): a valid blob with no properties and an empty \
             strings block, so FDT_END is its last word (the same debug_assert)",
        ),
    ),
    ("made/node-name-30-bytes", LongName),
];

/// Whether a reader accepted a blob, and what it saw.
enum Outcome {
    Accepted(Vec<NodeView>),
    /// `at`: the structure-block offset of the token fdt-rs failed on.
    Rejected {
        err: String,
        at: Option<usize>,
    },
}

fn rejected(err: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        err: err.into(),
        at: None,
    }
}

/// One node as a reader presents it.
#[derive(Debug, PartialEq)]
struct NodeView {
    /// Offset of its BEGIN_NODE token in the structure block.
    offset: usize,
    path: String,
    props: Vec<(String, Vec<u8>)>,
}

impl NodeView {
    fn name(&self) -> &str {
        if self.path == "/" {
            ""
        } else {
            self.path.rsplit('/').next().unwrap_or("")
        }
    }
}

fn join(parent: &str, name: &str) -> String {
    match parent {
        "" => "/".to_string(),
        "/" => format!("/{name}"),
        p => format!("{p}/{name}"),
    }
}

fn ours(blob: &[u8]) -> Outcome {
    fn walk(n: &Node<'_>, parent: &str, out: &mut Vec<NodeView>) {
        let path = join(parent, n.name());
        out.push(NodeView {
            offset: n.offset(),
            path: path.clone(),
            props: n
                .props()
                .map(|p| (p.name.to_string(), p.value.to_vec()))
                .collect(),
        });
        for c in n.children() {
            walk(&c, &path, out);
        }
    }
    let r = catch_unwind(|| {
        Fdt::new(blob).map(|f| {
            let mut v = Vec::new();
            walk(&f.root(), "", &mut v);
            v
        })
    });
    match r {
        Ok(Ok(v)) => Outcome::Accepted(v),
        Ok(Err(e)) => rejected(format!("{e:?}")),
        // Ours must never panic: `check` fails the trial.
        Err(_) => rejected("panicked"),
    }
}

thread_local! {
    /// Set while fdt-rs runs, so that the panic hook keeps quiet for it.
    static IN_FDT_RS: Cell<bool> = const { Cell::new(false) };
}

fn fdt_rs(blob: &[u8]) -> Outcome {
    // fdt-rs reads the buffer through `*const u32`: give it an aligned copy.
    let mut words = vec![0u32; blob.len().div_ceil(4)];
    // SAFETY: u32 has no padding, and any bytes are a valid u32.
    let bytes: &mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) };
    bytes[..blob.len()].copy_from_slice(blob);
    let aligned: &[u8] = &bytes[..blob.len()];
    IN_FDT_RS.with(|f| f.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| fdt_rs_walk(aligned)));
    IN_FDT_RS.with(|f| f.set(false));
    match r {
        Ok(Ok(v)) => Outcome::Accepted(v),
        Ok(Err((err, at))) => Outcome::Rejected { err, at },
        Err(_) => rejected("panicked"),
    }
}

type FdtRsResult<T> = Result<T, (String, Option<usize>)>;

fn fdt_rs_walk(buf: &[u8]) -> FdtRsResult<Vec<NodeView>> {
    let e = |e: fdt_rs::error::DevTreeError| (format!("{e:?}"), None);
    // SAFETY: `buf` is 4-byte aligned (see `fdt_rs`) and cut to totalsize
    // as documented; whether the rest can be trusted is what this test is
    // about: fdt-rs checks bounds on its reads, and its panics are caught.
    let tree = unsafe {
        let size = DevTree::read_totalsize(buf).map_err(e)?;
        DevTree::new(&buf[..size.min(buf.len())]).map_err(e)?
    };
    let base = tree.off_dt_struct();
    // The nesting: offset and path of each BEGIN_NODE, in order.
    let mut begins = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut pi = tree.parse_iter();
    loop {
        let at = pi.offset;
        let tok = pi
            .next()
            .map_err(|err| (format!("{err:?}"), at.checked_sub(base)))?;
        match tok {
            None => break,
            Some(ParsedTok::BeginNode(b)) => {
                let name = String::from_utf8_lossy(b.name);
                let path = join(stack.last().map_or("", |s| s), &name);
                begins.push((at - base, path.clone()));
                stack.push(path);
            }
            Some(ParsedTok::EndNode) => {
                stack.pop();
            }
            Some(ParsedTok::Prop(_) | ParsedTok::Nop) => {}
        }
    }
    let mut nodes = Vec::new();
    let mut it = tree.nodes();
    while let Some(n) = it.next().map_err(e)? {
        n.name().map_err(e)?;
        let mut props = Vec::new();
        let mut pi = n.props();
        while let Some(p) = pi.next().map_err(e)? {
            props.push((p.name().map_err(e)?.to_string(), p.raw().to_vec()));
        }
        nodes.push(props);
    }
    if begins.len() != nodes.len() {
        return Err((
            format!(
                "nodes() gave {} nodes, parse_iter() {} BEGIN_NODE tokens",
                nodes.len(),
                begins.len()
            ),
            None,
        ));
    }
    Ok(begins
        .into_iter()
        .zip(nodes)
        .map(|((offset, path), props)| NodeView {
            offset,
            path,
            props,
        })
        .collect())
}

fn show_value(v: &[u8]) -> String {
    let hex: Vec<String> = v.iter().take(32).map(|b| format!("{b:02x}")).collect();
    let more = if v.len() > 32 { " ..." } else { "" };
    format!("[{} bytes: {}{more}]", v.len(), hex.join(" "))
}

/// The first difference between the two readers' views, if any.
fn compare(a: &[NodeView], b: &[NodeView]) -> Result<(), String> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.path != y.path || x.offset != y.offset {
            return Err(format!(
                "node #{i}: ours {:?} at {:#x}, fdt-rs {:?} at {:#x}",
                x.path, x.offset, y.path, y.offset
            ));
        }
        for (j, (p, q)) in x.props.iter().zip(&y.props).enumerate() {
            if p != q {
                return Err(format!(
                    "{} property #{j}: ours {:?} = {}, fdt-rs {:?} = {}",
                    x.path,
                    p.0,
                    show_value(&p.1),
                    q.0,
                    show_value(&q.1)
                ));
            }
        }
        if x.props.len() != y.props.len() {
            return Err(format!(
                "{}: ours has {} properties, fdt-rs {}",
                x.path,
                x.props.len(),
                y.props.len()
            ));
        }
    }
    if a.len() != b.len() {
        return Err(format!("ours has {} nodes, fdt-rs {}", a.len(), b.len()));
    }
    Ok(())
}

/// How the two readers judged a blob, for the closing summary.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Verdict {
    BothAccept,
    BothReject,
    OnlyOurs,
    OnlyFdtRs,
}

/// (blob kind, verdict, the EXPLAINED reason) of every blob checked.
type Seen = (String, Verdict, &'static str);
static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

fn check(name: &str, blob: &[u8]) -> Result<(), Failed> {
    let o = ours(blob);
    let f = fdt_rs(blob);
    let entry = EXPLAINED.iter().find(|(n, _)| *n == name).map(|e| e.1);
    let err_of = |x: &Outcome| match x {
        Outcome::Rejected { err, .. } => err.clone(),
        Outcome::Accepted(_) => String::new(),
    };
    let verdict = match (&o, &f) {
        (Outcome::Accepted(_), Outcome::Accepted(_)) => Verdict::BothAccept,
        (Outcome::Rejected { .. }, Outcome::Rejected { .. }) => Verdict::BothReject,
        (Outcome::Accepted(_), _) => Verdict::OnlyOurs,
        (_, Outcome::Accepted(_)) => Verdict::OnlyFdtRs,
    };
    let kind = name.split('/').next().unwrap_or("").to_string();
    let why = entry.map_or("", |e| e.why());
    SEEN.lock().unwrap().push((kind, verdict, why));

    if err_of(&o) == "panicked" {
        return Err(format!("{name}: our reader panicked").into());
    }
    match (&o, &f) {
        (Outcome::Accepted(a), Outcome::Accepted(b)) => {
            compare(a, b).map_err(|d| format!("{name}: both accept, but {d}"))?;
            match entry {
                None => Ok(()),
                // fdt-rs's panics on these come from its debug assertions,
                // which a release build (`cargo test --release`) has not.
                Some(FdtRs("panicked", _)) if !cfg!(debug_assertions) => Ok(()),
                Some(_) => Err(format!("{name}: stale EXPLAINED entry: both accept now").into()),
            }
        }
        (Outcome::Rejected { .. }, Outcome::Rejected { .. }) => match entry {
            None => Ok(()),
            Some(_) => Err(format!(
                "{name}: stale EXPLAINED entry: both reject now (ours {}, fdt-rs {})",
                err_of(&o),
                err_of(&f)
            )
            .into()),
        },
        (Outcome::Rejected { err, .. }, Outcome::Accepted(_)) => match entry {
            Some(Ours(kind, _)) if variant(err) == kind => Ok(()),
            _ => Err(format!(
                "{name}: only fdt-rs accepts it; ours rejects it with {err} \
                 (EXPLAINED has {entry:?}; add Ours({:?}, \"why\"))",
                variant(err)
            )
            .into()),
        },
        (Outcome::Accepted(view), Outcome::Rejected { err, at }) => match entry {
            Some(FdtRs(kind, _)) if err == kind => Ok(()),
            Some(LongName) => long_name(view, err, *at)
                .map_err(|m| format!("{name}: EXPLAINED says LongName, but {m}").into()),
            _ => Err(format!(
                "{name}: only ours accepts it; fdt-rs rejects it with {err}{} \
                 (EXPLAINED has {entry:?}; add FdtRs({err:?}, \"why\") or LongName)",
                at.map(|a| format!(" at struct offset {a:#x}"))
                    .unwrap_or_default()
            )
            .into()),
        },
    }
}

/// Whether fdt-rs failed exactly at the first node with a long name.
fn long_name(view: &[NodeView], err: &str, at: Option<usize>) -> Result<(), String> {
    let Some(first) = view.iter().find(|n| n.name().len() >= FDT_RS_NAME_MAX) else {
        return Err(format!("no node name is {FDT_RS_NAME_MAX} bytes or longer"));
    };
    if err == "ParseError" && at == Some(first.offset) {
        Ok(())
    } else {
        Err(format!(
            "fdt-rs failed with {err} at {at:x?}, the first long name is {} at {:#x}",
            first.path, first.offset
        ))
    }
}

/// `BadMagic { found: 1 }` -> `BadMagic`.
fn variant(debug: &str) -> &str {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or(debug)
}

fn summary() {
    let seen = SEEN.lock().unwrap();
    if seen.is_empty() {
        return;
    }
    let mut kinds: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    println!("\nfdt-crosscheck: {} blobs", seen.len());
    for k in kinds {
        let n = |v: Verdict| seen.iter().filter(|s| s.0 == k && s.1 == v).count();
        println!(
            "  {k:12} {:4} both accept, {:3} both reject, {:3} only ours, {:3} only fdt-rs",
            n(Verdict::BothAccept),
            n(Verdict::BothReject),
            n(Verdict::OnlyOurs),
            n(Verdict::OnlyFdtRs)
        );
    }
    let mut whys: Vec<(Verdict, &str)> = seen
        .iter()
        .filter(|s| matches!(s.1, Verdict::OnlyOurs | Verdict::OnlyFdtRs))
        .map(|s| (s.1, s.2))
        .collect();
    whys.sort();
    let mut i = 0;
    while i < whys.len() {
        let n = whys[i..].iter().take_while(|w| **w == whys[i]).count();
        let side = if whys[i].0 == Verdict::OnlyOurs {
            "only ours accepts"
        } else {
            "only fdt-rs accepts"
        };
        println!("  {n:4} {side}: {}", whys[i].1);
        i += n;
    }
}

// ---- the blobs ----

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn rel(p: &Path, base: &Path) -> String {
    p.strip_prefix(base).unwrap().to_string_lossy().into_owned()
}

fn is_ext(p: &Path, ext: &str) -> bool {
    p.extension().is_some_and(|x| x == ext)
}

/// As tests/conformance.rs compiles its cases.
fn compile(file: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o", "-"])
        .arg(file)
        .output()
        .map_err(|e| format!("dtc: {e} (run scripts/setup)"))?;
    if !out.status.success() {
        return Err(format!(
            "dtc failed on {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn file_trial(name: String, path: PathBuf, dts: bool) -> Trial {
    Trial::test(name.clone(), move || {
        let blob = if dts {
            compile(&path)?
        } else {
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?
        };
        check(&name, &blob)
    })
}

fn corpus_trials() -> Vec<Trial> {
    let cache = root().join("cache/dtbs");
    let debian = cache.join("debian");
    let mut v = Vec::new();
    if !debian.exists() {
        let skip = std::env::var_os("DTVISOR_SKIP_DTB_CORPUS").is_some();
        let msg = format!("{} missing: run scripts/fetch-test-dtbs", debian.display());
        v.push(Trial::test("debian-corpus", move || Err(msg.into())).with_ignored_flag(skip));
        return v;
    }
    let files = files_under(&cache, &|p| is_ext(p, "dtb"));
    let n = files.iter().filter(|p| p.starts_with(&debian)).count();
    v.push(Trial::test("debian-corpus", move || {
        if n > 500 {
            Ok(())
        } else {
            Err(format!("expected Debian's ~577 board DTBs, found {n}").into())
        }
    }));
    for p in files {
        v.push(file_trial(rel(&p, &cache), p, false));
    }
    v
}

fn conformance_trials() -> Vec<Trial> {
    let base = root().join("tests");
    let suite = base.join("conformance");
    let files = files_under(&suite, &|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        // Top-level *.dtsi are includes, not trees.
        p.parent() != Some(suite.as_path())
            && (name == "input.dts"
                || (name.starts_with("partial-")
                    && (name.ends_with(".dts") || name.ends_with(".bin")))
                || name.ends_with(".dtb"))
    });
    let n = files.len();
    let mut v = vec![Trial::test("conformance-blobs", move || {
        if n >= 100 {
            Ok(())
        } else {
            Err(format!("expected the conformance suite's blobs, found {n}").into())
        }
    })];
    for p in files {
        let dts = is_ext(&p, "dts");
        v.push(file_trial(rel(&p, &base), p, dts));
    }
    v
}

// ---- hand-made malformed blobs ----

const BEGIN: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;

/// Structure-block tokens.
#[derive(Default, Clone)]
struct Structs(Vec<u8>);

impl Structs {
    fn word(mut self, w: u32) -> Self {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }
    fn pad(mut self) -> Self {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    fn begin(self, name: &str) -> Self {
        let mut s = self.word(BEGIN);
        s.0.extend_from_slice(name.as_bytes());
        s.0.push(0);
        s.pad()
    }
    fn end_node(self) -> Self {
        self.word(END_NODE)
    }
    fn prop(self, nameoff: u32, value: &[u8]) -> Self {
        let mut s = self.word(PROP).word(value.len() as u32).word(nameoff);
        s.0.extend_from_slice(value);
        s.pad()
    }
    fn end(self) -> Self {
        self.word(END)
    }
}

/// Offsets into [`STRINGS`].
const COMPATIBLE: u32 = 0;
const REG: u32 = 11;
const STRINGS: &[u8] = b"compatible\0reg\0";

/// A valid little tree: / { compatible; dev@1000 { reg; }; }.
fn good_structs() -> Structs {
    Structs::default()
        .begin("")
        .prop(COMPATIBLE, b"test,board\0")
        .begin("dev@1000")
        .prop(REG, &[0, 0, 0x10, 0, 0, 0, 0, 0x10])
        .end_node()
        .end_node()
        .end()
}

const H_TOTALSIZE: usize = 1;
const H_OFF_STRUCT: usize = 2;
const H_OFF_STRINGS: usize = 3;
const H_SIZE_STRINGS: usize = 8;
const H_SIZE_STRUCT: usize = 9;

/// header (40) + empty reservation map (16) + structure block + strings
/// (`strings_first`: strings before the structure block, so the structure
/// block ends the blob).
fn build(s: &Structs, strings: &[u8], strings_first: bool) -> Vec<u8> {
    let rsv = 40u32;
    let (off_struct, off_strings) = if strings_first {
        let o = rsv + 16;
        (o + (strings.len() as u32).next_multiple_of(4), o)
    } else {
        (rsv + 16, rsv + 16 + s.0.len() as u32)
    };
    let total = 40 + 16 + s.0.len() + strings.len().next_multiple_of(4);
    let mut b = vec![0u8; total];
    let hdr = [
        0xd00d_feed,
        total as u32,
        off_struct,
        off_strings,
        rsv,
        17,
        16,
        0,
        strings.len() as u32,
        s.0.len() as u32,
    ];
    for (i, w) in hdr.iter().enumerate() {
        set32(&mut b, i * 4, *w);
    }
    b[off_struct as usize..][..s.0.len()].copy_from_slice(&s.0);
    b[off_strings as usize..][..strings.len()].copy_from_slice(strings);
    b
}

fn set32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn hdr(b: &mut [u8], field: usize, v: u32) {
    set32(b, field * 4, v);
}

fn get_hdr(b: &[u8], field: usize) -> u32 {
    u32::from_be_bytes(b[field * 4..field * 4 + 4].try_into().unwrap())
}

fn made_blobs() -> Vec<(&'static str, Vec<u8>)> {
    let good = build(&good_structs(), STRINGS, false);
    let mut v = vec![("made/valid", good.clone())];
    v.push((
        "made/valid-strings-first",
        build(&good_structs(), STRINGS, true),
    ));

    v.push(("made/empty", Vec::new()));
    v.push(("made/truncated-header-16", good[..16].to_vec()));
    v.push(("made/truncated-header-39", good[..39].to_vec()));
    v.push(("made/truncated-file", good[..good.len() - 24].to_vec()));

    let mut b = good.clone();
    b[0] = 0xfe;
    v.push(("made/bad-magic", b));

    let mut b = good.clone();
    hdr(&mut b, H_TOTALSIZE, good.len() as u32 + 64);
    v.push(("made/totalsize-past-buffer", b));

    let mut b = good.clone();
    b.extend_from_slice(&[0; 64]);
    v.push(("made/buffer-past-totalsize", b));

    let mut b = good.clone();
    hdr(&mut b, H_TOTALSIZE, 20);
    v.push(("made/totalsize-inside-header", b));

    let mut b = good.clone();
    hdr(&mut b, 5, 15);
    hdr(&mut b, 6, 15);
    v.push(("made/version-15", b));

    // A node name with no NUL before the structure block ends: the block
    // is the end of the blob, and (second blob) followed by strings.
    let unterminated = Structs::default()
        .word(BEGIN)
        .word(u32::from_be_bytes(*b"abcd"));
    v.push((
        "made/unterminated-node-name",
        build(&unterminated, STRINGS, true),
    ));
    v.push((
        "made/unterminated-node-name-then-strings",
        build(&unterminated, STRINGS, false),
    ));

    // A property whose length runs past the structure block (into the
    // strings, which follow), and one past the whole blob.
    let mut b = good.clone();
    let first_prop_len = get_hdr(&good, H_OFF_STRUCT) as usize + 8 + 4;
    set32(&mut b, first_prop_len, 0x40);
    v.push(("made/prop-len-past-struct", b));
    let mut b = good.clone();
    set32(&mut b, first_prop_len, 0x1000);
    v.push(("made/prop-len-past-blob", b));

    // A property name offset past the strings block, to a name inside
    // the blob (after it).
    let s = Structs::default().begin("").prop(0, b"").end_node().end();
    let mut b = build(&s, STRINGS, true);
    let nameoff = b.len() as u32 - get_hdr(&b, H_OFF_STRINGS);
    let at = get_hdr(&b, H_OFF_STRUCT) as usize + 8 + 8;
    set32(&mut b, at, nameoff);
    b.extend_from_slice(b"outside\0");
    let total = b.len() as u32;
    hdr(&mut b, H_TOTALSIZE, total);
    v.push(("made/prop-name-outside-strings", b));
    // A property name whose NUL is just past the strings block.
    let mut b = good.clone();
    hdr(&mut b, H_SIZE_STRINGS, STRINGS.len() as u32 - 1);
    v.push(("made/prop-name-unterminated-in-strings", b));
    // ... and one past the blob.
    let s = Structs::default()
        .begin("")
        .prop(0x10_0000, b"")
        .end_node()
        .end();
    v.push(("made/prop-name-past-blob", build(&s, STRINGS, false)));

    // Overlapping blocks: the strings block is the structure block.
    let mut b = good.clone();
    hdr(&mut b, H_OFF_STRINGS, get_hdr(&good, H_OFF_STRUCT));
    hdr(&mut b, H_SIZE_STRINGS, get_hdr(&good, H_SIZE_STRUCT));
    v.push(("made/overlap-strings-on-struct", b));
    // The reservation map is the structure block.
    let mut b = good.clone();
    hdr(&mut b, 4, get_hdr(&good, H_OFF_STRUCT));
    v.push(("made/overlap-rsvmap-on-struct", b));
    // The structure block starts inside the header.
    let mut b = good.clone();
    hdr(&mut b, H_OFF_STRUCT, 8);
    v.push(("made/overlap-struct-on-header", b));
    // The structure block runs past totalsize.
    let mut b = good.clone();
    hdr(&mut b, H_SIZE_STRUCT, get_hdr(&good, H_SIZE_STRUCT) + 0x100);
    v.push(("made/struct-size-past-blob", b));
    // The structure block ends before FDT_END.
    let mut b = good.clone();
    hdr(&mut b, H_SIZE_STRUCT, 8);
    v.push(("made/struct-size-too-small", b));
    // Misaligned structure block.
    let mut b = good.clone();
    hdr(&mut b, H_OFF_STRUCT, get_hdr(&good, H_OFF_STRUCT) + 2);
    v.push(("made/struct-misaligned", b));

    // Nesting errors.
    let s = Structs::default().begin("").begin("open").end_node().end();
    v.push(("made/end-inside-node", build(&s, STRINGS, false)));
    let s = Structs::default().begin("").end_node().end_node().end();
    v.push(("made/extra-end-node", build(&s, STRINGS, false)));
    let s = Structs::default()
        .begin("")
        .end_node()
        .begin("second-root")
        .end_node()
        .end();
    v.push(("made/two-roots", build(&s, STRINGS, false)));
    let s = Structs::default()
        .prop(COMPATIBLE, b"x\0")
        .begin("")
        .end_node()
        .end();
    v.push(("made/prop-before-root", build(&s, STRINGS, false)));
    let s = Structs::default()
        .begin("")
        .begin("child")
        .end_node()
        .prop(COMPATIBLE, b"late\0")
        .end_node()
        .end();
    v.push(("made/prop-after-subnode", build(&s, STRINGS, false)));
    let s = Structs::default().begin("").end_node().word(0x7).end();
    v.push(("made/unknown-token", build(&s, STRINGS, false)));
    let s = Structs::default().begin("").end_node();
    v.push(("made/no-fdt-end", build(&s, STRINGS, false)));

    // Valid but unusual.
    let s = Structs::default()
        .word(4)
        .begin("")
        .word(4)
        .prop(COMPATIBLE, b"nops\0")
        .word(4)
        .begin("a")
        .word(4)
        .end_node()
        .end_node()
        .end();
    v.push(("made/nops", build(&s, STRINGS, false)));
    let s = Structs::default()
        .begin("")
        .begin("a-node-name-of-thirty-bytes-xx")
        .end_node()
        .end_node()
        .end();
    v.push(("made/node-name-30-bytes", build(&s, STRINGS, false)));
    let s = Structs::default()
        .begin("")
        .begin("a-node-name-of-29-bytes-xxxxx")
        .end_node()
        .end_node()
        .end();
    v.push(("made/node-name-29-bytes", build(&s, STRINGS, false)));
    // No properties, no strings: FDT_END is the last word of the blob.
    let s = Structs::default().begin("").end_node().end();
    v.push(("made/no-strings", build(&s, b"", false)));
    let s = Structs::default()
        .begin("")
        .begin("caf\u{e9}")
        .end_node()
        .end_node()
        .end();
    v.push(("made/utf8-node-name", build(&s, STRINGS, false)));
    let mut s = Structs::default().word(BEGIN);
    s.0.extend_from_slice(b"\xff\xfe\0\0");
    let s = s.end_node().end();
    v.push(("made/non-utf8-node-name", build(&s, STRINGS, false)));
    let s = Structs::default().begin("").prop(0, b"").end_node().end();
    v.push(("made/non-utf8-prop-name", build(&s, b"\xff\0", false)));
    let mut deep = Structs::default().begin("");
    for _ in 0..40 {
        deep = deep.begin("n");
    }
    for _ in 0..41 {
        deep = deep.end_node();
    }
    v.push(("made/too-deep", build(&deep.end(), STRINGS, false)));
    v
}

fn main() {
    let args = Arguments::from_args();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_FDT_RS.with(Cell::get) {
            default(info);
        }
    }));
    let mut trials = Vec::new();
    trials.extend(corpus_trials());
    trials.extend(conformance_trials());
    for (name, blob) in made_blobs() {
        trials.push(Trial::test(name, move || check(name, &blob)));
    }
    // Every EXPLAINED entry names a blob that exists (else it is stale).
    // Without the corpus (DTVISOR_SKIP_DTB_CORPUS) its entries are not checked.
    let corpus = root().join("cache/dtbs/debian").exists();
    let all: Vec<String> = trials.iter().map(|t| t.name().to_string()).collect();
    trials.push(Trial::test("explained-entries-exist", move || {
        let missing: Vec<&str> = EXPLAINED
            .iter()
            .map(|(n, ..)| *n)
            .filter(|n| corpus || !(n.starts_with("debian/") || n.starts_with("qemu/")))
            .filter(|n| !all.iter().any(|a| a == n))
            .collect();
        let mut names: Vec<&str> = EXPLAINED.iter().map(|(n, _)| *n).collect();
        names.sort();
        let dup: Vec<&str> = names
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        if !dup.is_empty() {
            Err(format!("EXPLAINED names blobs more than once: {dup:?}").into())
        } else if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("EXPLAINED names blobs that no longer exist: {missing:?}").into())
        }
    }));
    let c = libtest_mimic::run(&args, trials);
    summary();
    c.exit();
}
