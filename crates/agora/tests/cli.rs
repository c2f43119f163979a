//! The command line as a user meets it in a shell: a command whose output
//! goes into a pipe that the reader already closed (`agora … | head -1`)
//! ends quietly instead of reporting a panic.

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .current_dir(&root)
        .args(["sim", "scenarios/small-market.yaml", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agora starts");
    // The reader leaves before the command prints anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("agora ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "no panic report: {stderr}");
    assert!(out.status.success(), "status {:?}, stderr: {stderr}", out.status);
}
