//! Any bytes as a domain's partial device tree: `read` must not panic, and
//! whatever it accepts, `copy_into` must write into a guest DTB that
//! finishes as a valid tree.
#![no_main]

use dtvisor::config::partial;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if partial::read(data, data.len() as u64).is_err() {
        return;
    }
    let mut w = partial::FdtWriter::new().expect("empty writer");
    let root = w.begin_node("").expect("root node");
    // `read` accepted it, so the copy succeeds and the result parses.
    partial::copy_into(data, &mut w).expect("copy of an accepted fragment");
    w.end_node(root).expect("end of root");
    let dtb = w.finish().expect("finish");
    dtvisor::fdt::Fdt::new(&dtb).expect("the guest DTB parses");
});
