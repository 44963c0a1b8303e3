//! What the native forward needs to know about a model, read from a GGUF file's metadata or a
//! safetensors directory's `config.json` (a typed [`HfConfig`]), and why a model may not run.

use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::Deserialize;

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama.cpp's Llama GGUF files (whose q/k rows are permuted).
    Interleaved,
    /// Halves `(i, i + d/2)`: Hugging Face checkpoints and llama.cpp's Qwen2/Qwen3 files.
    Halves,
}

/// The hyper-parameters the forward needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// `llama`, `qwen2` or `qwen3`.
    pub family: String,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rows of the output projection (V).
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Longest sequence the model supports.
    pub max_context: usize,
}

/// Why a model cannot run on the native engine.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture or a feature of it is not implemented here.
    #[error("the native engine does not support {0}")]
    Unsupported(String),
    /// The files are unreadable or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The keys of a Hugging Face `config.json` the native engine reads; the rest are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    /// `llama`, `qwen2` or `qwen3`.
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (default: as many as query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head (default: `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Rows of the output projection.
    pub vocab_size: usize,
    /// RMSNorm epsilon (default 1e-6).
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    /// RoPE base (transformers 4); default 10,000.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE settings (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// RoPE scaling, which the native engine does not implement (refused unless null).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
}

/// `config.json`'s `rope_parameters` (transformers 5).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    /// RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `default`, or a scaled variant the native engine refuses.
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// Reads a directory's `config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig, ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))
}

/// The families the native forward implements, by their GGUF / `model_type` names.
const FAMILIES: &[&str] = &["llama", "qwen2", "qwen3"];

impl Architecture {
    /// Reads the architecture of a GGUF file from its metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, ModelError> {
        let md = &content.metadata;
        let family = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| ModelError::Invalid("GGUF file without general.architecture".into()))?;
        if !FAMILIES.contains(&family.as_str()) {
            return Err(ModelError::Unsupported(format!(
                "GGUF architecture {family}"
            )));
        }
        let get = |key: &str| {
            md.get(&format!("{family}.{key}"))
                .ok_or_else(|| ModelError::Invalid(format!("GGUF metadata lacks {family}.{key}")))
        };
        let int = |key: &str| -> Result<usize, ModelError> {
            let v = get(key)?;
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .map_err(|e| ModelError::Invalid(format!("{family}.{key}: {e}")))
        };
        let float = |key: &str| -> Result<f64, ModelError> {
            get(key)?
                .to_f32()
                .map(f64::from)
                .map_err(|e| ModelError::Invalid(format!("{family}.{key}: {e}")))
        };
        if md.contains_key(&format!("{family}.rope.scaling.type")) {
            return Err(ModelError::Unsupported("RoPE scaling".into()));
        }
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let head_dim = match int("attention.key_length") {
            Ok(d) => d,
            Err(_) => hidden / heads,
        };
        let vocab = match int("vocab_size") {
            Ok(v) => v,
            Err(_) => content
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| ModelError::Invalid("GGUF file without token_embd".into()))?,
        };
        Ok(Self {
            rope_style: if family == "llama" {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Halves
            },
            hidden,
            layers: int("block_count")?,
            heads,
            kv_heads: int("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            vocab,
            rms_eps: float("attention.layer_norm_rms_epsilon")?,
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            max_context: int("context_length")?,
            family,
        })
    }

    /// The architecture of a safetensors directory from its `config.json`.
    pub fn from_config(config: &HfConfig) -> Result<Self, ModelError> {
        let family = config.model_type.clone();
        if !FAMILIES.contains(&family.as_str()) {
            return Err(ModelError::Unsupported(format!("model_type {family}")));
        }
        if config.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ModelError::Unsupported("RoPE scaling".into()));
        }
        let rope = config.rope_parameters.as_ref();
        if let Some(kind) = rope.and_then(|r| r.rope_type.as_deref()) {
            if kind != "default" {
                return Err(ModelError::Unsupported(format!("RoPE type {kind}")));
            }
        }
        let heads = config.num_attention_heads;
        Ok(Self {
            hidden: config.hidden_size,
            layers: config.num_hidden_layers,
            heads,
            kv_heads: config.num_key_value_heads.unwrap_or(heads),
            head_dim: config.head_dim.unwrap_or(config.hidden_size / heads),
            vocab: config.vocab_size,
            rms_eps: config.rms_norm_eps.unwrap_or(1e-6),
            // transformers 5 writes the RoPE base under `rope_parameters`.
            rope_theta: config
                .rope_theta
                .or_else(|| rope.and_then(|r| r.rope_theta))
                .unwrap_or(10_000.0),
            rope_style: RopeStyle::Halves,
            max_context: config.max_position_embeddings,
            family,
        })
    }

    /// Width of one key or value row of the cache (`kv_heads · head_dim`).
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}
