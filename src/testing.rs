//! Helpers for tests of this crate, its integration tests and the host
//! tool's: host builds only, never in the image.

extern crate std;

use alloc::vec::Vec;
use std::io::Write;
use std::process::{Command, Stdio};

/// A device tree source compiled by dtc (installed by scripts/setup).
pub fn dtc(src: &str) -> Vec<u8> {
    let mut child = Command::new("dtc")
        .args(["-I", "dts", "-O", "dtb", "-q", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("dtc must be installed (scripts/setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(src.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dtc failed on:\n{src}");
    out.stdout
}
