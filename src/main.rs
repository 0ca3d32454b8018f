//! The `rempart` command: run, check, demo, cert.

use clap::{Parser, Subcommand};
use rempart::app::{self, Extras};
use rempart::policy::server::LogFormat;
use rempart::policy::store::PolicyStore;
use rempart::policy::Overrides;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the WAF's per-request buffers are many, small and short-lived.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rempart",
    version,
    about = "Edge reverse proxy that keeps online shops up, fast and safe"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a policy file.
    Run {
        /// Policy file.
        #[arg(long, default_value = "policies/woocommerce.yaml")]
        config: PathBuf,
        /// Shop listener (IP:PORT); repeat for several; replaces `server.listen`.
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<String>,
        /// Admin API listener (IP:PORT); replaces `server.admin_listen`.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<String>,
        /// Origin server (HOST:PORT); repeat for several; replaces `upstream.servers`.
        #[arg(long = "upstream", value_name = "HOST:PORT")]
        upstream: Vec<String>,
        /// Log format; replaces `server.log_format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        /// Take the listeners over from a running Rempart (zero-downtime
        /// upgrade): start this, then send SIGQUIT to the old process.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a policy file: exit 0 when valid, else list every problem as file:line:col.
    Check {
        #[arg(long, default_value = "policies/woocommerce.yaml")]
        config: PathBuf,
    },
    /// Start a sample shop on loopback with Rempart in front of it.
    Demo {
        /// Demo policy (falls back to the built-in copy of policies/demo.yaml).
        #[arg(long, default_value = "policies/demo.yaml")]
        config: PathBuf,
        /// Shop listener, replacing the demo policy's.
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<String>,
        /// Admin API listener, replacing the demo policy's.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<String>,
        /// Where the sample shop origin listens (the proxy's upstream).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        origin_listen: String,
    },
    /// Certificates: `--dev DOMAIN...` writes a self-signed development certificate.
    Cert {
        /// Domains the certificate is for (the first names the files).
        #[arg(long = "dev", value_name = "DOMAIN", num_args = 1.., required = true)]
        dev: Vec<String>,
        /// Folder to write into.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

const BUILTIN_DEMO_POLICY: &str = include_str!("../policies/demo.yaml");

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match app::check(&config) {
            Ok(snapshot) => {
                for w in &snapshot.warnings {
                    eprintln!("{w}");
                }
                println!("{}: policy OK", config.display());
                ExitCode::SUCCESS
            }
            Err(diags) => {
                eprint!("{diags}");
                eprintln!(
                    "{}: {} problem(s); the policy was not applied",
                    config.display(),
                    diags.len()
                );
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            listen,
            admin_listen,
            upstream,
            log_format,
            upgrade,
        } => {
            let overrides = Overrides {
                listen,
                admin_listen,
                upstreams: upstream,
            };
            let extras = Extras {
                upgrade,
                ..Extras::default()
            };
            start(config, overrides, log_format, extras)
        }
        Command::Demo {
            config,
            listen,
            admin_listen,
            origin_listen,
        } => {
            let config = if config.is_file() {
                config
            } else {
                match builtin_demo_policy() {
                    Ok(path) => path,
                    Err(e) => {
                        eprintln!("cannot write the built-in demo policy: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            let Ok(origin) = origin_listen.parse() else {
                eprintln!("--origin-listen `{origin_listen}` is not IP:PORT");
                return ExitCode::from(2);
            };
            let overrides = Overrides {
                listen,
                admin_listen,
                upstreams: vec![origin_listen.clone()],
            };
            let store = match app::open(config.clone(), overrides.clone()) {
                Ok(s) => s,
                Err(diags) => {
                    eprint!("{diags}");
                    return ExitCode::FAILURE;
                }
            };
            let server = app::server_settings(&store);
            let shop = server
                .listen
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default();
            println!("Rempart demo");
            println!("  shop (through Rempart): http://{shop}/");
            println!(
                "  admin API:              http://{}/metrics  /health  /ready",
                server.admin_listen
            );
            println!("  sample shop origin:     http://{origin_listen}/ (direct, for comparison)");
            println!("  try: curl -i http://{shop}/product/beanie/   |   Ctrl-C to stop");
            run_store(
                store,
                None,
                Extras {
                    demo_origin: Some(origin),
                    upgrade: false,
                },
            )
        }
        Command::Cert { dev, dir } => match rempart::edge::tls::write_dev_cert(&dir, &dev) {
            Ok((cert, key)) => {
                println!("wrote {} and {}", cert.display(), key.display());
                println!("development only: browsers will warn; see certs/README.md for production certificates");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn start(
    config: PathBuf,
    overrides: Overrides,
    log_format: Option<LogFormatArg>,
    extras: Extras,
) -> ExitCode {
    match app::open(config, overrides) {
        Ok(store) => run_store(store, log_format, extras),
        Err(diags) => {
            eprint!("{diags}");
            eprintln!("{} problem(s); not starting", diags.len());
            ExitCode::FAILURE
        }
    }
}

fn run_store(store: PolicyStore, log_format: Option<LogFormatArg>, extras: Extras) -> ExitCode {
    let format = match log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => app::server_settings(&store).log_format,
    };
    let server = app::server_settings(&store);
    let targets = rempart::observe::logging::LogTargets {
        format,
        file: server.log_file.as_deref(),
        audit: server.audit_log.as_deref(),
    };
    if let Err(e) = rempart::observe::logging::init(targets) {
        eprintln!("rempart: cannot open a log file: {e}");
        return ExitCode::from(2);
    }
    match app::run(store, extras) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rempart: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes the built-in demo policy to a temporary file.
fn builtin_demo_policy() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rempart-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("demo.yaml");
    std::fs::write(&path, BUILTIN_DEMO_POLICY)?;
    Ok(path)
}
