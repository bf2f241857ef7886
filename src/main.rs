//! The `ekart` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ekart::app::{Application, Databases};
use ekart::config::{Module, ServeFlags, Settings};

#[derive(Parser)]
#[command(name = "ekart", version, about = "An online shop as one binary")]
struct Cli {
    /// Configuration file (missing is fine: built-in defaults and EKART_* variables apply).
    #[arg(
        long,
        global = true,
        default_value = "ekart.toml",
        env = "EKART_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shop (the default). Applies migrations first.
    Serve {
        /// Run only these modules (comma-separated), e.g. `stock,payment`; the rest are called
        /// where `[modules.NAME] instances` says. Default: all of them (`modules.run`).
        #[arg(long, value_delimiter = ',')]
        modules: Option<Vec<Module>>,
        /// Allow dev sign-in (anyone in as anyone) on an address other computers can reach.
        #[arg(long)]
        insecure_dev_sign_in: bool,
    },
    /// Apply every module's database migrations and exit.
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted; exit non-zero if it is invalid.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = match &cli.command {
        Some(Command::Serve {
            modules,
            insecure_dev_sign_in,
        }) => ServeFlags {
            modules: modules.clone(),
            insecure_dev_sign_in: *insecure_dev_sign_in,
        },
        _ => ServeFlags::default(),
    };
    let settings = match Settings::load_with(&cli.config, flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ekart: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        command: ConfigCommand::Check,
    }) = cli.command
    {
        print!("{}", settings.redacted_toml());
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    ekart::telemetry::init(&settings.log.level);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => {
                Databases::open(&settings).await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            _ => serve(settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ekart: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    tracing::info!("Ekart is open at http://{addr}/ (API spec: http://{addr}/api/openapi.json)");
    println!("Ekart is open at http://{addr}/");
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM (what systemd and Kubernetes send): stop taking requests, finish the
/// ones in flight. Events not yet relayed stay in the outboxes for the next start.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
