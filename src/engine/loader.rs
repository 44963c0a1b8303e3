//! Loading engines: the [`EngineLoader`] the server loads its model and new weights with, and
//! [`ConfiguredLoader`], which picks the implementation the settings ask for (the native
//! engine where it supports the model under `auto`, mistral.rs otherwise).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

#[cfg(all(feature = "mistralrs", feature = "native"))]
use super::settings::EngineKind;
use super::settings::EngineSettings;
use super::Engine;
#[cfg(all(feature = "mistralrs", feature = "native"))]
use super::{mistralrs, native};

/// Loads engines of one configured kind: the model at startup, and new weights later.
#[async_trait]
pub trait EngineLoader: Send + Sync {
    /// Loads the model at `model` (a `.gguf` file or a safetensors directory).
    async fn load(&self, model: &Path) -> anyhow::Result<Arc<dyn Engine>>;
}

/// Loads engines as its settings say (engine kind, device, batch, prefix cache).
pub struct ConfiguredLoader(pub EngineSettings);

#[cfg(all(feature = "mistralrs", feature = "native"))]
#[async_trait]
impl EngineLoader for ConfiguredLoader {
    async fn load(&self, model: &Path) -> anyhow::Result<Arc<dyn Engine>> {
        if model.is_file() {
            // Both engines' GGUF readers trust the header: it is bounded first.
            super::gguf_header::check(model)
                .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
        }
        let settings = EngineSettings {
            model: model.to_path_buf(),
            ..self.0.clone()
        };
        let kind = match settings.engine {
            EngineKind::Auto => match native::architecture(model) {
                Ok(_) => EngineKind::Native,
                Err(why) => {
                    tracing::info!("{why}: serving {} on mistral.rs", model.display());
                    EngineKind::Mistralrs
                }
            },
            kind => kind,
        };
        Ok(match kind {
            EngineKind::Mistralrs => Arc::new(mistralrs::MistralRsEngine::load(&settings).await?),
            _ => Arc::new(native::NativeEngine::load(&settings).await?),
        })
    }
}
