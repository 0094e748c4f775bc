//! Passes link.ld to the image link only (not to host builds or tests),
//! and sets `cfg(json)` for host builds with the `serde` feature.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=src/arch/aarch64/entry.S");
    println!("cargo:rerun-if-changed=src/arch/aarch64/vectors.S");
    // `cfg(json)`: the serde derives and helpers of the plan, layout and
    // diagnostics types, the one place that decides them (host builds with
    // the `serde` feature; never the image, which builds no serde).
    println!("cargo::rustc-check-cfg=cfg(json)");
    let image = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none");
    if std::env::var_os("CARGO_FEATURE_SERDE").is_some() && !image {
        println!("cargo::rustc-cfg=json");
    }
    if image {
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=-znorelro");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    }
}
