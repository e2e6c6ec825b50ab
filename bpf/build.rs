//! Compiles the XDP program with clang and generates its libbpf-rs skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/steer.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo")).join("steer.skel.rs");
    // Debian keeps asm/ headers under the multiarch directory, which
    // `clang -target bpf` does not search by itself.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    if let Err(e) = SkeletonBuilder::new()
        .source(SRC)
        .clang_args([multiarch.as_str(), "-Wall", "-Werror", "-O2", "-g"])
        .build_and_generate(&out)
    {
        panic!(
            "building the XDP program failed: {e:#}\n\
             (it needs clang, llvm and the kernel headers: run scripts/setup.sh)"
        );
    }
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=src/bpf/steer.h");
}
