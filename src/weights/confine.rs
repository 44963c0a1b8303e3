//! Where `POST /weights` may load from: a `.gguf` file or a checkpoint directory inside the
//! server's weights root, after `..` and symbolic links are resolved. Whatever else a client
//! names (a path outside the root, one that does not exist, a device, a pipe, a file of
//! another kind) is refused with one message that says nothing of what is there, so the route
//! cannot be used to explore the server's filesystem.

use std::path::{Path, PathBuf};

use crate::api::error::ApiError;

/// The one answer to every path that is not a checkpoint inside the root.
pub const REFUSED: &str = "the weights path is refused: it must name a .gguf file or a \
     checkpoint directory inside the server's weights_root";

/// The directory `POST /weights` paths must resolve into.
#[derive(Clone, Debug)]
pub struct WeightsRoot(PathBuf);

impl WeightsRoot {
    /// A root at `dir` (resolved on every request: it may be made after the server starts).
    pub fn new(dir: PathBuf) -> Self {
        Self(dir)
    }

    /// The resolved path of `requested` (absolute, or relative to the root) if it names a
    /// `.gguf` file or a directory inside the root; [`REFUSED`] otherwise.
    pub fn confine(&self, requested: &str) -> Result<PathBuf, ApiError> {
        let refused = || ApiError::Invalid(REFUSED.into());
        let root = self.0.canonicalize().map_err(|_| refused())?;
        let path = root
            .join(Path::new(requested))
            .canonicalize()
            .map_err(|_| refused())?;
        if !path.starts_with(&root) {
            return Err(refused());
        }
        let meta = std::fs::metadata(&path).map_err(|_| refused())?;
        let gguf = meta.is_file() && path.extension().is_some_and(|e| e == "gguf");
        if gguf || meta.is_dir() {
            Ok(path)
        } else {
            Err(refused())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checkpoints_inside_the_root_pass_and_every_refusal_reads_the_same() {
        let base = std::env::temp_dir().join(format!("entroll-confine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("ckpt")).unwrap();
        std::fs::write(root.join("model.gguf"), b"GGUF").unwrap();
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), root.join("link-out")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.gguf")).unwrap();
        std::os::unix::fs::symlink(root.join("ckpt"), root.join("link-in")).unwrap();
        let r = WeightsRoot::new(root.clone());
        let root = root.canonicalize().unwrap();
        assert_eq!(r.confine("ckpt").unwrap(), root.join("ckpt"));
        assert_eq!(
            r.confine(root.join("model.gguf").to_str().unwrap())
                .unwrap(),
            root.join("model.gguf")
        );
        assert_eq!(r.confine("link-in").unwrap(), root.join("ckpt"));
        assert_eq!(
            r.confine("ckpt/../model.gguf").unwrap(),
            root.join("model.gguf")
        );
        for bad in [
            "../outside",
            "link-out",
            "zero.gguf",
            "notes.txt",
            "missing",
            "/etc",
            "/etc/passwd",
            "/dev/zero",
            "ckpt/../../outside",
        ] {
            let e = r.confine(bad).unwrap_err();
            assert_eq!(e.to_string(), REFUSED, "{bad}");
        }
        assert!(WeightsRoot::new(base.join("none")).confine("x").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
