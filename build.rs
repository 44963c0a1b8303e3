//! Builds entroll's device kernels (`kernels/`): the CPU harness the tests run, and under the
//! `cuda` feature the same source as PTX for the GPU. Contraction of `a * b + c` into FMA is
//! off for both (`-ffp-contract=off`, nvcc's `--fmad=false`), so both give the same bits.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_NATIVE").is_none() {
        return;
    }
    cc::Build::new()
        .cpp(true)
        .file("kernels/cpu_harness.cpp")
        .include("kernels")
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-std=c++14")
        .opt_level(2)
        .compile("entroll_kernels");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx("token_stats");
        ptx("attention");
    }
}

/// Compiles `kernels/{name}.cu` to `$OUT_DIR/{name}.ptx` for `CUDA_COMPUTE_CAP` (default 90).
fn ptx(name: &str) {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join(format!("{name}.ptx"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let status = Command::new("nvcc")
        .args(["-ptx", "--fmad=false", "-std=c++14", "-Ikernels"])
        .arg(format!("-arch=sm_{cap}"))
        .arg(format!("kernels/{name}.cu"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("nvcc (needed by the cuda feature) did not run: {e}"));
    assert!(status.success(), "nvcc failed on kernels/{name}.cu");
}
