//! The `ekart` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ekart::app::{Application, Databases};
use ekart::config::{LogFormat, Module, ServeFlags, Settings};
use ekart::datacopy::CopyRequest;

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
    /// Move a shop's data between stores.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Copy every module's tables from SQLite files into PostgreSQL, in one transaction, and
    /// compare row counts and money on both sides. Stop the shop first.
    Copy {
        /// The shop's SQLite directory, e.g. `sqlite://data/`.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, e.g. `postgres://shop:secret@db/ekart`.
        #[arg(long)]
        to: String,
        /// Copy even if the target's tables hold rows: add to them instead of refusing.
        #[arg(long)]
        into_nonempty: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted; exit non-zero if it is invalid.
    Check,
}

/// mimalloc instead of the system allocator: a request allocates and frees hundreds of small
/// buffers (rows, JSON, events), and glibc's malloc and free were ~18% of a checkout's
/// instructions (`bench/callgrind.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Copying needs no shop configuration: both databases are on its command line.
    if let Some(Command::Data {
        command:
            DataCommand::Copy {
                from,
                to,
                into_nonempty,
            },
    }) = cli.command
    {
        return data_copy(CopyRequest {
            from,
            to,
            into_nonempty,
        });
    }
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
    let settings = match Settings::load_with(&cli.config, flags.clone()) {
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
        print!("{}", ekart::reload::mark_live(&settings.redacted_toml()));
        println!(
            "\n# Keys marked `# live` reload when the file changes or on SIGHUP; every other \
             key needs a restart."
        );
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    ekart::telemetry::init_with(&settings.log.level, settings.telemetry.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => {
                Databases::open(&settings).await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            _ => serve(settings, cli.config, flags).await,
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

fn data_copy(request: CopyRequest) -> ExitCode {
    ekart::telemetry::init("warn");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(ekart::datacopy::copy(&request)) {
        Ok(report) => {
            print!("{}", report.render());
            if report.committed {
                println!("copied and verified: start the shop with database.url set to the target");
                ExitCode::SUCCESS
            } else {
                eprintln!("ekart: the copy differs from the source (DIFFERS above); rolled back, the target is as it was");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ekart: data copy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings, file: PathBuf, flags: ServeFlags) -> anyhow::Result<()> {
    // With JSON logs, every line of standard output is an object for a log shipper.
    let plain = settings.telemetry.log_format == LogFormat::Text;
    // Listen for signals before the port opens: a SIGTERM that arrives the moment the shop
    // accepts connections must stop it cleanly, not kill it with the default action.
    let stop = shutdown_signal()?;
    let mut app = Application::build(settings).await?;
    // The live keys follow the file (and SIGHUP) from now on.
    app.watch_config(file, flags)?;
    let addr = app.local_addr();
    tracing::info!("Ekart is open at http://{addr}/ (API spec: http://{addr}/api/openapi.json)");
    if plain {
        println!("Ekart is open at http://{addr}/");
    }
    app.run_until(stop).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM (what systemd and Kubernetes send): stop taking requests, finish the
/// ones in flight. Events not yet relayed stay in the outboxes for the next start. The
/// handlers are installed when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
