//! The dtvisor EL2 image. On the host this is an empty stub (cargo builds
//! bins for host tests); the real entry is under `target_os = "none"`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[macro_use]
mod console;
#[cfg(target_os = "none")]
mod arch {
    pub mod aarch64;
    pub use aarch64::*;
}
#[cfg(target_os = "none")]
mod drivers;
#[cfg(target_os = "none")]
mod efi;
#[cfg(target_os = "none")]
mod fatal;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod hyp;
#[cfg(target_os = "none")]
mod time;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod vmm;

#[cfg(target_os = "none")]
extern crate alloc;
