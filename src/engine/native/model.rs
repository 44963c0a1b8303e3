//! The Llama-family decoder (Llama, Qwen2, Qwen3) that entroll's native engine runs: one
//! forward for a prompt chunk of one sequence, or one forward for one new token of each of many
//! sequences, both over the slot KV cache of [`super::kv`].
//!
//! Weights come from a GGUF file (quantized matmuls through candle's `QMatMul`) or a Hugging
//! Face safetensors directory (dense, in the configured dtype); the forward is the same.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor};
use serde_json::Value;

use super::kv::KvCache;

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

    /// Reads the architecture of a safetensors directory from its `config.json`.
    pub fn from_config(config: &Value) -> Result<Self, ModelError> {
        let family = config["model_type"]
            .as_str()
            .ok_or_else(|| ModelError::Invalid("config.json without model_type".into()))?
            .to_string();
        if !FAMILIES.contains(&family.as_str()) {
            return Err(ModelError::Unsupported(format!("model_type {family}")));
        }
        if !config["rope_scaling"].is_null() {
            return Err(ModelError::Unsupported("RoPE scaling".into()));
        }
        let int = |key: &str| {
            config[key]
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| ModelError::Invalid(format!("config.json lacks {key}")))
        };
        let hidden = int("hidden_size")?;
        let heads = int("num_attention_heads")?;
        // transformers 5 writes the RoPE base under `rope_parameters`.
        let rope_theta = config["rope_theta"]
            .as_f64()
            .or_else(|| config["rope_parameters"]["rope_theta"].as_f64())
            .unwrap_or(10_000.0);
        if let Some(kind) = config["rope_parameters"]["rope_type"].as_str() {
            if kind != "default" {
                return Err(ModelError::Unsupported(format!("RoPE type {kind}")));
            }
        }
        Ok(Self {
            hidden,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: int("num_key_value_heads").unwrap_or(heads),
            head_dim: int("head_dim").unwrap_or(hidden / heads),
            vocab: int("vocab_size")?,
            rms_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta,
            rope_style: RopeStyle::Halves,
            max_context: int("max_position_embeddings")?,
            family,
        })
    }

    /// Width of one key or value row of the cache (`kv_heads · head_dim`).
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A linear layer: quantized or dense weight `[out, in]`, optional bias.
struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Per-head RMSNorm of queries and keys (Qwen3).
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The decoder with its weights on one device.
pub struct Transformer {
    arch: Architecture,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    dtype: DType,
    device: Device,
}

/// Reads named tensors from a GGUF file or a safetensors directory.
enum Source {
    Gguf {
        content: gguf_file::Content,
        file: std::fs::File,
        path: PathBuf,
        /// Dequantize every matmul weight to this dtype (`None`: keep the quantization).
        dequantize: Option<DType>,
    },
    Safetensors(candle_nn::VarBuilder<'static>),
}

impl Source {
    fn has(&self, name: &str) -> bool {
        match self {
            Source::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            Source::Safetensors(vb) => vb.contains_tensor(name),
        }
    }

    fn linear(&mut self, weight: &str, bias: &str, device: &Device) -> Result<Linear, ModelError> {
        let weight = match self {
            Source::Gguf {
                content,
                file,
                path,
                dequantize,
            } => {
                let q = content.tensor(file, weight, device).map_err(|e| {
                    ModelError::Invalid(format!("{}: {weight}: {e}", path.display()))
                })?;
                match dequantize {
                    Some(dtype) => QMatMul::Tensor(q.dequantize(device)?.to_dtype(*dtype)?),
                    None => QMatMul::from_qtensor(q)?,
                }
            }
            Source::Safetensors(vb) => QMatMul::Tensor(vb.get_unchecked(weight)?),
        };
        let bias = if self.has(bias) {
            Some(self.dense(bias, device)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    fn dense(&mut self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        match self {
            Source::Gguf {
                content,
                file,
                path,
                ..
            } => {
                let q = content
                    .tensor(file, name, device)
                    .map_err(|e| ModelError::Invalid(format!("{}: {name}: {e}", path.display())))?;
                Ok(q.dequantize(device)?)
            }
            Source::Safetensors(vb) => Ok(vb.get_unchecked(name)?),
        }
    }
}

/// Tensor names of one layer in each format.
struct Names {
    gguf: bool,
}

impl Names {
    fn layer(&self, i: usize, part: &str) -> String {
        if self.gguf {
            let p = match part {
                "attn_norm" => "attn_norm",
                "q" => "attn_q",
                "k" => "attn_k",
                "v" => "attn_v",
                "o" => "attn_output",
                "q_norm" => "attn_q_norm",
                "k_norm" => "attn_k_norm",
                "ffn_norm" => "ffn_norm",
                "gate" => "ffn_gate",
                "up" => "ffn_up",
                _ => "ffn_down",
            };
            format!("blk.{i}.{p}")
        } else {
            let p = match part {
                "attn_norm" => "input_layernorm",
                "q" => "self_attn.q_proj",
                "k" => "self_attn.k_proj",
                "v" => "self_attn.v_proj",
                "o" => "self_attn.o_proj",
                "q_norm" => "self_attn.q_norm",
                "k_norm" => "self_attn.k_norm",
                "ffn_norm" => "post_attention_layernorm",
                "gate" => "mlp.gate_proj",
                "up" => "mlp.up_proj",
                _ => "mlp.down_proj",
            };
            format!("model.layers.{i}.{p}")
        }
    }

    fn global(&self, part: &str) -> &'static str {
        match (self.gguf, part) {
            (true, "embed") => "token_embd.weight",
            (true, "norm") => "output_norm.weight",
            (true, _) => "output.weight",
            (false, "embed") => "model.embed_tokens.weight",
            (false, "norm") => "model.norm.weight",
            (false, _) => "lm_head.weight",
        }
    }
}

/// The weight files of a safetensors directory.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::Invalid(format!("{}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: no *.safetensors file",
            dir.display()
        )));
    }
    Ok(files)
}

/// Reads a directory's `config.json`.
pub fn read_config(dir: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| ModelError::Invalid(format!("{}/config.json: {e}", dir.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::Invalid(format!("{}/config.json: {e}", dir.display())))
}

/// Reads the header of a GGUF file.
pub fn read_gguf(path: &Path) -> Result<(gguf_file::Content, std::fs::File), ModelError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
    Ok((content, file))
}

impl Transformer {
    /// Loads the weights of a GGUF file whose header [`read_gguf`] read, dequantized to
    /// `dequantize` (which is then also the activation dtype), or kept quantized with `f32`
    /// activations.
    pub fn from_gguf(
        content: gguf_file::Content,
        file: std::fs::File,
        path: &Path,
        dequantize: Option<DType>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let arch = Architecture::from_gguf(&content)?;
        let source = Source::Gguf {
            content,
            file,
            path: path.to_path_buf(),
            dequantize,
        };
        let dtype = dequantize.unwrap_or(DType::F32);
        Self::build(arch, source, Names { gguf: true }, dtype, device)
    }

    /// Loads a safetensors directory with its weights in `dtype`.
    pub fn from_safetensors(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let arch = Architecture::from_config(&read_config(dir)?)?;
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; a checkpoint must not be rewritten in
        // place while it loads (the learner writes each version to a new directory).
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Self::build(
            arch,
            Source::Safetensors(vb),
            Names { gguf: false },
            dtype,
            device,
        )
    }

    fn build(
        arch: Architecture,
        mut src: Source,
        names: Names,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let embed_name = names.global("embed");
        let embed = src.dense(embed_name, device)?.to_dtype(dtype)?;
        let (rows, width) = embed.dims2()?;
        if rows != arch.vocab || width != arch.hidden {
            return Err(ModelError::Invalid(format!(
                "{embed_name} is {rows}×{width}, the config says {}×{}",
                arch.vocab, arch.hidden
            )));
        }
        let head_name = names.global("head");
        let head_source = if src.has(head_name) {
            head_name
        } else {
            embed_name
        };
        let lm_head = src.linear(head_source, "", device)?;
        let norm = src.dense(names.global("norm"), device)?.to_dtype(dtype)?;
        let mut layers = Vec::with_capacity(arch.layers);
        for i in 0..arch.layers {
            let n = |part: &str| names.layer(i, part);
            let w = |part: &str| format!("{}.weight", n(part));
            let b = |part: &str| format!("{}.bias", n(part));
            let optional_norm = |src: &mut Source, part: &str| -> Result<_, ModelError> {
                if src.has(&w(part)) {
                    Ok(Some(src.dense(&w(part), device)?.to_dtype(dtype)?))
                } else {
                    Ok(None)
                }
            };
            let q_norm = optional_norm(&mut src, "q_norm")?;
            let k_norm = optional_norm(&mut src, "k_norm")?;
            if arch.family == "qwen3" && (q_norm.is_none() || k_norm.is_none()) {
                return Err(ModelError::Invalid(format!("layer {i} lacks q/k norms")));
            }
            layers.push(Layer {
                attn_norm: src.dense(&w("attn_norm"), device)?.to_dtype(dtype)?,
                q: src.linear(&w("q"), &b("q"), device)?,
                k: src.linear(&w("k"), &b("k"), device)?,
                v: src.linear(&w("v"), &b("v"), device)?,
                o: src.linear(&w("o"), &b("o"), device)?,
                q_norm,
                k_norm,
                ffn_norm: src.dense(&w("ffn_norm"), device)?.to_dtype(dtype)?,
                gate: src.linear(&w("gate"), &b("gate"), device)?,
                up: src.linear(&w("up"), &b("up"), device)?,
                down: src.linear(&w("down"), &b("down"), device)?,
            });
        }
        let (cos, sin) = rope_tables(&arch, dtype, device)?;
        Ok(Self {
            arch,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            dtype,
            device: device.clone(),
        })
    }

    /// The architecture.
    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The activation dtype (also the KV cache's).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs `tokens[i]` of slot `slots[i]` at position `positions[i]` for every `i`, attending
    /// to each slot's cached rows before it, writes their keys and values into the cache, and
    /// returns the `f32` logits `[rows.len(), V]` of the rows listed in `rows`.
    ///
    /// Two shapes are used: many slots with one token each (a decode step), or one prompt
    /// chunk of one slot at consecutive positions, whose keys and values are also written to
    /// `copies` (the other samples of its group).
    pub fn forward(
        &self,
        batch: &Batch,
        cache: &mut KvCache,
        rows: &[usize],
    ) -> candle_core::Result<Tensor> {
        let n = batch.tokens.len();
        let a = &self.arch;
        let ids = Tensor::new(batch.tokens.as_slice(), &self.device)?;
        let pos = Tensor::new(
            batch
                .positions
                .iter()
                .map(|&p| p as u32)
                .collect::<Vec<_>>(),
            &self.device,
        )?;
        let half = a.head_dim / 2;
        let cos = self.cos.index_select(&pos, 0)?.reshape((n, 1, half))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((n, 1, half))?;
        let attention = AttentionPlan::new(batch, cache, &self.device, self.dtype)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, a.rms_eps as f32)?;
            let q = self.project_heads(&layer.q, &layer.q_norm, &h, a.heads, &cos, &sin)?;
            let k = self.project_heads(&layer.k, &layer.k_norm, &h, a.kv_heads, &cos, &sin)?;
            let v = layer.v.forward(&h)?;
            cache.write(li, &attention.writes, &k.reshape((n, a.kv_width()))?, &v)?;
            let mixed = attention.attend(li, &q, cache, a)?;
            x = (x + layer.o.forward(&mixed)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, a.rms_eps as f32)?;
            let ff = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ff)?)?;
        }
        let picked = Tensor::new(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            &self.device,
        )?;
        let x = x.index_select(&picked, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, a.rms_eps as f32)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)
    }

    /// Projects `h` to `heads` heads, applies the optional per-head norm and RoPE:
    /// `[n, heads, head_dim]`.
    fn project_heads(
        &self,
        proj: &Linear,
        norm: &Option<Tensor>,
        h: &Tensor,
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let a = &self.arch;
        let n = h.dim(0)?;
        let mut x = proj.forward(h)?.reshape((n, heads, a.head_dim))?;
        if let Some(norm) = norm {
            x = candle_nn::ops::rms_norm(&x, norm, a.rms_eps as f32)?;
        }
        // Each token is its own batch entry with one time step, so the per-token cos/sin rows
        // give every token its own position.
        let x = x.reshape((n, heads, 1, a.head_dim))?.contiguous()?;
        let x = match a.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, cos, sin)?,
        };
        x.reshape((n, heads, a.head_dim))
    }
}

/// Tokens to run in one forward, each with its slot and position.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Slot of each token.
    pub slots: Vec<usize>,
    /// Position of each token in its sequence.
    pub positions: Vec<usize>,
    /// Other slots that receive a copy of a prompt chunk's keys and values.
    pub copies: Vec<usize>,
}

/// How one forward reads and writes the cache: decided once, used by every layer.
struct AttentionPlan {
    /// Cache rows written, one per token and copy (see [`KvCache::write`]).
    writes: Tensor,
    shape: AttentionShape,
}

enum AttentionShape {
    /// One prompt chunk of one slot at positions `start..start + n`.
    Chunk {
        slot: usize,
        start: usize,
        n: usize,
        mask: Option<Tensor>,
    },
    /// One token for each of `slots`, attending to `lengths[i]` rows each (up to `max_len`).
    Decode {
        slots: Tensor,
        max_len: usize,
        mask: Tensor,
    },
}

impl AttentionPlan {
    fn new(
        batch: &Batch,
        cache: &mut KvCache,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let n = batch.tokens.len();
        let chunk = n > 1 && batch.slots.iter().all(|&s| s == batch.slots[0]);
        let needed = batch.positions.iter().max().map_or(0, |&p| p + 1);
        cache.reserve(needed)?;
        let mut rows: Vec<usize> = batch
            .slots
            .iter()
            .zip(&batch.positions)
            .map(|(&s, &p)| cache.row(s, p))
            .collect();
        if chunk {
            for &copy in &batch.copies {
                rows.extend(batch.positions.iter().map(|&p| cache.row(copy, p)));
            }
        }
        let writes = cache.row_index(&rows, device)?;
        let shape = if chunk {
            let start = batch.positions[0];
            // Causal mask over `start + n` keys for the `n` queries.
            let mask = (n > 1).then(|| {
                let keys = start + n;
                let m: Vec<f32> = (0..n)
                    .flat_map(|i| {
                        (0..keys).map(move |j| {
                            if j <= start + i {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                Tensor::from_vec(m, (n, keys), device).and_then(|t| t.to_dtype(dtype))
            });
            AttentionShape::Chunk {
                slot: batch.slots[0],
                start,
                n,
                mask: mask.transpose()?,
            }
        } else {
            let max_len = needed;
            let m: Vec<f32> = batch
                .positions
                .iter()
                .flat_map(|&p| {
                    (0..max_len).map(move |j| if j <= p { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            AttentionShape::Decode {
                slots: Tensor::new(
                    batch.slots.iter().map(|&s| s as u32).collect::<Vec<_>>(),
                    device,
                )?,
                max_len,
                mask: Tensor::from_vec(m, (n, 1, 1, max_len), device)?.to_dtype(dtype)?,
            }
        };
        Ok(Self { writes, shape })
    }

    /// Attention of queries `q` `[n, heads, head_dim]` over the cache of layer `layer`:
    /// `[n, heads · head_dim]`.
    fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        cache: &KvCache,
        a: &Architecture,
    ) -> candle_core::Result<Tensor> {
        let groups = a.heads / a.kv_heads;
        let scale = 1.0 / (a.head_dim as f64).sqrt();
        match &self.shape {
            AttentionShape::Chunk {
                slot,
                start,
                n,
                mask,
            } => {
                let keys = start + n;
                // [keys, kv_heads, d] → [kv_heads, keys, d]
                let (k, v) = cache.slot_rows(layer, *slot, keys)?;
                let k = k
                    .reshape((keys, a.kv_heads, a.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?;
                let v = v
                    .reshape((keys, a.kv_heads, a.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?;
                // [n, heads, d] → [kv_heads, groups · n, d] (query head = kv head · groups + g)
                let q = q
                    .reshape((*n, a.kv_heads, groups, a.head_dim))?
                    .permute((1, 2, 0, 3))?
                    .contiguous()?
                    .reshape((a.kv_heads, groups * n, a.head_dim))?;
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let scores = match mask {
                    Some(m) => scores
                        .reshape((a.kv_heads, groups, *n, keys))?
                        .broadcast_add(m)?
                        .reshape((a.kv_heads, groups * n, keys))?,
                    None => scores,
                };
                let probs = softmax_f32(&scores)?;
                let out = probs.matmul(&v)?; // [kv_heads, groups · n, d]
                out.reshape((a.kv_heads, groups, *n, a.head_dim))?
                    .permute((2, 0, 1, 3))?
                    .contiguous()?
                    .reshape((*n, a.heads * a.head_dim))
            }
            AttentionShape::Decode {
                slots,
                max_len,
                mask,
            } => {
                let n = slots.dim(0)?;
                // [max_len, n, kv_width] → [n, kv_heads, max_len, d]
                let (k, v) = cache.gather(layer, slots, *max_len)?;
                let to_heads = |t: Tensor| {
                    t.reshape((*max_len, n, a.kv_heads, a.head_dim))?
                        .permute((1, 2, 0, 3))?
                        .contiguous()
                };
                let (k, v) = (to_heads(k)?, to_heads(v)?);
                let q = q.reshape((n, a.kv_heads, groups, a.head_dim))?;
                let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
                let probs = softmax_f32(&scores)?;
                probs
                    .matmul(&v)? // [n, kv_heads, groups, d]
                    .reshape((n, a.heads * a.head_dim))
            }
        }
    }
}

/// Softmax over the last dimension, computed in `f32` whatever the activation dtype.
fn softmax_f32(scores: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = scores.dtype();
    candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)
}

/// RoPE cos and sin tables `[max_context, head_dim / 2]`.
fn rope_tables(
    a: &Architecture,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = a.head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / a.rope_theta.powf(2.0 * i as f64 / a.head_dim as f64) as f32)
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let t = Tensor::arange(0u32, a.max_context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((a.max_context, 1))?;
    let freqs = t.broadcast_mul(&inv)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}
