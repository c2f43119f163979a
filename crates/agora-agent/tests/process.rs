//! The process runtime against real processes: environment, exit codes, output
//! capture and chunking, and stops that reach the whole process group.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agora_agent::ProcessRuntime;
use agora_proto::agent::{LaunchSpec, LogChunk, MAX_LOG_CHUNK_BYTES, PartEvent, PartRef, Stream};
use agora_types::{JobId, LeaseId, NodeId};

fn part(rank: u32) -> PartRef {
    PartRef {
        lease: LeaseId(42),
        rank,
    }
}

fn sh(rank: u32, script: &str) -> LaunchSpec {
    LaunchSpec {
        part: part(rank),
        job: JobId(1),
        node: NodeId(1),
        gpu_indices: vec![],
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::new(),
        workdir: None,
    }
}

/// Collects a runtime's output as the agent loop would, taking it out of the buffer.
#[derive(Default)]
struct Output {
    chunks: Vec<LogChunk>,
}

impl Output {
    fn collect(&mut self, rt: &ProcessRuntime) {
        let batch = rt.logs().lock().unwrap().take_batch(usize::MAX);
        self.chunks.extend(batch.chunks());
    }

    fn text(&self, part: PartRef, stream: Stream) -> String {
        self.chunks
            .iter()
            .filter(|c| c.part == part && c.stream == stream)
            .map(|c| c.data.as_str())
            .collect()
    }

    /// Waits until `part`'s `stream` contains `needle`, returning the text so far.
    async fn wait_for(&mut self, rt: &ProcessRuntime, part: PartRef, stream: Stream, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.collect(rt);
            let text = self.text(part, stream);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in {stream:?} of {part:?}; got {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn exit_of(rt: &mut ProcessRuntime) -> PartEvent {
    tokio::time::timeout(Duration::from_secs(15), rt.next_exit())
        .await
        .expect("the part exits")
}

/// Alive and not a zombie: the container's init may not reap orphans promptly.
fn is_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

async fn wait_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pids(line: &str) -> Vec<i32> {
    line.split_whitespace().map(|p| p.parse().unwrap()).collect()
}

#[tokio::test]
async fn env_and_cuda_visible_devices_reach_the_child() {
    let mut rt = ProcessRuntime::new(1 << 20);
    let mut spec = sh(
        0,
        r#"echo $CUDA_VISIBLE_DEVICES $FOO; test -n "$PATH" && echo inherited; pwd"#,
    );
    spec.env.insert("CUDA_VISIBLE_DEVICES".into(), "2,3".into());
    spec.env.insert("FOO".into(), "bar baz".into());
    let dir = tempfile::tempdir().unwrap();
    spec.workdir = Some(dir.path().to_str().unwrap().to_string());
    assert_eq!(rt.start(&spec), PartEvent::Started { part: part(0) });
    assert!(rt.is_running(part(0)));
    assert_eq!(
        exit_of(&mut rt).await,
        PartEvent::Exited {
            part: part(0),
            exit_code: Some(0),
            signal: None
        }
    );
    assert!(!rt.is_running(part(0)));
    let mut out = Output::default();
    out.collect(&rt);
    let real_dir = dir.path().canonicalize().unwrap();
    assert_eq!(
        out.text(part(0), Stream::Stdout),
        format!("2,3 bar baz\ninherited\n{}\n", real_dir.display())
    );
}

#[tokio::test]
async fn exit_code_is_reported_and_stderr_is_separate() {
    let mut rt = ProcessRuntime::new(1 << 20);
    rt.start(&sh(1, "echo to-out; echo to-err >&2; exit 3"));
    assert_eq!(
        exit_of(&mut rt).await,
        PartEvent::Exited {
            part: part(1),
            exit_code: Some(3),
            signal: None
        }
    );
    let mut out = Output::default();
    out.collect(&rt);
    assert_eq!(out.text(part(1), Stream::Stdout), "to-out\n");
    assert_eq!(out.text(part(1), Stream::Stderr), "to-err\n");
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let mut rt = ProcessRuntime::new(1 << 20);
    rt.start(&sh(2, "sleep 1000 & echo $$ $!; sleep 1000"));
    let mut out = Output::default();
    let line = out.wait_for(&rt, part(2), Stream::Stdout, "\n").await;
    let ids = pids(&line);
    assert_eq!(ids.len(), 2, "{line}");
    assert_eq!(
        ids[0] as u32,
        rt.pid(part(2)).unwrap(),
        "the shell is the part's process"
    );
    assert!(is_alive(ids[0]) && is_alive(ids[1]));

    assert!(rt.stop(part(2), Duration::from_secs(10)));
    let started = Instant::now();
    assert_eq!(
        exit_of(&mut rt).await,
        PartEvent::Exited {
            part: part(2),
            exit_code: None,
            signal: Some(15)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM, not the grace, ended it"
    );
    wait_dead(ids[0]).await;
    wait_dead(ids[1]).await;
    assert!(
        !rt.stop(part(2), Duration::ZERO),
        "a stop for a finished part does nothing"
    );
}

#[tokio::test]
async fn a_part_ignoring_sigterm_is_killed_after_the_grace() {
    let mut rt = ProcessRuntime::new(1 << 20);
    rt.start(&sh(3, "trap '' TERM; echo ready; while :; do sleep 0.05; done"));
    let mut out = Output::default();
    out.wait_for(&rt, part(3), Stream::Stdout, "ready").await;
    let grace = Duration::from_millis(400);
    let started = Instant::now();
    assert!(rt.stop(part(3), grace));
    assert_eq!(
        exit_of(&mut rt).await,
        PartEvent::Exited {
            part: part(3),
            exit_code: None,
            signal: Some(9)
        }
    );
    let took = started.elapsed();
    assert!(took >= grace, "killed after {took:?}, before the grace");
    assert!(took < grace + Duration::from_secs(4), "killed after {took:?}");
}

#[tokio::test]
async fn leftover_children_die_with_the_part() {
    let mut rt = ProcessRuntime::new(1 << 20);
    // The background sleep keeps stdout open: the exit must still be reported.
    rt.start(&sh(4, "sleep 1000 & echo $!; exit 0"));
    assert_eq!(
        exit_of(&mut rt).await,
        PartEvent::Exited {
            part: part(4),
            exit_code: Some(0),
            signal: None
        }
    );
    let mut out = Output::default();
    out.collect(&rt);
    let ids = pids(&out.text(part(4), Stream::Stdout));
    assert_eq!(ids.len(), 1);
    wait_dead(ids[0]).await;
}

#[tokio::test]
async fn a_missing_command_or_workdir_is_a_start_failure() {
    let mut rt = ProcessRuntime::new(1 << 20);
    let mut spec = sh(5, "true");
    spec.command = "/nonexistent/agora-no-such-command".into();
    match rt.start(&spec) {
        PartEvent::StartFailed { part: p, error } => {
            assert_eq!(p, part(5));
            assert!(
                error.contains("agora-no-such-command") && error.contains("No such file"),
                "{error}"
            );
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(!rt.is_running(part(5)));
    let mut spec = sh(6, "true");
    spec.workdir = Some("/nonexistent/agora-dir".into());
    match rt.start(&spec) {
        PartEvent::StartFailed { error, .. } => {
            assert!(error.contains("in `/nonexistent/agora-dir`"), "{error}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(rt.running().is_empty());
}

#[tokio::test]
async fn large_output_is_chunked_within_the_limit() {
    let mut rt = ProcessRuntime::new(4 << 20);
    // 300,000 bytes without a newline, then 50 short lines.
    rt.start(&sh(
        7,
        "head -c 300000 /dev/zero | tr '\\0' x; echo; for i in $(seq 50); do echo line $i; done",
    ));
    exit_of(&mut rt).await;
    let mut out = Output::default();
    out.collect(&rt);
    assert!(out.chunks.iter().all(|c| c.data.len() <= MAX_LOG_CHUNK_BYTES));
    assert!(
        out.chunks.len() >= 300_000usize.div_ceil(MAX_LOG_CHUNK_BYTES),
        "{} chunks",
        out.chunks.len()
    );
    let text = out.text(part(7), Stream::Stdout);
    assert_eq!(
        text.len(),
        300_001 + (1..=50).map(|i| format!("line {i}\n").len()).sum::<usize>()
    );
    assert!(text.ends_with("line 49\nline 50\n"));
    assert!(!text.contains("dropped"));
}

#[tokio::test]
async fn overflow_drops_the_oldest_output_with_a_marker() {
    // The smallest bound: one chunk of output.
    let cap = MAX_LOG_CHUNK_BYTES;
    let mut rt = ProcessRuntime::new(cap);
    rt.start(&sh(8, "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo the-end"));
    exit_of(&mut rt).await;
    let mut out = Output::default();
    out.collect(&rt);
    let first = &out.chunks[0];
    let dropped: usize = first
        .data
        .strip_prefix("[agora: ")
        .and_then(|r| r.strip_suffix(" bytes of output dropped]\n"))
        .unwrap_or_else(|| panic!("no marker first: {:?}", &first.data[..first.data.len().min(80)]))
        .parse()
        .unwrap();
    let kept: usize = out.chunks[1..].iter().map(|c| c.data.len()).sum();
    assert!(kept <= cap, "kept {kept}");
    assert_eq!(
        dropped + kept,
        1_000_000 + "\nthe-end\n".len(),
        "every byte is kept or counted"
    );
    assert!(
        out.text(part(8), Stream::Stdout).ends_with("x\nthe-end\n"),
        "the newest output is kept"
    );
}

#[tokio::test]
async fn a_partial_line_is_sent_when_the_stream_pauses() {
    let mut rt = ProcessRuntime::new(1 << 20);
    rt.start(&sh(9, "printf 'progress 50%%'; sleep 1000"));
    let mut out = Output::default();
    let started = Instant::now();
    assert_eq!(
        out.wait_for(&rt, part(9), Stream::Stdout, "progress").await,
        "progress 50%"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(rt.is_running(part(9)));
    let events = rt.stop_all(Duration::from_secs(5)).await;
    assert_eq!(
        events,
        [PartEvent::Exited {
            part: part(9),
            exit_code: None,
            signal: Some(15)
        }]
    );
    assert!(rt.running().is_empty());
}
