//! `llm-tower-mock`: run the fault-injecting mock provider.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use llm_tower_mock::{FaultPlan, MockConfig, MockLimits, MockServer};

const HELP: &str = "\
llm-tower-mock: a fault-injecting OpenAI/Anthropic-compatible mock LLM provider

USAGE: llm-tower-mock [OPTIONS]

OPTIONS:
  --host ADDR           address to bind (default 127.0.0.1)
  --port N              port (default 8090; 0 picks a free one)
  --seed N              seed for output and random faults (default 0)
  --models A,B,..       models served (default: gpt-4o-mini,gpt-4o,text-embedding-3-small,claude-3-5-haiku-latest,gemini-2.0-flash)
  --ttft-ms N           delay before the response head / first token (default 0)
  --token-ms N          delay per generated token (default 0)
  --reply-tokens N      tokens per answer (default 16)
  --rpm N --tpm N       provider-style per-minute limits (429 with retry-after when exceeded)
  --require-key KEY     answer 401 unless the request carries KEY
  --faults JSON         a fault plan, e.g. '{\"plan\":\"random\",\"faults\":[{\"kind\":\"status\",\"status\":503}],\"weights\":[0.1]}'
  -h, --help            this help

At run time: POST /mock/faults (a fault plan), GET /mock/stats, POST /mock/reset.";

fn parse() -> Result<(SocketAddr, MockConfig), String> {
    let mut host: IpAddr = [127, 0, 0, 1].into();
    let mut port = 8090u16;
    let mut cfg = MockConfig::default();
    let (mut rpm, mut tpm) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: expected a number, got {v:?}"));
        match flag.as_str() {
            "--host" => host = value.parse().map_err(|_| format!("--host: not an IP address: {value:?}"))?,
            "--port" => port = value.parse().map_err(|_| format!("--port: not a port: {value:?}"))?,
            "--seed" => cfg.seed = num(&value)?,
            "--models" => cfg.models = value.split(',').map(str::trim).map(String::from).collect(),
            "--ttft-ms" => cfg.latency.headers = Duration::from_millis(num(&value)?),
            "--token-ms" => cfg.latency.per_token = Duration::from_millis(num(&value)?),
            "--reply-tokens" => cfg.reply_tokens = num(&value)? as u32,
            "--rpm" => rpm = Some(num(&value)? as u32),
            "--tpm" => tpm = Some(num(&value)? as u32),
            "--require-key" => cfg.require_key = Some(value),
            "--faults" => {
                cfg.faults =
                    serde_json::from_str::<FaultPlan>(&value).map_err(|e| format!("--faults: {e}"))?
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if rpm.is_some() || tpm.is_some() {
        cfg.limits = Some(MockLimits { rpm: rpm.unwrap_or(u32::MAX / 2), tpm: tpm.unwrap_or(u32::MAX / 2) });
    }
    Ok((SocketAddr::new(host, port), cfg))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let (addr, cfg) = match parse() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockServer::start_on(addr, cfg).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("llm-tower-mock listening on {}/v1", mock.url());
    let _ = tokio::signal::ctrl_c().await;
    mock.shutdown().await;
    ExitCode::SUCCESS
}
