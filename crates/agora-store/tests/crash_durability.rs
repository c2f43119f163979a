//! Kill -9 durability: a child process appends events and prints each acknowledged seq; the
//! parent kills it with SIGKILL mid-stream, reopens the store and checks that every acknowledged
//! event is there, with dense seqs and untorn payloads.
//!
//! SIGKILL leaves the operating system's page cache intact, so this proves the process-crash
//! half of durability (nothing acknowledged lives only in our process); the power-loss half
//! rests on `synchronous=FULL`, which `sqlite.rs` tests is in force.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use agora_store::{SqliteStore, Store};

/// Set in the child's environment to the store path: the test then acts as the writer.
const CHILD_ENV: &str = "AGORA_STORE_CRASH_CHILD";
const TEST_NAME: &str = "acknowledged_events_survive_sigkill";
/// Acks the parent waits for before killing, per round.
const ACKS_PER_ROUND: usize = 200;
const ROUNDS: usize = 3;
/// How long the parent waits for one ack before calling the child stuck.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

fn event_payload(seq: u64) -> Vec<u8> {
    // Long enough that a torn write could show, and checkable against its seq.
    format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "p".repeat((seq % 97) as usize)).into_bytes()
}

/// The child: appends batches of 1..=8 events forever, printing `ack SEQ` after each commit.
fn run_child(path: &Path) -> ! {
    let mut store = SqliteStore::open(path).expect("child opens the store");
    let mut out = std::io::stdout().lock();
    let mut batch_len = 1;
    loop {
        let first = store.last_seq().expect("last_seq") + 1;
        let batch: Vec<_> = (first..first + batch_len).map(event_payload).collect();
        let last = store.append(&batch).expect("append");
        assert_eq!(last, first + batch_len - 1);
        writeln!(out, "ack {last}").expect("stdout");
        out.flush().expect("stdout");
        batch_len = batch_len % 8 + 1;
    }
}

/// Kills the child when the parent's checks panic, so a failing test leaves no writer behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_events_survive_sigkill() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agora.db");
    let mut max_acked = 0;
    for round in 0..ROUNDS {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn child"),
        );
        let stdout = child.0.stdout.take().unwrap();
        // Lines are read on a thread so that a stuck child fails the test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(seq) = line.strip_prefix("ack ") else {
                    continue;
                };
                if tx.send(seq.parse::<u64>().expect("ack seq")).is_err() {
                    break;
                }
            }
        });
        let mut acks = 0;
        while acks < ACKS_PER_ROUND {
            match rx.recv_timeout(ACK_TIMEOUT) {
                Ok(seq) => {
                    assert!(seq > max_acked, "round {round}: ack {seq} after {max_acked}");
                    max_acked = seq;
                    acks += 1;
                }
                Err(err) => {
                    let status = child.0.kill().and_then(|()| child.0.wait());
                    panic!("round {round}: child stopped acking after {acks} acks ({err}); {status:?}");
                }
            }
        }
        // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no SQLite cleanup.
        child.0.kill().expect("SIGKILL the child");
        child.0.wait().expect("reap the child");
        reader.join().unwrap();
        // Acks printed between our last read and the kill count too.
        while let Ok(seq) = rx.try_recv() {
            max_acked = max_acked.max(seq);
        }

        let store = SqliteStore::open(&path).expect("reopen after SIGKILL");
        let last = store.last_seq().unwrap();
        assert!(
            last >= max_acked,
            "round {round}: acknowledged seq {max_acked} lost, store ends at {last}"
        );
        // read_events itself reports a gap as corruption; check density and payloads here too.
        let events = store.read_events(0, usize::MAX).unwrap();
        assert_eq!(events.len() as u64, last, "round {round}: seqs are dense");
        for (i, (seq, bytes)) in events.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "round {round}: seq order");
            assert_eq!(*bytes, event_payload(*seq), "round {round}: payload of seq {seq}");
        }
    }
    assert!(max_acked >= (ACKS_PER_ROUND * ROUNDS) as u64);
}
