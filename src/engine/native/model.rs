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

use super::attention::Attention;
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
pub(super) struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
    /// Fewest rows run through the weight on the CPU (see [`invariant_rows`]).
    min_rows: usize,
}

/// The fewest rows with which candle's CPU matmul (the `gemm` crate) computes every output
/// element of a `[rows, input] × [input, output]` product by its general kernel, whose order
/// of summation depends on `input` alone. Fewer rows take other kernels (a matrix-vector
/// product for one row, a horizontal kernel while `rows · output <= 256`, other blocking
/// while both are at most 64), which round differently: a row's result would depend on how
/// many rows ran beside it. Padding to this many rows makes it the same bits at any batch
/// size; `linear_rows_do_not_depend_on_the_batch` checks it.
fn invariant_rows(input: usize, output: usize) -> usize {
    let mut rows = (256 / output.max(1) + 1).max(2);
    if output <= 64 && input > 512 {
        rows = rows.max(65);
    }
    rows
}

impl Linear {
    fn new(weight: QMatMul, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let (output, input) = match &weight {
            QMatMul::QTensor(q) => q.shape().dims2()?,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2()?,
        };
        Ok(Self {
            weight,
            bias,
            min_rows: invariant_rows(input, output),
        })
    }

    /// `x · Wᵀ + b` for `x` of `[rows, input]`; on the CPU each row's result is the same
    /// whatever the number of rows.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        if !x.device().is_cpu() || rows >= self.min_rows {
            return self.product(x);
        }
        let padding = Tensor::zeros((self.min_rows - rows, x.dim(1)?), x.dtype(), x.device())?;
        self.product(&Tensor::cat(&[x, &padding], 0)?)?
            .narrow(0, 0, rows)
    }

    fn product(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// One decoder layer's weights.
pub(super) struct Layer {
    pub(super) attn_norm: Tensor,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    /// Per-head RMSNorm of queries and keys (Qwen3).
    pub(super) q_norm: Option<Tensor>,
    pub(super) k_norm: Option<Tensor>,
    pub(super) ffn_norm: Tensor,
    pub(super) gate: Linear,
    pub(super) up: Linear,
    pub(super) down: Linear,
}

/// The decoder with its weights on one device.
pub struct Transformer {
    pub(super) arch: Architecture,
    pub(super) embed: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Linear,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    pub(super) dtype: DType,
    pub(super) device: Device,
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
        Ok(Linear::new(weight, bias)?)
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

    /// Runs `batch`: each row's token at its slot and position, attending to that slot's
    /// cached positions up to its own; writes the rows' keys and values into the cache (and a
    /// prompt chunk's into its copy slots), and returns the `f32` logits `[rows.len(), V]` of
    /// the rows listed in `rows`.
    pub fn forward(
        &self,
        batch: &Batch,
        cache: &mut KvCache,
        rows: &[usize],
    ) -> candle_core::Result<Tensor> {
        let a = &self.arch;
        let tokens = batch.tokens();
        let queries = batch.queries();
        let n = tokens.len();
        let ids = Tensor::new(tokens.as_slice(), &self.device)?;
        let pos = Tensor::new(
            queries.iter().map(|&(_, p)| p as u32).collect::<Vec<_>>(),
            &self.device,
        )?;
        let half = a.head_dim / 2;
        let cos = self.cos.index_select(&pos, 0)?.reshape((n, 1, half))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((n, 1, half))?;
        cache.reserve(queries.iter().map(|&(_, p)| p + 1).max().unwrap_or(0))?;
        let writes = cache.row_index(&batch.writes(cache), &self.device)?;
        let attention = Attention::plan(batch, &self.device, self.dtype)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, a.rms_eps as f32)?;
            let q = self.project_heads(&layer.q, &layer.q_norm, &h, a.heads, &cos, &sin)?;
            let k = self.project_heads(&layer.k, &layer.k_norm, &h, a.kv_heads, &cos, &sin)?;
            let v = layer.v.forward(&h)?;
            cache.write(li, &writes, &k.reshape((n, a.kv_width()))?, &v)?;
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

/// What one forward computes. The scheduler says which kind it is; the model never infers it
/// from the batch's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Consecutive prompt tokens of one sequence at positions `start..start + tokens.len()` of
    /// `slot`. Their keys and values are also written to every slot of `copies` (the other
    /// samples of the prompt, which prefill with it).
    Prompt {
        /// The slot whose cache the chunk extends.
        slot: usize,
        /// Position of the first token.
        start: usize,
        /// The chunk's tokens.
        tokens: Vec<u32>,
        /// Slots that receive copies of the chunk's keys and values.
        copies: Vec<usize>,
    },
    /// One token for each of several sequences.
    Decode {
        /// One row per sequence.
        rows: Vec<DecodeRow>,
    },
}

/// One sequence's token in a decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRow {
    /// The sequence's slot.
    pub slot: usize,
    /// Position of the token (the positions before it are cached).
    pub position: usize,
    /// The token fed.
    pub token: u32,
}

impl Batch {
    /// Rows of the forward (tokens computed).
    pub fn rows(&self) -> usize {
        match self {
            Self::Prompt { tokens, .. } => tokens.len(),
            Self::Decode { rows } => rows.len(),
        }
    }

    /// The tokens, one per row of the forward.
    pub fn tokens(&self) -> Vec<u32> {
        match self {
            Self::Prompt { tokens, .. } => tokens.clone(),
            Self::Decode { rows } => rows.iter().map(|r| r.token).collect(),
        }
    }

    /// `(slot, position)` of each row: a row attends to positions `0..=position` of its slot.
    pub fn queries(&self) -> Vec<(usize, usize)> {
        match self {
            Self::Prompt {
                slot,
                start,
                tokens,
                ..
            } => (*start..start + tokens.len()).map(|p| (*slot, p)).collect(),
            Self::Decode { rows } => rows.iter().map(|r| (r.slot, r.position)).collect(),
        }
    }

    /// The cache rows each row's keys and values are written to: the rows of the queries,
    /// then (for a prompt chunk) the same positions of every copy slot.
    fn writes(&self, cache: &KvCache) -> Vec<usize> {
        let queries = self.queries();
        let mut rows: Vec<usize> = queries.iter().map(|&(s, p)| cache.row(s, p)).collect();
        if let Self::Prompt { copies, .. } = self {
            for &copy in copies {
                rows.extend(queries.iter().map(|&(_, p)| cache.row(copy, p)));
            }
        }
        rows
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn linear_rows_do_not_depend_on_the_batch() {
        // (input, output): the default model's and the tiny test models' shapes, and edges of
        // the matmul's kernel choices.
        let shapes = [
            (576, 576),
            (576, 192),
            (576, 1536),
            (1536, 576),
            (576, 4099),
            (128, 64),
            (128, 128),
            (64, 32),
            (600, 40),
            (1000, 64),
            (32, 300),
        ];
        for (i, &(input, output)) in shapes.iter().enumerate() {
            let w = Tensor::from_vec(
                values(input * output, i as u64),
                (output, input),
                &Device::Cpu,
            )
            .unwrap();
            let b = Tensor::from_vec(values(output, 99), output, &Device::Cpu).unwrap();
            let linear = Linear::new(QMatMul::Tensor(w), Some(b)).unwrap();
            let x = Tensor::from_vec(values(70 * input, 7 + i as u64), (70, input), &Device::Cpu)
                .unwrap();
            let all: Vec<Vec<f32>> = linear.forward(&x).unwrap().to_vec2().unwrap();
            for rows in [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 65] {
                let some: Vec<Vec<f32>> = linear
                    .forward(&x.narrow(0, 0, rows).unwrap())
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                assert_eq!(some, all[..rows], "{input}→{output} with {rows} rows");
            }
        }
    }
}
