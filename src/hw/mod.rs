//! Host discovery: the boot DTB turned into a `Platform`.
pub mod cpufeat;
pub mod early;
pub mod el2cfg;
pub mod memory;
pub mod platform;
pub mod spectre;
pub use memory::{HostMemory, Reserved, ReservedKind};
pub use platform::{Conduit, GicVersion, Platform, UartInfo, UartKind};
