//! Device emulation, portable: decoding a trapped guest access and the
//! emulated devices themselves.
pub mod console;
pub mod inject;
pub mod mmio;
pub mod sysreg;
pub mod vpl011;
