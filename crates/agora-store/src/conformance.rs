//! The conformance suite every [`Store`] backend must pass.
//!
//! A backend's test calls [`run_all`] with a constructor of fresh, empty stores, and
//! [`survives_reopen`] with a function that reopens the same durable store. Each check is also
//! public on its own, so a failing one can be run alone. The checks panic (they are assertions)
//! with a message that names what broke; [`run_all`] prints the name of each check before it
//! runs, so a failure in captured test output says which one it was.
//!
//! This module is compiled into the library, not behind `cfg(test)`, because the tests of other
//! backends (and of other crates) run it.

use agora_types::{JobId, LeaseId};

use crate::{LogRecord, LogStream, Store, StoreError, StoredLog};

/// A named conformance check that takes one fresh, empty store.
pub type Check = fn(&mut dyn Store);

/// Every check that needs only a fresh store, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("seqs_are_dense_from_one", seqs_are_dense_from_one),
    ("empty_append_is_a_noop", empty_append_is_a_noop),
    ("read_events_windows", read_events_windows),
    ("binary_payloads_round_trip", binary_payloads_round_trip),
    ("large_payloads_round_trip", large_payloads_round_trip),
    ("snapshots_keep_the_newest", snapshots_keep_the_newest),
    (
        "compaction_forgets_only_what_the_snapshot_covers",
        compaction_forgets_only_what_the_snapshot_covers,
    ),
    (
        "logs_are_ordered_per_job_and_isolated",
        logs_are_ordered_per_job_and_isolated,
    ),
    ("empty_log_append_is_a_noop", empty_log_append_is_a_noop),
    ("prune_keeps_newest_within_budget", prune_keeps_newest_within_budget),
    (
        "log_seqs_are_never_reused_after_prune",
        log_seqs_are_never_reused_after_prune,
    ),
    ("random_operations_match_model", random_operations_match_model),
];

/// Runs every check of [`CHECKS`], each on a fresh store from `make`.
pub fn run_all(make: &mut dyn FnMut() -> Box<dyn Store>) {
    for (name, check) in CHECKS {
        eprintln!("store conformance: {name}");
        let mut store = make();
        check(store.as_mut());
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("{{\"event\":{seq}}}").into_bytes()
}

fn log(job: u64, lease: u64, rank: u32, stream: LogStream, data: &str) -> LogRecord {
    LogRecord {
        job: JobId(job),
        lease: LeaseId(lease),
        rank,
        stream,
        data: data.to_owned(),
    }
}

fn all_events(store: &dyn Store) -> Vec<(u64, Vec<u8>)> {
    store.read_events(0, usize::MAX).expect("read_events")
}

fn all_logs(store: &dyn Store, job: u64) -> Vec<StoredLog> {
    store.read_logs(JobId(job), 0, usize::MAX).expect("read_logs")
}

fn records(logs: &[StoredLog]) -> Vec<LogRecord> {
    logs.iter().map(StoredLog::record).collect()
}

fn assert_strictly_increasing(logs: &[StoredLog], context: &str) {
    for pair in logs.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "{context}: log seqs not increasing: {} then {}",
            pair[0].seq,
            pair[1].seq
        );
    }
}

/// Seqs start at 1, are dense, and `append` returns the seq of the batch's last event.
pub fn seqs_are_dense_from_one(store: &mut dyn Store) {
    assert_eq!(store.last_seq().unwrap(), 0, "a new store has no events");
    assert!(store.read_events(0, 10).unwrap().is_empty());
    assert_eq!(store.append(&[payload(1)]).unwrap(), 1, "the first seq is 1");
    assert_eq!(
        store.append(&[payload(2), payload(3), payload(4)]).unwrap(),
        4,
        "append returns the seq of the batch's last event"
    );
    assert_eq!(store.append(&[payload(5)]).unwrap(), 5);
    assert_eq!(store.last_seq().unwrap(), 5);
    let expected: Vec<_> = (1..=5).map(|seq| (seq, payload(seq))).collect();
    assert_eq!(all_events(store), expected);
}

/// Appending an empty slice writes nothing and returns the current last seq.
pub fn empty_append_is_a_noop(store: &mut dyn Store) {
    assert_eq!(store.append(&[]).unwrap(), 0);
    assert_eq!(store.last_seq().unwrap(), 0);
    store.append(&[payload(1), payload(2)]).unwrap();
    assert_eq!(store.append(&[]).unwrap(), 2);
    assert_eq!(store.last_seq().unwrap(), 2);
    assert_eq!(store.append(&[payload(3)]).unwrap(), 3, "no seq was consumed");
    assert_eq!(all_events(store).len(), 3);
}

/// `read_events(after, limit)` returns the window `after+1 ..= after+limit`, clipped to the log.
pub fn read_events_windows(store: &mut dyn Store) {
    let batch: Vec<_> = (1..=10).map(payload).collect();
    assert_eq!(store.append(&batch).unwrap(), 10);
    let seqs = |after: u64, limit: usize| -> Vec<u64> {
        let events = store.read_events(after, limit).unwrap();
        for (seq, bytes) in &events {
            assert_eq!(*bytes, payload(*seq), "payload of seq {seq}");
        }
        events.into_iter().map(|(seq, _)| seq).collect()
    };
    assert_eq!(seqs(0, 3), vec![1, 2, 3]);
    assert_eq!(seqs(3, 3), vec![4, 5, 6]);
    assert_eq!(seqs(9, 5), vec![10]);
    assert_eq!(seqs(10, 5), Vec::<u64>::new());
    assert_eq!(seqs(100, 5), Vec::<u64>::new());
    assert_eq!(seqs(0, 0), Vec::<u64>::new());
    assert_eq!(seqs(u64::MAX, 1), Vec::<u64>::new());
    assert_eq!(seqs(0, usize::MAX), (1..=10).collect::<Vec<_>>());
    // Paging with the last seen seq as cursor visits every event once.
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = seqs(cursor, 4);
        let Some(&last) = page.last() else { break };
        seen.extend(page);
        cursor = last;
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

/// Event and snapshot payloads are bytes, not text: every byte value, NULs, invalid UTF-8 and
/// the empty payload come back exactly.
pub fn binary_payloads_round_trip(store: &mut dyn Store) {
    let payloads: Vec<Vec<u8>> = vec![
        Vec::new(),
        (0..=255u8).collect(),
        vec![0; 64],
        vec![0xFF, 0xFE, 0x00, 0xC3, 0x28],
        b"nul\0in the middle\0".to_vec(),
        br#"{"kind":"OrderSubmitted","price":"1.25"}"#.to_vec(),
    ];
    let last = store.append(&payloads).unwrap();
    assert_eq!(last, payloads.len() as u64);
    let read: Vec<_> = all_events(store).into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(read, payloads);

    let snapshot: Vec<u8> = (0..=255u8).rev().chain([0, 0, 0]).collect();
    store.save_snapshot(last, &snapshot).unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some((last, snapshot)));
    store.save_snapshot(last, &[]).unwrap();
    assert_eq!(
        store.latest_snapshot().unwrap(),
        Some((last, Vec::new())),
        "an empty snapshot is a snapshot, not a missing one"
    );
}

/// 1 MiB events, snapshots and log records round-trip.
pub fn large_payloads_round_trip(store: &mut dyn Store) {
    const MIB: usize = 1 << 20;
    let big: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    let other: Vec<u8> = big.iter().rev().copied().collect();
    assert_eq!(store.append(&[big.clone(), payload(2), other.clone()]).unwrap(), 3);
    assert_eq!(all_events(store), vec![(1, big.clone()), (2, payload(2)), (3, other)]);
    store.save_snapshot(3, &big).unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some((3, big)));

    let text: String = "line of output ✓\n".chars().cycle().take(MIB).collect();
    store.append_logs(&[log(1, 1, 0, LogStream::Stdout, &text)]).unwrap();
    let logs = all_logs(store, 1);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].data, text);
}

/// Only the newest snapshot is kept; older ones change nothing; one ahead of the log is refused.
pub fn snapshots_keep_the_newest(store: &mut dyn Store) {
    assert_eq!(store.latest_snapshot().unwrap(), None);
    match store.save_snapshot(1, b"ahead") {
        Err(StoreError::SnapshotAhead { seq: 1, last_seq: 0 }) => {}
        other => panic!("a snapshot ahead of an empty log must be refused, got {other:?}"),
    }
    assert_eq!(store.latest_snapshot().unwrap(), None);
    store.save_snapshot(0, b"genesis").unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some((0, b"genesis".to_vec())));

    let batch: Vec<_> = (1..=5).map(payload).collect();
    store.append(&batch).unwrap();
    store.save_snapshot(3, b"at 3").unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some((3, b"at 3".to_vec())));
    store.save_snapshot(5, b"at 5").unwrap();
    assert_eq!(store.latest_snapshot().unwrap(), Some((5, b"at 5".to_vec())));
    store.save_snapshot(5, b"at 5 again").unwrap();
    assert_eq!(
        store.latest_snapshot().unwrap(),
        Some((5, b"at 5 again".to_vec())),
        "saving the same seq replaces the bytes"
    );
    store.save_snapshot(2, b"at 2").unwrap();
    assert_eq!(
        store.latest_snapshot().unwrap(),
        Some((5, b"at 5 again".to_vec())),
        "an older snapshot does not replace a newer one"
    );
    match store.save_snapshot(6, b"ahead") {
        Err(StoreError::SnapshotAhead { seq: 6, last_seq: 5 }) => {}
        other => panic!("a snapshot ahead of the log must be refused, got {other:?}"),
    }
    assert_eq!(store.latest_snapshot().unwrap(), Some((5, b"at 5 again".to_vec())));
    assert_eq!(store.last_seq().unwrap(), 5, "snapshots do not touch the event log");
}

/// Compaction forgets events a snapshot covers, never the newest (seqs go
/// on from it), and refuses to forget what no snapshot covers.
pub fn compaction_forgets_only_what_the_snapshot_covers(store: &mut dyn Store) {
    store.append(&(1..=6).map(payload).collect::<Vec<_>>()).unwrap();
    match store.compact(2) {
        Err(StoreError::CompactAhead {
            through: 2,
            snapshot: 0,
        }) => {}
        other => panic!("compaction without a snapshot must be refused, got {other:?}"),
    }
    store.save_snapshot(4, b"at 4").unwrap();
    match store.compact(5) {
        Err(StoreError::CompactAhead {
            through: 5,
            snapshot: 4,
        }) => {}
        other => panic!("compaction past the snapshot must be refused, got {other:?}"),
    }
    assert_eq!(all_events(store).len(), 6, "a refused compaction forgets nothing");
    assert_eq!(store.compact(4).unwrap(), 4);
    assert_eq!(
        all_events(store),
        vec![(5, payload(5)), (6, payload(6))],
        "recovery reads the snapshot and what follows it"
    );
    assert_eq!(store.read_events(0, 1).unwrap(), vec![(5, payload(5))]);
    assert_eq!(store.compact(4).unwrap(), 0, "compacting again forgets nothing more");
    // A snapshot of the newest event: every event but the newest goes, and seqs go on.
    store.save_snapshot(6, b"at 6").unwrap();
    assert_eq!(store.compact(6).unwrap(), 1);
    assert_eq!(all_events(store), vec![(6, payload(6))]);
    assert_eq!(store.last_seq().unwrap(), 6);
    assert_eq!(store.append(&[payload(7)]).unwrap(), 7);
    assert_eq!(store.latest_snapshot().unwrap(), Some((6, b"at 6".to_vec())));
}

/// Log records come back per job in append order with all fields; jobs do not see each other's.
pub fn logs_are_ordered_per_job_and_isolated(store: &mut dyn Store) {
    let first = vec![
        log(1, 10, 0, LogStream::Stdout, "job 1 line 1\n"),
        log(2, 20, 0, LogStream::Stdout, "job 2 line 1\n"),
        log(1, 10, 1, LogStream::Stderr, "job 1 rank 1 warning\n"),
    ];
    let second = vec![
        log(2, 21, 3, LogStream::Stderr, "job 2 on a new lease ✓\n"),
        log(1, 11, 0, LogStream::Stdout, "job 1 after preemption\n"),
        log(1, 11, 7, LogStream::Stdout, ""),
    ];
    store.append_logs(&first).unwrap();
    store.append_logs(&second).unwrap();
    let everything: Vec<_> = first.iter().chain(&second).cloned().collect();

    let job1 = all_logs(store, 1);
    let job2 = all_logs(store, 2);
    let expect = |job: u64| -> Vec<LogRecord> { everything.iter().filter(|r| r.job == JobId(job)).cloned().collect() };
    assert_eq!(records(&job1), expect(1), "job 1 sees its records in order");
    assert_eq!(records(&job2), expect(2), "job 2 sees its records in order");
    assert!(all_logs(store, 3).is_empty(), "a job without output sees nothing");
    assert_strictly_increasing(&job1, "job 1");
    assert_strictly_increasing(&job2, "job 2");

    // Seqs are per store: merged by seq, the two jobs give back the global append order.
    let mut merged: Vec<_> = job1.iter().chain(&job2).cloned().collect();
    merged.sort_by_key(|l| l.seq);
    assert_eq!(records(&merged), everything, "seqs follow the global append order");

    // Windows: after a seq, at most `limit`.
    let after_first = store.read_logs(JobId(1), job1[0].seq, 2).unwrap();
    assert_eq!(after_first, job1[1..3].to_vec());
    let tail = store.read_logs(JobId(1), job1[2].seq, 10).unwrap();
    assert_eq!(tail, job1[3..].to_vec());
    assert!(store.read_logs(JobId(1), job1[3].seq, 10).unwrap().is_empty());
    assert!(store.read_logs(JobId(1), 0, 0).unwrap().is_empty());
    // A cursor taken from another job's seqs still works: seqs are comparable store-wide.
    let after_job2_first = store.read_logs(JobId(1), job2[0].seq, 10).unwrap();
    assert_eq!(after_job2_first, job1[1..].to_vec());
}

/// Appending no log records is allowed and stores nothing.
pub fn empty_log_append_is_a_noop(store: &mut dyn Store) {
    store.append_logs(&[]).unwrap();
    assert!(all_logs(store, 1).is_empty());
    store.append_logs(&[log(1, 1, 0, LogStream::Stdout, "x")]).unwrap();
    store.append_logs(&[]).unwrap();
    assert_eq!(all_logs(store, 1).len(), 1);
}

/// Pruning deletes a job's oldest records until its data fits the byte budget, counting UTF-8
/// bytes, and leaves other jobs alone.
pub fn prune_keeps_newest_within_budget(store: &mut dyn Store) {
    let sized = |job: u64, bytes: usize| log(job, 1, 0, LogStream::Stdout, &"x".repeat(bytes));
    store
        .append_logs(&[sized(1, 10), sized(2, 50), sized(1, 20), sized(1, 30)])
        .unwrap();
    store.append_logs(&[sized(2, 60), sized(1, 40)]).unwrap();
    let job2_before = all_logs(store, 2);

    assert_eq!(store.prune_logs(JobId(1), 1000).unwrap(), 0, "within budget");
    assert_eq!(store.prune_logs(JobId(1), 100).unwrap(), 0, "exactly the budget");
    assert_eq!(all_logs(store, 1).len(), 4);

    // 40 + 30 = 70 fits 75, adding 20 would not: the 10 and the 20 go.
    assert_eq!(store.prune_logs(JobId(1), 75).unwrap(), 30);
    let sizes: Vec<_> = all_logs(store, 1).iter().map(|l| l.data.len()).collect();
    assert_eq!(sizes, vec![30, 40], "the newest records remain, in order");
    assert_eq!(all_logs(store, 2), job2_before, "other jobs are untouched");

    // Records are deleted whole: a newest record larger than the budget goes too.
    assert_eq!(store.prune_logs(JobId(1), 39).unwrap(), 70);
    assert!(all_logs(store, 1).is_empty());
    assert_eq!(store.prune_logs(JobId(1), 0).unwrap(), 0, "nothing left to prune");
    assert_eq!(store.prune_logs(JobId(9), 0).unwrap(), 0, "a job without logs");
    assert_eq!(all_logs(store, 2), job2_before);

    // The budget is in bytes, not characters: "ü" is two bytes.
    store
        .append_logs(&[
            log(3, 1, 0, LogStream::Stderr, "üüüü"),
            log(3, 1, 0, LogStream::Stderr, "ab"),
        ])
        .unwrap();
    assert_eq!(store.prune_logs(JobId(3), 9).unwrap(), 8);
    let left: Vec<_> = all_logs(store, 3).into_iter().map(|l| l.data).collect();
    assert_eq!(left, vec!["ab".to_owned()]);
}

/// A seq is never handed out twice, even when pruning deleted the newest records of the store:
/// a reader following a job from its last seen seq must not miss new output.
pub fn log_seqs_are_never_reused_after_prune(store: &mut dyn Store) {
    store
        .append_logs(&[
            log(1, 1, 0, LogStream::Stdout, "a"),
            log(1, 1, 0, LogStream::Stdout, "b"),
            log(1, 1, 0, LogStream::Stdout, "c"),
        ])
        .unwrap();
    let cursor = all_logs(store, 1).last().expect("three records").seq;
    assert_eq!(store.prune_logs(JobId(1), 0).unwrap(), 3);
    store
        .append_logs(&[log(1, 2, 0, LogStream::Stdout, "after restart")])
        .unwrap();
    let new = store.read_logs(JobId(1), cursor, 10).unwrap();
    assert_eq!(new.len(), 1, "the reader at seq {cursor} sees the new record");
    assert!(new[0].seq > cursor);
    assert_eq!(new[0].data, "after restart");
}

/// Seeded random operations against a store and a plain in-memory model agree on every read.
pub fn random_operations_match_model(store: &mut dyn Store) {
    for seed in [1, 2, 3, 0xA60A] {
        random_operations_match_model_with_seed(store, seed, 300);
    }
}

/// splitmix64: a tiny deterministic generator, so the suite needs no RNG crate and a failure is
/// reproduced by its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be positive.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the store should contain, kept as plain vectors.
#[derive(Default)]
struct Model {
    events: Vec<Vec<u8>>,
    snapshot: Option<(u64, Vec<u8>)>,
    /// Records per job, oldest first; jobs are 1..=3 so a vector indexed by job is enough.
    logs: [Vec<LogRecord>; 4],
}

/// Applies `steps` random operations to `store`, which may already hold data from an earlier
/// seed: the model starts from what the store reads back. Panics with the seed and step on the
/// first disagreement.
pub fn random_operations_match_model_with_seed(store: &mut dyn Store, seed: u64, steps: usize) {
    let mut rng = SplitMix(seed);
    let mut model = Model {
        events: all_events(store).into_iter().map(|(_, b)| b).collect(),
        snapshot: store.latest_snapshot().unwrap(),
        ..Model::default()
    };
    for job in 1..=3 {
        model.logs[job] = records(&all_logs(store, job as u64));
    }
    let mut max_log_seq = (1..=3)
        .filter_map(|job| all_logs(store, job).last().map(|l| l.seq))
        .max()
        .unwrap_or(0);

    for step in 0..steps {
        let at = format!("seed {seed} step {step}");
        match rng.below(7) {
            0 => {
                let count = rng.below(5) as usize;
                let batch: Vec<Vec<u8>> = (0..count)
                    .map(|_| {
                        let len = rng.below(48) as usize;
                        (0..len).map(|_| rng.next() as u8).collect()
                    })
                    .collect();
                let last = store.append(&batch).unwrap();
                model.events.extend(batch);
                assert_eq!(last, model.events.len() as u64, "{at}: append result");
            }
            1 => {
                let len = model.events.len() as u64;
                let after = rng.below(len + 3);
                let limit = rng.below(8) as usize;
                let got = store.read_events(after, limit).unwrap();
                let want: Vec<(u64, Vec<u8>)> = model
                    .events
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i as u64 + 1, b.clone()))
                    .skip(after as usize)
                    .take(limit)
                    .collect();
                assert_eq!(got, want, "{at}: read_events({after}, {limit})");
            }
            2 => {
                let len = model.events.len() as u64;
                let seq = rng.below(len + 2);
                let bytes = seq.to_le_bytes().repeat(rng.below(4) as usize);
                match store.save_snapshot(seq, &bytes) {
                    Ok(()) => {
                        assert!(seq <= len, "{at}: snapshot ahead of the log accepted");
                        if model.snapshot.as_ref().is_none_or(|(s, _)| seq >= *s) {
                            model.snapshot = Some((seq, bytes));
                        }
                    }
                    Err(StoreError::SnapshotAhead { .. }) => {
                        assert!(seq > len, "{at}: snapshot at {seq} refused");
                    }
                    Err(err) => panic!("{at}: save_snapshot failed: {err}"),
                }
                assert_eq!(store.latest_snapshot().unwrap(), model.snapshot, "{at}");
            }
            3 | 4 => {
                let count = rng.below(4) as usize;
                let batch: Vec<LogRecord> = (0..count)
                    .map(|_| {
                        let job = 1 + rng.below(3);
                        let stream = if rng.below(2) == 0 {
                            LogStream::Stdout
                        } else {
                            LogStream::Stderr
                        };
                        let len = rng.below(12) as usize;
                        let data: String = (0..len)
                            .map(|_| ['a', 'z', '\n', 'é', '✓', ' '][rng.below(6) as usize])
                            .collect();
                        log(job, rng.below(3), rng.below(4) as u32, stream, &data)
                    })
                    .collect();
                store.append_logs(&batch).unwrap();
                let mut appended = [0usize; 4];
                for record in batch {
                    appended[record.job.0 as usize] += 1;
                    model.logs[record.job.0 as usize].push(record);
                }
                // New records get seqs above every seq handed out before, pruned ones included.
                let mut newest = max_log_seq;
                for (job, &count) in appended.iter().enumerate().skip(1) {
                    let stored = all_logs(store, job as u64);
                    for new in &stored[stored.len() - count..] {
                        assert!(
                            new.seq > max_log_seq,
                            "{at}: log seq {} reused (seen up to {max_log_seq})",
                            new.seq
                        );
                        newest = newest.max(new.seq);
                    }
                }
                max_log_seq = newest;
            }
            5 => {
                let job = 1 + rng.below(3) as usize;
                let stored = all_logs(store, job as u64);
                assert_eq!(records(&stored), model.logs[job], "{at}: logs of job {job}");
                assert_strictly_increasing(&stored, &at);
                if !stored.is_empty() {
                    let from = rng.below(stored.len() as u64) as usize;
                    let limit = rng.below(4) as usize;
                    let window = store.read_logs(JobId(job as u64), stored[from].seq, limit).unwrap();
                    let want: Vec<_> = stored[from + 1..].iter().take(limit).cloned().collect();
                    assert_eq!(window, want, "{at}: log window of job {job}");
                }
            }
            _ => {
                let job = 1 + rng.below(3) as usize;
                let keep_bytes = rng.below(40);
                let kept = &mut model.logs[job];
                let mut total: u64 = kept.iter().map(|r| r.data.len() as u64).sum();
                let mut want_deleted = 0;
                while total > keep_bytes {
                    let oldest = kept.remove(0);
                    total -= oldest.data.len() as u64;
                    want_deleted += oldest.data.len() as u64;
                }
                let deleted = store.prune_logs(JobId(job as u64), keep_bytes).unwrap();
                assert_eq!(deleted, want_deleted, "{at}: prune_logs({job}, {keep_bytes})");
            }
        }
    }
    assert_eq!(
        store.last_seq().unwrap(),
        model.events.len() as u64,
        "seed {seed}: last_seq"
    );
    for job in 1..=3 {
        assert_eq!(
            records(&all_logs(store, job as u64)),
            model.logs[job],
            "seed {seed}: job {job}"
        );
    }
}

/// Everything acknowledged survives closing and reopening the store, and appends continue where
/// they left off. `open` must open the same durable store each time (the first call may create
/// it); each store it returns is dropped before the next call.
pub fn survives_reopen(open: &mut dyn FnMut() -> Box<dyn Store>) {
    let binary: Vec<u8> = (0..=255u8).collect();
    let log_cursor = {
        let mut store = open();
        assert_eq!(store.last_seq().unwrap(), 0, "survives_reopen needs an empty store");
        store.append(&[payload(1), binary.clone(), payload(3)]).unwrap();
        store.save_snapshot(2, b"snapshot at 2").unwrap();
        store
            .append_logs(&[
                log(1, 1, 0, LogStream::Stdout, "old"),
                log(1, 1, 0, LogStream::Stdout, "kept ✓"),
                log(2, 5, 1, LogStream::Stderr, "other job"),
            ])
            .unwrap();
        assert_eq!(store.prune_logs(JobId(1), 10).unwrap(), 3);
        all_logs(store.as_ref(), 2).last().expect("one record").seq
    };

    let expected_events = vec![(1, payload(1)), (2, binary.clone()), (3, payload(3))];
    {
        let mut store = open();
        assert_eq!(store.last_seq().unwrap(), 3);
        assert_eq!(all_events(store.as_ref()), expected_events);
        assert_eq!(store.latest_snapshot().unwrap(), Some((2, b"snapshot at 2".to_vec())));
        let job1: Vec<_> = all_logs(store.as_ref(), 1).into_iter().map(|l| l.data).collect();
        assert_eq!(job1, vec!["kept ✓".to_owned()], "pruning is durable too");
        assert_eq!(
            records(&all_logs(store.as_ref(), 2)),
            vec![log(2, 5, 1, LogStream::Stderr, "other job")]
        );
        assert_eq!(store.append(&[payload(4)]).unwrap(), 4, "seqs continue after reopen");
        store.append_logs(&[log(2, 5, 1, LogStream::Stderr, "later")]).unwrap();
        let new = store.read_logs(JobId(2), log_cursor, 10).unwrap();
        assert_eq!(new.len(), 1);
        assert!(new[0].seq > log_cursor, "log seqs continue after reopen");
    }

    let store = open();
    let mut all = expected_events;
    all.push((4, payload(4)));
    assert_eq!(all_events(store.as_ref()), all);
    assert_eq!(all_logs(store.as_ref(), 2).len(), 2);
}
