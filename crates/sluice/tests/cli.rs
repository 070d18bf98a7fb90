//! The CLI as a user runs it: the real binary, real files, exit codes and messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)] // test code: a failure should stop loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(repo())
        .env_remove("SLUICE_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the example config with one edit, in a temporary folder.
fn edited_example(find: &str, replace: &str) -> (tempfile::TempDir, PathBuf) {
    let src = std::fs::read_to_string(repo().join("examples/sluice.toml")).unwrap();
    assert!(src.contains(find), "the example no longer contains {find:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, src.replacen(find, replace, 1)).unwrap();
    (dir, path)
}

fn line_of(path: &Path, needle: &str) -> usize {
    let src = std::fs::read_to_string(path).unwrap();
    src.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn explain_gives_every_example_workload_its_lane() {
    let out = sluice(&["explain", "--config", "examples/sluice.toml", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let lane = |name: &str| {
        v["rows"].as_array().unwrap().iter().find(|r| r["workload"] == name).unwrap()["lane"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for name in
        ["ticket-triage", "lead-routing", "ad-spend-monitor", "fraud-check", "form-follow-up"]
    {
        assert_eq!(lane(name), "stream", "{name}");
    }
    for name in [
        "support-digest",
        "lead-scoring",
        "reconciliation",
        "daily-report",
        "content-analysis",
        "data-cleanup",
    ] {
        assert_eq!(lane(name), "batch", "{name}");
    }
    assert_eq!(lane("social-reply"), "flex");
    let total = &v["total"];
    let (stream, decided) =
        (total["stream_cost_per_day"].as_f64().unwrap(), total["cost_per_day"].as_f64().unwrap());
    assert!(decided < stream * 0.7, "batching should save a good part: {decided} vs {stream}");
    assert!((total["saving_per_month"].as_f64().unwrap() - (stream - decided) * 30.0).abs() < 1e-6);
}

#[test]
fn explain_table_shows_lanes_reasons_and_the_total() {
    let out = sluice(&["explain", "--config", "examples/sluice.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for needle in [
        "ticket-triage",
        "stream",
        "flex",
        "batch",
        "too soon for",
        "saves $",
        "total (12 workloads)",
        "a month saved",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    assert!(!table.contains('\u{1b}'), "no colour codes when NO_COLOR is set");
}

#[test]
fn check_accepts_the_example() {
    let out = sluice(&["check", "--config", "examples/sluice.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid: 2 providers, 12 workloads on 9 event types"));
}

#[test]
fn check_names_file_line_and_field_of_a_misspelt_key() {
    let (_dir, path) = edited_example("needed_within = \"2m\"", "neded_within = \"2m\"");
    let out = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let line = line_of(&path, "neded_within");
    assert!(err.contains(&format!("sluice.toml:{line}:1")), "{err}");
    assert!(err.contains("workloads[0].neded_within"), "{err}");
    assert!(err.contains("unknown field `neded_within`"), "{err}");
    assert!(err.contains("expected: one of"), "{err}");
    assert!(err.contains("did you mean `needed_within`?"), "{err}");
}

#[test]
fn check_names_an_unknown_provider() {
    let (_dir, path) = edited_example("provider = \"openai\"", "provider = \"open-ai\"");
    let out = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let line = line_of(&path, "\"open-ai\"");
    assert!(err.contains(&format!("sluice.toml:{line}:12")), "{err}");
    assert!(err.contains("workloads[2].provider"), "{err}");
    assert!(err.contains("no provider is named \"open-ai\""), "{err}");
    assert!(err.contains("did you mean `openai`?"), "{err}");
}

#[test]
fn check_refuses_an_after_cycle() {
    // lead-routing runs after lead-scoring, which already runs after lead-routing.
    let (_dir, path) = edited_example(
        "prompt = \"\"\"{{ payload.name }}, {{ payload.title }}",
        "after = \"lead-scoring\"\nprompt = \"\"\"{{ after.output }} {{ payload.name }}, {{ payload.title }}",
    );
    let out = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`after` goes round in a circle"), "{err}");
    assert!(
        err.contains("lead-routing → lead-scoring → lead-routing")
            || err.contains("lead-scoring → lead-routing → lead-scoring"),
        "{err}"
    );
    assert!(err.contains("sluice.toml:"), "{err}");
}

#[test]
fn a_missing_config_says_how_to_name_one() {
    let out = sluice(&["check", "--config", "does/not/exist.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot read config does/not/exist.toml"), "{err}");
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn every_command_and_flag_has_help() {
    for args in [&["--help"][..], &["explain", "--help"], &["check", "--help"], &["sim", "--help"]]
    {
        let out = sluice(args);
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(help.lines().count() > 3, "{help}");
    }
    let help = text(&sluice(&["explain", "--help"]).stdout);
    assert!(
        help.contains("--config") && help.contains("--format") && help.contains("json"),
        "{help}"
    );
}

/// `sluice serve` started by a shell with `ulimits` (a shell's `ulimit` arguments); returns its
/// soft and hard limits of open files once it serves, and what it logged.
#[cfg(target_os = "linux")]
fn serve_with_limits(ulimits: &str) -> ((u64, u64), String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit {ulimits} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config", "examples/sluice.toml", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .current_dir(repo())
        .env_remove("SLUICE_API_TOKENS")
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("OPENAI_API_KEY", "sk-test")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("serving on"), "{line:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let row = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let n: Vec<u64> = row.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    ((n[0], n[1]), text(&out.stderr))
}

#[cfg(target_os = "linux")]
#[test]
fn serve_raises_its_open_file_limit_and_warns_when_it_cannot() {
    // Each call in flight and each client following one holds a socket.
    let ((soft, hard), logged) = serve_with_limits("-S -n 200");
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    if hard >= 1024 {
        assert!(!logged.contains("open-file limit"), "{logged}");
    }
    // The example's two providers take 64 calls each: 128 call slots want more than 300 files.
    let ((soft, _), logged) = serve_with_limits("-n 300");
    assert_eq!(soft, 300);
    assert!(logged.contains("open-file limit is low"), "{logged}");
}
