//! The agent loop's decisions as plain data and functions: which instructions to
//! act on, which events still await acknowledgement, when the next heartbeat is
//! due. No IO here, so every rule is unit-tested; `lib.rs` does the plumbing.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use agora_proto::agent::{HeartbeatResponse, LaunchSpec, PartEvent, PartRef, StopOrder};
use tokio::time::Instant;

/// How many finished parts are remembered to refuse a repeated start. The
/// server repeats a start only until it hears `Started`, so a few thousand
/// covers any realistic backlog; 10,000 entries cost about 200 KiB.
pub const FINISHED_PARTS_KEPT: usize = 10_000;

/// Events carried by one heartbeat at most; the rest wait for the next one.
pub const MAX_EVENTS_PER_HEARTBEAT: usize = 1_000;

/// Parts that ran (or failed to start) on this agent, most recent last, bounded.
#[derive(Debug)]
pub struct FinishedParts {
    order: VecDeque<PartRef>,
    set: BTreeSet<PartRef>,
    capacity: usize,
}

impl FinishedParts {
    pub fn new(capacity: usize) -> FinishedParts {
        assert!(capacity > 0);
        FinishedParts {
            order: VecDeque::new(),
            set: BTreeSet::new(),
            capacity,
        }
    }

    pub fn insert(&mut self, part: PartRef) {
        if !self.set.insert(part) {
            return;
        }
        self.order.push_back(part);
        if self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("over capacity means not empty");
            self.set.remove(&oldest);
        }
        debug_assert_eq!(self.order.len(), self.set.len());
    }

    pub fn contains(&self, part: PartRef) -> bool {
        self.set.contains(&part)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Part events not yet acknowledged by the server, oldest first. An event
/// leaves only when a heartbeat that carried it got a 2xx answer.
#[derive(Debug, Default)]
pub struct PendingEvents {
    /// Each event with the moment the agent saw it, to report its age.
    events: Vec<(Instant, PartEvent)>,
}

impl PendingEvents {
    pub fn push(&mut self, event: PartEvent) {
        self.events.push((Instant::now(), event));
    }

    /// The events for the next heartbeat: the oldest, at most `max`.
    pub fn batch(&self, max: usize) -> Vec<PartEvent> {
        self.events.iter().take(max).map(|(_, e)| e.clone()).collect()
    }

    /// How long before `now` each event of the next batch happened, in ms.
    pub fn ages_ms(&self, max: usize, now: Instant) -> Vec<u64> {
        self.events
            .iter()
            .take(max)
            .map(|(t, _)| now.saturating_duration_since(*t).as_millis() as u64)
            .collect()
    }

    /// A heartbeat carrying the oldest `sent` events succeeded. Events pushed
    /// since came after them, so they stay.
    pub fn acknowledge(&mut self, sent: usize) {
        assert!(sent <= self.events.len(), "acknowledged more events than pending");
        self.events.drain(..sent);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What to do with one heartbeat answer.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub start: Vec<LaunchSpec>,
    pub stop: Vec<StopOrder>,
}

/// Filters an answer down to what must be done: starts of parts neither running
/// nor finished (the first of duplicates), stops of running parts. Stops come
/// first in spirit: a part both started and stopped in one answer is not started.
pub fn plan(answer: HeartbeatResponse, running: &BTreeSet<PartRef>, finished: &FinishedParts) -> Plan {
    let stopped: BTreeSet<PartRef> = answer.stop.iter().map(|s| s.part).collect();
    let mut seen = BTreeSet::new();
    let start = answer
        .start
        .into_iter()
        .filter(|s| {
            !running.contains(&s.part)
                && !finished.contains(s.part)
                && !stopped.contains(&s.part)
                && seen.insert(s.part)
        })
        .collect();
    let mut seen = BTreeSet::new();
    let stop = answer
        .stop
        .into_iter()
        .filter(|s| running.contains(&s.part) && seen.insert(s.part))
        .collect();
    Plan { start, stop }
}

/// When the next heartbeat is due.
///
/// Regular heartbeats come every `interval`; a start or an exit asks for one
/// promptly ([`Pacer::hurry`]), but never sooner than `min_gap` after the
/// previous one. After failures the retry waits grow from 250 ms, doubling,
/// up to `max_backoff`.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    min_gap: Duration,
    max_backoff: Duration,
    last_sent: Option<Instant>,
    next_due: Instant,
    failures: u32,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

impl Pacer {
    pub fn new(now: Instant, interval: Duration, min_gap: Duration, max_backoff: Duration) -> Pacer {
        Pacer {
            interval,
            min_gap,
            max_backoff,
            last_sent: None,
            next_due: now,
            failures: 0,
        }
    }

    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// A heartbeat went out at `now` and was answered.
    pub fn succeeded(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.failures = 0;
        self.next_due = now + self.interval;
    }

    /// An attempt at `now` failed; returns the wait before the next one.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.last_sent = Some(now);
        let wait = backoff(self.failures, self.max_backoff);
        self.failures = self.failures.saturating_add(1);
        self.next_due = now + wait;
        wait
    }

    /// Something happened worth telling the server now. During a failure
    /// backoff this changes nothing: the server is not answering anyway.
    pub fn hurry(&mut self, now: Instant) {
        if self.failures > 0 {
            return;
        }
        let earliest = self.last_sent.map_or(now, |t| (t + self.min_gap).max(now));
        self.next_due = self.next_due.min(earliest);
    }
}

/// Wait after `failures` previous consecutive failures: 250 ms doubling, capped.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    FIRST_BACKOFF.saturating_mul(1u32 << failures.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agora_types::{JobId, LeaseId, NodeId};

    use super::*;

    fn part(lease: u64, rank: u32) -> PartRef {
        PartRef {
            lease: LeaseId(lease),
            rank,
        }
    }

    fn launch(p: PartRef) -> LaunchSpec {
        LaunchSpec {
            part: p,
            job: JobId(1),
            node: NodeId(1),
            gpu_indices: vec![0],
            command: "true".into(),
            args: vec![],
            env: BTreeMap::new(),
            workdir: None,
        }
    }

    fn stop(p: PartRef) -> StopOrder {
        StopOrder {
            part: p,
            grace_ms: 1000,
            reason: "cancelled".into(),
        }
    }

    #[test]
    fn plan_starts_only_new_parts_once() {
        let running = BTreeSet::from([part(1, 0)]);
        let mut finished = FinishedParts::new(10);
        finished.insert(part(2, 0));
        let answer = HeartbeatResponse {
            start: vec![
                launch(part(1, 0)),
                launch(part(2, 0)),
                launch(part(3, 0)),
                launch(part(3, 0)),
                launch(part(3, 1)),
            ],
            stop: vec![],
        };
        let p = plan(answer, &running, &finished);
        assert_eq!(
            p.start.iter().map(|s| s.part).collect::<Vec<_>>(),
            [part(3, 0), part(3, 1)]
        );
    }

    #[test]
    fn plan_stops_only_running_parts() {
        let running = BTreeSet::from([part(1, 0), part(1, 1)]);
        let finished = FinishedParts::new(10);
        let answer = HeartbeatResponse {
            start: vec![],
            stop: vec![stop(part(1, 1)), stop(part(9, 0)), stop(part(1, 1))],
        };
        let p = plan(answer, &running, &finished);
        assert_eq!(p.stop.iter().map(|s| s.part).collect::<Vec<_>>(), [part(1, 1)]);
    }

    #[test]
    fn plan_does_not_start_a_part_it_is_told_to_stop() {
        let answer = HeartbeatResponse {
            start: vec![launch(part(4, 0))],
            stop: vec![stop(part(4, 0))],
        };
        let p = plan(answer, &BTreeSet::new(), &FinishedParts::new(10));
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn finished_parts_forget_the_oldest_beyond_capacity() {
        let mut f = FinishedParts::new(3);
        for i in 0..5 {
            f.insert(part(i, 0));
            f.insert(part(i, 0));
        }
        assert_eq!(f.len(), 3);
        assert!(!f.contains(part(1, 0)));
        assert!(f.contains(part(2, 0)) && f.contains(part(4, 0)));
    }

    #[test]
    fn events_leave_only_when_acknowledged() {
        let mut e = PendingEvents::default();
        e.push(PartEvent::Started { part: part(1, 0) });
        e.push(PartEvent::Started { part: part(2, 0) });
        let sent = e.batch(MAX_EVENTS_PER_HEARTBEAT);
        assert_eq!(sent.len(), 2);
        // The request failed: nothing is acknowledged, the next batch is the same.
        assert_eq!(e.batch(MAX_EVENTS_PER_HEARTBEAT), sent);
        // An exit arrives, then the retry (carrying the first two) succeeds.
        e.push(PartEvent::Exited {
            part: part(1, 0),
            exit_code: Some(0),
            signal: None,
        });
        e.acknowledge(sent.len());
        assert_eq!(
            e.batch(10),
            [PartEvent::Exited {
                part: part(1, 0),
                exit_code: Some(0),
                signal: None
            }]
        );
        assert_eq!(e.batch(0), []);
    }

    #[test]
    fn pacer_hurries_but_keeps_the_minimum_gap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pacer::new(t0, ms(1000), ms(50), ms(5000));
        assert_eq!(p.next_due(), t0, "the first heartbeat is immediate");
        p.succeeded(t0);
        assert_eq!(p.next_due(), t0 + ms(1000));
        p.hurry(t0 + ms(10));
        assert_eq!(p.next_due(), t0 + ms(50), "not sooner than the gap");
        p.succeeded(t0 + ms(50));
        p.hurry(t0 + ms(500));
        assert_eq!(p.next_due(), t0 + ms(500), "long after the last one: now");
    }

    #[test]
    fn pacer_backs_off_on_failures_up_to_the_cap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pacer::new(t0, ms(1000), ms(50), ms(2000));
        let waits: Vec<_> = (0..6).map(|_| p.failed(t0)).collect();
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
        p.hurry(t0);
        assert_eq!(p.next_due(), t0 + ms(2000), "no hurrying a server that is down");
        p.succeeded(t0);
        assert_eq!(p.failed(t0), ms(250), "success resets the backoff");
        assert_eq!(backoff(u32::MAX, ms(5000)), ms(5000));
    }
}
