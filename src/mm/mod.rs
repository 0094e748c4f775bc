//! Memory: physical ranges, the free-RAM map, stage-2 tables.
pub mod range;
#[cfg(json)]
pub mod ser;
pub mod stage2;
pub use range::Range;
