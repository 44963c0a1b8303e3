//! A model the engine cannot run is refused when it loads (at start, or on `POST /weights`),
//! with the reason, instead of failing every request: the engine runs one probe forward before
//! it serves.

use entroll::engine::loader::{ConfiguredLoader, EngineLoader};

use crate::harness;

#[tokio::test]
async fn a_model_the_engine_cannot_run_is_refused_when_it_loads() {
    let tiny = harness::tiny_model();
    let broken = std::env::temp_dir().join(format!("entroll-broken-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(&tiny).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::os::unix::fs::symlink(entry.path(), broken.join(entry.file_name())).unwrap();
        }
    }
    // The weights hold heads of 32; a config that says 16 loads, but its forward cannot run.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("config.json")).unwrap()).unwrap();
    config["head_dim"] = serde_json::json!(16);
    std::fs::write(broken.join("config.json"), config.to_string()).unwrap();

    let settings = harness::config(|c| c.model = broken.clone());
    let refused = ConfiguredLoader(settings.engine()).load(&broken).await;
    std::fs::remove_dir_all(&broken).unwrap();
    let why = format!(
        "{:#}",
        refused.err().expect("the broken model was accepted")
    );
    assert!(why.contains("cannot run this model"), "{why}");
    assert!(
        !why.contains("candle_core::"),
        "a backtrace in the reason: {why}"
    );
}
