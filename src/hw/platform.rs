//! The host machine as the boot DTB describes it: RAM and reservations,
//! CPUs, the GIC, PSCI, the timer and the console UART.

use super::memory::{HostMemory, Reserved, ReservedKind};
use crate::diag::{Diagnostic, Kind};
use crate::fdt::{Fdt, Node};
use crate::mm::range::Size;
use crate::mm::Range;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Deepest nesting the address translation follows.
const MAX_ANCESTORS: usize = 16;

/// A node with its ancestors (root first), collected without allocating.
#[derive(Clone, Copy)]
pub struct Located<'a> {
    anc: [Option<Node<'a>>; MAX_ANCESTORS],
    depth: usize,
    pub node: Node<'a>,
}

impl<'a> Located<'a> {
    /// The node's ancestors, the root first.
    pub fn ancestors(&self) -> impl DoubleEndedIterator<Item = Node<'a>> + '_ {
        self.anc[..self.depth].iter().filter_map(|n| *n)
    }

    /// The node's path, e.g. `/soc/serial@7e201000`.
    pub fn path(&self) -> String {
        let mut p = String::new();
        for a in self.ancestors().skip(1) {
            p.push('/');
            p.push_str(a.name());
        }
        p.push('/');
        p.push_str(self.node.name());
        p
    }

    /// The `idx`th `reg` entry translated to a CPU physical address through
    /// every parent bus's `ranges` (empty `ranges` = identity; a bus
    /// without `ranges` is not translatable).
    pub fn reg(&self, idx: usize) -> Option<Range> {
        let (addr, size) = self.regs()?.nth(idx)?;
        Range::from_base_size(self.translate(addr)?, size)
    }

    /// The raw `reg` entries (address, size), in the parent's cells.
    pub fn regs(&self) -> Option<impl Iterator<Item = (u64, u64)> + 'a> {
        let parent = self.anc[self.depth.checked_sub(1)?]?;
        let (ac, sc) = parent.cells();
        self.node
            .prop("reg")?
            .ranges(ac.unwrap_or(2), sc.unwrap_or(1))
    }

    /// The node's parent (None for the root).
    pub fn parent(&self) -> Option<Node<'a>> {
        self.anc[self.depth.checked_sub(1)?]
    }

    /// An address in the parent's address space (where this node's `reg`
    /// is) as a CPU physical address, through every parent bus's `ranges`
    /// (empty `ranges` = identity; a bus without `ranges` is not
    /// translatable).
    pub fn translate(&self, addr: u64) -> Option<u64> {
        let mut addr = addr;
        // Walk up: bus = anc[i], its parent = anc[i - 1].
        for i in (1..self.depth).rev() {
            let bus = self.anc[i]?;
            let up = self.anc[i - 1]?;
            let ranges = bus.prop("ranges")?;
            if ranges.value.is_empty() {
                continue;
            }
            let (cac, csc) = bus.cells();
            let (cac, csc) = (cac.unwrap_or(2), csc.unwrap_or(1));
            let pac = up.cells().0.unwrap_or(2);
            let per = (cac + pac + csc) as usize;
            let n = ranges.cell_count()? / per;
            let mut hit = None;
            for e in 0..n {
                let base = e * per;
                let child = ranges.read_cells(base, cac)?;
                let par = ranges.read_cells(base + cac as usize, pac)?;
                let len = ranges.read_cells(base + (cac + pac) as usize, csc)?;
                if addr >= child && addr - child < len {
                    hit = Some(par + (addr - child));
                    break;
                }
            }
            addr = hit?;
        }
        Some(addr)
    }
}

/// What a `walk_located` visit asks next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Go into the node's children.
    Into,
    /// Go on with its next sibling, not into its children.
    Over,
    /// End the walk.
    Stop,
}

/// Visits every node below the root depth first, with its ancestors (as
/// deep as `Located` keeps them); `visit` says where to go next. No
/// allocation.
pub fn walk_located<'a>(fdt: &Fdt<'a>, visit: &mut dyn FnMut(&Located<'a>) -> Walk) {
    /// False when the walk is to stop.
    fn go<'a>(
        n: Node<'a>,
        anc: &mut [Option<Node<'a>>; MAX_ANCESTORS],
        depth: usize,
        visit: &mut dyn FnMut(&Located<'a>) -> Walk,
    ) -> bool {
        if depth >= MAX_ANCESTORS {
            return true;
        }
        anc[depth] = Some(n);
        for c in n.children() {
            let l = Located {
                anc: *anc,
                depth: depth + 1,
                node: c,
            };
            match visit(&l) {
                Walk::Stop => return false,
                Walk::Into if !go(c, anc, depth + 1, visit) => return false,
                Walk::Into | Walk::Over => {}
            }
        }
        true
    }
    let mut anc = [None; MAX_ANCESTORS];
    go(fdt.root(), &mut anc, 0, visit);
}

/// Depth-first search for the first node matching `pred`, keeping its
/// ancestors. No allocation (usable before the heap exists).
pub fn find_located<'a>(
    fdt: &Fdt<'a>,
    pred: &mut dyn FnMut(&Node<'a>) -> bool,
) -> Option<Located<'a>> {
    let mut found = None;
    walk_located(fdt, &mut |l| {
        if pred(&l.node) {
            found = Some(*l);
            Walk::Stop
        } else {
            Walk::Into
        }
    });
    found
}

/// Finds the node at `path` (no allocation).
pub fn locate<'a>(fdt: &Fdt<'a>, path: &str) -> Option<Located<'a>> {
    let target = fdt.find(path)?;
    find_located(fdt, &mut |n| n.offset() == target.offset())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// PL011 and SBSA generic UART.
    Pl011,
    /// 16550/8250 family, with register spacing and access width.
    Ns16550 { reg_shift: u32, reg_io_width: u32 },
    /// Cadence UART (Zynq, ZynqMP).
    Cadence,
    /// i.MX UART (i.MX 6, 7, 8).
    Imx,
}

/// The console UART.
/// The node `name` names: a path if it starts with '/', else an alias
/// (as `stdout-path` and Xen's `dtuart=` are read).
fn by_path_or_alias<'a>(fdt: &Fdt<'a>, name: &str) -> Option<Node<'a>> {
    if name.starts_with('/') {
        fdt.find(name)
    } else {
        fdt.alias(name)
    }
}

/// Whether Xen's `dtuart=PATH` (a path or an alias, options after ':')
/// names the UART [`find_console`] picks (None: it names no node).
pub fn is_console(fdt: &Fdt<'_>, dtuart: &str) -> Option<bool> {
    let name = dtuart.split_once(':').map_or(dtuart, |(n, _)| n);
    let named = by_path_or_alias(fdt, name)?;
    Some(find_console(fdt).is_some_and(|(loc, _, _)| named.offset() == loc.node.offset()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UartInfo {
    pub kind: UartKind,
    pub base: u64,
    pub size: u64,
}

fn uart_kind(n: &Node<'_>) -> Option<UartKind> {
    let compat = n.prop("compatible")?;
    for c in compat.strings() {
        if c == "arm,pl011" || c == "arm,sbsa-uart" {
            return Some(UartKind::Pl011);
        }
        if c == "cdns,uart-r1p12" || c == "cdns,uart-r1p8" || c == "xlnx,xuartps" {
            return Some(UartKind::Cadence);
        }
        if c == "fsl,imx6q-uart" || c == "fsl,imx21-uart" {
            return Some(UartKind::Imx);
        }
        if c.contains("16550")
            || c.contains("8250")
            || c == "snps,dw-apb-uart"
            || c == "brcm,bcm2835-aux-uart"
            || c == "ns16450"
        {
            let reg_shift = n
                .prop("reg-shift")
                .and_then(|p| p.u32())
                .unwrap_or(if c == "brcm,bcm2835-aux-uart" { 2 } else { 0 });
            // The Pi's mini UART has 32-bit registers (Linux drives it
            // with 32-bit accesses); other 16550s default to bytes.
            let reg_io_width = n
                .prop("reg-io-width")
                .and_then(|p| p.u32())
                .unwrap_or(if c == "brcm,bcm2835-aux-uart" { 4 } else { 1 });
            return Some(UartKind::Ns16550 {
                reg_shift,
                reg_io_width,
            });
        }
    }
    None
}

/// The console: `/chosen/stdout-path` (alias or path, `:options` allowed),
/// else the first enabled serial node of a supported kind; never a node
/// marked `xen,passthrough` (it belongs to a domain). Returns the node
/// and, if supported, its driver facts. No allocation.
pub fn find_console<'a>(fdt: &Fdt<'a>) -> Option<(Located<'a>, Option<UartInfo>, Option<&'a str>)> {
    let chosen = fdt.find("/chosen");
    let sp = chosen
        .and_then(|c| {
            c.prop("stdout-path")
                .or_else(|| c.prop("linux,stdout-path"))
        })
        .and_then(|p| p.str());
    let mut options = None;
    let by_path = sp.and_then(|s| {
        let (name, opts) = match s.split_once(':') {
            Some((n, o)) => (n, Some(o)),
            None => (s, None),
        };
        options = opts;
        let target = by_path_or_alias(fdt, name)?;
        find_located(fdt, &mut |n| n.offset() == target.offset())
    });
    // A node marked `xen,passthrough` is meant for a domain: never ours.
    let ours = |n: &Node<'_>| n.prop("xen,passthrough").is_none();
    let loc = by_path.filter(|l| ours(&l.node)).or_else(|| {
        find_located(fdt, &mut |n| {
            n.is_enabled() && uart_kind(n).is_some() && ours(n)
        })
    })?;
    let info = uart_kind(&loc.node).and_then(|kind| {
        let r = loc.reg(0)?;
        Some(UartInfo {
            kind,
            base: r.start,
            size: r.size(),
        })
    });
    Some((loc, info, options))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gic {
    pub version: GicVersion,
    pub path: String,
    pub gicd: Range,
    pub gicr: Vec<Range>,
    pub gicc: Option<Range>,
    pub gich: Option<Range>,
    pub gicv: Option<Range>,
    /// Maintenance interrupt (INTID).
    pub maintenance: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub path: String,
    pub mpidr: u64,
    /// How it is started as a secondary CPU.
    pub enable: EnableMethod,
}

/// How a secondary CPU is started: its node's `enable-method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI CPU_ON, over the conduit `/psci` names (also for a CPU with
    /// no `enable-method` when the machine has PSCI).
    Psci,
    /// The arm64 boot protocol's spin-table: the CPU waits in firmware
    /// until its entry point is written to `cpu-release-addr`.
    SpinTable { release: u64 },
    /// Neither: it cannot be started (why).
    Unusable(String),
}

impl fmt::Display for EnableMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnableMethod::Psci => write!(f, "psci"),
            EnableMethod::SpinTable { release } => write!(f, "spin-table {release:#x}"),
            EnableMethod::Unusable(why) => write!(f, "unusable ({why})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// INTIDs: secure physical, non-secure physical, virtual, hypervisor.
    pub intids: Vec<u32>,
    pub clock_frequency: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Console {
    pub path: String,
    pub uart: Option<UartInfo>,
    pub options: Option<String>,
    /// Its interrupt (an SPI's INTID) from the node's `interrupts`, for
    /// taking console input by interrupt at EL2.
    pub irq: Option<u32>,
}

/// The host machine.
#[derive(Clone, Debug)]
pub struct Platform {
    pub memory: HostMemory,
    pub cpus: Vec<Cpu>,
    pub cpu_compatible: Option<String>,
    pub gic: Option<Gic>,
    pub psci: Option<Conduit>,
    pub timer: Option<Timer>,
    pub console: Option<Console>,
    pub warnings: Vec<Diagnostic>,
}

const GIC_V3: &[&str] = &["arm,gic-v3"];
const GIC_V2: &[&str] = &[
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
    "arm,gic-v2",
    "qcom,msm-qgic2",
    "arm,arm11mp-gic",
];

/// The first PPI of an `interrupts` triplet list, as an INTID.
fn interrupt_intids(n: &Node<'_>) -> Vec<u32> {
    let Some(p) = n.prop("interrupts") else {
        return Vec::new();
    };
    let Some(cells) = p.cells() else {
        return Vec::new();
    };
    let c: Vec<u32> = cells.collect();
    // Only numbers the GIC binding allows: PPIs 0..15, SPIs 0..987.
    c.chunks_exact(3)
        .filter_map(|t| match t[0] {
            1 if t[1] < 16 => Some(t[1] + 16),
            0 if t[1] < 988 => Some(t[1] + 32),
            _ => None,
        })
        .collect()
}

/// One interrupt of a device, as the GIC binding encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicIrq {
    /// INTID (SPIs from 32, PPIs 16..31).
    pub intid: u32,
    /// Edge-triggered (flags 1 or 2), else level.
    pub edge: bool,
}

impl<'a> Located<'a> {
    /// The node's interrupt parent: its own or its nearest ancestor's
    /// `interrupt-parent`, as a node.
    pub fn interrupt_parent(&self, fdt: &Fdt<'a>) -> Option<Node<'a>> {
        core::iter::once(self.node)
            .chain(self.ancestors().rev())
            .find_map(|n| n.prop("interrupt-parent"))
            .and_then(|p| p.u32())
            .and_then(|ph| fdt.find_phandle(ph))
    }

    /// The node's interrupts (`interrupts-extended`, else `interrupts`
    /// with the interrupt parent), each of which must go to the GIC at
    /// `gic` (a node offset) with 3 cells. Errors say which entry is not.
    pub fn gic_interrupts(&self, fdt: &Fdt<'a>, gic: usize) -> Result<Vec<GicIrq>, String> {
        let decode = |t: &[u32]| -> Result<GicIrq, String> {
            let edge = t[2] & 3 != 0;
            match t[0] {
                0 if t[1] < 988 => Ok(GicIrq {
                    intid: t[1] + 32,
                    edge,
                }),
                1 if t[1] < 16 => Ok(GicIrq {
                    intid: t[1] + 16,
                    edge,
                }),
                k => Err(format!("<{k} {} {:#x}> is not an SPI or PPI", t[1], t[2])),
            }
        };
        let is_gic = |n: &Node<'_>| {
            n.offset() == gic && n.prop("#interrupt-cells").and_then(|p| p.u32()) == Some(3)
        };
        let mut out = Vec::new();
        if let Some(p) = self.node.prop("interrupts-extended") {
            let cells: Vec<u32> = p
                .cells()
                .ok_or("interrupts-extended: not whole cells")?
                .collect();
            let mut i = 0;
            while i < cells.len() {
                let parent = fdt.find_phandle(cells[i]);
                match parent {
                    Some(n) if is_gic(&n) && i + 4 <= cells.len() => {
                        out.push(decode(&cells[i + 1..i + 4])?);
                        i += 4;
                    }
                    Some(n) => {
                        return Err(format!(
                            "interrupts-extended: entry {} goes to {}, not the GIC",
                            out.len(),
                            n.name()
                        ))
                    }
                    None => {
                        return Err(format!(
                            "interrupts-extended: phandle {:#x} names no node",
                            cells[i]
                        ))
                    }
                }
            }
            return Ok(out);
        }
        let Some(p) = self.node.prop("interrupts") else {
            return Ok(out);
        };
        match self.interrupt_parent(fdt) {
            Some(n) if is_gic(&n) => {}
            Some(n) => {
                return Err(format!(
                    "interrupts: they go to {}, not the GIC (with 3 cells)",
                    n.name()
                ))
            }
            None => return Err("interrupts: no interrupt-parent names the GIC".into()),
        }
        let cells: Vec<u32> = p.cells().ok_or("interrupts: not whole cells")?.collect();
        if !cells.len().is_multiple_of(3) {
            return Err(format!(
                "interrupts: {} cells is not a list of <type number flags>",
                cells.len()
            ));
        }
        for t in cells.chunks_exact(3) {
            out.push(decode(t)?);
        }
        Ok(out)
    }
}

/// The host's interrupt controller node, as discovery picks it.
pub fn gic_node<'a>(fdt: &Fdt<'a>) -> Option<Node<'a>> {
    let parent_ph = fdt.root().prop("interrupt-parent").and_then(|p| p.u32());
    parent_ph
        .and_then(|ph| fdt.find_phandle(ph))
        .filter(is_gic)
        .or_else(|| fdt.root().descendants().find(|n| is_gic(n)))
}

/// What discovery found wrong: errors stop the machine, warnings do not.
#[derive(Default)]
struct Findings {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Findings {
    fn error(&mut self, path: &str, prop: Option<&str>, message: String) {
        self.errors
            .push(Diagnostic::error(path, prop, Kind::Discovery, message));
    }

    fn warn(&mut self, path: &str, prop: Option<&str>, message: String) {
        self.warnings
            .push(Diagnostic::warning(path, prop, Kind::Discovery, message));
    }
}

/// RAM and reservations; no RAM is only a warning here.
fn discover_memory(fdt: &Fdt<'_>, f: &mut Findings) -> HostMemory {
    let memory = HostMemory::from_fdt(fdt);
    if memory.ram.is_empty() {
        // Board trees often leave this to the bootloader (U-Boot fills
        // /memory in); the image cannot start without RAM and says so.
        f.warn("/memory", Some("reg"), "no memory node (device_type = \"memory\") with a non-empty reg: the bootloader normally fills it in".into());
    }
    memory
}

/// The `device_type = "cpu"` nodes under /cpus (MPIDR affinity from
/// `reg`), and the first CPU's compatible.
fn discover_cpus(fdt: &Fdt<'_>, f: &mut Findings) -> (Vec<Cpu>, Option<String>) {
    let mut cpus = Vec::new();
    let mut cpu_compatible = None;
    let Some(cn) = fdt.find("/cpus") else {
        f.error("/cpus", None, "expected a /cpus node, found none".into());
        return (cpus, cpu_compatible);
    };
    let ac = cn.cells().0.unwrap_or(2);
    for c in cn.descendants() {
        if c.prop("device_type").and_then(|p| p.str()) != Some("cpu") {
            continue;
        }
        let path = format!("/cpus/{}", c.name());
        let mpidr = c.prop("reg").and_then(|p| {
            p.read_cells(0, ac)
                .filter(|_| p.cell_count() == Some(ac as usize))
        });
        let Some(m) = mpidr else {
            f.warn(
                &path,
                Some("reg"),
                format!("expected {ac} cell(s) of MPIDR, CPU skipped"),
            );
            continue;
        };
        if cpu_compatible.is_none() {
            cpu_compatible = c
                .prop("compatible")
                .and_then(|p| p.strings().next())
                .map(|s| s.to_string());
        }
        let enable = enable_method(&c, &path, f);
        cpus.push(Cpu {
            path,
            mpidr: m & 0xff_00ff_ffff,
            enable,
        });
    }
    if cpus.is_empty() {
        f.error(
            "/cpus",
            None,
            "expected at least one cpu node (device_type = \"cpu\") with a reg, found none".into(),
        );
    }
    (cpus, cpu_compatible)
}

/// A CPU node's `enable-method`; a spin-table's `cpu-release-addr` must
/// be one 64-bit value (two cells, whatever `#address-cells` says, as the
/// arm64 boot protocol has it), 8-byte aligned. Without the property the
/// CPU is taken to use PSCI (checked against /psci afterwards).
fn enable_method(c: &Node<'_>, path: &str, f: &mut Findings) -> EnableMethod {
    let method = c.prop("enable-method").and_then(|p| p.strings().next());
    match method {
        None | Some("psci") => EnableMethod::Psci,
        Some("spin-table") => {
            let Some(p) = c.prop("cpu-release-addr") else {
                f.error(
                    path,
                    Some("cpu-release-addr"),
                    "enable-method is \"spin-table\" but the CPU has no cpu-release-addr".into(),
                );
                return EnableMethod::Unusable("no cpu-release-addr".into());
            };
            let Some(release) = p.read_cells(0, 2).filter(|_| p.value.len() == 8) else {
                f.error(
                    path,
                    Some("cpu-release-addr"),
                    format!(
                        "expected one 64-bit address (2 cells), found {} bytes",
                        p.value.len()
                    ),
                );
                return EnableMethod::Unusable("cpu-release-addr unreadable".into());
            };
            if !release.is_multiple_of(8) {
                f.error(
                    path,
                    Some("cpu-release-addr"),
                    format!("{release:#x} is not 8-byte aligned: the CPU reads a 64-bit entry point there"),
                );
                return EnableMethod::Unusable("cpu-release-addr unaligned".into());
            }
            EnableMethod::SpinTable { release }
        }
        Some(other) => EnableMethod::Unusable(format!(
            "\"{other}\" is not a method dtvisor can use (psci, spin-table)"
        )),
    }
}

/// With no PSCI, a CPU that would use it cannot be started; each CPU that
/// cannot is named once (the boot CPU needs no start, but which one boots
/// is only known at run time).
fn check_enable_methods(cpus: &mut [Cpu], psci: Option<Conduit>, f: &mut Findings) {
    if cpus.len() < 2 {
        return;
    }
    for c in cpus.iter_mut() {
        if c.enable == EnableMethod::Psci && psci.is_none() {
            c.enable = EnableMethod::Unusable("\"psci\" (or none) but no usable /psci node".into());
        }
        if let EnableMethod::Unusable(why) = &c.enable {
            f.warn(
                &c.path,
                Some("enable-method"),
                format!("{why}: this CPU cannot be started, unless it is the boot CPU"),
            );
        }
    }
}

fn is_gic(n: &Node<'_>) -> bool {
    n.prop("interrupt-controller").is_some()
        && GIC_V3.iter().chain(GIC_V2).any(|c| n.is_compatible(c))
}

/// The GIC: the root's interrupt-parent if it is one, else the first.
fn discover_gic(fdt: &Fdt<'_>, f: &mut Findings) -> Option<Gic> {
    let gic_node = gic_node(fdt).and_then(|g| find_located(fdt, &mut |n| n.offset() == g.offset()));
    let Some(l) = gic_node else {
        f.error(
            "/",
            Some("interrupt-parent"),
            "expected a GICv2 or GICv3 interrupt controller, found none".into(),
        );
        return None;
    };
    let path = l.path();
    let regs: Vec<Range> = (0..).map_while(|i| l.reg(i)).collect();
    if regs.is_empty() {
        f.error(
            &path,
            Some("reg"),
            "expected the distributor's address, found no usable reg".into(),
        );
        return None;
    }
    if GIC_V3.iter().any(|c| l.node.is_compatible(c)) {
        Some(gic_v3(&l.node, path, &regs, f))
    } else {
        Some(gic_v2(&l.node, path, &regs))
    }
}

/// GICv2 `reg`: GICD, GICC, GICH, GICV.
fn gic_v2(n: &Node<'_>, path: String, regs: &[Range]) -> Gic {
    Gic {
        version: GicVersion::V2,
        path,
        gicd: regs[0],
        gicr: Vec::new(),
        gicc: regs.get(1).copied(),
        gich: regs.get(2).copied(),
        gicv: regs.get(3).copied(),
        maintenance: interrupt_intids(n).first().copied(),
    }
}

/// GICv3 `reg`: GICD, `#redistributor-regions` GICR regions, then GICC,
/// GICH, GICV.
fn gic_v3(n: &Node<'_>, path: String, regs: &[Range], f: &mut Findings) -> Gic {
    let nr = n
        .prop("#redistributor-regions")
        .and_then(|p| p.u32())
        .unwrap_or(1) as usize;
    let gicr: Vec<Range> = regs.iter().skip(1).take(nr).copied().collect();
    let rest: Vec<Range> = regs.iter().skip(1 + nr).copied().collect();
    if gicr.is_empty() {
        f.error(
            &path,
            Some("reg"),
            "expected redistributor regions after the distributor, found none".into(),
        );
    }
    Gic {
        version: GicVersion::V3,
        path,
        gicd: regs[0],
        gicr,
        gicc: rest.first().copied(),
        gich: rest.get(1).copied(),
        gicv: rest.get(2).copied(),
        maintenance: interrupt_intids(n).first().copied(),
    }
}

/// PSCI's conduit: /psci, else the first PSCI-compatible node.
fn discover_psci(fdt: &Fdt<'_>, f: &mut Findings) -> Option<Conduit> {
    let psci_node = fdt.find("/psci").or_else(|| {
        fdt.root().descendants().find(|n| {
            n.is_compatible("arm,psci")
                || n.is_compatible("arm,psci-0.2")
                || n.is_compatible("arm,psci-1.0")
        })
    });
    let n = psci_node?;
    match n.prop("method").and_then(|p| p.str()) {
        Some("smc") => Some(Conduit::Smc),
        Some("hvc") => Some(Conduit::Hvc),
        _ => {
            f.warn(
                "/psci",
                Some("method"),
                "expected \"smc\" or \"hvc\": secondary CPUs cannot be started".into(),
            );
            None
        }
    }
}

/// The architected timer's interrupts and frequency.
fn discover_timer(fdt: &Fdt<'_>) -> Option<Timer> {
    fdt.root()
        .descendants()
        .find(|n| n.is_compatible("arm,armv8-timer") || n.is_compatible("arm,armv7-timer"))
        .map(|n| Timer {
            intids: interrupt_intids(&n),
            clock_frequency: n.prop("clock-frequency").and_then(|p| p.u32()),
        })
}

/// The console UART (`find_console`) and its interrupt.
fn discover_console(fdt: &Fdt<'_>, f: &mut Findings) -> Option<Console> {
    let Some((loc, uart, options)) = find_console(fdt) else {
        f.warn(
            "/chosen",
            Some("stdout-path"),
            "no console UART found".into(),
        );
        return None;
    };
    let path = loc.path();
    if uart.is_none() {
        f.warn(&path, Some("compatible"), "console UART of a kind dtvisor has no driver for (PL011, SBSA, 16550/8250, Cadence, i.MX): no console output".into());
    }
    let irq = interrupt_intids(&loc.node)
        .first()
        .copied()
        .filter(|&i| i >= 32);
    Some(Console {
        path,
        uart,
        options: options.map(Into::into),
        irq,
    })
}

impl Platform {
    /// Reads the machine from the DTB, one device class at a time. Errors
    /// (no CPUs, no GIC) are returned all together; oddities become
    /// warnings.
    pub fn discover(fdt: &Fdt<'_>) -> Result<Platform, Vec<Diagnostic>> {
        let mut f = Findings::default();
        let mut memory = discover_memory(fdt, &mut f);
        let (mut cpus, cpu_compatible) = discover_cpus(fdt, &mut f);
        let gic = discover_gic(fdt, &mut f);
        let psci = discover_psci(fdt, &mut f);
        check_enable_methods(&mut cpus, psci, &mut f);
        for c in &cpus {
            if let EnableMethod::SpinTable { release } = c.enable {
                memory.reserved.push(Reserved {
                    range: super::early::release_page(release),
                    kind: ReservedKind::SpinTable(c.path.clone()),
                });
            }
        }
        let timer = discover_timer(fdt);
        let console = discover_console(fdt, &mut f);
        if !f.errors.is_empty() {
            return Err(f.errors);
        }
        Ok(Platform {
            memory,
            cpus,
            cpu_compatible,
            gic,
            psci,
            timer,
            console,
            warnings: f.warnings,
        })
    }

    /// Each spin-table release address against RAM (the hypervisor writes
    /// it through its RAM mapping) and the hypervisor's own memory (the
    /// image, the DTB, the heap: reservations of those kinds, which the
    /// image adds after discovery). Errors name the CPU node.
    pub fn check_release_addrs(&self) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        for c in &self.cpus {
            let EnableMethod::SpinTable { release } = c.enable else {
                continue;
            };
            let word = Range::new(release, release.saturating_add(8));
            let mut err = |message: String| {
                errors.push(Diagnostic::error(
                    &c.path,
                    Some("cpu-release-addr"),
                    Kind::Discovery,
                    message,
                ))
            };
            if !self.memory.ram.iter().any(|b| b.contains_range(&word)) {
                err(format!(
                    "{release:#x} is outside RAM: dtvisor writes the entry point there through its RAM mapping"
                ));
            }
            for r in &self.memory.reserved {
                let what = match r.kind {
                    ReservedKind::Image => "the hypervisor image",
                    ReservedKind::Heap => "the hypervisor's heap",
                    ReservedKind::Dtb => "the boot device tree",
                    _ => continue,
                };
                if r.range.overlaps(&word) {
                    err(format!("{release:#x} lies in {what} {}", r.range));
                }
            }
        }
        errors
    }

    /// One line for the boot banner.
    pub fn summary(&self) -> String {
        let n = self.cpus.len();
        let ram: u64 = self.memory.ram.iter().map(|r| r.size()).sum();
        let gic = match self.gic.as_ref().map(|g| g.version) {
            Some(GicVersion::V3) => "GICv3",
            Some(GicVersion::V2) => "GICv2",
            None => "no GIC",
        };
        let console = match self.console.as_ref().and_then(|c| c.uart) {
            Some(UartInfo { kind, base, .. }) => {
                let name = match kind {
                    UartKind::Pl011 => "pl011",
                    UartKind::Ns16550 { .. } => "ns16550",
                    UartKind::Cadence => "cadence",
                    UartKind::Imx => "imx",
                };
                format!("{name} at {base:#x}")
            }
            None => "no console".into(),
        };
        format!(
            "{n} CPU{}, {} RAM, {gic}, console {console}",
            if n == 1 { "" } else { "s" },
            Size(ram)
        )
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.memory.ram {
            writeln!(f, "RAM {r} {}", Size(r.size()))?;
        }
        for r in &self.memory.reserved {
            writeln!(f, "reserved {} {:?}", r.range, r.kind)?;
        }
        let mpidrs: Vec<String> = self
            .cpus
            .iter()
            .map(|c| format!("{:#x} ({})", c.mpidr, c.enable))
            .collect();
        writeln!(f, "CPUs {}: {}", self.cpus.len(), mpidrs.join(" "))?;
        if let Some(g) = &self.gic {
            write!(
                f,
                "GIC{} {} GICD {}",
                if g.version == GicVersion::V3 {
                    "v3"
                } else {
                    "v2"
                },
                g.path,
                g.gicd
            )?;
            for r in &g.gicr {
                write!(f, " GICR {r}")?;
            }
            for (n, r) in [("GICC", g.gicc), ("GICH", g.gich), ("GICV", g.gicv)] {
                if let Some(r) = r {
                    write!(f, " {n} {r}")?;
                }
            }
            writeln!(f)?;
        }
        match self.psci {
            Some(Conduit::Smc) => writeln!(f, "PSCI smc")?,
            Some(Conduit::Hvc) => writeln!(f, "PSCI hvc")?,
            None => writeln!(f, "PSCI none")?,
        }
        if let Some(t) = &self.timer {
            let ids: Vec<String> = t.intids.iter().map(|i| format!("{i}")).collect();
            writeln!(f, "timer interrupts {}", ids.join(" "))?;
        }
        if let Some(c) = &self.console {
            writeln!(f, "console {}", c.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::tests::dtc;

    const HOST: &str = r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&gic>;
  gic: intc@8000000 { compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
    reg = <0x0 0x8000000 0x0 0x10000>, <0x0 0x80a0000 0x0 0xf60000>; };
  gpio: gpio@9030000 { #interrupt-cells = <2>; interrupt-controller; };
  uart0: pl011@9000000 { compatible = "arm,pl011"; reg = <0x0 0x9000000 0x0 0x1000>;
    interrupts = <0 1 4>; xen,passthrough; };
  pl011@9040000 { compatible = "arm,pl011"; reg = <0x0 0x9040000 0x0 0x1000>; interrupts = <0 8 4>; };
  soc { #address-cells = <2>; #size-cells = <2>; ranges;
    dev@a000000 { reg = <0x0 0xa000000 0x0 0x1000>; interrupts = <0 47 1>, <1 9 4>; };
    ext@a001000 { interrupts-extended = <&gic 0 48 4>; };
    bad@a002000 { interrupts-extended = <&gpio 3 1>; };
    odd@a003000 { interrupts = <0 1>; };
    gpiouser { interrupt-parent = <&gpio>; interrupts = <3 1>; };
  };
  chosen { stdout-path = "/pl011@9000000"; };
};
"#;

    fn irqs(fdt: &Fdt<'_>, path: &str) -> Result<Vec<GicIrq>, String> {
        let gic = gic_node(fdt).unwrap().offset();
        locate(fdt, path).unwrap().gic_interrupts(fdt, gic)
    }

    #[test]
    fn gic_interrupts_decode_spis_ppis_and_extended() {
        let blob = dtc(HOST);
        let f = Fdt::new(&blob).unwrap();
        assert_eq!(
            irqs(&f, "/soc/dev@a000000").unwrap(),
            [
                GicIrq {
                    intid: 79,
                    edge: true
                },
                GicIrq {
                    intid: 25,
                    edge: false
                }
            ]
        );
        assert_eq!(
            irqs(&f, "/soc/ext@a001000").unwrap(),
            [GicIrq {
                intid: 80,
                edge: false
            }]
        );
        assert!(irqs(&f, "/soc/bad@a002000")
            .unwrap_err()
            .contains("not the GIC"));
        assert!(irqs(&f, "/soc/gpiouser")
            .unwrap_err()
            .contains("not the GIC"));
        assert!(irqs(&f, "/soc/odd@a003000").is_err());
    }

    /// Found by the fuzzer: interrupt numbers beyond the GIC's ranges
    /// (here 0xffffffff) are not INTIDs, and never overflow.
    #[test]
    fn out_of_range_interrupt_numbers_are_dropped() {
        let blob = dtc(r#"/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
  uart { compatible = "arm,pl011"; reg = <0x0 0x9000000 0x0 0x1000>;
    interrupts = <0xff 0xffffffff 0xffffff04>, <1 0xffffffff 4>, <0 5 4>; };
};
"#);
        let f = Fdt::new(&blob).unwrap();
        let n = f.find("/uart").unwrap();
        assert_eq!(interrupt_intids(&n), [37]);
        let _ = Platform::discover(&f);
    }

    #[test]
    fn console_is_never_a_node_marked_for_passthrough() {
        let blob = dtc(HOST);
        let f = Fdt::new(&blob).unwrap();
        let (loc, info, _) = find_console(&f).unwrap();
        assert_eq!(loc.path(), "/pl011@9040000");
        assert_eq!(info.unwrap().base, 0x904_0000);
    }

    /// A Raspberry Pi 4's CPUs: spin-table, release addresses in page 0.
    fn spin_host(cpu1: &str, psci: bool) -> String {
        let psci = if psci {
            r#"psci { compatible = "arm,psci-1.0"; method = "smc"; };"#
        } else {
            ""
        };
        format!(
            r#"/dts-v1/;
/ {{ #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&gic>;
  gic: intc@8000000 {{ compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
    reg = <0x0 0x8000000 0x0 0x10000>, <0x0 0x80a0000 0x0 0xf60000>; }};
  memory@0 {{ device_type = "memory"; reg = <0x0 0x0 0x0 0x40000000>; }};
  cpus {{ #address-cells = <1>; #size-cells = <0>;
    cpu@0 {{ device_type = "cpu"; reg = <0>; enable-method = "spin-table"; cpu-release-addr = <0x0 0xd8>; }};
    cpu@1 {{ device_type = "cpu"; reg = <1>; {cpu1} }};
  }};
  {psci}
}};
"#
        )
    }

    fn discover_str(src: &str) -> Result<Platform, Vec<Diagnostic>> {
        Platform::discover(&Fdt::new(&dtc(src)).unwrap())
    }

    #[test]
    fn spin_table_cpus_are_discovered_with_their_release_pages_reserved() {
        let p = discover_str(&spin_host(
            r#"enable-method = "spin-table"; cpu-release-addr = <0x0 0xe0>;"#,
            false,
        ))
        .unwrap();
        assert_eq!(p.cpus[1].enable, EnableMethod::SpinTable { release: 0xe0 });
        assert!(
            !p.warnings.iter().any(|w| w.path.starts_with("/cpus")),
            "{:?}",
            p.warnings
        );
        let pages: Vec<_> = p
            .memory
            .reserved
            .iter()
            .filter(|r| matches!(r.kind, ReservedKind::SpinTable(_)))
            .map(|r| r.range)
            .collect();
        assert_eq!(pages, [Range::new(0, 0x1000); 2]);
        assert!(
            p.to_string()
                .contains("CPUs 2: 0x0 (spin-table 0xd8) 0x1 (spin-table 0xe0)"),
            "{p}"
        );
    }

    #[test]
    fn a_spin_table_cpu_without_a_release_address_is_an_error_naming_it() {
        let e = discover_str(&spin_host(r#"enable-method = "spin-table";"#, false)).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        let t = e[0].to_string();
        assert!(
            t.contains("/cpus/cpu@1") && t.contains("cpu-release-addr"),
            "{t}"
        );
    }

    #[test]
    fn an_unaligned_or_short_release_address_is_an_error() {
        for (prop, want) in [
            ("cpu-release-addr = <0x0 0xe4>;", "not 8-byte aligned"),
            ("cpu-release-addr = <0xe0>;", "2 cells"),
        ] {
            let src = spin_host(&format!(r#"enable-method = "spin-table"; {prop}"#), false);
            let e = discover_str(&src).unwrap_err();
            let t = e[0].to_string();
            assert!(t.contains("/cpus/cpu@1") && t.contains(want), "{prop}: {t}");
        }
    }

    #[test]
    fn a_cpu_with_no_usable_enable_method_is_named_and_marked_unusable() {
        for (cpu1, psci) in [
            (r#"enable-method = "brcm,bcm2836-smp";"#, true),
            (r#"enable-method = "psci";"#, false),
            ("", false),
        ] {
            let p = discover_str(&spin_host(cpu1, psci)).unwrap();
            assert!(
                matches!(p.cpus[1].enable, EnableMethod::Unusable(_)),
                "{cpu1}: {:?}",
                p.cpus[1].enable
            );
            let w: Vec<String> = p
                .warnings
                .iter()
                .filter(|w| w.path.starts_with("/cpus"))
                .map(|w| w.to_string())
                .collect();
            assert!(
                w.len() == 1 && w[0].contains("/cpus/cpu@1") && w[0].contains("cannot be started"),
                "{cpu1}: {w:?}"
            );
        }
        let p = discover_str(&spin_host(r#"enable-method = "psci";"#, true)).unwrap();
        assert_eq!(p.cpus[1].enable, EnableMethod::Psci);
    }

    #[test]
    fn a_release_address_outside_ram_or_in_the_hypervisor_is_an_error() {
        let mut p = discover_str(&spin_host(
            r#"enable-method = "spin-table"; cpu-release-addr = <0x1 0x0>;"#,
            false,
        ))
        .unwrap();
        p.memory.reserved.push(Reserved {
            range: Range::new(0, 0x20_0000),
            kind: ReservedKind::Image,
        });
        let e: Vec<String> = p
            .check_release_addrs()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("/cpus/cpu@0") && e[0].contains("hypervisor image"),
            "{e:?}"
        );
        assert!(
            e[1].contains("/cpus/cpu@1") && e[1].contains("outside RAM"),
            "{e:?}"
        );
    }
}
