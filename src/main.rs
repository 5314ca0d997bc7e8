use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use loraflow::config::Config;

/// LoRaWAN network server and application server: point Semtech UDP gateways at it,
/// register devices over REST, subscribe to decoded uplinks over MQTT.
#[derive(Debug, Parser)]
#[command(name = "loraflow", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (default: ./loraflow.toml when it exists). Every key can be
    /// overridden with LORAFLOW_<SECTION>__<KEY>, e.g. LORAFLOW_API__BIND=0.0.0.0:8080.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve,
    /// Print the effective configuration (defaults, file and environment merged) as TOML.
    Config,
    /// Virtual gateways and OTAA devices sending uplinks to a running server.
    Simulate(loraflow::simulate::SimulateArgs),
    /// Measure throughput and latency (UDP uplink in, MQTT event out) of a child or running server.
    Bench(loraflow::bench::BenchArgs),
    /// Time the hourly measurement queries over a day of values of many devices (PostgreSQL).
    BenchQuery(loraflow::bench_query::BenchQueryArgs),
    /// Manage the admin API token loraflow generated on first start.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
}

#[derive(Debug, Subcommand)]
enum AdminTokenCommand {
    /// Print a new admin token and revoke the old one (a running server refuses the old one
    /// within seconds).
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loraflow: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config => match toml_string(&config) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loraflow: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Simulate(args) => run_tool(loraflow::simulate::run(args)),
        Command::Bench(mut args) => {
            // The child server reads the same file (plus the bench's overrides).
            args.config_file = cli.config.clone();
            run_tool(loraflow::bench::run(args))
        }
        Command::BenchQuery(mut args) => {
            args.config_file = cli.config.clone();
            run_tool(loraflow::bench_query::run(args))
        }
        Command::AdminToken(AdminTokenCommand::Rotate) => {
            if !config.api.admin_token.is_empty() {
                eprintln!("loraflow: api.admin_token is set in the configuration; change it there (nothing was rotated)");
                return ExitCode::FAILURE;
            }
            run_tool(async move {
                let token = loraflow::server::rotate_admin_token(&config.database).await?;
                println!("{token}");
                Ok(())
            })
        }
        Command::Serve => {
            loraflow::server::init_tracing(&config.log);
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(serve_until_signal(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("loraflow: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs `simulate` or `bench` on a fresh runtime; their own output is on stdout.
fn run_tool<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> ExitCode {
    loraflow::server::init_tracing(&loraflow::config::LogConfig { level: "warn,sqlx=error".into(), format: "text".into() });
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(fut) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loraflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn toml_string(config: &Config) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(config)?)
}

async fn serve_until_signal(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    loraflow::server::serve(config, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
