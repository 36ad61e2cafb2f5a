//! A small closed-loop load generator for the gateway's load scripts
//! (`scripts/tenant-flood.sh`, `scripts/cache-bound.sh`, `scripts/stack-cost.sh`): `--requests N` chat
//! requests over `--concurrency C` keep-alive connections, each request with
//! its own `x-tenant` value (`--tenants distinct`) or one shared value
//! (`--tenants single`), and each a different prompt (`--unique`) or the same
//! one, streamed (`--stream`) or not. Prints one line: requests, errors by
//! status, seconds, requests/s.
//!
//! It only talks to loopback addresses.
//!
//! ```sh
//! cargo run --release -p llm-tower-gateway --example load -- \
//!     --url http://127.0.0.1:8080 --requests 10000 --concurrency 32 --tenants distinct
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

struct Args {
    url: String,
    requests: u64,
    concurrency: u64,
    distinct_tenants: bool,
    unique_prompts: bool,
    stream: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        requests: 10_000,
        concurrency: 32,
        distinct_tenants: false,
        unique_prompts: false,
        stream: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--requests" => a.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--tenants" => {
                a.distinct_tenants = match value()?.as_str() {
                    "distinct" => true,
                    "single" => false,
                    v => return Err(format!("--tenants: distinct or single, not {v:?}")),
                }
            }
            "--unique" => a.unique_prompts = true,
            "--stream" => a.stream = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let authority = a.url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
    let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!("only loopback targets: {}", a.url));
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(parse()?);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, args) = (client.clone(), next.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.requests {
                    return statuses;
                }
                let prompt = if args.unique_prompts { format!("question number {i}") } else { "hello".into() };
                let stream = if args.stream { r#""stream":true,"# } else { "" };
                let body = format!(
                    r#"{{"model":"gpt-4o-mini",{stream}"temperature":0,"max_tokens":16,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
                );
                let tenant = if args.distinct_tenants { format!("tenant-{i}") } else { "tenant".into() };
                let req = Request::post(format!("{}/v1/chat/completions", args.url))
                    .header("content-type", "application/json")
                    .header("x-tenant", tenant)
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid request");
                let status = match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
                    Ok(Ok(res)) => {
                        let s = res.status().as_u16();
                        let _ = res.into_body().collect().await;
                        s
                    }
                    _ => 0,
                };
                *statuses.entry(status).or_default() += 1;
            }
        }));
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for t in tasks {
        for (s, n) in t.await? {
            *statuses.entry(s).or_default() += n;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "requests {} ok {ok} statuses {statuses:?} seconds {secs:.2} rps {:.0}",
        args.requests,
        args.requests as f64 / secs
    );
    Ok(())
}
