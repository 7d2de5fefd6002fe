//! The `wardlink` binary: glue between the command line and the library.
//!
//! Exit codes: 0 ok, 1 a check failed (`check-config`, `status` with an
//! alarm), 2 runtime error, 78 configuration error (the systemd unit sets
//! `RestartPreventExitStatus=78`; a missing or unusable gateway key with sync
//! on is one).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wardlink::cli::{Cli, Command, QuarantineAction};
use wardlink::{daemon, logging, status};
use wardlink_config::Config;

const EXIT_CHECK_FAILED: u8 = 1;
const EXIT_RUNTIME: u8 = 2;
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. } | Command::Demo { .. }) {
        end_quietly_on_a_closed_pipe();
    }
    match cli.command {
        Command::Run { config } => run(config.as_deref()),
        Command::CheckConfig { file } => check_config(&file),
        Command::PrintDefaultConfig => {
            print!("{}", wardlink_config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Status { json, config } => show_status(json, config.as_deref()),
        Command::Deid {
            print_profile,
            config,
            files,
        } => deid(print_profile, config.as_deref(), &files),
        Command::Quarantine { action, config } => quarantine(action, config.as_deref()),
        Command::Keygen { config } => keygen(config.as_deref()),
        Command::Demo { dir, rate } => demo(dir, rate),
        Command::Simulate(cmd) => wardlink::cli_tools::simulate(cmd),
        Command::Tap(args) => wardlink::cli_tools::tap(args),
        Command::CliDocs(docs) => cli_docs(&docs),
    }
}

/// The commands that print (`deid`, `quarantine list`, `status`, `tap`, ...)
/// end like any Unix tool when their reader goes away (`| head`): killed by
/// SIGPIPE, quietly. Rust ignores SIGPIPE at start, so a closed pipe would
/// otherwise make `println!` panic. Not for the daemon (`run`, `demo`),
/// which must survive a closed peer; its sockets never raise SIGPIPE anyway.
fn end_quietly_on_a_closed_pipe() {
    #[expect(
        unsafe_code,
        reason = "restoring a signal's default disposition, before any thread starts"
    )]
    // SAFETY: `signal` with SIG_DFL installs no handler code; it runs here,
    // at the top of main, before this process starts any other thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The hidden `generate-man` / `generate-completions` (for packaging).
fn cli_docs(docs: &wardlink::cli_docs::CliDocs) -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    match docs.run(&cmd, "wardlink", env!("CARGO_PKG_VERSION")) {
        Ok(files) => {
            files.iter().for_each(|f| println!("{}", f.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wardlink: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Load the config (see [`load`]); on failure print every problem and give
/// the configuration-error exit code. `context` is added to the first line.
fn load_or_report(path: Option<&Path>, context: &str) -> Result<Config, ExitCode> {
    load(path).map_err(|e| {
        eprintln!("wardlink: configuration error{context}:\n{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn keygen(config: Option<&Path>) -> ExitCode {
    let config = match load_or_report(config, "") {
        Ok(c) => c,
        Err(code) => return code,
    };
    match wardlink::sync::keygen(&config.gateway.state_dir) {
        Ok(k) => {
            println!(
                "{} {}",
                if k.created {
                    "created the gateway key"
                } else {
                    "the gateway key exists:"
                },
                k.path.display()
            );
            println!("gateway id: {}", k.gateway_id);
            println!("public key: {}", k.public_key);
            println!("enrol it at the collector (on the collector's host):");
            println!("{}", k.enroll_command);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wardlink: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn demo(dir: Option<std::path::PathBuf>, rate: f64) -> ExitCode {
    logging::init("warn");
    let result = match until_signal(|shutdown| async move {
        let options = wardlink::demo::DemoOptions { dir, rate };
        wardlink::demo::run(options, &mut std::io::stdout(), shutdown).await
    }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardlink demo: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn deid(
    print_profile: Option<String>,
    config: Option<&Path>,
    files: &[std::path::PathBuf],
) -> ExitCode {
    match print_profile.as_deref() {
        None => {}
        Some("hl7") => {
            print!("{}", wardlink::pipeline::default_profile_text());
            return ExitCode::SUCCESS;
        }
        Some("dicom") => {
            // The options in force: from the config when one is given.
            let options = match config {
                Some(_) => match load_or_report(config, "") {
                    Ok(c) => c.deid.dicom,
                    Err(code) => return code,
                },
                None => wardlink_config::DicomDeidConfig::default(),
            };
            print!("{}", wardlink::pipeline::dicom_profile_text(&options));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("wardlink: --print-profile: {other:?} is not a profile; use hl7 or dicom");
            return ExitCode::from(2);
        }
    }
    let config = match load_or_report(config, "") {
        Ok(c) => c,
        Err(code) => return code,
    };
    match wardlink::review::run(&config, files, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardlink: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn quarantine(action: QuarantineAction, config: Option<&Path>) -> ExitCode {
    use wardlink::quarantine as q;
    let config = match load_or_report(config, "") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dir = &config.gateway.state_dir;
    let result: Result<String, q::QuarantineError> = match action {
        QuarantineAction::List { json } => q::list(dir).map(|entries| {
            if json {
                serde_json::to_string_pretty(&entries).unwrap_or_default()
            } else if entries.is_empty() {
                "no quarantined messages".to_string()
            } else {
                let mut out = format!(
                    "{:>8}  {:<16} {:<12} {}\n",
                    "id", "source", "type", "reason"
                );
                for e in entries {
                    out.push_str(&format!(
                        "{:>8}  {:<16} {:<12} {}\n",
                        e.id,
                        e.source,
                        e.message_type.unwrap_or_else(|| "-".into()),
                        e.reason
                    ));
                }
                out.trim_end().to_string()
            }
        }),
        QuarantineAction::Show { id, raw, json } => q::show(dir, id, raw).map(|d| {
            if json {
                serde_json::to_string_pretty(&d).unwrap_or_default()
            } else {
                let mut out = format!(
                    "id: {}\nsource: {}\ntype: {}\ncontrol id: {}\nreason: {}\nissues: {}",
                    d.entry.id,
                    d.entry.source,
                    d.entry.message_type.as_deref().unwrap_or("-"),
                    d.control_id.as_deref().unwrap_or("-"),
                    d.entry.reason,
                    serde_json::to_string_pretty(&d.issues).unwrap_or_default()
                );
                if let Some(raw) = d.raw {
                    out.push_str("\nraw message:\n");
                    out.push_str(&raw);
                }
                out
            }
        }),
        QuarantineAction::Release { id } => q::release(dir, id)
            .map(|()| format!("message {id} released: the pipeline processes it again")),
        QuarantineAction::Drop { id } => {
            q::drop_message(dir, id).map(|()| format!("message {id} dropped"))
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wardlink: {e}");
            ExitCode::from(match e {
                q::QuarantineError::NotFound(_) => EXIT_CHECK_FAILED,
                _ => EXIT_RUNTIME,
            })
        }
    }
}

/// Load the config named on the command line, or the embedded default.
fn load(path: Option<&Path>) -> Result<Config, String> {
    match path {
        None => wardlink_config::embedded_default().map_err(|e| e.to_string()),
        Some(p) => match wardlink_config::load_file(p) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                Ok(loaded.config)
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

fn run(path: Option<&Path>) -> ExitCode {
    logging::init("info");
    let config = match load_or_report(path, ", not starting") {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(config.log.level.as_str());
    let path = path.map(Path::to_path_buf);
    let result = match until_signal(|shutdown| daemon::run_with_reload(config, path, shutdown)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<daemon::SetupError>().is_some() => {
            tracing::error!("{e:#}");
            eprintln!("wardlink: configuration error, not starting:\n{e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wardlink: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Run `task` on a new multi-threaded runtime with a shutdown token that
/// SIGTERM or SIGINT cancels. `Err` is the exit code when the runtime cannot
/// start.
fn until_signal<F, Fut, T>(task: F) -> Result<T, ExitCode>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("wardlink: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        })?;
    Ok(runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        task(shutdown).await
    }))
}

/// Cancel `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers; stop with SIGKILL (nothing acknowledged is lost)"
        );
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

fn check_config(file: &Path) -> ExitCode {
    match wardlink_config::load_file(file) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let n = loaded.config.sources.len();
            println!(
                "{}: ok ({n} source{})",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CHECK_FAILED)
        }
    }
}

fn show_status(json: bool, path: Option<&Path>) -> ExitCode {
    let config = match load_or_report(path, "") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let names = config.sources.names();
    match status::report(&config.gateway.state_dir, &names, &config.sync) {
        Ok(report) => {
            let report = report.with_keep_files(&config.sources.dicom);
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("wardlink: {e}");
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            if report.alarms.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CHECK_FAILED)
            }
        }
        Err(e) => {
            eprintln!("wardlink: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
