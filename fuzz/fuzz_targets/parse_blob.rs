//! Any bytes through the whole host-side pipeline: FDT reader, host
//! discovery, the config parser and the text renderings (the JSON one is
//! serde's derive over the same data). Nothing may panic.
#![no_main]

use dtvisor::config::{self, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = config::parse_blob(data);
    let _ = render::Diagnostics(&r.diagnostics).to_string();
    if let Some(p) = &r.plan {
        let _ = p.to_string();
    }
    if let Ok(f) = dtvisor::fdt::Fdt::new(data) {
        let _ = dtvisor::hw::Platform::discover(&f).map(|p| p.to_string());
    }
});
