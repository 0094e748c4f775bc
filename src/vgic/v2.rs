//! The GICv2 list register encoding (GICH_LR<n>); the GICv2 register
//! view of the distributor comes with GICv2 guest support.

use super::{Lr, LrState};

/// GICH_LR<n> from a list register's contents (priority keeps its top
/// five bits, as GICH_LR has them).
pub fn encode_lr(lr: &Lr) -> u32 {
    let state = match lr.state {
        LrState::Invalid => 0u32,
        LrState::Pending => 1,
        LrState::Active => 2,
        LrState::PendingActive => 3,
    };
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
    match (raw >> 28) & 3 {
        0 => LrState::Invalid,
        1 => LrState::Pending,
        2 => LrState::Active,
        _ => LrState::PendingActive,
    }
}
