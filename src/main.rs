//! The dtvisor EL2 image. On the host this is an empty stub (cargo builds
//! bins for host tests); the real entry is under `target_os = "none"`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}
