//! `cpm`: one binary for every role. `cpm serve --target all` runs the
//! whole platform in one process; `--target risk-assessment` runs one
//! service, as each Kubernetes Deployment does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cpm::{Platform, Settings, Target};
use cpm_runtime::auth::{Authenticator, Role};

#[derive(Parser)]
#[command(name = "cpm", version, about = "Community peer-mentor platform")]
struct Cli {
    /// Configuration file (default: $CPM_CONFIG, else ./cpm.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs services: `all` (the default) or a comma list.
    Serve {
        #[arg(long, default_value = "all")]
        target: String,
    },
    /// Lists the targets `serve` accepts.
    Targets,
    /// Creates the database if needed and migrates the targets' schemas.
    Migrate {
        #[arg(long, default_value = "all")]
        target: String,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Mints a bearer token signed with the configured shared key.
    /// DEVELOPMENT ONLY: production verifies an external issuer's tokens.
    Token {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        agency: Option<String>,
        #[arg(long)]
        mentor: Option<String>,
        #[arg(long, default_value = "cpm-cli")]
        subject: String,
        #[arg(long, default_value_t = 12)]
        ttl_hours: i64,
    },
    /// Exits 0 when the server (or one gRPC service) is SERVING.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// A fully-qualified gRPC service name; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Walks a demo referral through all five services, printing each step.
    Demo {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates the configuration without starting anything.
    Check,
}

fn load_settings(cli_config: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    let file = cli_config
        .cloned()
        .or_else(cpm_runtime::config::default_file);
    Settings::load(file.as_deref()).map_err(|error| {
        eprintln!("cpm: {error}");
        ExitCode::from(2)
    })
}

fn targets(value: &str) -> Result<Vec<Target>, ExitCode> {
    Target::parse_list(value).map_err(|error| {
        eprintln!("cpm: {error}");
        ExitCode::from(2)
    })
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn run(cli: Cli) -> Result<(), ExitCode> {
    let fail = |error: anyhow::Error| {
        eprintln!("cpm: {error:#}");
        ExitCode::FAILURE
    };
    match cli.command {
        Command::Serve { target } => {
            let targets = targets(&target)?;
            let settings = load_settings(cli.config.as_ref())?;
            let _telemetry =
                cpm_runtime::telemetry::init("cpm", &settings.platform.telemetry).map_err(fail)?;
            if settings.platform.profile == cpm_runtime::config::Profile::Development {
                tracing::warn!(
                    "running in DEVELOPMENT mode: local keys, plaintext gRPC; not for real client data"
                );
            }
            let platform = Platform::start(settings, &targets).await.map_err(fail)?;
            let shutdown = platform.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutdown requested");
                shutdown.cancel();
            });
            platform.wait().await.map_err(fail)
        }
        Command::Targets => {
            for target in Target::ALL {
                println!("{:<18} {}", target.as_str(), target.description());
            }
            println!("{:<18} every service above in one process", "all");
            Ok(())
        }
        Command::Migrate { target } => {
            let targets = targets(&target)?;
            let settings = load_settings(cli.config.as_ref())?;
            cpm::platform::migrate(&settings, &targets)
                .await
                .map_err(fail)?;
            for target in targets {
                println!(
                    "migrated {} (schema {})",
                    target,
                    cpm::platform::schema_of(target)
                );
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let settings = load_settings(cli.config.as_ref())?;
            println!(
                "configuration is valid: profile {:?}, gRPC on {}, namespace {}",
                settings.platform.profile,
                settings.platform.grpc.listen,
                settings.platform.amqp.namespace
            );
            Ok(())
        }
        Command::Token {
            role,
            agency,
            mentor,
            subject,
            ttl_hours,
        } => {
            let settings = load_settings(cli.config.as_ref())?;
            let authenticator =
                Authenticator::from_config(&settings.platform.auth).map_err(fail)?;
            let token = authenticator
                .mint(
                    &subject,
                    role,
                    agency.as_deref(),
                    mentor.as_deref(),
                    chrono::Duration::hours(ttl_hours),
                )
                .map_err(fail)?;
            println!("{token}");
            Ok(())
        }
        Command::Health { endpoint, service } => {
            let status = cpm::client::health(&endpoint, &service)
                .await
                .map_err(fail)?;
            let serving =
                status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            println!("{}", if serving { "SERVING" } else { "NOT_SERVING" });
            if serving {
                Ok(())
            } else {
                Err(ExitCode::FAILURE)
            }
        }
        Command::Demo { endpoint } => {
            let settings = load_settings(cli.config.as_ref())?;
            let authenticator =
                Authenticator::from_config(&settings.platform.auth).map_err(fail)?;
            let mut options = cpm::demo::DemoOptions::new(&endpoint, authenticator);
            options.verbose = true;
            options.step_timeout = Duration::from_secs(60);
            println!("walking a demo referral through {endpoint}:");
            let report = cpm::demo::run(options).await.map_err(fail)?;
            let seen: Vec<_> = report
                .statuses_seen
                .iter()
                .map(|s| s.as_str_name())
                .collect();
            println!(
                "done: referral {} went {}",
                report.referral_id,
                seen.join(" → ")
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
