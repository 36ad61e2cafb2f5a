//! The gateway binary as a newcomer runs it: config files by extension, field
//! paths in errors, the README's annotated config, log formats.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_llm-tower-gateway");

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("RUST_LOG", "info").output().expect("the binary runs")
}

fn temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("llm-tower-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_readme_config_is_a_file_that_passes_check_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateway.toml");
    let file = std::fs::read_to_string(path).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains(&format!("```toml\n{file}```")),
        "the README shows examples/gateway.toml verbatim"
    );
    let out = Command::new(BIN)
        .args(["--config", path, "--check-config"])
        .env("OPENAI_API_KEY", "sk-test")
        .env("AZURE_OPENAI_API_KEY", "az-test")
        .env("ANTHROPIC_API_KEY", "ant-test")
        .env("LLM_TOWER_ADMIN_TOKEN", "admin-test")
        .env("TEAM_A_KEY", "llmt-team-a-test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (3 providers"));
}

#[test]
fn json_and_yaml_configs_are_read_by_extension_and_errors_name_the_field() {
    let json = temp("gw.json", r#"{"providers":[{"name":"m","kind":"mock","models":["gpt-4o-mini"]}]}"#);
    let out = gateway(&["--config", json.to_str().unwrap(), "--check-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = temp("gw.yaml", "providers:\n  - name: m\n    kind: mock\n    models: [gpt-4o-mini]\n");
    let out = gateway(&["--config", yaml.to_str().unwrap(), "--check-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, text) in [
        ("bad.toml", "[server]\nmax_body_bytes = \"big\"\n"),
        ("bad.json", r#"{"server":{"max_body_bytes":"big"}}"#),
        ("bad.yaml", "server:\n  max_body_bytes: big\n"),
    ] {
        let out = gateway(&["--config", temp(name, text).to_str().unwrap(), "--check-config"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("server.max_body_bytes: invalid type"), "{name}: {err}");
    }
    let nested = temp(
        "nested.toml",
        "[[providers]]\nname='m'\nkind='mock'\nmodels=['x']\n[providers.timeouts]\nheaders_ms=-1\n",
    );
    let err = String::from_utf8_lossy(&gateway(&["--config", nested.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("providers[0].timeouts.headers_ms"), "{err}");
}

/// Starts the gateway on an ephemeral port and returns its first log line.
fn first_log_line(extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    while !line.contains("listening on") {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn logs_have_no_ansi_escapes_off_a_terminal_and_can_be_json() {
    let text = first_log_line(&[]);
    assert!(text.contains("listening on http://127.0.0.1:"), "{text}");
    assert!(!text.contains('\u{1b}'), "no escape codes in a pipe: {text:?}");
    let json = first_log_line(&["--log-format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object per line");
    assert_eq!(v["level"], "INFO");
    assert!(v["fields"]["message"].as_str().unwrap().contains("listening on"));
}

#[test]
fn the_example_configs_pass_check_config() {
    for (name, env) in [("keys.toml", ("TEAM_A_KEY", "llmt-k")), ("shared.toml", ("UNUSED", ""))] {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(BIN)
            .args(["--config", &path, "--check-config"])
            .env(env.0, env.1)
            .env("LLM_TOWER_ADMIN_TOKEN", "admin-test")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let shared =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shared.toml")).unwrap();
    assert!(
        readme.contains(&format!("```toml\n{shared}```")),
        "the README shows examples/shared.toml verbatim"
    );
}
