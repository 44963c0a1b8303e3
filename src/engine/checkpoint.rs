//! Model sources on disk: a GGUF file, or a Hugging Face safetensors directory
//! (`config.json`, `tokenizer.json`, `*.safetensors`), and the architecture a directory declares.
//!
//! A weight update must keep the architecture: [`ModelShape`] is what `config.json` and the
//! safetensors headers (every tensor's name and shape), or a GGUF file's header, say about it,
//! compared before any weights are loaded.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::safetensors_header::{self, TensorTable};

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

/// Tensor differences listed by name in a refusal before the rest are counted.
const SHOWN_TENSORS: usize = 3;

/// The architecture a checkpoint declares, in `config.json`'s names: a safetensors
/// directory's shape-fixing keys and tensor table, or what a GGUF header says of the same keys
/// (absent keys are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    keys: BTreeMap<String, Value>,
    /// Every tensor's name and shape, from a safetensors directory's headers (`None` for GGUF,
    /// whose tensor names and layouts are its own).
    tensors: Option<TensorTable>,
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
    /// A `.gguf` or `.safetensors` file whose header is not well formed
    /// ([`super::gguf_header`], [`super::safetensors_header`]).
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
    let tensors = tensor_table(path)?;
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
        tensors: Some(tensors),
        gguf: false,
    }))
}

/// The tensors of every `*.safetensors` file in `dir`, each header checked; a name in two files
/// is refused (which of the two a loader would take is not defined).
fn tensor_table(dir: &Path) -> Result<TensorTable, CheckpointError> {
    let incomplete = |why: String| CheckpointError::Incomplete {
        path: dir.display().to_string(),
        why,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| incomplete(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(incomplete("no *.safetensors file".into()));
    }
    files.sort();
    let mut table = TensorTable::new();
    for file in files {
        let malformed = |why: String| CheckpointError::Malformed {
            path: file.display().to_string(),
            why,
        };
        for (name, shape) in
            safetensors_header::check(&file).map_err(|e| malformed(e.to_string()))?
        {
            if table.insert(name.clone(), shape).is_some() {
                return Err(malformed(format!(
                    "tensor {name:?} is in another file of the checkpoint too"
                )));
            }
        }
    }
    Ok(table)
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
        Some(Self {
            keys,
            tensors: None,
            gguf: true,
        })
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

    /// How `self` and `other` differ, as `key: ours vs theirs`. Shapes of the same format
    /// compare on every shape-fixing key, and two safetensors directories on every tensor's
    /// name and shape too; a GGUF header and a `config.json` on the keys both declare.
    pub fn differences(&self, other: &ModelShape) -> Vec<String> {
        let mut differences = self.key_differences(other);
        if let (Some(ours), Some(theirs)) = (&self.tensors, &other.tensors) {
            differences.extend(tensor_differences(ours, theirs));
        }
        differences
    }

    /// The shape-fixing keys on which `self` and `other` differ.
    fn key_differences(&self, other: &ModelShape) -> Vec<String> {
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

/// The tensors that `ours` and `theirs` name with different shapes or name alone, the first
/// [`SHOWN_TENSORS`] by name and the rest counted.
fn tensor_differences(ours: &TensorTable, theirs: &TensorTable) -> Vec<String> {
    let show = |shape: Option<&Vec<u64>>| shape.map_or("(absent)".into(), |s| format!("{s:?}"));
    let mut differing: Vec<String> = ours
        .keys()
        .chain(theirs.keys().filter(|k| !ours.contains_key(*k)))
        .filter(|name| ours.get(*name) != theirs.get(*name))
        .map(|name| {
            format!(
                "tensor {name}: {} vs {}",
                show(ours.get(name)),
                show(theirs.get(name))
            )
        })
        .collect();
    if differing.len() > SHOWN_TENSORS {
        let more = differing.len() - SHOWN_TENSORS;
        differing.truncate(SHOWN_TENSORS);
        differing.push(format!("{more} more tensors"));
    }
    differing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &Path, config: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        let weights = safetensors_header::file_of(&[("w", &[2, 2])]);
        std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    }

    #[test]
    fn safetensors_directories_compare_tensor_by_tensor() {
        let root = std::env::temp_dir().join(format!("entroll-tensors-{}", std::process::id()));
        let config = r#"{"model_type": "llama", "hidden_size": 4}"#;
        let with = |name: &str, tensors: &[(&str, &[u64])]| {
            let dir = root.join(name);
            checkpoint(&dir, config);
            let weights = safetensors_header::file_of(tensors);
            std::fs::write(dir.join("model.safetensors"), weights).unwrap();
            inspect(&dir).unwrap().unwrap()
        };
        let served = with("served", &[("a", &[4, 4]), ("b", &[4])]);
        let same = with("same", &[("b", &[4]), ("a", &[4, 4])]);
        assert!(served.differences(&same).is_empty());
        // config.json is the served model's; the tensors are not.
        let wider = with("wider", &[("a", &[4, 8]), ("b", &[4])]);
        assert_eq!(
            served.differences(&wider),
            vec!["tensor a: [4, 4] vs [4, 8]".to_string()]
        );
        let renamed = with("renamed", &[("a", &[4, 4]), ("c", &[4])]);
        assert_eq!(
            served.differences(&renamed),
            vec![
                "tensor b: [4] vs (absent)".to_string(),
                "tensor c: (absent) vs [4]".to_string()
            ]
        );
        let other = with("other", &[("c", &[1]), ("d", &[1]), ("e", &[1])]);
        let differences = served.differences(&other);
        assert_eq!(differences.len(), SHOWN_TENSORS + 1, "{differences:?}");
        assert_eq!(differences[SHOWN_TENSORS], "2 more tensors");

        // A tensor in two files of one checkpoint, and a file that is not safetensors.
        let twice = root.join("twice");
        checkpoint(&twice, config);
        let second = safetensors_header::file_of(&[("w", &[1])]);
        std::fs::write(twice.join("model-2.safetensors"), second).unwrap();
        let error = inspect(&twice).unwrap_err().to_string();
        assert!(error.contains("in another file"), "{error}");
        std::fs::write(twice.join("model-2.safetensors"), [7u8; 64]).unwrap();
        let error = inspect(&twice).unwrap_err();
        assert!(
            matches!(error, CheckpointError::Malformed { .. }),
            "{error}"
        );
        std::fs::remove_dir_all(&root).unwrap();
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
