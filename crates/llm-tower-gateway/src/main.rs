//! `llm-tower-gateway`: the OpenAI-compatible LLM gateway.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use llm_tower_gateway::{Gateway, GatewayConfig};

// A request allocates and frees many small objects, and keyed state (tenants,
// limits) churns under client-chosen keys: glibc's allocator fragments under
// that and spends a large share of the gateway's CPU in its slow path.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
llm-tower-gateway: an OpenAI-compatible LLM gateway built from llm-tower's layers

USAGE: llm-tower-gateway [OPTIONS]

OPTIONS:
  --config FILE     configuration: TOML, or JSON (.json) or YAML (.yaml, .yml)
                    by extension (default: the embedded offline config, an
                    in-process mock provider)
  --check-config    validate the configuration and exit (0 when valid)
  --listen ADDR     override server.listen (e.g. 127.0.0.1:9000)
  --print-default   print the embedded default configuration and exit
  --log-format F    text (default) or json (one JSON object per line)
  -h, --help        this help
  -V, --version     version

Logs go to stderr; set RUST_LOG (default: info). Colours only on a terminal.";

struct Args {
    config: Option<String>,
    check: bool,
    listen: Option<SocketAddr>,
    json_logs: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { config: None, check: false, listen: None, json_logs: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("llm-tower-gateway {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--print-default" => {
                print!("{}", llm_tower_gateway::DEFAULT_CONFIG.trim_start());
                std::process::exit(0);
            }
            "--check-config" => args.check = true,
            "--log-format" => {
                args.json_logs = match it.next().as_deref() {
                    Some("json") => true,
                    Some("text") => false,
                    other => return Err(format!("--log-format: text or json, not {other:?}")),
                }
            }
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?),
            "--listen" => {
                let v = it.next().ok_or("--listen needs an address")?;
                args.listen = Some(v.parse().map_err(|_| format!("--listen: not a socket address: {v:?}"))?);
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    Ok(args)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.json_logs {
        logs.json().init();
    } else {
        // No ANSI escapes in files and pipes.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    let (source, parsed) = match &args.config {
        Some(path) => (path.clone(), GatewayConfig::from_file(path)),
        None => {
            ("<embedded default>".to_string(), GatewayConfig::from_toml(llm_tower_gateway::DEFAULT_CONFIG))
        }
    };
    let mut config = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if args.check {
        return match config.validate() {
            Ok(providers) => {
                let models: usize = providers.iter().map(|p| p.models.len()).sum();
                println!("{source}: OK ({} providers, {models} models)", providers.len());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in errs {
                    eprintln!("error: {source}: {e}");
                }
                ExitCode::from(2)
            }
        };
    }
    let (listen, backlog) = (config.server.listen, config.server.listen_backlog);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let gateway = match Gateway::new(config).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match llm_tower_gateway::listen(listen, backlog) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(config = %source, models = ?gateway.models(), "llm-tower-gateway listening on http://{addr}/v1");
    match gateway.serve(listener, shutdown_signal(), grace).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
