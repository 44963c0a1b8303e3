//! Text in and out of the native engine: the tokenizer, the chat template, end-of-sequence
//! tokens and detokenization.
//!
//! A safetensors directory brings `tokenizer.json` and its chat template (`chat_template.jinja`
//! or `tokenizer_config.json`). A GGUF file carries its vocabulary and merges in its metadata;
//! the BPE tokenizer is rebuilt from them the way mistral.rs 0.8.1 does
//! (`mistralrs-core/src/gguf/gguf_tokenizer.rs`, MIT), so that both engines give a prompt the
//! same token ids.

use std::path::Path;

use candle_core::quantized::gguf_file;
use minijinja::{context, Environment};
use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BpeBuilder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::tokenizer::normalizer::SplitDelimiterBehavior;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::engine::{EngineError, PromptInput};

/// The pre-tokenization split of GPT-2-style BPE vocabularies (mistral.rs uses the same).
const BPE_SPLIT: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// A model's tokenizer, chat template and end-of-sequence tokens.
pub struct TextCodec {
    tokenizer: Tokenizer,
    template: Option<Environment<'static>>,
    bos: Option<String>,
    eos: Option<String>,
    /// Tokens that end a sequence.
    pub eos_ids: Vec<u32>,
}

fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Why the native engine cannot rebuild a GGUF file's tokenizer, if it cannot (it rebuilds
/// gpt2-style BPE vocabularies only).
pub fn unsupported_gguf_tokenizer(content: &gguf_file::Content) -> Option<String> {
    let kind = content
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok());
    match kind.map(String::as_str) {
        Some("gpt2") => None,
        other => Some(format!("GGUF tokenizer model {other:?} (only gpt2 BPE)")),
    }
}

impl TextCodec {
    /// Rebuilds the tokenizer a GGUF file describes.
    pub fn from_gguf(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let md = &content.metadata;
        let get = |k: &str| md.get(&format!("tokenizer.ggml.{k}"));
        let strings = |k: &str| -> anyhow::Result<Vec<String>> {
            get(k)
                .ok_or_else(|| anyhow::anyhow!("GGUF metadata lacks tokenizer.ggml.{k}"))?
                .to_vec()
                .map_err(invalid)?
                .iter()
                .map(|v| v.to_string().cloned().map_err(invalid))
                .collect()
        };
        let id = |k: &str| get(k).and_then(|v| v.to_u32().ok());
        if let Some(why) = unsupported_gguf_tokenizer(content) {
            anyhow::bail!("the native engine does not support {why}");
        }
        let tokens = strings("tokens")?;
        let merges: Vec<(String, String)> = strings("merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("malformed merge {m:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let unk = id("unknown_token_id");
        let mut bpe = BpeBuilder::new().vocab_and_merges(vocab, merges);
        if let Some(u) = unk {
            bpe = bpe.unk_token(tokens[u as usize].clone());
        }
        let mut tokenizer = Tokenizer::new(bpe.build().map_err(invalid)?);
        let split = Split::new(
            SplitPattern::Regex(BPE_SPLIT.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(invalid)?;
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        tokenizer.with_post_processor(Some(ByteLevelProcessor::new(false, false, false)));
        let bos = id("bos_token_id");
        let eos = id("eos_token_id").ok_or_else(|| anyhow::anyhow!("no eos_token_id"))?;
        // Every token whose type is not "normal" is special (matched whole, skipped on decode).
        let types: Vec<i32> = match get("token_type") {
            Some(v) => v
                .to_vec()
                .map_err(invalid)?
                .iter()
                .map(|t| t.to_i32().map_err(invalid))
                .collect::<anyhow::Result<_>>()?,
            None => Vec::new(),
        };
        let mut special: Vec<AddedToken> = Vec::new();
        if types.len() == tokens.len() {
            special.extend(
                tokens
                    .iter()
                    .zip(&types)
                    .filter(|(_, &t)| t != 1)
                    .map(|(tok, _)| AddedToken::from(tok.clone(), true)),
            );
        }
        for i in [bos, Some(eos), unk].into_iter().flatten() {
            special.push(AddedToken::from(tokens[i as usize].clone(), true));
        }
        tokenizer.add_special_tokens(&special);
        let template = md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        Self::assemble(
            tokenizer,
            template,
            bos.map(|b| tokens[b as usize].clone()),
            Some(tokens[eos as usize].clone()),
            vec![eos],
        )
    }

    /// Loads the tokenizer and chat template of a Hugging Face directory.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(invalid)?;
        let read_json = |name: &str| -> Value {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null)
        };
        let tok_config = read_json("tokenizer_config.json");
        let template = std::fs::read_to_string(dir.join("chat_template.jinja"))
            .ok()
            .or_else(|| tok_config["chat_template"].as_str().map(str::to_string));
        let token_text = |v: &Value| -> Option<String> {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v["content"].as_str().map(str::to_string))
        };
        let bos = token_text(&tok_config["bos_token"]);
        let eos = token_text(&tok_config["eos_token"]);
        // End-of-sequence ids: generation_config.json, else config.json, else the eos token.
        let ids = |v: &Value| -> Vec<u32> {
            match v {
                Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut eos_ids = ids(&read_json("generation_config.json")["eos_token_id"]);
        if eos_ids.is_empty() {
            eos_ids = ids(&read_json("config.json")["eos_token_id"]);
        }
        if let Some(id) = eos.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        anyhow::ensure!(
            !eos_ids.is_empty(),
            "{}: no end-of-sequence token",
            dir.display()
        );
        Self::assemble(tokenizer, template, bos, eos, eos_ids)
    }

    fn assemble(
        tokenizer: Tokenizer,
        template: Option<String>,
        bos: Option<String>,
        eos: Option<String>,
        eos_ids: Vec<u32>,
    ) -> anyhow::Result<Self> {
        let template = match template {
            Some(source) => {
                let mut env = Environment::new();
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                // As transformers renders chat templates.
                env.set_lstrip_blocks(true);
                env.set_trim_blocks(true);
                env.add_function(
                    "raise_exception",
                    |msg: String| -> Result<(), minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            msg,
                        ))
                    },
                );
                env.add_template_owned("chat", source.replace("[::-1]", "|reverse"))
                    .map_err(|e| anyhow::anyhow!("the chat template does not parse: {e}"))?;
                Some(env)
            }
            None => None,
        };
        Ok(Self {
            tokenizer,
            template,
            bos,
            eos,
            eos_ids,
        })
    }

    /// Tokens of `prompt`: chat messages through the template (with a generation prompt),
    /// text with the tokenizer's special tokens, token ids as they are.
    pub fn encode(&self, prompt: &PromptInput) -> Result<Vec<u32>, EngineError> {
        let (text, special) = match prompt {
            PromptInput::TokenIds(ids) => return Ok(ids.clone()),
            PromptInput::Text(text) => (text.clone(), true),
            PromptInput::Messages(messages) => {
                let env = self.template.as_ref().ok_or_else(|| {
                    EngineError::InvalidPrompt("the model has no chat template".into())
                })?;
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                    .collect();
                let rendered = env
                    .get_template("chat")
                    .and_then(|t| {
                        t.render(context! {
                            messages => messages,
                            add_generation_prompt => true,
                            bos_token => self.bos,
                            eos_token => self.eos,
                        })
                    })
                    .map_err(|e| {
                        EngineError::InvalidPrompt(format!("cannot apply the chat template: {e}"))
                    })?;
                (rendered, false)
            }
        };
        self.tokenizer
            .encode_fast(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EngineError::InvalidPrompt(format!("cannot tokenize the prompt: {e}")))
    }

    /// The text of generated tokens, special tokens left out.
    /// An upper bound on the bytes of text one token stands for: the longest entry of the
    /// vocabulary as stored (a byte-level or SentencePiece entry is never shorter in UTF-8 than
    /// the text it decodes to).
    pub fn max_token_bytes(&self) -> usize {
        self.tokenizer
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// The text of `ids`, the special tokens' own text left out or spelled out.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| EngineError::InvalidPrompt(format!("cannot detokenize: {e}")))
    }
}
