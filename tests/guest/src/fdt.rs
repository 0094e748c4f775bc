//! Just enough of a flattened-device-tree reader for the test guest: one
//! checked pass over the structure block collecting what it prints and
//! uses. Any inconsistency ends the walk (the guest then stays silent).

pub struct Info {
    pub bootargs: &'static str,
    pub memory: u64,
    pub cpus: [u64; 16],
    pub ncpus: usize,
    pub uart: usize,
    pub smc: bool,
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    let s = b.get(o..o.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn cells(v: &[u8], idx: usize, n: u32) -> Option<u64> {
    match n {
        1 => be32(v, idx * 4).map(u64::from),
        2 => Some((be32(v, idx * 4)? as u64) << 32 | be32(v, idx * 4 + 4)? as u64),
        _ => None,
    }
}

fn cstr(b: &[u8]) -> Option<&str> {
    let n = b.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&b[..n]).ok()
}

struct Uart {
    name: &'static str,
    base: usize,
}

impl Info {
    pub fn read(addr: usize) -> Option<Info> {
        if addr == 0 || addr % 8 != 0 {
            return None;
        }
        // SAFETY: the boot protocol gives the DTB's address; the header is
        // read first and the size bounded to 2 MiB.
        let head = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
        if be32(head, 0)? != 0xd00d_feed {
            return None;
        }
        let total = (be32(head, 4)? as usize).min(2 << 20);
        // SAFETY: as above.
        let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(addr as *const u8, total) };
        let st = blob.get(be32(head, 8)? as usize..)?;
        let strings = blob.get(be32(head, 12)? as usize..)?;

        let mut info = Info {
            bootargs: "",
            memory: 0,
            cpus: [0; 16],
            ncpus: 0,
            uart: 0,
            smc: false,
        };
        let mut path: [&str; 8] = [""; 8];
        let mut depth = 0usize;
        let (mut root_ac, mut root_sc, mut cpus_ac) = (2u32, 1u32, 1u32);
        let mut stdout: &str = "";
        let mut aliases: [(&str, &str); 8] = [("", ""); 8];
        let mut uarts: [Uart; 4] = [const { Uart { name: "", base: 0 } }; 4];
        let mut nuarts = 0;
        let mut pending_uart = false;
        let mut pending_reg: Option<usize> = None;
        let mut off = 0usize;
        loop {
            let tok = be32(st, off)?;
            off += 4;
            match tok {
                1 => {
                    let name = cstr(st.get(off..)?)?;
                    off = (off + name.len() + 4) & !3;
                    if depth < path.len() {
                        path[depth] = name;
                    }
                    depth += 1;
                    pending_uart = false;
                    pending_reg = None;
                }
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
                    depth = depth.checked_sub(1)?;
                    pending_uart = false;
                    pending_reg = None;
                }
                3 => {
                    let len = be32(st, off)? as usize;
                    let name = cstr(strings.get(be32(st, off + 4)? as usize..)?)?;
                    let v = st.get(off + 8..off + 8 + len)?;
                    off = (off + 8 + len + 3) & !3;
                    let node = if depth >= 2 { path[1] } else { "" };
                    match (depth, node, name) {
                        (1, _, "#address-cells") => root_ac = be32(v, 0)?,
                        (1, _, "#size-cells") => root_sc = be32(v, 0)?,
                        (2, "chosen", "bootargs") => info.bootargs = cstr(v).unwrap_or(""),
                        (2, "chosen", "stdout-path") => stdout = cstr(v).unwrap_or(""),
                        (2, "aliases", _) => {
                            if let Some(slot) = aliases.iter_mut().find(|a| a.0.is_empty()) {
                                *slot = (name, cstr(v).unwrap_or(""));
                            }
                        }
                        (2, "psci", "method") => info.smc = cstr(v) == Some("smc"),
                        (2, "cpus", "#address-cells") => cpus_ac = be32(v, 0)?,
                        (3, "cpus", "reg") if path[2].starts_with("cpu@") && info.ncpus < 16 => {
                            info.cpus[info.ncpus] = cells(v, 0, cpus_ac)?;
                            info.ncpus += 1;
                        }
                        (2, n, "reg") if n.starts_with("memory") => {
                            let per = (root_ac + root_sc) as usize;
                            for i in 0..v.len() / (per * 4) {
                                info.memory += cells(v, i * per + root_ac as usize, root_sc)?;
                            }
                        }
                        (2, _, "reg") => pending_reg = cells(v, 0, root_ac).map(|a| a as usize),
                        (2, _, "compatible") => {
                            pending_uart = v
                                .split(|&c| c == 0)
                                .any(|s| s == b"arm,sbsa-uart" || s == b"arm,pl011");
                        }
                        _ => {}
                    }
                }
                4 => {}
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
