//! The process runtime: runs lease parts as local process groups, captures their
//! output into a bounded buffer, stops them (SIGTERM, then SIGKILL after a grace)
//! and reports their exits.
//!
//! Each part runs in its own process group so that a stop reaches every process
//! it started. One supervisor task per part owns the child: it waits for the exit,
//! delivers the signals, and after the exit kills what is left of the group. The
//! runtime itself is driven by the agent loop, which polls [`ProcessRuntime::next_exit`].

use std::collections::{BTreeMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto::agent::{LaunchSpec, LogChunk, MAX_LOG_CHUNK_BYTES, PartEvent, PartRef, Stream};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

/// A partial line is sent once its stream has been quiet this long, so a
/// progress bar without newlines still shows up.
const OUTPUT_PAUSE: Duration = Duration::from_millis(100);

/// How long the output readers may take to finish after the part exited and its
/// group was killed. Only a process that left the group (setsid) can hold the
/// pipes open past that; its further output is not the part's.
const READER_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One entry of the output buffer: output, or the record that output was dropped.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    /// Output, with its running number.
    Data(u64, LogChunk),
    Dropped {
        seq: u64,
        part: PartRef,
        stream: Stream,
        bytes: u64,
    },
}

impl Entry {
    fn output_bytes(&self) -> usize {
        match self {
            Entry::Data(_, c) => c.data.len(),
            Entry::Dropped { .. } => 0,
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Entry::Data(seq, _) | Entry::Dropped { seq, .. } => *seq,
        }
    }

    fn into_chunk(self) -> LogChunk {
        match self {
            Entry::Data(seq, c) => LogChunk { seq: Some(seq), ..c },
            Entry::Dropped {
                seq,
                part,
                stream,
                bytes,
            } => LogChunk {
                part,
                stream,
                data: format!("[agora: {bytes} bytes of output dropped]\n"),
                seq: Some(seq),
            },
        }
    }
}

/// Unsent output of every part of the agent, oldest first, bounded.
///
/// The bound counts output bytes. When it is exceeded the OLDEST output is
/// dropped (the newest says most about a part's state) and replaced by one
/// marker per (part, stream) saying how many bytes went; markers are merged
/// when more is dropped, so they stay a few small entries.
#[derive(Debug)]
pub struct LogBuffer {
    entries: VecDeque<Entry>,
    output_bytes: usize,
    cap_bytes: usize,
    /// The number the next chunk gets. Entries are always in ascending order
    /// of their numbers, which is the order they are sent in.
    next_seq: u64,
}

/// Chunks taken for one heartbeat. Give them back with [`LogBuffer::restore`]
/// when the heartbeat fails, so nothing is lost.
#[derive(Debug, Default)]
pub struct LogBatch {
    entries: Vec<Entry>,
}

impl LogBatch {
    pub fn chunks(&self) -> Vec<LogChunk> {
        self.entries.iter().cloned().map(Entry::into_chunk).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl LogBuffer {
    /// `cap_bytes` is at least one chunk, so the newest chunk is always kept.
    pub fn new(cap_bytes: usize) -> LogBuffer {
        LogBuffer {
            entries: VecDeque::new(),
            output_bytes: 0,
            cap_bytes: cap_bytes.max(MAX_LOG_CHUNK_BYTES),
            next_seq: 0,
        }
    }

    pub fn push(&mut self, chunk: LogChunk) {
        assert!(
            chunk.data.len() <= MAX_LOG_CHUNK_BYTES,
            "chunks are cut before they are buffered"
        );
        if chunk.data.is_empty() {
            return;
        }
        self.output_bytes += chunk.data.len();
        self.entries.push_back(Entry::Data(self.next_seq, chunk));
        self.next_seq += 1;
        self.enforce_bound();
    }

    /// Output bytes buffered (markers not counted).
    pub fn output_bytes(&self) -> usize {
        self.output_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the oldest entries whose rendered size fits in `max_bytes`
    /// (at least one entry when any is buffered).
    pub fn take_batch(&mut self, max_bytes: usize) -> LogBatch {
        let mut batch = LogBatch::default();
        let mut bytes = 0;
        while let Some(front) = self.entries.front() {
            let size = match front {
                Entry::Data(_, c) => c.data.len(),
                Entry::Dropped { .. } => 64,
            };
            if !batch.entries.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            let e = self.entries.pop_front().expect("front exists");
            self.output_bytes -= e.output_bytes();
            batch.entries.push(e);
        }
        batch
    }

    /// Puts a batch back in front (it is older than anything buffered since).
    pub fn restore(&mut self, batch: LogBatch) {
        for e in batch.entries.into_iter().rev() {
            self.output_bytes += e.output_bytes();
            self.entries.push_front(e);
        }
        self.enforce_bound();
    }

    fn enforce_bound(&mut self) {
        if self.output_bytes <= self.cap_bytes {
            return;
        }
        let mut dropped: BTreeMap<(PartRef, Stream), u64> = BTreeMap::new();
        // The numbers of what is dropped: the markers reuse the smallest, so
        // they stay below everything that remains and in ascending order.
        let mut seqs = Vec::new();
        while self.output_bytes > self.cap_bytes {
            let entry = self.entries.pop_front().expect("over the bound means not empty");
            seqs.push(entry.seq());
            match entry {
                Entry::Data(_, c) => {
                    self.output_bytes -= c.data.len();
                    *dropped.entry((c.part, c.stream)).or_default() += c.data.len() as u64;
                }
                Entry::Dropped {
                    part, stream, bytes, ..
                } => *dropped.entry((part, stream)).or_default() += bytes,
            }
        }
        // Older markers now at the front are folded in too, so repeated
        // overflows leave one marker per stream rather than a pile of them.
        while let Some(Entry::Dropped { .. }) = self.entries.front() {
            if let Some(Entry::Dropped {
                seq,
                part,
                stream,
                bytes,
            }) = self.entries.pop_front()
            {
                seqs.push(seq);
                *dropped.entry((part, stream)).or_default() += bytes;
            }
        }
        seqs.sort_unstable();
        let markers: Vec<Entry> = dropped
            .into_iter()
            .zip(seqs)
            .map(|(((part, stream), bytes), seq)| Entry::Dropped {
                seq,
                part,
                stream,
                bytes,
            })
            .collect();
        for marker in markers.into_iter().rev() {
            self.entries.push_front(marker);
        }
    }
}

/// Where a cut at or before `max` keeps UTF-8 characters whole: steps back over
/// at most three continuation bytes, else cuts at `max` (the data is not UTF-8
/// there anyway).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    let mut cut = max;
    while cut > max.saturating_sub(3) && cut > 0 && is_continuation(bytes[cut]) {
        cut -= 1;
    }
    if cut == 0 || is_continuation(bytes[cut]) {
        max
    } else {
        cut
    }
}

/// Splits text into pieces of at most `max` bytes on character boundaries.
fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// Takes what is ready to send out of `pending`: full chunks, then everything up
/// to the last newline, or everything when `flush_all` (pause or end of stream).
/// Lossy UTF-8 conversion can grow invalid bytes, so the text is split again.
fn take_ready(pending: &mut Vec<u8>, flush_all: bool, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut emit = |bytes: &[u8]| out.extend(split_text(&String::from_utf8_lossy(bytes), max));
    while pending.len() >= max {
        let cut = utf8_cut(pending, max);
        emit(&pending[..cut]);
        pending.drain(..cut);
    }
    let upto = if flush_all {
        pending.len()
    } else {
        pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
    };
    if upto > 0 {
        emit(&pending[..upto]);
        pending.drain(..upto);
    }
    out
}

/// Copies one output stream of a part into the buffer as it comes.
async fn pump_output<R: AsyncRead + Unpin>(
    mut reader: R,
    part: PartRef,
    stream: Stream,
    logs: Arc<Mutex<LogBuffer>>,
    max_chunk_bytes: usize,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; max_chunk_bytes];
    let push = |texts: Vec<String>| {
        if texts.is_empty() {
            return;
        }
        let mut logs = logs.lock().expect("log buffer lock");
        for data in texts {
            logs.push(LogChunk {
                part,
                stream,
                data,
                seq: None,
            });
        }
    };
    loop {
        let read = if pending.is_empty() {
            reader.read(&mut buf).await
        } else {
            match timeout(OUTPUT_PAUSE, reader.read(&mut buf)).await {
                Ok(r) => r,
                Err(_paused) => {
                    push(take_ready(&mut pending, true, max_chunk_bytes));
                    continue;
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                push(take_ready(&mut pending, false, max_chunk_bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(lease = %part.lease, rank = part.rank, ?stream, error = %e, "reading part output failed");
                break;
            }
        }
    }
    push(take_ready(&mut pending, true, max_chunk_bytes));
}

/// A part the runtime started and has not yet seen exit.
#[derive(Debug)]
struct RunningPart {
    /// Stop requests (the grace) for the supervisor task.
    stop_tx: mpsc::UnboundedSender<Duration>,
    pid: u32,
}

/// Runs parts and collects their output and exits.
#[derive(Debug)]
pub struct ProcessRuntime {
    logs: Arc<Mutex<LogBuffer>>,
    exit_tx: mpsc::UnboundedSender<PartEvent>,
    exit_rx: mpsc::UnboundedReceiver<PartEvent>,
    running: BTreeMap<PartRef, RunningPart>,
    max_chunk_bytes: usize,
}

impl ProcessRuntime {
    /// A runtime whose output buffer holds at most `log_buffer_bytes` of output.
    pub fn new(log_buffer_bytes: usize) -> ProcessRuntime {
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        ProcessRuntime {
            logs: Arc::new(Mutex::new(LogBuffer::new(log_buffer_bytes))),
            exit_tx,
            exit_rx,
            running: BTreeMap::new(),
            max_chunk_bytes: MAX_LOG_CHUNK_BYTES,
        }
    }

    /// The buffer of unsent output, shared with the output readers.
    pub fn logs(&self) -> &Arc<Mutex<LogBuffer>> {
        &self.logs
    }

    /// Parts started and not yet seen exit by [`Self::next_exit`], in order.
    pub fn running(&self) -> Vec<PartRef> {
        self.running.keys().copied().collect()
    }

    pub fn is_running(&self, part: PartRef) -> bool {
        self.running.contains_key(&part)
    }

    /// Process id (and process group id) of a running part.
    pub fn pid(&self, part: PartRef) -> Option<u32> {
        self.running.get(&part).map(|r| r.pid)
    }

    /// Starts a part; returns `Started` or `StartFailed`. Must run inside a
    /// tokio runtime. The caller ensures the part is not already running.
    pub fn start(&mut self, spec: &LaunchSpec) -> PartEvent {
        let part = spec.part;
        assert!(!self.running.contains_key(&part), "part {part:?} started twice");
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a stop must reach every process the part starts.
            .process_group(0);
        if let Some(dir) = &spec.workdir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let place = spec
                    .workdir
                    .as_deref()
                    .map(|d| format!(" in `{d}`"))
                    .unwrap_or_default();
                let error = format!("cannot start `{}`{place}: {e}", spec.command);
                warn!(lease = %part.lease, rank = part.rank, %error, "part failed to start");
                return PartEvent::StartFailed { part, error };
            }
        };
        let pid = child.id().expect("a child just spawned has a pid");
        info!(lease = %part.lease, rank = part.rank, job = %spec.job, pid, command = %spec.command, "part started");
        let readers = [
            child.stdout.take().map(|r| {
                tokio::spawn(pump_output(
                    r,
                    part,
                    Stream::Stdout,
                    self.logs.clone(),
                    self.max_chunk_bytes,
                ))
            }),
            child.stderr.take().map(|r| {
                tokio::spawn(pump_output(
                    r,
                    part,
                    Stream::Stderr,
                    self.logs.clone(),
                    self.max_chunk_bytes,
                ))
            }),
        ];
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise(
            part,
            child,
            pid,
            readers.into_iter().flatten().collect(),
            stop_rx,
            self.exit_tx.clone(),
        ));
        self.running.insert(part, RunningPart { stop_tx, pid });
        PartEvent::Started { part }
    }

    /// Stops a running part: SIGTERM to its group now, SIGKILL after `grace`
    /// unless it exits first. A second stop can only shorten the grace.
    /// Returns false (and does nothing) for a part that is not running.
    pub fn stop(&mut self, part: PartRef, grace: Duration) -> bool {
        match self.running.get(&part) {
            // The supervisor only ends after it sent the exit, so a send error
            // means the exit is already queued: nothing left to stop.
            Some(r) => r.stop_tx.send(grace).is_ok(),
            None => false,
        }
    }

    /// Waits for the next part to exit and returns its `Exited` event. Pending
    /// forever while nothing runs; cancel-safe, so it can sit in a `select!`.
    pub async fn next_exit(&mut self) -> PartEvent {
        let event = self.exit_rx.recv().await.expect("the runtime holds a sender");
        self.forget(&event);
        event
    }

    /// An exit that already happened, without waiting.
    pub fn try_next_exit(&mut self) -> Option<PartEvent> {
        let event = self.exit_rx.try_recv().ok()?;
        self.forget(&event);
        Some(event)
    }

    fn forget(&mut self, event: &PartEvent) {
        if let PartEvent::Exited { part, .. } = event {
            self.running.remove(part);
        }
    }

    /// Stops every running part with `grace` and waits until all have exited
    /// (SIGKILL makes that certain); returns their exit events.
    pub async fn stop_all(&mut self, grace: Duration) -> Vec<PartEvent> {
        let mut events = Vec::new();
        while let Some(e) = self.try_next_exit() {
            events.push(e);
        }
        for part in self.running() {
            self.stop(part, grace);
        }
        // SIGKILL lands at `grace`; the readers get READER_DRAIN_TIMEOUT after
        // that. Past it something is badly wrong: give up rather than hang.
        let deadline = Instant::now() + grace + READER_DRAIN_TIMEOUT + Duration::from_secs(3);
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.next_exit()).await {
                Ok(e) => events.push(e),
                Err(_) => {
                    warn!(parts = ?self.running(), "parts did not report their exit after SIGKILL");
                    break;
                }
            }
        }
        events
    }
}

/// Owns one part's child until it exits: delivers stop signals, then cleans up
/// the group, lets the output readers finish, and reports the exit.
async fn supervise(
    part: PartRef,
    mut child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
    mut stop_rx: mpsc::UnboundedReceiver<Duration>,
    exit_tx: mpsc::UnboundedSender<PartEvent>,
) {
    let pgid = Pid::from_raw(pid as i32);
    let mut kill_at: Option<Instant> = None;
    let mut stops_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            grace = stop_rx.recv(), if stops_open => match grace {
                Some(grace) => {
                    debug!(lease = %part.lease, rank = part.rank, grace_ms = grace.as_millis() as u64, "SIGTERM to part");
                    signal_group(pgid, Signal::SIGTERM);
                    let at = Instant::now() + grace;
                    kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                }
                None => stops_open = false,
            },
            _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                info!(lease = %part.lease, rank = part.rank, "part outlived its grace: SIGKILL");
                signal_group(pgid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    // Leftover children (daemonized helpers, background jobs) belong to the
    // part and end with it. Best effort: the group may already be empty.
    signal_group(pgid, Signal::SIGKILL);
    for mut r in readers {
        if timeout(READER_DRAIN_TIMEOUT, &mut r).await.is_err() {
            warn!(lease = %part.lease, rank = part.rank, "output still open after the part exited; abandoning it");
            r.abort();
        }
    }
    let (exit_code, signal) = match status {
        Ok(s) => exit_of(s),
        Err(e) => {
            warn!(lease = %part.lease, rank = part.rank, error = %e, "waiting for part failed");
            (None, None)
        }
    };
    info!(lease = %part.lease, rank = part.rank, ?exit_code, ?signal, "part exited");
    // The receiver only goes away with the runtime, when nobody wants the event.
    let _ = exit_tx.send(PartEvent::Exited {
        part,
        exit_code,
        signal,
    });
}

fn exit_of(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}

fn signal_group(pgid: Pid, signal: Signal) {
    if let Err(e) = killpg(pgid, signal) {
        // ESRCH: the group is already empty, the common case after an exit.
        if e != nix::errno::Errno::ESRCH {
            warn!(pgid = pgid.as_raw(), ?signal, error = %e, "signalling a part's process group failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_types::LeaseId;

    fn part(rank: u32) -> PartRef {
        PartRef {
            lease: LeaseId(1),
            rank,
        }
    }

    fn chunk(rank: u32, data: &str) -> LogChunk {
        LogChunk {
            part: part(rank),
            stream: Stream::Stdout,
            data: data.to_string(),
            seq: None,
        }
    }

    fn seqs(chunks: &[LogChunk]) -> Vec<u64> {
        chunks
            .iter()
            .map(|c| c.seq.expect("buffered chunks are numbered"))
            .collect()
    }

    #[test]
    fn chunks_are_numbered_in_sending_order_through_restores_and_drops() {
        let cap = MAX_LOG_CHUNK_BYTES;
        let mut b = LogBuffer::new(cap);
        for i in 0..3 {
            b.push(chunk(0, &format!("line {i}\n")));
        }
        let batch = b.take_batch(usize::MAX);
        assert_eq!(seqs(&batch.chunks()), [0, 1, 2]);
        // The heartbeat failed: the same chunks go again, with the same numbers, before newer ones.
        b.restore(batch);
        b.push(chunk(0, "line 3\n"));
        assert_eq!(seqs(&b.take_batch(usize::MAX).chunks()), [0, 1, 2, 3]);
        // Overflow: markers take the smallest dropped numbers; the order stays ascending.
        let half = "z".repeat(cap / 2);
        for _ in 0..5 {
            b.push(chunk(0, &half));
            b.push(chunk(1, &half));
        }
        let numbers = seqs(&b.take_batch(usize::MAX).chunks());
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        assert!(numbers[0] >= 4, "{numbers:?}");
    }

    #[test]
    fn take_ready_sends_whole_lines_and_keeps_the_partial_one() {
        let mut p = b"one\ntwo\nthr".to_vec();
        assert_eq!(take_ready(&mut p, false, 100), ["one\ntwo\n"]);
        assert_eq!(p, b"thr");
        assert_eq!(take_ready(&mut p, true, 100), ["thr"]);
        assert!(p.is_empty());
    }

    #[test]
    fn take_ready_cuts_full_chunks_on_character_boundaries() {
        // 'é' is two bytes: a cut at 5 would split the third one.
        let mut p = "ééééé".as_bytes().to_vec();
        let out = take_ready(&mut p, true, 5);
        assert_eq!(out, ["éé", "éé", "é"]);
    }

    #[test]
    fn invalid_utf8_stays_within_the_chunk_limit() {
        let mut p = vec![0xffu8; 10];
        let out = take_ready(&mut p, true, 10);
        assert!(out.iter().all(|s| s.len() <= 10), "{out:?}");
        assert_eq!(out.concat(), "\u{fffd}".repeat(10));
    }

    #[test]
    fn buffer_drops_the_oldest_output_and_says_how_much() {
        let cap = MAX_LOG_CHUNK_BYTES;
        let mut b = LogBuffer::new(cap);
        let big = "x".repeat(cap / 2);
        b.push(chunk(0, "first\n"));
        b.push(chunk(1, &big));
        b.push(chunk(0, &big));
        b.push(chunk(0, "last\n"));
        assert!(b.output_bytes() <= cap);
        let chunks = b.take_batch(usize::MAX).chunks();
        assert_eq!(chunks[0].part, part(0));
        assert_eq!(chunks[0].data, "[agora: 6 bytes of output dropped]\n");
        assert_eq!(chunks[1].part, part(1));
        assert_eq!(
            chunks[1].data,
            format!("[agora: {} bytes of output dropped]\n", cap / 2)
        );
        assert_eq!(chunks[2].data, big);
        assert_eq!(chunks[3].data, "last\n");
        assert_eq!(chunks.len(), 4);
    }

    #[test]
    fn repeated_overflow_merges_markers() {
        let cap = MAX_LOG_CHUNK_BYTES;
        let mut b = LogBuffer::new(cap);
        let quarter = "y".repeat(cap / 4);
        for _ in 0..20 {
            b.push(chunk(0, &quarter));
        }
        let chunks = b.take_batch(usize::MAX).chunks();
        let markers: Vec<_> = chunks.iter().filter(|c| c.data.starts_with("[agora:")).collect();
        assert_eq!(markers.len(), 1, "{markers:?}");
        assert_eq!(
            markers[0].data,
            format!("[agora: {} bytes of output dropped]\n", 16 * (cap / 4))
        );
    }

    #[test]
    fn batches_respect_the_byte_limit_and_restore_in_order() {
        let mut b = LogBuffer::new(1 << 20);
        for i in 0..10 {
            b.push(chunk(0, &format!("{i}{}", "z".repeat(99))));
        }
        let batch = b.take_batch(350);
        assert_eq!(batch.chunks().len(), 3);
        b.restore(batch);
        let all = b.take_batch(usize::MAX).chunks();
        assert_eq!(all.len(), 10);
        assert!(all.iter().enumerate().all(|(i, c)| c.data.starts_with(&i.to_string())));
        assert!(b.is_empty());
        assert_eq!(b.output_bytes(), 0);
    }
}
