//! The `cpm` command line: one binary for every role. `cpm serve --target
//! all` runs the whole platform in one process; `--target risk-assessment`
//! runs one service, as each Kubernetes Deployment does. It lives in the
//! library so that tests run the very same program as a child process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{Platform, Settings, Target};
use clap::{Parser, Subcommand};
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
        /// An area a coordinator works in (repeat for several); a
        /// coordinator's token names every programme area when none is given.
        #[arg(long = "area")]
        areas: Vec<String>,
        #[arg(long, default_value = "cpm-cli")]
        subject: String,
        #[arg(long, default_value_t = 12)]
        ttl_hours: i64,
    },
    /// Re-wraps every client data key still under a previous master key with
    /// the current one (step 2 of a master key rotation; see docs/operations.md).
    RewrapKeys,
    /// Lists every consumer's dead-letter queue with its depth, or with
    /// `--replay <service>.<consumer>` moves its dead letters back to its
    /// queue once the cause is fixed.
    DeadLetters {
        #[arg(long)]
        replay: Option<String>,
        /// Replay at most this many.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Exits 0 when the server (or one gRPC service) is SERVING.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// A fully-qualified gRPC service name; empty for the whole server
        /// (readiness); `liveness` for the process alone.
        #[arg(long, default_value = "")]
        service: String,
        /// For an `https://` endpoint: the CA certificate (PEM) that signed
        /// the server's certificate.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// The name the server's certificate must carry, when not the
        /// endpoint's host.
        #[arg(long, requires = "tls_ca")]
        tls_domain: Option<String>,
    },
    /// Walks a demo referral through all five services, printing each step.
    Demo {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
    },
    /// Generates a synthetic programme calibrated to the 2018 evaluation (referrals per year,
    /// outcomes with their stage and reason, client profile, mentors in cohorts, contacts per
    /// client, demand before and after) and replays it through the platform's gRPC APIs.
    ///
    /// DEVELOPMENT ONLY: tokens are minted with the configured shared signing key. See
    /// docs/simulate.md for the calibration and what the replay cannot backdate.
    Simulate {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// The share of the real programme (545 referrals, 298 mentors) to generate.
        #[arg(long, default_value_t = 0.1)]
        size: f64,
        /// The random seed: the same seed and size give the same programme.
        #[arg(long, default_value_t = 2018)]
        seed: u64,
        /// Referrals replayed at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Prints the evaluation's tables from what the services hold, as Markdown with SVG charts.
    ///
    /// DEVELOPMENT ONLY: reads referrals with tokens minted with the configured shared key.
    Report {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// Writes the report to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The short form: a few lines of headline figures, no charts.
        #[arg(long)]
        short: bool,
    },
    /// Submits every row of a referrals CSV file as the agency, with a progress bar and a summary.
    ///
    /// The header row names the columns (any order, case-insensitive). Required: given_name,
    /// family_name, date_of_birth (1979-04-01), gender (female, male, transgender, non_binary,
    /// undisclosed), area, referrer_name, referrer_role (frontline, middle_manager, senior),
    /// referrer_contact, reason, client_consented (yes, no, true, false). Optional:
    /// idempotency_key, address, phone, safe_contact_instructions, desired_outcomes,
    /// vulnerabilities (semicolon-separated, e.g. high_impact_user;alcohol_addiction),
    /// emergency_calls_last_12_months, known_risks.
    ///
    /// A row without an idempotency_key gets one derived from the agency and the row, so running
    /// the same file again replays rows instead of referring anyone twice. Rows are numbered as a
    /// spreadsheet shows them (the header is row 1); messages and the report name the row, column
    /// and problem, never a value. Exits non-zero when any row was not imported.
    ///
    /// The file is read as rows are submitted, so memory stays flat for any length of file; the
    /// summary lists the first 1,000 rows not imported, and --report lists every row.
    ///
    /// DEVELOPMENT ONLY: the referrer token is minted with the configured shared signing key, as
    /// `cpm token` does; a production platform accepts only its issuer's tokens.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The platform's gRPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// The agency the referrals come from (the token's agency_id claim).
        #[arg(long)]
        agency: String,
        /// Writes each row's outcome (row, status, referral_id, errors) to this CSV file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Submissions in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
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

/// The OpenTelemetry `service.name` of a process serving `targets`:
/// `cpm-<target>` for one (so each service's traces stand apart in a trace
/// backend), `cpm` for several in one process.
fn service_name(targets: &[Target]) -> String {
    match targets {
        [one] => format!("cpm-{}", one.as_str()),
        _ => "cpm".to_owned(),
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
                cpm_runtime::telemetry::init(&service_name(&targets), &settings.platform.telemetry)
                    .map_err(fail)?;
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
            crate::platform::migrate(&settings, &targets)
                .await
                .map_err(fail)?;
            for target in targets {
                println!(
                    "migrated {} (schema {})",
                    target,
                    crate::platform::schema_of(target)
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
            areas,
            subject,
            ttl_hours,
        } => {
            let settings = load_settings(cli.config.as_ref())?;
            let authenticator =
                Authenticator::from_config(&settings.platform.auth).map_err(fail)?;
            let programme = &settings.platform.programme;
            let areas = if areas.is_empty() && role == Role::Coordinator {
                programme.areas.clone()
            } else {
                areas
                    .iter()
                    .map(|area| {
                        programme.area(area).map(str::to_owned).ok_or_else(|| {
                            fail(anyhow::anyhow!(
                                "`{area}` is not one of the programme's areas: {}",
                                programme.areas.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            let token = authenticator
                .mint_with_areas(
                    &subject,
                    role,
                    agency.as_deref(),
                    mentor.as_deref(),
                    &areas,
                    chrono::Duration::hours(ttl_hours),
                )
                .map_err(fail)?;
            println!("{token}");
            Ok(())
        }
        Command::RewrapKeys => {
            let settings = load_settings(cli.config.as_ref())?;
            let crypto = &settings.platform.crypto;
            let previous: Vec<&str> = crypto
                .previous_master_keys
                .iter()
                .map(|key| key.expose())
                .collect();
            let keys =
                cpm_runtime::crypto::KeyRing::from_config(crypto.master_key.expose(), &previous)
                    .map_err(|error| fail(error.into()))?;
            let pool = cpm_runtime::db::pool(&settings.platform.database, referral_intake::SCHEMA)
                .map_err(|error| fail(error.into()))?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} client records ({eta} left)",
                )
                .expect("a valid template"),
            );
            let summary = referral_intake::privacy::rewrap_all(&pool, &keys, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await
            .map_err(fail)?;
            bar.finish();
            println!(
                "re-wrapped {} data keys; {} were already under the current key",
                summary.rewrapped, summary.already_current
            );
            // Every service's own client keys, under which it seals free text.
            for target in Target::ALL {
                let service = target.service();
                let pool = cpm_runtime::db::pool(&settings.platform.database, service.schema())
                    .map_err(|error| fail(error.into()))?;
                let (rewrapped, current) = cpm_runtime::client_keys::rewrap_all(&pool, &keys)
                    .await
                    .map_err(fail)?;
                println!(
                    "{}: re-wrapped {rewrapped} client keys; {current} were already current",
                    service.name()
                );
                pool.close().await;
            }
            // Webhook signing secrets are sealed under data keys of their own.
            let pool = cpm_runtime::db::pool(&settings.platform.database, notifications::SCHEMA)
                .map_err(|error| fail(error.into()))?;
            let (rewrapped, current) = notifications::signing::rewrap_all(&pool, &keys)
                .await
                .map_err(fail)?;
            println!(
                "notifications: re-wrapped {rewrapped} webhook secret keys; {current} were already current"
            );
            pool.close().await;
            Ok(())
        }
        Command::DeadLetters { replay, limit } => {
            let settings = load_settings(cli.config.as_ref())?;
            let bus = cpm_runtime::bus::Bus::new(&settings.platform.amqp);
            let consumers = crate::platform::all_consumers();
            let counts = cpm_runtime::bus::dead_letters::count(&bus, &consumers)
                .await
                .map_err(fail)?;
            let Some(name) = replay else {
                for count in &counts {
                    println!(
                        "{:<32} {:>8}  {}",
                        count.consumer, count.messages, count.queue
                    );
                }
                bus.close().await;
                return Ok(());
            };
            let Some(spec) = consumers.iter().find(|spec| spec.inbox_name() == name) else {
                let names: Vec<_> = consumers.iter().map(|spec| spec.inbox_name()).collect();
                eprintln!(
                    "cpm: unknown consumer `{name}`: expected one of {}",
                    names.join(", ")
                );
                return Err(ExitCode::from(2));
            };
            let waiting = counts
                .iter()
                .find(|count| count.consumer == name)
                .map_or(0, |count| count.messages as usize);
            let bar = indicatif::ProgressBar::new(waiting.min(limit) as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} dead letters replayed",
                )
                .expect("a valid template"),
            );
            let moved = cpm_runtime::bus::dead_letters::replay(&bus, spec, limit, |moved| {
                bar.set_position(moved as u64)
            })
            .await
            .map_err(fail)?;
            bar.finish();
            println!("replayed {moved} dead-lettered events into {name}");
            bus.close().await;
            Ok(())
        }
        Command::Health {
            endpoint,
            service,
            tls_ca,
            tls_domain,
        } => {
            let trust = tls_ca.map(|ca_file| crate::client::TlsTrust {
                ca_file,
                domain: tls_domain,
            });
            let status = crate::client::health_over(&endpoint, &service, trust.as_ref())
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
            let mut options = crate::demo::DemoOptions::new(&endpoint, authenticator);
            options.verbose = true;
            options.step_timeout = Duration::from_secs(60);
            println!("walking a demo referral through {endpoint}:");
            let report = crate::demo::run(options).await.map_err(fail)?;
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
        Command::Simulate {
            endpoint,
            size,
            seed,
            concurrency,
        } => {
            let settings = load_settings(cli.config.as_ref())?;
            let authenticator =
                Authenticator::from_config(&settings.platform.auth).map_err(fail)?;
            if !(size > 0.0 && size <= 10.0) {
                eprintln!("cpm: --size must be more than 0 and at most 10");
                return Err(ExitCode::from(2));
            }
            let plan = crate::simulate::PlanOptions {
                seed,
                size,
                areas: settings.platform.programme.areas.clone(),
                today: chrono::Utc::now().date_naive(),
            };
            let mut options = crate::simulate::SimulateOptions::new(&endpoint, authenticator, plan);
            options.concurrency = concurrency;
            options.show_progress = true;
            let summary = crate::simulate::run(options).await.map_err(fail)?;
            print!("{}", summary.render());
            Ok(())
        }
        Command::Report {
            endpoint,
            out,
            short,
        } => {
            let settings = load_settings(cli.config.as_ref())?;
            let authenticator =
                Authenticator::from_config(&settings.platform.auth).map_err(fail)?;
            let figures = crate::report::gather(&endpoint, &authenticator)
                .await
                .map_err(fail)?;
            let text = if short {
                crate::report::render_short(&figures)
            } else {
                crate::report::render(&figures)
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .map_err(|error| fail(anyhow::anyhow!("{}: {error}", path.display())))?;
                    println!("report written to {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Import {
            file,
            endpoint,
            agency,
            report,
            concurrency,
        } => {
            let settings = load_settings(cli.config.as_ref())?;
            let authenticator =
                Authenticator::from_config(&settings.platform.auth).map_err(fail)?;
            let mut options =
                crate::import::ImportOptions::new(&file, &endpoint, &agency, authenticator);
            options.report = report.clone();
            options.concurrency = concurrency;
            options.show_progress = true;
            let summary = crate::import::run(options).await.map_err(fail)?;
            print!("{}", summary.render());
            if let Some(report) = report {
                println!("report written to {}", report.display());
            }
            if summary.all_succeeded() {
                Ok(())
            } else {
                Err(ExitCode::FAILURE)
            }
        }
    }
}

/// Parses the command line, runs the command and says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cpm: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    };
    // Tasks still alive (idle connections, say) are dropped here, on live
    // worker threads, not later while the process tears its threads down.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_traces_under_its_own_service_name() {
        assert_eq!(
            service_name(&[Target::REFERRAL_INTAKE]),
            "cpm-referral-intake"
        );
        assert_eq!(service_name(&Target::ALL), "cpm");
    }
}
