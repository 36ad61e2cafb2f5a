//! The bench against real things over loopback: the mock on paused time for
//! the open loop's correctness, and the binary's short suite against the
//! embedded gateway for what it writes.

use std::process::Command;
use std::time::Duration;

use llm_tower_bench::{Ask, Bench, LoadParams, Options, RateParams, Report, Target};
use llm_tower_mock::{Latency, MockConfig, MockServer};
use serde_json::Value;

async fn mock(latency_ms: u64) -> MockServer {
    let latency = Latency { headers: Duration::from_millis(latency_ms), per_token: Duration::ZERO };
    MockServer::start(MockConfig { latency, ..MockConfig::default() }).await.unwrap()
}

fn bench_on(mock: &MockServer) -> Bench {
    let target = Target::url(&format!("{}/v1", mock.url()), false).unwrap();
    let opts = Options { warmup: Duration::ZERO, progress: false, ..Options::default() };
    Bench::new(&target, Ask::new("gpt-4o-mini"), None, None, opts).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_open_loop_measures_a_mock_of_known_latency() {
    let mock = mock(50).await;
    let bench = bench_on(&mock);
    let runs = bench.rate(&RateParams { qps: vec![100.0], duration: 2.0, max_in_flight: 1024 }).await;
    let s = &runs[0].summary;
    assert_eq!((s.requests, s.successes), (200, 200));
    let l = s.latency.as_ref().unwrap();
    assert!((l.p50 - 50.0).abs() <= 1.0, "p50 {} ms against a 50 ms mock", l.p50);
    assert!(l.p99 - 50.0 <= 1.0, "p99 {} ms: the mock sustains 100 qps", l.p99);
    assert_eq!(mock.stats().llm_requests, 200);
    // 100 qps for 2 s: 100 successes a second.
    assert!((s.throughput_rps - 100.0).abs() < 3.0, "{}", s.throughput_rps);
}

#[tokio::test(start_paused = true)]
async fn latency_counts_from_the_intended_send_time() {
    // One request at a time against 50 ms answers, at 100 qps: each waits for
    // the one before it. Measured from when it could be sent, every request
    // would take 50 ms; from when it was due, the backlog shows.
    let mock = mock(50).await;
    let bench = bench_on(&mock);
    let runs = bench.rate(&RateParams { qps: vec![100.0], duration: 1.0, max_in_flight: 1 }).await;
    let l = runs[0].summary.latency.clone().unwrap();
    assert_eq!(l.count, 100);
    assert!((l.min - 50.0).abs() <= 1.0, "the first is on time: {}", l.min);
    // The last is due at 990 ms and answered at 100 x 50 ms = 5 s.
    assert!((l.max - 4010.0).abs() <= 20.0, "the last waited for 99 others: {} ms", l.max);
    assert!(l.p50 > 1500.0, "p50 {} ms", l.p50);
    assert_eq!(mock.stats().max_in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn extra_headers_reach_the_upstream_with_the_request_index() {
    let mock = mock(1).await;
    let target = Target::url(&format!("{}/v1", mock.url()), false).unwrap();
    let mut ask = Ask::new("gpt-4o-mini");
    ask.headers = vec![("x-tenant".into(), "t{i}".into()), ("x-secret".into(), "hunter2".into())];
    assert!(!format!("{ask:?}").contains("hunter2"), "a header value in Debug: {ask:?}");
    let opts = Options { warmup: Duration::ZERO, progress: false, ..Options::default() };
    let bench = Bench::new(&target, ask, None, None, opts).unwrap();
    let run = bench.load(&LoadParams { concurrency: 1, requests: Some(3), duration: 10.0 }).await;
    assert_eq!(run.summary.successes, 3);
    // Only the chat calls (the bench also asks the target for its stats).
    let chats: Vec<_> =
        mock.requests().into_iter().filter(|r| r.path.ends_with("/chat/completions")).collect();
    let mut tenants: Vec<&str> = chats.iter().filter_map(|r| r.header("x-tenant")).collect();
    tenants.sort();
    assert_eq!(tenants, ["t0", "t1", "t2"]);
    assert!(chats.iter().all(|r| r.header("x-secret") == Some("hunter2")));
    let mut bad = Ask::new("gpt-4o-mini");
    bad.headers = vec![("x tenant".into(), "v".into())];
    let err = Bench::new(&target, bad, None, None, Options::default()).unwrap_err();
    assert!(err.contains("not a header name"), "{err}");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llm-tower-bench"))
}

fn ordered(d: &Value) -> bool {
    let f = |k: &str| d[k].as_f64().unwrap();
    f("min") <= f("p50")
        && f("p50") <= f("p90")
        && f("p90") <= f("p95")
        && f("p95") <= f("p99")
        && f("p99") <= f("p999")
        && f("p999") <= f("max")
}

/// The short suite, as CI and the README run it: offline, every scenario,
/// the JSON and the charts.
#[test]
fn the_short_suite_writes_a_report_and_charts() {
    let dir = std::env::temp_dir().join(format!("llm-tower-bench-suite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let json = dir.join("suite.json");
    let plots = dir.join("plots");
    std::fs::create_dir_all(&dir).unwrap();
    let out = bin()
        .args(["suite", "--short", "--embedded", "--baseline", "--no-progress", "--warmup", "0.3", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&plots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for figure in [
        "success rate",
        "avg",
        "min",
        "max",
        "p95",
        "req/s",
        "cache hit rate",
        "rate-limit denials",
        "breaker transitions",
    ] {
        assert!(stdout.contains(figure), "the summary shows {figure}:\n{stdout}");
    }

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let scenarios: Vec<&str> = runs.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    for s in ["load", "rate", "stress", "cache", "breaker"] {
        assert!(scenarios.contains(&s), "{s} in {scenarios:?}");
    }
    for r in runs {
        let s = &r["summary"];
        let l = &s["latency"];
        let counted: f64 = l["histogram"].as_array().unwrap().iter().map(|b| b[1].as_f64().unwrap()).sum();
        assert_eq!(counted as u64, s["requests"].as_u64().unwrap(), "histogram of {}", r["label"]);
        assert_eq!(l["count"], s["requests"]);
        assert!(ordered(l), "percentiles of {} are ordered: {l}", r["label"]);
        let timeline: u64 =
            r["timeline"].as_array().unwrap().iter().map(|t| t["requests"].as_u64().unwrap()).sum();
        assert_eq!(timeline, s["requests"].as_u64().unwrap());
    }
    let load = &runs[0];
    assert!(load["baseline"]["summary"]["requests"].as_u64().unwrap() > 0, "the baseline ran");
    assert_eq!(load["summary"]["cache_hits"], 0, "unique prompts: nothing a cache could answer");

    let cache = runs.iter().find(|r| r["scenario"] == "cache").unwrap();
    let ratio = cache["summary"]["cache_hit_ratio"].as_f64().unwrap();
    assert!((0.3..0.7).contains(&ratio), "half the prompts repeat: hit ratio {ratio}");
    assert!(cache["gateway"]["tokens_saved"].as_u64().unwrap() > 0);
    assert!(
        cache["summary"]["cache_hit_latency"]["p50"].as_f64()
            < cache["summary"]["cache_miss_latency"]["p50"].as_f64()
    );

    // The injected outage of `primary` shows in its breaker and in failover.
    let b = runs.iter().find(|r| r["scenario"] == "breaker").unwrap();
    let fig = &b["breaker"];
    let hops: Vec<(&str, &str, &str)> = fig["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["provider"].as_str().unwrap(), t["from"].as_str().unwrap(), t["to"].as_str().unwrap()))
        .collect();
    assert!(hops.contains(&("primary", "closed", "open")), "{hops:?}");
    assert!(b["gateway"]["breaker_transitions"].as_u64().unwrap() >= 1);
    assert!(fig["calls_to_failing_during_outage"].as_u64().unwrap() >= 1);
    assert!(fig["failover_share"].as_f64().unwrap() > 0.5, "standby answered during the outage: {fig}");
    assert!(b["summary"]["backends"]["standby"].as_u64().unwrap() > 0);
    assert!(b["gateway"]["upstream_calls_per_request"].as_f64().unwrap() >= 1.0);

    for chart in ["latency-percentiles", "latency-over-time", "throughput-over-time", "cache-hit-ratio"] {
        let svg = std::fs::read_to_string(plots.join(format!("{chart}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{chart}.svg draws lines");
        let png = std::fs::read(plots.join(format!("{chart}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}.png");
    }
    let shaded = std::fs::read_to_string(plots.join("latency-over-time.svg")).unwrap();
    assert!(shaded.contains("breaker not closed"), "the open breaker is shaded and labelled");

    // --compare: a report against itself is x1.00 throughout.
    let cmp = bin().arg("--compare").arg(&json).arg(&json).output().unwrap();
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert!(cmp.status.success() && table.contains("throughput req/s") && table.contains("x1.00"), "{table}");
    assert!(!table.contains("only in"), "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_remote_target_needs_allow_remote_and_errors_are_clear() {
    let out = bin().args(["load", "--url", "http://10.1.2.3:8080/v1", "-n", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );

    let out = bin().args(["load", "-n", "1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a target"));

    let out =
        bin().args(["load", "--embedded", "--api-key-env", "LLM_TOWER_BENCH_UNSET_VAR"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("$LLM_TOWER_BENCH_UNSET_VAR is not set"), "{err}");

    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/report-a.json");
    let out = bin().args(["--compare", fixture, "Cargo.toml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a bench report"));
}

#[test]
fn a_report_reads_back_as_written() {
    let text = include_str!("fixtures/report-a.json");
    let report: Report = serde_json::from_str(text).unwrap();
    let again: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(report, again);
    assert_eq!(report.runs[0].summary.requests, 40);
    assert!(report.table().contains("[load] c=4"));
}
