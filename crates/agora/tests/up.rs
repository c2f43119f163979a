//! The README's first command, as a user runs it: `agora up`, the printed
//! exports, the CLI against it, Ctrl-C, and a restart that resumes the same data.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, WAIT};

fn start_up(data: &Path, out: &Path) -> Child {
    Command::new(BIN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--gpus",
            "4",
            "--price",
            "2.00",
            "--round-interval-ms",
            "200",
            "--heartbeat-interval-ms",
            "200",
        ])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agora up")
}

/// Waits for `agora up` to print its exports and returns (url, tenant token).
fn exports(out: &Path) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let get = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
        if let (Some(url), Some(token)) = (get("export AGORA_URL="), get("export AGORA_TOKEN=")) {
            return (url, token);
        }
        assert!(Instant::now() < deadline, "agora up printed no exports:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cli(url: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("AGORA_URL", url)
        .env("AGORA_TOKEN", token)
        .output()
        .expect("run the CLI");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn interrupt_and_wait(mut child: Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "agora up did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_serves_the_cli_stops_on_ctrl_c_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agora-data");
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.yaml");

    let up = start_up(&data, &dir.path().join("up-1.out"));
    let (url, token) = exports(&dir.path().join("up-1.out"));
    let (code, text) = cli(&url, &token, &["submit", hello, "--wait"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("job 1 succeeded"), "{text}");
    let (code, text) = cli(&url, &token, &["logs", "1"]);
    assert_eq!(code, 0);
    assert!(text.contains("GPUs: 0,1 on lease 1"), "{text}");
    let (code, text) = cli(&url, &token, &["market", "--output", "json"]);
    assert_eq!(code, 0);
    let market: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(market["models"][0]["model"], "H100-80GB-SXM");
    assert_eq!(market["models"][0]["gpus_total"], 4);
    assert_eq!(market["models"][0]["recent_prices"][0], 2_000_000);
    let (code, text) = cli(&url, &token, &["balance", "-o", "json"]);
    assert_eq!(code, 0);
    let before: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        before["available"].as_i64().unwrap() < 1_000_000_000,
        "the job was charged: {before}"
    );
    // A failing job makes `submit --wait` exit 3.
    let failing = dir.path().join("fail.yaml");
    std::fs::write(
        &failing,
        std::fs::read_to_string(hello)
            .unwrap()
            .replace("sleep 3; echo done", "exit 3"),
    )
    .unwrap();
    let (code, text) = cli(&url, &token, &["submit", failing.to_str().unwrap(), "--wait"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("exited with code 3"), "{text}");
    assert!(interrupt_and_wait(up).success(), "Ctrl-C stops cleanly");

    // Starting again resumes the same exchange: same tokens, jobs and balance.
    let up = start_up(&data, &dir.path().join("up-2.out"));
    let (url2, token2) = exports(&dir.path().join("up-2.out"));
    assert_eq!(token2, token);
    let (code, text) = cli(&url2, &token2, &["jobs", "--output", "json"]);
    assert_eq!(code, 0, "{text}");
    let jobs: serde_json::Value = serde_json::from_str(&text).unwrap();
    let states: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "succeeded"]);
    let (_, text) = cli(&url2, &token2, &["balance", "-o", "json"]);
    let after: serde_json::Value = serde_json::from_str(&text).unwrap();
    // What was available before, less what the failed job (newest first) cost, and nothing held.
    let failed_cost = jobs[0]["cost"].as_i64().unwrap();
    assert_eq!(
        after["available"].as_i64().unwrap(),
        before["available"].as_i64().unwrap() - failed_cost
    );
    assert_eq!(after["held"], 0);
    assert!(interrupt_and_wait(up).success());
}
