//! Memory: physical ranges, the free-RAM map, stage-2 tables.
pub mod range;
pub use range::Range;
