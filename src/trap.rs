//! Guest traps (filled in by the vCPU run loop). Returns None when the
//! exception is not a guest trap, so the caller reports it as unexpected.
use crate::arch::exception::TrapFrame;

pub fn handle(_kind: u64, _frame: &mut TrapFrame) -> Option<bool> {
    None
}
