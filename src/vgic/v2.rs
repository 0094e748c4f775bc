//! The GICv2 register view over the portable vGIC state: the distributor
//! (4 KiB at guest 0x03001000) and the GICH_LR<n> list register encoding.
//! The CPU interface frame at 0x03002000 is not emulated: the image maps
//! the physical GICV frame there.
//!
//! One security state (no Security Extensions, TYPER.SecurityExtn = 0),
//! so GICD_CTLR has a single enable bit. At most 8 vCPUs are addressable
//! (CPU target fields, SGI target lists and source IDs are 8 bits wide):
//! vCPUs from the ninth on still have their banked registers, but they
//! cannot be targeted by ITARGETSR or GICD_SGIR, and their own GICD_SGIR
//! writes are ignored (their source ID would not fit the 3-bit CPUID).
//!
//! Accesses follow the architecture's sizes: 32-bit everywhere, bytes
//! too for IPRIORITYR, ITARGETSR, CPENDSGIR and SPENDSGIR. Any other
//! size, an unaligned access or one beyond the 4 KiB frame is refused
//! (`Outcome::Abort`: the caller injects an abort). Reserved and
//! unimplemented offsets read as zero and ignore writes.

use super::regs::{bit_register, ro, size_ok, IIDR};
pub use super::regs::{Access, Outcome};
use super::{BitField, Lr, LrState, VcpuMask, Vgic, PRIVATE, SGIS};

pub const GICD_BASE: u64 = 0x0300_1000;
pub const GICD_SIZE: u64 = 0x1000;
/// Where the guest finds its CPU interface: the physical GICV frame.
pub const GICC_BASE: u64 = 0x0300_2000;
pub const GICC_SIZE: u64 = 0x2000;

/// vCPUs a GICv2 can name (8-bit target and source masks).
pub const MAX_V2_VCPUS: usize = 8;

/// PIDR2: ArchRev = 2 (GICv2), JEDEC-assigned, JEP106 bits 6:4 of Arm.
const PIDR2_V2: u32 = 0x2b;
/// CIDR0-3 at 0xff0..0xffc: the usual PrimeCell component ID.
const CIDR: [u32; 4] = [0x0d, 0xf0, 0x05, 0xb1];

fn done(value: u64, changed: VcpuMask) -> Outcome {
    Outcome::Done { value, changed }
}

/// The vCPUs a target list or source mask can name (bits 0-7).
fn addressable(g: &Vgic) -> u8 {
    ((1u16 << g.vcpus().min(MAX_V2_VCPUS)) - 1) as u8
}

/// Byte `n` of a value written `a.size` wide.
fn byte(val: u64, n: u32) -> u8 {
    (val >> (8 * n)) as u8
}

/// A byte-per-interrupt register access over `a.size` bytes from
/// `first`: `get` reads one byte, `set` writes one.
fn bytes(
    g: &mut Vgic,
    a: &Access,
    first: u32,
    get: impl Fn(&Vgic, u32) -> u8,
    mut set: impl FnMut(&mut Vgic, u32, u8) -> VcpuMask,
) -> Outcome {
    let n = a.size as u32;
    match a.write {
        None => done(
            (0..n).fold(0, |acc, i| acc | (get(g, first + i) as u64) << (8 * i)),
            0,
        ),
        Some(val) => done(
            0,
            (0..n).fold(0, |m, i| m | set(g, first + i, byte(val, i))),
        ),
    }
}

/// An access to the distributor frame by vCPU `v` (private INTIDs 0-31
/// are banked: `v`'s own).
pub fn distributor(g: &mut Vgic, v: usize, a: &Access) -> Outcome {
    if a.off >= GICD_SIZE {
        return Outcome::Abort;
    }
    let bytes_ok = matches!(a.off, 0x400..=0x7fb | 0x800..=0xbfb | 0xf10..=0xf2f);
    if !size_ok(a, bytes_ok, false) {
        return Outcome::Abort;
    }
    if let Some((field, set, first)) = bit_register(a.off) {
        return match a.write {
            None => done(g.read_bits(v, first, field) as u64, 0),
            Some(val) => {
                let mut val = val as u32;
                // SGI pending state is per source: set and cleared through
                // SPENDSGIR/CPENDSGIR only; these bits are read-only here.
                if field == BitField::Pending && first == 0 {
                    val &= !((1 << SGIS) - 1);
                }
                done(0, g.write_bits(v, first, field, set, val))
            }
        };
    }
    match a.off {
        0x000 => match a.write {
            // One enable bit (no Security Extensions): both groups.
            None => done((g.groups & 1) as u64, 0),
            Some(val) => done(0, g.set_groups(if val & 1 != 0 { 3 } else { 0 })),
        },
        0x004 => {
            // ITLinesNumber, CPUNumber; no SecurityExtn, LSPI 0.
            let it_lines = g.intid_end() / 32 - 1;
            let cpus = (g.vcpus().clamp(1, MAX_V2_VCPUS) - 1) as u32;
            ro(a, it_lines | (cpus << 5))
        }
        0x008 => ro(a, IIDR),
        0x400..=0x7fb => bytes(
            g,
            a,
            (a.off - 0x400) as u32,
            |g, id| g.priority(v, id),
            |g, id, p| g.set_priority(v, id, p),
        ),
        0x800..=0xbfb => {
            let me = if v < MAX_V2_VCPUS && v < g.vcpus() {
                1u8 << v
            } else {
                0
            };
            let present = addressable(g);
            bytes(
                g,
                a,
                (a.off - 0x800) as u32,
                // Private INTIDs target the reader only (read-only).
                |g, id| match id {
                    0..PRIVATE => me,
                    _ => g.route(id) as u8,
                },
                |g, id, t| match id {
                    0..PRIVATE => 0,
                    _ => g.set_route(id, (t & present) as u64),
                },
            )
        }
        0xc00..=0xcff => {
            let first = ((a.off - 0xc00) / 4 * 16) as u32;
            match a.write {
                None => done(g.read_config(v, first) as u64, 0),
                Some(val) => done(0, g.write_config(v, first, val as u32)),
            }
        }
        0xf00 => match a.write {
            Some(val) => done(0, sgir(g, v, val as u32)),
            // Write-only.
            None => done(0, 0),
        },
        0xf10..=0xf2f => {
            let set = a.off >= 0xf20;
            let first = (a.off & 0xf) as u32;
            let present = addressable(g);
            bytes(
                g,
                a,
                first,
                |g, sgi| g.irq(v, sgi).map_or(0, |i| i.sources),
                |g, sgi, s| g.write_sgi_sources(v, sgi, s & present, set),
            )
        }
        0xfe8 => ro(a, PIDR2_V2),
        0xff0..=0xffc => ro(a, CIDR[((a.off - 0xff0) / 4) as usize]),
        _ => done(0, 0),
    }
}

/// A GICD_SGIR write by vCPU `v`: TargetListFilter (bits 25:24) 0 sends
/// to CPUTargetList (bits 23:16), 1 to every other vCPU, 2 to `v` only;
/// 3 is reserved and ignored. SGIINTID is bits 3:0; NSATT (bit 15) has
/// no meaning without Security Extensions.
fn sgir(g: &mut Vgic, v: usize, val: u32) -> VcpuMask {
    if v >= MAX_V2_VCPUS || v >= g.vcpus() {
        return 0;
    }
    let present = addressable(g);
    let targets = match (val >> 24) & 3 {
        0 => (val >> 16) as u8,
        1 => present & !(1 << v),
        2 => 1 << v,
        _ => 0,
    } & present;
    g.send_sgi(v, targets as VcpuMask, val & 0xf)
}

/// GICH_LR<n> from a list register's contents (priority keeps its top
/// five bits, as GICH_LR has them).
pub fn encode_lr(lr: &Lr) -> u32 {
    let state = lr.state.bits();
    let mut v = (lr.intid & 0x3ff)
        | (((lr.priority >> 3) as u32) << 23)
        | (state << 28)
        | ((lr.group1 as u32) << 30);
    match lr.pintid {
        Some(p) => v |= (1 << 31) | ((p & 0x3ff) << 10),
        None => {
            v |= ((lr.source & 7) as u32) << 10;
            if lr.eoi_maintenance {
                v |= 1 << 19;
            }
        }
    }
    v
}

/// The state field of a GICH_LR<n> value.
pub fn lr_state(raw: u32) -> LrState {
    LrState::from_bits(raw >> 28)
}
