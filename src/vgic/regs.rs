//! What both register views share: the access and its outcome, the size
//! rules, and the one-bit-per-interrupt register layout (the same offsets
//! in a GICv2 distributor, a GICv3 distributor and a GICv3 SGI frame).

use super::{BitField, VcpuMask};

/// JEP106 code of Arm (0x43b) as implementer, product 'd' (0x64) for dtvisor.
pub const IIDR: u32 = 0x6400_043b;

/// What a guest access asks of a register view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Offset in the frame.
    pub off: u64,
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    /// Some(value) for a write.
    pub write: Option<u64>,
}

/// The outcome of an emulated access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The value read (0 for a write) and the vCPUs whose list registers
    /// are stale now.
    Done { value: u64, changed: VcpuMask },
    /// Bad size or alignment: the guest gets an abort.
    Abort,
}

impl Outcome {
    pub fn read(value: u64) -> Outcome {
        Outcome::Done { value, changed: 0 }
    }
    pub fn wrote(changed: VcpuMask) -> Outcome {
        Outcome::Done { value: 0, changed }
    }
}

/// Whether `a` is an access this register range allows: an aligned word,
/// or an aligned byte where `bytes_ok`, or doubleword where `quad_ok`.
pub fn size_ok(a: &Access, bytes_ok: bool, quad_ok: bool) -> bool {
    let s = a.size as u64;
    matches!(
        (s, bytes_ok, quad_ok),
        (4, _, _) | (1, true, _) | (8, _, true)
    ) && a.off.is_multiple_of(s)
}

/// A read-only word (writes ignored), or an abort for a bad size.
pub fn ro(a: &Access, val: u32) -> Outcome {
    if !size_ok(a, false, false) {
        return Outcome::Abort;
    }
    Outcome::read(if a.write.is_some() { 0 } else { val as u64 })
}

/// The one-bit-per-interrupt register at `off`: its field, set (or
/// clear), and the first INTID it covers.
pub fn bit_register(off: u64) -> Option<(BitField, bool, u32)> {
    let (base, field, set) = match off {
        0x080..=0x0ff => (0x080, BitField::Group, true),
        0x100..=0x17f => (0x100, BitField::Enable, true),
        0x180..=0x1ff => (0x180, BitField::Enable, false),
        0x200..=0x27f => (0x200, BitField::Pending, true),
        0x280..=0x2ff => (0x280, BitField::Pending, false),
        0x300..=0x37f => (0x300, BitField::Active, true),
        0x380..=0x3ff => (0x380, BitField::Active, false),
        _ => return None,
    };
    Some((field, set, ((off - base) / 4 * 32) as u32))
}
