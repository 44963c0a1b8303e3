//! Builds entroll's device kernels (`kernels/`): the CPU harness the tests run, and under the
//! `cuda` feature the same source as PTX for the GPU. Contraction of `a * b + c` into FMA is
//! off for both (`-ffp-contract=off`, nvcc's `--fmad=false`), so both give the same bits.
//!
//! The PTX is for the virtual architecture `compute_{CUDA_COMPUTE_CAP}` (default 80): the
//! driver compiles it for the GPU it finds, so one build runs on sm_80, sm_89 and sm_90. The
//! capability is also handed to the crate (`ENTROLL_CUDA_COMPUTE_CAP`), which refuses a GPU
//! below it at start.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rustc-env=ENTROLL_CUDA_COMPUTE_CAP={}", compute_cap());
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

/// The lowest compute capability the build serves, as nvcc and candle spell it (`80`).
fn compute_cap() -> String {
    std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into())
}

/// Compiles `kernels/{name}.cu` to `$OUT_DIR/{name}.ptx` for `compute_{CUDA_COMPUTE_CAP}`.
fn ptx(name: &str) {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join(format!("{name}.ptx"));
    let status = Command::new("nvcc")
        .args(["-ptx", "--fmad=false", "-std=c++14", "-Ikernels"])
        .arg(format!("-arch=compute_{}", compute_cap()))
        .arg(format!("kernels/{name}.cu"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("nvcc (needed by the cuda feature) did not run: {e}"));
    assert!(status.success(), "nvcc failed on kernels/{name}.cu");
}
