//! Model sources on disk: a GGUF file, or a Hugging Face safetensors directory
//! (`config.json`, `tokenizer.json`, `*.safetensors`), and the architecture a directory declares.
//!
//! A weight update must keep the architecture: [`ModelShape`] is what `config.json`, or a GGUF
//! file's header, says about it, compared before any weights are loaded.

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

/// The keys a GGUF header and a `config.json` both declare, with the GGUF key each is read from
/// (after `<architecture>.`; the name is `general.architecture`).
const GGUF_KEYS: [(&str, &str); 5] = [
    ("num_hidden_layers", "block_count"),
    ("hidden_size", "embedding_length"),
    ("intermediate_size", "feed_forward_length"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
];

/// The architecture a checkpoint declares, in `config.json`'s names: a safetensors
/// directory's shape-fixing keys, or what a GGUF header says of the same (absent keys are left
/// out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    keys: BTreeMap<String, Value>,
    /// Read from a GGUF header, which declares fewer keys than a `config.json`.
    gguf: bool,
}

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
/// shape it declares (`None` for a GGUF file that names no architecture).
pub fn inspect(path: &Path) -> Result<Option<ModelShape>, CheckpointError> {
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(CheckpointError::Missing(shown));
    }
    if path.is_file() {
        return if path.extension().is_some_and(|e| e == "gguf") {
            let architecture =
                super::gguf_header::check(path).map_err(|e| CheckpointError::Malformed {
                    path: shown,
                    why: e.to_string(),
                })?;
            Ok(ModelShape::of_gguf(&architecture))
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
    Ok(Some(ModelShape {
        keys: SHAPE_KEYS
            .iter()
            .filter_map(|&k| object.get(k).map(|v| (k.to_string(), v.clone())))
            .collect(),
        gguf: false,
    }))
}

impl ModelShape {
    /// What a GGUF header declares, in `config.json`'s names (`model_type` for the
    /// architecture's name); `None` when it names no architecture.
    pub fn of_gguf(architecture: &super::gguf_header::Architecture) -> Option<Self> {
        let name = architecture.name.as_ref()?;
        let mut keys = BTreeMap::from([("model_type".to_string(), Value::from(name.as_str()))]);
        for (ours, theirs) in GGUF_KEYS {
            if let Some(&n) = architecture.sizes.get(theirs) {
                keys.insert(ours.to_string(), Value::from(n));
            }
        }
        Some(Self { keys, gguf: true })
    }

    /// The keys compared with a shape read from the other format: those both formats declare,
    /// with `config.json`'s default for the key-value heads (as many as the query heads).
    fn common_keys(&self) -> BTreeMap<String, Value> {
        let mut keys: BTreeMap<String, Value> = self
            .keys
            .iter()
            .filter(|(k, _)| k.as_str() == "model_type" || GGUF_KEYS.iter().any(|(o, _)| o == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let (false, Some(heads)) = (self.gguf, keys.get("num_attention_heads").cloned()) {
            keys.entry("num_key_value_heads".into()).or_insert(heads);
        }
        keys
    }

    /// The keys on which `self` and `other` differ, as `key: ours vs theirs`. Shapes of the
    /// same format compare on every shape-fixing key; a GGUF header and a `config.json` on the
    /// keys both declare.
    pub fn differences(&self, other: &ModelShape) -> Vec<String> {
        let (ours, theirs) = if self.gguf == other.gguf {
            (self.keys.clone(), other.keys.clone())
        } else {
            let (a, b) = (self.common_keys(), other.common_keys());
            let both = |m: &BTreeMap<String, Value>, o: &BTreeMap<String, Value>| {
                m.iter()
                    .filter(|(k, _)| o.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>()
            };
            (both(&a, &b), both(&b, &a))
        };
        SHAPE_KEYS
            .iter()
            .filter_map(|&k| {
                let (a, b) = (ours.get(k), theirs.get(k));
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

        // A GGUF header compares on the keys both formats declare.
        let gguf = |layers: u64| {
            ModelShape::of_gguf(&crate::engine::gguf_header::Architecture {
                name: Some("llama".into()),
                sizes: BTreeMap::from([("block_count", layers), ("embedding_length", 576)]),
            })
            .unwrap()
        };
        assert!(
            gguf(30).differences(&sa).is_empty(),
            "{:?}",
            gguf(30).differences(&sa)
        );
        assert_eq!(
            sc.differences(&gguf(30)),
            vec!["hidden_size: 960 vs 576".to_string()]
        );
        assert_eq!(
            gguf(30).differences(&gguf(12)),
            vec!["num_hidden_layers: 30 vs 12".to_string()]
        );
        checkpoint(
            &root.join("d"),
            r#"{"model_type": "qwen2", "hidden_size": 576, "num_attention_heads": 9}"#,
        );
        let sd = inspect(&root.join("d")).unwrap().unwrap();
        let mut kv = gguf(30);
        kv.keys.insert("num_attention_heads".into(), Value::from(9));
        kv.keys.insert("num_key_value_heads".into(), Value::from(3));
        assert_eq!(
            sd.differences(&kv),
            vec![
                "model_type: \"qwen2\" vs \"llama\"".to_string(),
                "num_key_value_heads: 9 vs 3".to_string()
            ]
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
