//! Model sources on disk: a GGUF file, or a Hugging Face safetensors directory
//! (`config.json`, `tokenizer.json`, `*.safetensors`), and the architecture a directory declares.
//!
//! A weight update must keep the architecture: [`ModelShape`] is what `config.json` says about
//! it, compared before any weights are loaded.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// `config.json` keys that fix the architecture (and so the shapes of every tensor).
const SHAPE_KEYS: &[&str] = &[
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
];

/// The architecture a safetensors directory declares: the shape-fixing keys of its
/// `config.json` (absent keys are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape(BTreeMap<String, Value>);

/// Why a path cannot serve as a model.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Nothing at the path.
    #[error("{0} does not exist")]
    Missing(String),
    /// A directory without the files a safetensors checkpoint needs.
    #[error("{path} is not a safetensors checkpoint: {why}")]
    Incomplete { path: String, why: String },
    /// A `.gguf` file whose header is not well formed ([`super::gguf_header`]).
    #[error("{path}: {why}")]
    Malformed { path: String, why: String },
    /// `config.json` is not readable JSON.
    #[error("{path}/config.json is unreadable: {why}")]
    BadConfig { path: String, why: String },
}

/// Checks that `path` is a GGUF file or a complete safetensors directory, and returns the
/// directory's shape (`None` for a GGUF file, whose architecture is checked after loading).
pub fn inspect(path: &Path) -> Result<Option<ModelShape>, CheckpointError> {
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(CheckpointError::Missing(shown));
    }
    if path.is_file() {
        return if path.extension().is_some_and(|e| e == "gguf") {
            super::gguf_header::check(path).map_err(|e| CheckpointError::Malformed {
                path: shown,
                why: e.to_string(),
            })?;
            Ok(None)
        } else {
            Err(CheckpointError::Incomplete {
                path: shown,
                why: "a model file must be .gguf".into(),
            })
        };
    }
    for needed in ["config.json", "tokenizer.json"] {
        if !path.join(needed).is_file() {
            return Err(CheckpointError::Incomplete {
                path: shown,
                why: format!("{needed} is missing"),
            });
        }
    }
    let has_weights = std::fs::read_dir(path)
        .map_err(|e| CheckpointError::Incomplete {
            path: shown.clone(),
            why: e.to_string(),
        })?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    if !has_weights {
        return Err(CheckpointError::Incomplete {
            path: shown,
            why: "no *.safetensors file".into(),
        });
    }
    let bad = |why: String| CheckpointError::BadConfig {
        path: shown.clone(),
        why,
    };
    let text = std::fs::read_to_string(path.join("config.json")).map_err(|e| bad(e.to_string()))?;
    let config: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let object = config
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    Ok(Some(ModelShape(
        SHAPE_KEYS
            .iter()
            .filter_map(|&k| object.get(k).map(|v| (k.to_string(), v.clone())))
            .collect(),
    )))
}

impl ModelShape {
    /// The keys on which `self` and `other` differ, as `key: ours vs theirs`.
    pub fn differences(&self, other: &ModelShape) -> Vec<String> {
        SHAPE_KEYS
            .iter()
            .filter_map(|&k| {
                let (a, b) = (self.0.get(k), other.0.get(k));
                (a != b).then(|| {
                    let show = |v: Option<&Value>| v.map_or("(absent)".into(), Value::to_string);
                    format!("{k}: {} vs {}", show(a), show(b))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &Path, config: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), "").unwrap();
    }

    #[test]
    fn shapes_compare_by_the_architecture_keys_only() {
        let root = std::env::temp_dir().join(format!("entroll-ckpt-{}", std::process::id()));
        let (a, b, c) = (root.join("a"), root.join("b"), root.join("c"));
        checkpoint(
            &a,
            r#"{"model_type": "llama", "hidden_size": 576, "torch_dtype": "float32"}"#,
        );
        checkpoint(
            &b,
            r#"{"model_type": "llama", "hidden_size": 576, "torch_dtype": "bfloat16"}"#,
        );
        checkpoint(&c, r#"{"model_type": "llama", "hidden_size": 960}"#);
        let (sa, sb, sc) = (
            inspect(&a).unwrap().unwrap(),
            inspect(&b).unwrap().unwrap(),
            inspect(&c).unwrap().unwrap(),
        );
        assert_eq!(sa, sb, "the dtype is not part of the shape");
        assert_eq!(
            sa.differences(&sc),
            vec!["hidden_size: 576 vs 960".to_string()]
        );

        std::fs::remove_file(c.join("model.safetensors")).unwrap();
        assert!(matches!(
            inspect(&c),
            Err(CheckpointError::Incomplete { .. })
        ));
        std::fs::write(b.join("config.json"), "{not json").unwrap();
        assert!(matches!(
            inspect(&b),
            Err(CheckpointError::BadConfig { .. })
        ));
        assert!(matches!(
            inspect(&root.join("nowhere")),
            Err(CheckpointError::Missing(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
