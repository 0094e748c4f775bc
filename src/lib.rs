//! dtvisor's portable core: everything from the boot DTB to the guest DTB
//! is plain Rust over byte slices, built for the host and tested there.
//! The run-time (`rt`) is generic over the machine; the image (`src/main.rs`)
//! implements it and keeps only what touches the CPU (see docs/design.md).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod diag;
pub mod efi_cfg;
pub mod emul;
pub mod fdt;
pub mod hw;
pub mod mm;
pub mod placement;
pub mod psci;
pub mod rt;
pub mod stamp;
#[cfg(not(target_os = "none"))]
pub mod testing;
pub mod vgic;
pub mod vm;
