//! `wardlink-collector`: glue between the command line and the collector
//! library (`wardlink_sync::collector`).
//!
//! Exit codes: 0 ok, 1 a command was refused (e.g. enrolling an id with
//! another key), 2 runtime error, 78 configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wardlink_sync::collector::config::{CollectorConfig, DEFAULT_TOML};
use wardlink_sync::collector::http::now_ms;
use wardlink_sync::collector::store::EnrollOutcome;
use wardlink_sync::collector::{new_reader_token, serve, AnyStore, CollectorStore as _};
use wardlink_sync::keys::{GatewayId, PublicKey, SigningKeyFile};

const EXIT_REFUSED: u8 = 1;
const EXIT_RUNTIME: u8 = 2;
const EXIT_CONFIG: u8 = 78;

/// The central collector of wardlink gateways' signed batches.
#[derive(Debug, Parser)]
#[command(name = "wardlink-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive batches and serve feeds (built-in default: 127.0.0.1:8443,
    /// SQLite in ./collector-data).
    Serve {
        /// The configuration file (TOML); without it the built-in default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Allow a gateway to upload: its id and public key, as `wardlink keygen` prints them.
    Enroll {
        /// The gateway id (`gw-` + 24 hex digits).
        #[arg(long)]
        gateway_id: String,
        /// The gateway's Ed25519 public key (64 hex digits).
        #[arg(long)]
        public_key: String,
        /// The configuration file (TOML); without it the built-in default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Refuse a gateway's batches from now on (403).
    Revoke {
        /// The gateway id.
        #[arg(long)]
        gateway_id: String,
        /// The configuration file (TOML); without it the built-in default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Reader tokens for the feeds.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the collector's public key (gateways check receipts with it).
    PublicKey {
        /// The configuration file (TOML); without it the built-in default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the built-in default configuration.
    PrintDefaultConfig,
    /// Hidden: write the manual pages or shell completions (for packaging).
    #[command(flatten)]
    CliDocs(wardlink_sync::collector::cli_docs::CliDocs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a reader token; it is printed once and only its hash is kept.
    Create {
        /// The reader's name (unique), e.g. `analytics`.
        name: String,
        /// The configuration file (TOML); without it the built-in default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// A command's failure, with the exit code it maps to.
enum Failure {
    Config(String),
    Refused(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::CliDocs(docs) => docs
            .run(
                &<Cli as clap::CommandFactory>::command(),
                "wardlink-collector",
                env!("CARGO_PKG_VERSION"),
            )
            .map(|files| files.iter().for_each(|f| println!("{}", f.display())))
            .map_err(|e| Failure::Runtime(e.into())),
        Command::Serve { config } => load(config.as_deref()).and_then(run_serve),
        Command::Enroll {
            gateway_id,
            public_key,
            config,
        } => load(config.as_deref()).and_then(|c| enroll(&c, &gateway_id, &public_key)),
        Command::Revoke { gateway_id, config } => {
            load(config.as_deref()).and_then(|c| revoke(&c, &gateway_id))
        }
        Command::Token {
            command: TokenCommand::Create { name, config },
        } => load(config.as_deref()).and_then(|c| token_create(&c, &name)),
        Command::PublicKey { config } => load(config.as_deref()).and_then(|c| {
            let key = SigningKeyFile::load_or_create(&c.key_file)
                .map_err(|e| Failure::Runtime(e.into()))?;
            println!("{}", key.public_key());
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("wardlink-collector: configuration error:\n{e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Refused(e)) => {
            eprintln!("wardlink-collector: {e}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(Failure::Runtime(e)) => {
            tracing::error!("{e:#}");
            eprintln!("wardlink-collector: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn load(path: Option<&Path>) -> Result<CollectorConfig, Failure> {
    match path {
        None => CollectorConfig::builtin(),
        Some(p) => CollectorConfig::load(p),
    }
    .map_err(|e| Failure::Config(e.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)
}

/// Open the configured database, run `f` on it, and let it drain.
fn with_store<T>(
    config: &CollectorConfig,
    f: impl AsyncFnOnce(&AnyStore) -> anyhow::Result<T>,
) -> Result<T, Failure> {
    runtime()?.block_on(async {
        let store = AnyStore::open(&config.database)
            .await
            .context("opening the database")?;
        let result = f(&store).await;
        store.shutdown();
        result.map_err(Failure::Runtime)
    })
}

fn run_serve(config: CollectorConfig) -> Result<(), Failure> {
    let rt = runtime()?;
    let key = SigningKeyFile::load_or_create(&config.key_file)
        .context("loading the collector's receipt key")?;
    if key.was_created() {
        tracing::info!(path = %config.key_file.display(), "Created the collector's receipt key");
    }
    // Certificate problems are configuration errors (exit 78), found before binding.
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(
            wardlink_sync::collector::tls::server_config(
                &files.cert_file,
                &files.key_file,
                files.client_ca_file.as_deref(),
            )
            .map_err(|e| Failure::Config(e.to_string()))?,
        ),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let result: anyhow::Result<AnyStore> = rt.block_on(async {
        let store = AnyStore::open(&config.database)
            .await
            .context("opening the database")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, public_key = %key.public_key(), "Collector listening");
        // One line on stdout that scripts and tests parse for the bound port.
        println!("wardlink-collector listening on {scheme}://{addr}");
        let admin = match config.admin_listen {
            None => None,
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("admin_listen: cannot listen on {a}"))?;
                let admin_addr = l.local_addr()?;
                tracing::info!(addr = %admin_addr, "Admin endpoint (status page, /metrics) listening");
                println!("wardlink-collector admin on http://{admin_addr}");
                let router = wardlink_sync::collector::admin::router(store.clone());
                Some(tokio::spawn(async move {
                    let _ = axum::serve(l, router)
                        .with_graceful_shutdown(stop_signal())
                        .await;
                }))
            }
        };
        let served = serve(
            store.clone(),
            key,
            listener,
            tls,
            config.max_batch_bytes,
            config.max_body_bytes,
            stop_signal(),
        )
        .await
        .context("serving");
        if let Some(task) = admin {
            task.abort();
        }
        served?;
        Ok(store)
    });
    // Let queued writes finish; then every connection is closed cleanly.
    let store = result.map_err(Failure::Runtime)?;
    store.shutdown();
    tracing::info!("Collector stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers; stop with SIGKILL (nothing receipted is lost)"
        );
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn enroll(config: &CollectorConfig, gateway_id: &str, public_key: &str) -> Result<(), Failure> {
    let id: GatewayId = gateway_id
        .parse()
        .map_err(|e: wardlink_sync::keys::KeyError| Failure::Refused(e.to_string()))?;
    let key: PublicKey = public_key
        .parse()
        .map_err(|e: wardlink_sync::keys::KeyError| Failure::Refused(e.to_string()))?;
    if !id.belongs_to(&key) {
        return Err(Failure::Refused(format!(
            "gateway id {id} does not belong to public key {key} (its id is {}); copy both from the same `wardlink keygen` output",
            key.gateway_id()
        )));
    }
    let outcome = with_store(config, async |s| {
        s.enroll(&id, &key, now_ms()).await.context("enrolling")
    })?;
    match outcome {
        EnrollOutcome::Enrolled => println!("enrolled {id}"),
        EnrollOutcome::AlreadyEnrolled => println!("{id} was already enrolled with this key"),
        EnrollOutcome::Reinstated => println!("{id} was revoked and is enrolled again"),
        EnrollOutcome::OtherKey => {
            return Err(Failure::Refused(format!(
                "{id} is enrolled with another key; a gateway id names one key"
            )))
        }
    }
    Ok(())
}

fn revoke(config: &CollectorConfig, gateway_id: &str) -> Result<(), Failure> {
    let id: GatewayId = gateway_id
        .parse()
        .map_err(|e: wardlink_sync::keys::KeyError| Failure::Refused(e.to_string()))?;
    let found = with_store(config, async |s| {
        s.revoke(&id, now_ms()).await.context("revoking")
    })?;
    if !found {
        return Err(Failure::Refused(format!("{id} is not enrolled")));
    }
    println!("revoked {id}: its batches are refused from now on");
    Ok(())
}

fn token_create(config: &CollectorConfig, name: &str) -> Result<(), Failure> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        return Err(Failure::Refused(format!(
            "reader name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )));
    }
    let (token, digest) = new_reader_token().context("making a token")?;
    let created = with_store(config, async |s| {
        s.create_token(name, digest, now_ms())
            .await
            .context("storing the token")
    })?;
    if !created {
        return Err(Failure::Refused(format!(
            "a reader named {name:?} exists already"
        )));
    }
    // The token itself is shown once; the collector keeps only its SHA-256.
    println!("{token}");
    Ok(())
}
