//! The GICv3 register view over the portable vGIC state: the distributor
//! at guest 0x03001000, one redistributor (RD + SGI frame, 128 KiB) per
//! vCPU from 0x03020000 in Xen's guest map, the SGI system registers and
//! the ICH_LR_EL2 encoding. Affinity routing is always on (ARE reads as
//! one) and there is one security state (DS = 1); no LPIs, no ITS.
//!
//! Accesses follow the architecture's sizes: 32-bit everywhere, 64-bit
//! for IROUTER and the 64-bit redistributor registers, bytes for
//! IPRIORITYR. Any other size, or an unaligned access, is refused
//! (`None`: the caller injects an abort). Reserved and unimplemented
//! offsets read as zero and ignore writes.

use super::regs::{bit_register, ro, size_ok, IIDR};
pub use super::regs::{Access, Outcome};
use super::{Lr, LrState, VcpuMask, Vgic, PRIVATE};

pub const GICD_BASE: u64 = 0x0300_1000;
pub const GICD_SIZE: u64 = 0x1_0000;
pub const GICR_BASE: u64 = 0x0302_0000;
/// The redistributor region in the guest DTB (Xen's: room for 128 vCPUs).
pub const GICR_SIZE: u64 = 0x100_0000;
/// RD_base + SGI_base frames of one vCPU.
pub const GICR_STRIDE: u64 = 0x2_0000;

/// PIDR2.ArchRev = 3: GICv3.
const PIDR2_V3: u32 = 0x3b;

const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

/// One-bit, priority and config registers, shared by the distributor
/// (INTIDs from 32; with affinity routing the private ones are RAZ/WI
/// there) and the SGI frame (INTIDs 0-31 of vCPU `v`).
fn per_irq(g: &mut Vgic, v: usize, a: &Access, private: bool) -> Option<Outcome> {
    let in_range = |first: u32| {
        if private {
            first < PRIVATE
        } else {
            first >= PRIVATE
        }
    };
    if let Some((field, set, first)) = bit_register(a.off) {
        if !size_ok(a, false, false) {
            return Some(Outcome::Abort);
        }
        if !in_range(first) {
            return Some(Outcome::read(0));
        }
        return Some(match a.write {
            None => Outcome::read(g.read_bits(v, first, field) as u64),
            Some(val) => Outcome::wrote(g.write_bits(v, first, field, set, val as u32)),
        });
    }
    match a.off {
        0x400..=0x7fb => {
            if !size_ok(a, true, false) {
                return Some(Outcome::Abort);
            }
            let first = (a.off - 0x400) as u32;
            if !in_range(first) {
                return Some(Outcome::read(0));
            }
            Some(match a.write {
                None => Outcome::read((0..a.size as u32).fold(0, |acc, n| {
                    acc | (g.priority(v, first + n) as u64) << (8 * n)
                })),
                Some(val) => Outcome::wrote((0..a.size as u32).fold(0, |m, n| {
                    m | g.set_priority(v, first + n, (val >> (8 * n)) as u8)
                })),
            })
        }
        0xc00..=0xcff => {
            if !size_ok(a, false, false) {
                return Some(Outcome::Abort);
            }
            let first = ((a.off - 0xc00) / 4 * 16) as u32;
            if !in_range(first) {
                return Some(Outcome::read(0));
            }
            Some(match a.write {
                None => Outcome::read(g.read_config(v, first) as u64),
                Some(val) => Outcome::wrote(g.write_config(v, first, val as u32)),
            })
        }
        _ => None,
    }
}

/// RAZ/WI for a register the view does not implement, with the size rules.
fn reserved(a: &Access, quad_ok: bool) -> Outcome {
    if size_ok(a, false, quad_ok) {
        Outcome::read(0)
    } else {
        Outcome::Abort
    }
}

/// An access to the distributor frame by vCPU `v`.
pub fn distributor(g: &mut Vgic, v: usize, a: &Access) -> Outcome {
    if a.off >= GICD_SIZE {
        return Outcome::Abort;
    }
    match a.off {
        0x0000 => {
            if !size_ok(a, false, false) {
                return Outcome::Abort;
            }
            match a.write {
                None => Outcome::read((g.groups | CTLR_ARE | CTLR_DS) as u64),
                Some(val) => Outcome::wrote(g.set_groups(val as u32 & 3)),
            }
        }
        0x0004 => {
            if !size_ok(a, false, false) || a.write.is_some() {
                return reserved(a, false);
            }
            // ITLinesNumber, CPUNumber (ignored with ARE), IDbits = 9 (10
            // bits of INTID), no LPIs, no MBIS, no security extension.
            let it_lines = g.intid_end() / 32 - 1;
            let cpus = (g.vcpus().clamp(1, 8) - 1) as u32;
            Outcome::read((it_lines | (cpus << 5) | (9 << 19)) as u64)
        }
        0x0008 => ro(a, IIDR),
        0xffe8 => ro(a, PIDR2_V3),
        // IROUTER<n>, n >= 32 (0x6100..); 0x6000..0x60ff are reserved.
        0x6100..=0x7fdf => {
            if !size_ok(a, false, true) {
                return Outcome::Abort;
            }
            let intid = ((a.off - 0x6000) / 8) as u32;
            let high = a.off % 8 == 4;
            if intid >= g.intid_end() {
                return Outcome::read(0);
            }
            let cur = g.route(intid);
            match a.write {
                None if high => Outcome::read(cur >> 32),
                None if a.size == 4 => Outcome::read(cur & 0xffff_ffff),
                None => Outcome::read(cur),
                Some(val) => {
                    let val = match (a.size, high) {
                        (8, _) => val,
                        (_, true) => (cur & 0xffff_ffff) | (val << 32),
                        (_, false) => (cur & !0xffff_ffff) | (val & 0xffff_ffff),
                    };
                    // Aff3, IRM, Aff2, Aff1, Aff0.
                    Outcome::wrote(g.set_route(intid, val & 0xff_80ff_ffff))
                }
            }
        }
        _ => per_irq(g, v, a, false).unwrap_or_else(|| reserved(a, false)),
    }
}

/// An access to the redistributor region (offset from GICR_BASE) by
/// vCPU `v`; frame `off / GICR_STRIDE` belongs to that vCPU index.
pub fn redistributor(g: &mut Vgic, v: usize, a: &Access) -> Outcome {
    let frame = (a.off / GICR_STRIDE) as usize;
    let off = a.off % GICR_STRIDE;
    let local = Access { off, ..*a };
    if frame >= g.vcpus() {
        // Beyond the last redistributor (TYPER.Last marks it): RAZ/WI.
        return reserved(&local, true);
    }
    let _ = v;
    if off >= 0x1_0000 {
        let sgi = Access {
            off: off - 0x1_0000,
            ..local
        };
        return per_irq(g, frame, &sgi, true).unwrap_or_else(|| reserved(&sgi, false));
    }
    match off {
        0x0000 => ro(&local, 0), // CTLR: no LPIs to enable
        0x0004 => ro(&local, IIDR),
        0x0008 | 0x000c => {
            if !size_ok(&local, false, off == 0x8) {
                return Outcome::Abort;
            }
            let c = g.vcpu(frame).map_or(0, |c| c.affinity);
            // Aff3.Aff2.Aff1.Aff0 from MPIDR's layout (Aff3 at 39:32).
            let aff = (((c >> 32) & 0xff) << 24) | (c & 0xff_ffff);
            let last = (frame + 1 == g.vcpus()) as u64;
            let typer = (aff << 32) | ((frame as u64) << 8) | (last << 4);
            Outcome::read(match (local.size, off) {
                (_, 0xc) => typer >> 32,
                (4, _) => typer & 0xffff_ffff,
                _ => typer,
            })
        }
        0x0014 => {
            if !size_ok(&local, false, false) {
                return Outcome::Abort;
            }
            let Some(c) = g.vcpu_mut(frame) else {
                return Outcome::read(0);
            };
            match local.write {
                // ProcessorSleep (bit 1) and ChildrenAsleep (bit 2) agree at once.
                None => Outcome::read(if c.asleep { 0b110 } else { 0 }),
                Some(val) => {
                    c.asleep = val & 2 != 0;
                    Outcome::wrote(1 << frame)
                }
            }
        }
        0xffe8 => ro(&local, PIDR2_V3),
        _ => reserved(&local, true),
    }
}

/// vCPUs an ICC_SGI1R_EL1 (or SGI0R / ASGI1R) value from vCPU `from`
/// targets, and the SGI number: IRM broadcasts to every other vCPU of the
/// domain, otherwise Aff3.Aff2.Aff1 with the target list (RS selects the
/// block of 16 Aff0 values). Only the guest's own vCPUs can be reached.
pub fn sgi_targets(g: &Vgic, from: usize, val: u64) -> (u32, VcpuMask) {
    let sgi = ((val >> 24) & 0xf) as u32;
    let mut mask = 0;
    if val & (1 << 40) != 0 {
        for t in 0..g.vcpus() {
            if t != from {
                mask |= 1 << t;
            }
        }
        return (sgi, mask);
    }
    let list = val & 0xffff;
    let rs = (val >> 44) & 0xf;
    let upper =
        (((val >> 48) & 0xff) << 32) | (((val >> 32) & 0xff) << 16) | (((val >> 16) & 0xff) << 8);
    for t in 0..g.vcpus() {
        let aff = g.vcpu(t).map_or(u64::MAX, |c| c.affinity);
        if aff & !0xff != upper {
            continue;
        }
        let aff0 = aff & 0xff;
        if aff0 >> 4 == rs && list & (1 << (aff0 & 0xf)) != 0 {
            mask |= 1 << t;
        }
    }
    (sgi, mask)
}

/// ICH_LR<n>_EL2 from a list register's contents.
pub fn encode_lr(lr: &Lr) -> u64 {
    let state = lr.state.bits() as u64;
    let mut v = (lr.intid as u64)
        | ((lr.priority as u64) << 48)
        | ((lr.group1 as u64) << 60)
        | (state << 62);
    match lr.pintid {
        Some(p) => v |= (1 << 61) | ((p as u64 & 0x1fff) << 32),
        None if lr.eoi_maintenance => v |= 1 << 41,
        None => {}
    }
    v
}

/// The state field of an ICH_LR<n>_EL2 value.
pub fn lr_state(raw: u64) -> LrState {
    LrState::from_bits((raw >> 62) as u32)
}
