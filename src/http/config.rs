//! Server settings: built-in defaults, overridden by a TOML file, then by environment variables
//! and command-line flags (a flag beats its variable).
//!
//! Every setting is declared once, in the [`settings!`] list below, which generates both the
//! resolved [`Config`] and the all-optional [`ConfigLayer`] that files, variables and flags fill.
//! The settings file is flat; the layers below take their part of it as their own settings
//! ([`Config::engine`], [`Config::rollout`]), and the values' types live with the layer that
//! reads them.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::{Keys, Secret};
use super::body::BodyLimits;
use super::listen::ConnectionLimits;
use crate::api::openai::LogprobsMode;
use crate::api::weights::InFlight;
use crate::engine::settings::{
    DeviceKernels, DeviceKind, EngineKind, EngineSettings, SamplerKind, WeightsDType,
};
use crate::rollout::rewards::RewardValues;
use crate::rollout::service::ServiceSettings;
use crate::weights::confine::WeightsRoot;
use crate::weights::model_store;

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr, env $env:literal; )*) => {
        /// Every setting, resolved.
        #[derive(Clone, Debug, Serialize)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// One source of settings; unset entries fall through to the layer below.
        #[derive(Args, Deserialize, Default, Debug, Clone)]
        #[serde(deny_unknown_fields)]
        pub struct ConfigLayer {
            $( $(#[doc = $doc])* #[arg(long, env = $env, hide_env_values = true)] #[serde(default)] pub $name: Option<$ty>, )*
        }

        impl ConfigLayer {
            /// This layer's values, and `lower`'s where this one has none.
            pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
                ConfigLayer { $( $name: self.$name.or(lower.$name), )* }
            }

            /// Applies the layer to the defaults.
            pub fn resolve(self) -> Config {
                let d = Config::default();
                Config { $( $name: self.$name.unwrap_or(d.$name), )* }
            }
        }
    };
}

settings! {
    /// Address to listen on.
    host: String = "127.0.0.1".into(), env "ENTROLL_HOST";
    /// Port to listen on.
    port: u16 = 8000, env "ENTROLL_PORT";
    /// The key generation routes (`/rollouts`, `/info`) require as `Authorization: Bearer
    /// <key>` (the admin key opens them too). Empty, with no admin key either: every route is
    /// open. Prefer `api_key_file` or the variable to the flag, which `ps` shows.
    api_key: Secret = Secret::default(), env "ENTROLL_API_KEY";
    /// A file holding the API key (surrounding whitespace ignored), instead of `api_key`.
    api_key_file: PathBuf = PathBuf::new(), env "ENTROLL_API_KEY_FILE";
    /// The key control routes (`/weights`) require. With an API key but no admin key, control
    /// routes are closed.
    admin_key: Secret = Secret::default(), env "ENTROLL_ADMIN_KEY";
    /// A file holding the admin key, instead of `admin_key`.
    admin_key_file: PathBuf = PathBuf::new(), env "ENTROLL_ADMIN_KEY_FILE";
    /// `/health` and `/metrics` answer without a key (for balancers and Prometheus); off: they
    /// take a key like the generation routes.
    open_probes: bool = true, env "ENTROLL_OPEN_PROBES";
    /// Model to serve: a `.gguf` file or a Hugging Face safetensors directory (default: the
    /// model `entroll fetch-model` installs).
    model: PathBuf = model_store::default_model_path(), env "ENTROLL_MODEL";
    /// Device the model runs on.
    device: DeviceKind = DeviceKind::Cpu, env "ENTROLL_DEVICE";
    /// Dtype of the weights: `auto` (f32 on CPU, the engine's choice on CUDA), `f32`, `bf16`,
    /// `f16`. Match the learner's dtype so the statistics describe its weights.
    dtype: WeightsDType = WeightsDType::Auto, env "ENTROLL_DTYPE";
    /// Engine: `auto` (native where it supports the model, else mistral.rs), `native`,
    /// `mistralrs`.
    engine: EngineKind = EngineKind::Auto, env "ENTROLL_ENGINE";
    /// Who draws tokens: `entroll` (statistics) or `engine` (baseline without statistics).
    sampler: SamplerKind = SamplerKind::Entroll, env "ENTROLL_SAMPLER";
    /// Which log-probs the OpenAI routes list under `logprobs` (vLLM's `logprobs_mode`):
    /// `processed`, under the distribution sampled from (after temperature, top-k and top-p),
    /// or `full`, under the untruncated distribution at the temperature. Each choice's
    /// `entroll` object holds both.
    openai_logprobs: LogprobsMode = LogprobsMode::Processed, env "ENTROLL_OPENAI_LOGPROBS";
    /// Names the OpenAI routes answer to besides the model's id, comma-separated (vLLM's
    /// `--served-model-name`; SkyRL's client, for one, sends `default`); the first names the
    /// model in answers and `/v1/models`. Empty: the model's id alone.
    served_model_name: String = String::new(), env "ENTROLL_SERVED_MODEL_NAME";
    /// entroll's device kernels in the native engine (token statistics and draw, attention,
    /// cache writes): `auto` (on for CUDA, off on the CPU), `on` (on the CPU: the GPU's code
    /// through the kernels' harness, for tests), `off`.
    device_kernels: DeviceKernels = DeviceKernels::Auto, env "ENTROLL_DEVICE_KERNELS";
    /// Sequences the engine runs at once (its batch); more wait in entroll's queue.
    max_running_sequences: usize = 32, env "ENTROLL_MAX_RUNNING_SEQUENCES";
    /// Prompt tokens the native engine computes per forward (and per iteration of its loop):
    /// a longer prompt runs in chunks, so it delays running sequences by one chunk at most.
    prefill_chunk: usize = 512, env "ENTROLL_PREFILL_CHUNK";
    /// Positions the native engine's KV cache may hold, all sequences together (rounded up to
    /// blocks of 16; at least the model's context). Sequences are admitted while their blocks
    /// fit, and a running one is preempted and recomputed later when the cache runs out.
    /// 0: `max_running_sequences` times the model's context, so no sequence is ever preempted.
    kv_cache_tokens: usize = 0, env "ENTROLL_KV_CACHE_TOKENS";
    /// Requests admitted at once (running or queued); beyond this `/rollouts` answers 429.
    max_requests: usize = 64, env "ENTROLL_MAX_REQUESTS";
    /// Most prompts in one request.
    max_prompts: usize = 256, env "ENTROLL_MAX_PROMPTS";
    /// Largest group size G.
    max_group_size: usize = 64, env "ENTROLL_MAX_GROUP_SIZE";
    /// Largest `max_tokens` a request may ask for.
    max_new_tokens: usize = 8192, env "ENTROLL_MAX_NEW_TOKENS";
    /// Most tokens one request may ask to sample: the sum over its prompts of group size x
    /// `max_tokens` (422 beyond), so one small body cannot occupy the engine for days.
    max_request_tokens: usize = 16 * 1024 * 1024, env "ENTROLL_MAX_REQUEST_TOKENS";
    /// Token ids the sampling masks (`return_sampling_mask`) of one request may hold in all:
    /// a request whose masks outgrow it fails with 422, so a small body cannot ask for the
    /// whole vocabulary at every token (about 4 bytes an id in memory, 1.3 to 4 in the answer).
    max_mask_ids: usize = 1 << 26, env "ENTROLL_MAX_MASK_IDS";
    /// Largest `timeout_ms` a request may give (milliseconds).
    max_timeout_ms: u64 = 24 * 3_600_000, env "ENTROLL_MAX_TIMEOUT_MS";
    /// Largest request body in bytes (413 beyond, at once when `Content-Length` says so). The
    /// default holds 256 prompts that fill the default model's 8,192-token context, as token ids
    /// (about 12.6 MB of JSON), with room to spare.
    max_body_bytes: usize = 32 * 1024 * 1024, env "ENTROLL_MAX_BODY_BYTES";
    /// How long a request's body may take to arrive once its headers have (milliseconds; 408
    /// `timeout` beyond).
    body_timeout_ms: u64 = 30_000, env "ENTROLL_BODY_TIMEOUT_MS";
    /// How long the server waits for a request's headers, on a new connection and on an idle
    /// kept-alive one alike (milliseconds; the connection is closed beyond).
    header_timeout_ms: u64 = 10_000, env "ENTROLL_HEADER_TIMEOUT_MS";
    /// How long a client may leave its answer unread (a write blocked on its full receive
    /// window) before its connection is closed (milliseconds).
    write_timeout_ms: u64 = 60_000, env "ENTROLL_WRITE_TIMEOUT_MS";
    /// Connections open at once; one more is answered 503 `overloaded` and closed.
    max_connections: usize = 1024, env "ENTROLL_MAX_CONNECTIONS";
    /// Group size when a request gives none.
    default_group_size: usize = 8, env "ENTROLL_DEFAULT_GROUP_SIZE";
    /// `max_tokens` when a request gives none.
    default_max_tokens: usize = 1024, env "ENTROLL_DEFAULT_MAX_TOKENS";
    /// Reward of a sample whose answer the verifier accepts.
    reward_correct: f64 = 1.0, env "ENTROLL_REWARD_CORRECT";
    /// Reward of any other sample (wrong, no answer, unparsable, timed out).
    reward_wrong: f64 = 0.0, env "ENTROLL_REWARD_WRONG";
    /// Keep finished sequences' KV in the engine's prefix cache for later requests with the
    /// same leading tokens. Native engine: reused blocks hold the same bits a recomputation
    /// would (its attention and products are batch-invariant on the CPU); without it, a prompt's
    /// blocks are shared only while a running sequence holds them. mistral.rs: off keeps seeded
    /// samples identical across runs.
    prefix_cache: bool = false, env "ENTROLL_PREFIX_CACHE";
    /// On SIGTERM/SIGINT, how long accepted requests may run on before they are cancelled and
    /// answered 503 `shutting_down` (milliseconds).
    shutdown_grace_ms: u64 = 30_000, env "ENTROLL_SHUTDOWN_GRACE_MS";
    /// On SIGTERM/SIGINT, how long `/health` answers 503 while requests are still accepted,
    /// before the listener closes (milliseconds): long enough for a load balancer's health
    /// checks to take the replica out of rotation.
    shutdown_announce_ms: u64 = 0, env "ENTROLL_SHUTDOWN_ANNOUNCE_MS";
    /// A directory a learner publishes weight versions in (`DIR/<version>/`, complete once
    /// `DIR/<version>/READY` exists): the highest complete version is loaded at start and
    /// whenever a higher one appears. Empty: none.
    watch_weights: PathBuf = PathBuf::new(), env "ENTROLL_WATCH_WEIGHTS";
    /// The directory `POST /weights` may load from: a path that resolves (after `..` and
    /// symbolic links) outside it is refused. Empty: the directory holding the served model.
    weights_root: PathBuf = PathBuf::new(), env "ENTROLL_WEIGHTS_ROOT";
    /// How often the weights directory is looked at (milliseconds).
    watch_interval_ms: u64 = 1_000, env "ENTROLL_WATCH_INTERVAL_MS";
    /// What a weight update does to the samples running on the old weights, unless its
    /// `POST /weights` body says otherwise (the watched directory's updates always use it):
    /// `finish` (they finish on their version), `abort` (their requests answer 409
    /// `weights_changed` with what they drew) or `continue` (the new weights draw on from
    /// their next token).
    weights_in_flight: InFlight = InFlight::Finish, env "ENTROLL_WEIGHTS_IN_FLIGHT";
    /// Engines in memory at once: the served one, older ones still finishing requests, and
    /// the one a weight update loads. An update that would exceed it is refused (429
    /// `overloaded`) until requests on older weights finish. At least 2.
    max_engines: usize = 3, env "ENTROLL_MAX_ENGINES";
}

impl Config {
    /// The engine layer's part: the model and how it runs.
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            model: self.model.clone(),
            device: self.device,
            dtype: self.dtype,
            engine: self.engine,
            device_kernels: self.device_kernels,
            max_running_sequences: self.max_running_sequences,
            prefill_chunk: self.prefill_chunk,
            prefix_cache: self.prefix_cache,
            kv_cache_tokens: self.kv_cache_tokens,
        }
    }

    /// The rollout service's part: who draws, how many run and are admitted, the rewards.
    pub fn rollout(&self) -> ServiceSettings {
        ServiceSettings {
            sampler: self.sampler,
            max_running_sequences: self.max_running_sequences,
            max_requests: self.max_requests,
            max_mask_ids: self.max_mask_ids as u64,
            rewards: RewardValues {
                correct: self.reward_correct,
                wrong: self.reward_wrong,
            },
        }
    }

    /// What one connection may hold and how long it may make the server wait.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
        }
    }

    /// The limits a request's body is read under.
    pub fn body(&self) -> BodyLimits {
        BodyLimits {
            max_bytes: self.max_body_bytes,
            timeout: Duration::from_millis(self.body_timeout_ms),
        }
    }

    /// Where `POST /weights` may load from ([`WeightsRoot`]): `weights_root`, or the directory
    /// holding the served model.
    pub fn weights_root(&self) -> WeightsRoot {
        let dir = if self.weights_root.as_os_str().is_empty() {
            self.model
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        } else {
            self.weights_root.clone()
        };
        WeightsRoot::new(dir)
    }

    /// The directory of published weight versions, if one is watched.
    pub fn watched_weights(&self) -> Option<&Path> {
        (!self.watch_weights.as_os_str().is_empty()).then_some(self.watch_weights.as_path())
    }

    /// Loads the settings: defaults, then the TOML file if given, then `cli` (flags and env).
    pub fn load(file: Option<&Path>, cli: ConfigLayer) -> anyhow::Result<Config> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))?
            }
            None => ConfigLayer::default(),
        };
        let mut config = cli.over(from_file).resolve();
        config.api_key = read_key("api_key", &config.api_key, &config.api_key_file)?;
        config.admin_key = read_key("admin_key", &config.admin_key, &config.admin_key_file)?;
        config.check()?;
        Ok(config)
    }

    /// Who may call what ([`Keys`]).
    pub fn keys(&self) -> Keys {
        Keys::new(&self.api_key, &self.admin_key, self.open_probes)
    }

    /// Rejects settings no server can run with.
    fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("max_running_sequences", self.max_running_sequences),
            ("prefill_chunk", self.prefill_chunk),
            ("max_requests", self.max_requests),
            ("max_prompts", self.max_prompts),
            ("max_group_size", self.max_group_size),
            ("max_new_tokens", self.max_new_tokens),
            ("max_request_tokens", self.max_request_tokens),
            (
                "max_timeout_ms",
                self.max_timeout_ms.min(usize::MAX as u64) as usize,
            ),
            ("default_group_size", self.default_group_size),
            ("default_max_tokens", self.default_max_tokens),
            ("watch_interval_ms", self.watch_interval_ms as usize),
            ("max_connections", self.max_connections),
            ("max_mask_ids", self.max_mask_ids),
            (
                "body_timeout_ms",
                self.body_timeout_ms.min(usize::MAX as u64) as usize,
            ),
            (
                "header_timeout_ms",
                self.header_timeout_ms.min(usize::MAX as u64) as usize,
            ),
            (
                "write_timeout_ms",
                self.write_timeout_ms.min(usize::MAX as u64) as usize,
            ),
        ] {
            anyhow::ensure!(value > 0, "{name} must be positive");
        }
        for (name, key) in [("api_key", &self.api_key), ("admin_key", &self.admin_key)] {
            anyhow::ensure!(
                key.expose().bytes().all(|b| b.is_ascii_graphic()),
                "{name} must be printable ASCII without spaces (it travels in an HTTP header)"
            );
        }
        anyhow::ensure!(
            self.api_key.is_empty() || self.api_key != self.admin_key,
            "api_key and admin_key must differ: the admin key steers the server"
        );
        anyhow::ensure!(
            self.max_engines >= 2,
            "max_engines must be at least 2: the served engine and the one an update loads"
        );
        anyhow::ensure!(
            self.default_group_size <= self.max_group_size,
            "default_group_size exceeds max_group_size"
        );
        anyhow::ensure!(
            self.default_max_tokens <= self.max_new_tokens,
            "default_max_tokens exceeds max_new_tokens"
        );
        Ok(())
    }
}

/// The key `name` from its setting or its file (`<name>_file`), not both.
fn read_key(name: &str, key: &Secret, file: &Path) -> anyhow::Result<Secret> {
    if file.as_os_str().is_empty() {
        return Ok(key.clone());
    }
    anyhow::ensure!(key.is_empty(), "set {name} or {name}_file, not both");
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {name}_file {}: {e}", file.display()))?;
    let key = text.trim();
    anyhow::ensure!(!key.is_empty(), "{name}_file {} is empty", file.display());
    Ok(Secret::from(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let file: ConfigLayer = toml::from_str("port = 9000\nmax_prompts = 3\n").unwrap();
        let cli = ConfigLayer {
            port: Some(9100),
            ..Default::default()
        };
        let c = cli.over(file).resolve();
        assert_eq!(c.port, 9100);
        assert_eq!(c.max_prompts, 3);
        assert_eq!(c.max_group_size, Config::default().max_group_size);
    }

    #[test]
    fn shipped_configs_parse_and_unknown_keys_fail() {
        for path in ["configs/default.toml", "configs/gpu.toml"] {
            let text = std::fs::read_to_string(path).unwrap();
            let layer: ConfigLayer = toml::from_str(&text).unwrap();
            layer.resolve().check().unwrap();
        }
        assert!(toml::from_str::<ConfigLayer>("prot = 1\n").is_err());
    }

    #[test]
    fn keys_come_from_files_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("entroll-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin");
        std::fs::write(&file, "admin-key\n").unwrap();
        let key = read_key("admin_key", &Secret::default(), &file).unwrap();
        assert_eq!(key.expose(), "admin-key");
        let set: Secret = "x".to_string().into();
        assert!(read_key("admin_key", &set, &file).is_err());
        std::fs::write(&file, " \n").unwrap();
        assert!(read_key("admin_key", &Secret::default(), &file).is_err());
        let same = ConfigLayer {
            api_key: Some("k".to_string().into()),
            admin_key: Some("k".to_string().into()),
            ..Default::default()
        };
        assert!(same.resolve().check().is_err());
        let spaced = ConfigLayer {
            api_key: Some("a key".to_string().into()),
            ..Default::default()
        };
        assert!(spaced.resolve().check().is_err());
    }

    #[test]
    fn inconsistent_limits_are_rejected() {
        let layer = ConfigLayer {
            default_group_size: Some(100),
            max_group_size: Some(10),
            ..Default::default()
        };
        assert!(layer.resolve().check().is_err());
    }
}
