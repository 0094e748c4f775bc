//! Host discovery: the boot DTB turned into a `Platform`.
pub mod early;
pub mod memory;
pub use memory::{HostMemory, Reserved, ReservedKind};
