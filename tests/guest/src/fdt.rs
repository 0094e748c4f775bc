//! Just enough of a flattened-device-tree reader for the test guest: one
//! checked pass over the structure block collecting what it prints and
//! uses. Every read is bounds-checked; a structural inconsistency ends the
//! walk (the guest then stays silent and powers off), a value it cannot
//! decode (odd cell counts, short properties) is skipped. Never panics.

/// CPUs whose MPIDR is kept (the count goes on beyond it).
pub const MAX_CPUS: usize = 16;

pub struct Info {
    pub bootargs: &'static str,
    /// Sum of the `/memory*` nodes' `reg` sizes, in bytes.
    pub memory: u64,
    mpidrs: [u64; MAX_CPUS],
    /// Number of `/cpus/cpu@*` nodes with a readable `reg`.
    pub ncpus: usize,
    pub uart: usize,
    pub smc: bool,
    /// The first root-level node with `interrupt-controller` and a GIC
    /// `compatible` whose `reg` has at least two entries.
    pub gic: Option<Gic>,
    /// The INTIDs of the root-level `arm,armv8-timer` (or armv7) node's
    /// `interrupts` (3-cell GIC specifiers), in the binding's order:
    /// secure physical, non-secure physical, virtual, hypervisor.
    pub timer: [Option<u32>; 4],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

#[derive(Clone, Copy)]
pub struct Gic {
    pub version: GicVersion,
    /// `reg[0]`: the distributor.
    pub dist: usize,
    /// `reg[1]`: the redistributor region (GICv3) or CPU interface (GICv2).
    pub cpu: usize,
    /// `reg[1]`'s size.
    pub cpu_size: u64,
}

/// What a root-level node has said so far about being a GIC.
#[derive(Clone, Copy)]
struct PendingGic {
    intc: bool,
    version: Option<GicVersion>,
    reg: Option<(usize, usize, u64)>,
}

impl PendingGic {
    const NONE: PendingGic = PendingGic {
        intc: false,
        version: None,
        reg: None,
    };

    fn gic(&self) -> Option<Gic> {
        let (dist, cpu, cpu_size) = self.reg?;
        if !self.intc {
            return None;
        }
        Some(Gic {
            version: self.version?,
            dist,
            cpu,
            cpu_size,
        })
    }
}

/// A GIC's `reg[0]` address and `reg[1]` address and size.
fn gic_reg(v: &[u8], ac: u32, sc: u32) -> Option<(usize, usize, u64)> {
    let per = (ac as usize).checked_add(sc as usize)?;
    let dist = cells(v, 0, ac)? as usize;
    let cpu = cells(v, per, ac)? as usize;
    let size = cells(v, per.checked_add(ac as usize)?, sc)?;
    Some((dist, cpu, size))
}

fn gic_version(compatible: &[u8]) -> Option<GicVersion> {
    compatible.split(|&c| c == 0).find_map(|s| match s {
        b"arm,gic-v3" => Some(GicVersion::V3),
        b"arm,gic-400" | b"arm,cortex-a15-gic" | b"arm,gic-v2" => Some(GicVersion::V2),
        _ => None,
    })
}

/// The INTID a 3-cell GIC interrupt specifier at cell `idx` names
/// (type 0: SPI, 1: PPI).
fn gic_intid(v: &[u8], idx: usize) -> Option<u32> {
    let num = be32(v, idx.checked_add(1)?.checked_mul(4)?)?;
    match be32(v, idx.checked_mul(4)?)? {
        0 => num.checked_add(32),
        1 if num < 16 => Some(num + 16),
        _ => None,
    }
}

fn timer_intids(v: &[u8]) -> [Option<u32>; 4] {
    let mut out = [None; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = gic_intid(v, i * 3);
    }
    out
}

impl Info {
    /// The MPIDRs of the first `MAX_CPUS` CPUs.
    pub fn cpus(&self) -> &[u64] {
        &self.mpidrs[..self.ncpus.min(MAX_CPUS)]
    }
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    let s = b.get(o..o.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The `n`-cell number starting at cell `idx` (n = 1 or 2).
fn cells(v: &[u8], idx: usize, n: u32) -> Option<u64> {
    let o = idx.checked_mul(4)?;
    match n {
        1 => be32(v, o).map(u64::from),
        2 => Some((be32(v, o)? as u64) << 32 | be32(v, o.checked_add(4)?)? as u64),
        _ => None,
    }
}

fn cstr(b: &[u8]) -> Option<&str> {
    let n = b.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&b[..n]).ok()
}

fn align4(x: usize) -> Option<usize> {
    Some(x.checked_add(3)? & !3)
}

#[derive(Clone, Copy)]
struct Uart {
    name: &'static str,
    base: usize,
}

impl Info {
    pub fn read(addr: usize) -> Option<Info> {
        if addr == 0 || !addr.is_multiple_of(8) {
            return None;
        }
        // SAFETY: the boot protocol gives the DTB's address (8-byte aligned,
        // checked above); only the 40-byte header is read before its size
        // is known, and that size is bounded to 2 MiB (the protocol's cap).
        let head = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
        if be32(head, 0)? != 0xd00d_feed {
            return None;
        }
        let total = (be32(head, 4)? as usize).min(2 << 20);
        // SAFETY: as above; every access below goes through `get`.
        let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(addr as *const u8, total) };
        let st = blob.get(be32(head, 8)? as usize..)?;
        let strings = blob.get(be32(head, 12)? as usize..)?;

        let mut info = Info {
            bootargs: "",
            memory: 0,
            mpidrs: [0; MAX_CPUS],
            ncpus: 0,
            uart: 0,
            smc: false,
            gic: None,
            timer: [None; 4],
        };
        let mut path: [&str; 8] = [""; 8];
        let mut depth = 0usize;
        // Devicetree spec defaults when the properties are absent.
        let (mut root_ac, mut root_sc, mut cpus_ac) = (2u32, 1u32, 1u32);
        let mut stdout: &str = "";
        let mut aliases: [(&str, &str); 8] = [("", ""); 8];
        let mut uarts = [Uart { name: "", base: 0 }; 4];
        let mut nuarts = 0;
        let mut pending_uart = false;
        let mut pending_reg: Option<usize> = None;
        let mut pending_gic = PendingGic::NONE;
        // A root-level node's: an armv8/armv7 timer `compatible`, its
        // `interrupts` (either may come first).
        let mut pending_timer = (false, None::<&[u8]>);
        let mut off = 0usize;
        loop {
            let tok = be32(st, off)?;
            off += 4;
            match tok {
                // FDT_BEGIN_NODE
                1 => {
                    // A root-level node's properties come before its
                    // children (a GICv3 node may have ITS children).
                    if depth == 2 && info.gic.is_none() {
                        info.gic = pending_gic.gic();
                    }
                    pending_gic = PendingGic::NONE;
                    pending_timer = (false, None);
                    let name = cstr(st.get(off..)?)?;
                    off = align4(off + name.len() + 1)?;
                    if let Some(p) = path.get_mut(depth) {
                        *p = name;
                    }
                    depth += 1;
                    pending_uart = false;
                    pending_reg = None;
                }
                // FDT_END_NODE
                2 => {
                    if depth == 2 && pending_uart && nuarts < uarts.len() {
                        if let Some(base) = pending_reg {
                            uarts[nuarts] = Uart {
                                name: path[1],
                                base,
                            };
                            nuarts += 1;
                        }
                    }
                    if depth == 2 && info.gic.is_none() {
                        info.gic = pending_gic.gic();
                    }
                    if let (2, (true, Some(v))) = (depth, pending_timer) {
                        if info.timer == [None; 4] {
                            info.timer = timer_intids(v);
                        }
                    }
                    pending_gic = PendingGic::NONE;
                    pending_timer = (false, None);
                    depth = depth.checked_sub(1)?;
                    pending_uart = false;
                    pending_reg = None;
                    if depth == 0 {
                        break;
                    }
                }
                // FDT_PROP
                3 => {
                    let len = be32(st, off)? as usize;
                    let name = cstr(strings.get(be32(st, off + 4)? as usize..)?)?;
                    let v = st.get(off + 8..(off + 8).checked_add(len)?)?;
                    off = align4(off + 8 + len)?;
                    let node = if depth >= 2 { path[1] } else { "" };
                    let child = if depth >= 3 { path[2] } else { "" };
                    match (depth, node, name) {
                        (1, _, "#address-cells") => root_ac = be32(v, 0).unwrap_or(root_ac),
                        (1, _, "#size-cells") => root_sc = be32(v, 0).unwrap_or(root_sc),
                        (2, "chosen", "bootargs") => info.bootargs = cstr(v).unwrap_or(""),
                        (2, "chosen", "stdout-path") => stdout = cstr(v).unwrap_or(""),
                        (2, "aliases", _) => {
                            if let Some(slot) = aliases.iter_mut().find(|a| a.0.is_empty()) {
                                *slot = (name, cstr(v).unwrap_or(""));
                            }
                        }
                        (2, "psci", "method") => info.smc = cstr(v) == Some("smc"),
                        (2, "cpus", "#address-cells") => cpus_ac = be32(v, 0).unwrap_or(cpus_ac),
                        (3, "cpus", "reg") if child.starts_with("cpu@") => {
                            if let Some(mpidr) = cells(v, 0, cpus_ac) {
                                if let Some(m) = info.mpidrs.get_mut(info.ncpus) {
                                    *m = mpidr;
                                }
                                info.ncpus += 1;
                            }
                        }
                        (2, n, "reg") if n.starts_with("memory") => {
                            // (address, size) pairs in the root's cell counts.
                            let per = (root_ac as usize).saturating_add(root_sc as usize);
                            let entries = v.len() / per.saturating_mul(4).max(1);
                            for i in 0..entries {
                                let at = i * per + root_ac as usize;
                                if let Some(size) = cells(v, at, root_sc) {
                                    info.memory = info.memory.saturating_add(size);
                                }
                            }
                        }
                        (2, _, "reg") => {
                            pending_reg = cells(v, 0, root_ac).map(|a| a as usize);
                            pending_gic.reg = gic_reg(v, root_ac, root_sc);
                        }
                        (2, _, "interrupt-controller") => pending_gic.intc = true,
                        (2, _, "interrupts") => pending_timer.1 = Some(v),
                        (2, _, "compatible") => {
                            pending_uart = v
                                .split(|&c| c == 0)
                                .any(|s| s == b"arm,sbsa-uart" || s == b"arm,pl011");
                            pending_gic.version = gic_version(v);
                            pending_timer.0 = v
                                .split(|&c| c == 0)
                                .any(|s| s == b"arm,armv8-timer" || s == b"arm,armv7-timer");
                        }
                        _ => {}
                    }
                }
                // FDT_NOP
                4 => {}
                // FDT_END
                9 => break,
                _ => return None,
            }
        }
        // stdout-path: "/node" or an alias, optionally ":options".
        let target = stdout.split(':').next().unwrap_or("");
        let target = aliases
            .iter()
            .find(|a| a.0 == target && !target.is_empty())
            .map_or(target, |a| a.1);
        let target = target.trim_start_matches('/');
        info.uart = uarts[..nuarts]
            .iter()
            .find(|u| u.name == target)
            .or(uarts[..nuarts].first())
            .map_or(0, |u| u.base);
        if info.uart == 0 {
            return None;
        }
        Some(info)
    }
}
