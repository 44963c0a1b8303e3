//! Loads a [`Transformer`]'s weights from a GGUF file (quantized, or dequantized to a dtype) or
//! a safetensors directory; the tensors are found by their names in each format
//! ([`LayerTensor`], [`GlobalTensor`]).

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Tensor};

use super::config::{read_config, Architecture, ModelError};
use super::model::{rope_tables, Layer, Linear, Projections, Transformer};

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

/// How a file names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// llama.cpp's names (`blk.0.attn_q.weight`).
    Gguf,
    /// Hugging Face transformers' names (`model.layers.0.self_attn.q_proj.weight`).
    HuggingFace,
}

/// The tensors of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QNorm,
    KNorm,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerTensor {
    /// The name of this tensor of layer `i`, without its `.weight` / `.bias` suffix.
    fn name(self, naming: Naming, i: usize) -> String {
        use LayerTensor::*;
        match naming {
            Naming::Gguf => {
                let part = match self {
                    AttnNorm => "attn_norm",
                    Q => "attn_q",
                    K => "attn_k",
                    V => "attn_v",
                    O => "attn_output",
                    QNorm => "attn_q_norm",
                    KNorm => "attn_k_norm",
                    FfnNorm => "ffn_norm",
                    Gate => "ffn_gate",
                    Up => "ffn_up",
                    Down => "ffn_down",
                };
                format!("blk.{i}.{part}")
            }
            Naming::HuggingFace => {
                let part = match self {
                    AttnNorm => "input_layernorm",
                    Q => "self_attn.q_proj",
                    K => "self_attn.k_proj",
                    V => "self_attn.v_proj",
                    O => "self_attn.o_proj",
                    QNorm => "self_attn.q_norm",
                    KNorm => "self_attn.k_norm",
                    FfnNorm => "post_attention_layernorm",
                    Gate => "mlp.gate_proj",
                    Up => "mlp.up_proj",
                    Down => "mlp.down_proj",
                };
                format!("model.layers.{i}.{part}")
            }
        }
    }
}

/// The tensors outside the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobalTensor {
    Embed,
    Norm,
    /// The output projection (absent when tied to the embedding).
    Head,
}

impl GlobalTensor {
    fn name(self, naming: Naming) -> &'static str {
        match (naming, self) {
            (Naming::Gguf, GlobalTensor::Embed) => "token_embd.weight",
            (Naming::Gguf, GlobalTensor::Norm) => "output_norm.weight",
            (Naming::Gguf, GlobalTensor::Head) => "output.weight",
            (Naming::HuggingFace, GlobalTensor::Embed) => "model.embed_tokens.weight",
            (Naming::HuggingFace, GlobalTensor::Norm) => "model.norm.weight",
            (Naming::HuggingFace, GlobalTensor::Head) => "lm_head.weight",
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

/// Reads the header of a GGUF file.
pub fn read_gguf(path: &Path) -> Result<(gguf_file::Content, std::fs::File), ModelError> {
    // candle allocates what the header declares: it reads only a header bounded first.
    crate::engine::gguf_header::check(path)
        .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
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
        Self::build(arch, source, Naming::Gguf, dtype, device)
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
            Naming::HuggingFace,
            dtype,
            device,
        )
    }

    fn build(
        arch: Architecture,
        mut src: Source,
        naming: Naming,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let embed_name = GlobalTensor::Embed.name(naming);
        let embed = src.dense(embed_name, device)?.to_dtype(dtype)?;
        let (rows, width) = embed.dims2()?;
        if rows != arch.vocab || width != arch.hidden {
            return Err(ModelError::Invalid(format!(
                "{embed_name} is {rows}×{width}, the config says {}×{}",
                arch.vocab, arch.hidden
            )));
        }
        let head_name = GlobalTensor::Head.name(naming);
        let head_source = if src.has(head_name) {
            head_name
        } else {
            embed_name
        };
        let lm_head = src.linear(head_source, "", device)?;
        let norm = src
            .dense(GlobalTensor::Norm.name(naming), device)?
            .to_dtype(dtype)?;
        let mut layers = Vec::with_capacity(arch.layers);
        for i in 0..arch.layers {
            let w = |t: LayerTensor| format!("{}.weight", t.name(naming, i));
            let b = |t: LayerTensor| format!("{}.bias", t.name(naming, i));
            let optional_norm = |src: &mut Source, part: LayerTensor| -> Result<_, ModelError> {
                if src.has(&w(part)) {
                    Ok(Some(src.dense(&w(part), device)?.to_dtype(dtype)?))
                } else {
                    Ok(None)
                }
            };
            let q_norm = optional_norm(&mut src, LayerTensor::QNorm)?;
            let k_norm = optional_norm(&mut src, LayerTensor::KNorm)?;
            if arch.family == "qwen3" && (q_norm.is_none() || k_norm.is_none()) {
                return Err(ModelError::Invalid(format!("layer {i} lacks q/k norms")));
            }
            layers.push(Layer {
                attn_norm: src
                    .dense(&w(LayerTensor::AttnNorm), device)?
                    .to_dtype(dtype)?,
                qkv: Projections::new(vec![
                    src.linear(&w(LayerTensor::Q), &b(LayerTensor::Q), device)?,
                    src.linear(&w(LayerTensor::K), &b(LayerTensor::K), device)?,
                    src.linear(&w(LayerTensor::V), &b(LayerTensor::V), device)?,
                ])?,
                o: src.linear(&w(LayerTensor::O), &b(LayerTensor::O), device)?,
                q_norm,
                k_norm,
                ffn_norm: src
                    .dense(&w(LayerTensor::FfnNorm), device)?
                    .to_dtype(dtype)?,
                gate_up: Projections::new(vec![
                    src.linear(&w(LayerTensor::Gate), &b(LayerTensor::Gate), device)?,
                    src.linear(&w(LayerTensor::Up), &b(LayerTensor::Up), device)?,
                ])?,
                down: src.linear(&w(LayerTensor::Down), &b(LayerTensor::Down), device)?,
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
}
