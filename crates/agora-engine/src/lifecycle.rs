//! One transition table per lifecycle (jobs, orders, leases): a single function
//! per lifecycle allows or refuses a state change, so every writer of a state
//! goes through the same rules and a test can check every pair.
//!
//! Self-transitions are always refused: a writer that "moves" a state to itself
//! has lost track of it, and saying so early is cheaper than debugging later.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A refused state change of one lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{lifecycle} cannot go from {from} to {to}")]
pub struct TransitionError<S: fmt::Debug + fmt::Display> {
    /// Which lifecycle refused (`job`, `order`, `lease`), for the message.
    pub lifecycle: &'static str,
    pub from: S,
    pub to: S,
}

/// Defines a state enum with `ALL`, `as_str`, `Display` and snake_case serde,
/// so the three lifecycles cannot drift apart in how they print or serialize.
macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The snake_case name, identical to the serialized form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(
    /// The state of a job as the tenant sees it.
    JobState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

state_enum!(
    /// The state of one placeable order of a job.
    OrderState {
        Pending => "pending",
        Leased => "leased",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

state_enum!(
    /// The state of a lease: GPUs granted to one order on one or more nodes.
    LeaseState {
        /// Granted by the market; the agent has not confirmed the start yet.
        Assigned => "assigned",
        Running => "running",
        /// A cancel or preemption signal was sent; the GPUs are still in use.
        Stopping => "stopping",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        Preempted => "preempted",
        /// The node or agent vanished; what happened to the work is unknown.
        Lost => "lost",
    }
);

impl JobState {
    /// A terminal state allows no further transition.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl OrderState {
    /// A terminal state allows no further transition.
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderState::Done | OrderState::Failed | OrderState::Cancelled)
    }
}

impl LeaseState {
    /// A terminal state allows no further transition; the lease's GPUs are free.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            LeaseState::Succeeded
                | LeaseState::Failed
                | LeaseState::Cancelled
                | LeaseState::Preempted
                | LeaseState::Lost
        )
    }
}

/// Allows or refuses a job state change.
pub fn check_job_transition(from: JobState, to: JobState) -> Result<(), TransitionError<JobState>> {
    use JobState::*;
    let allowed = matches!(
        (from, to),
        (Pending, Running | Cancelled | Failed)
            // Back to pending: the job's node was lost or its lease preempted, and it is requeued.
            | (Running, Pending | Succeeded | Failed | Cancelled)
    );
    if allowed {
        Ok(())
    } else {
        Err(TransitionError {
            lifecycle: "job",
            from,
            to,
        })
    }
}

/// Allows or refuses an order state change.
pub fn check_order_transition(from: OrderState, to: OrderState) -> Result<(), TransitionError<OrderState>> {
    use OrderState::*;
    let allowed = matches!(
        (from, to),
        (Pending, Leased | Cancelled | Failed)
            // Back to pending: its lease was preempted or lost, and the order is requeued.
            | (Leased, Pending | Done | Failed | Cancelled)
    );
    if allowed {
        Ok(())
    } else {
        Err(TransitionError {
            lifecycle: "order",
            from,
            to,
        })
    }
}

/// Allows or refuses a lease state change.
pub fn check_lease_transition(from: LeaseState, to: LeaseState) -> Result<(), TransitionError<LeaseState>> {
    use LeaseState::*;
    let allowed = matches!(
        (from, to),
        // Failed from assigned: the agent could not start the work.
        (Assigned, Running | Stopping | Failed | Lost)
            | (Running, Stopping | Succeeded | Failed | Lost)
            // Succeeded from stopping: the work finished before the signal reached it.
            | (Stopping, Cancelled | Preempted | Failed | Succeeded | Lost)
    );
    if allowed {
        Ok(())
    } else {
        Err(TransitionError {
            lifecycle: "lease",
            from,
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `check` against the full allowed set over every pair of states,
    /// and that the terminal states are exactly those with no way out.
    fn check_table<S>(
        all: &[S],
        check: impl Fn(S, S) -> Result<(), TransitionError<S>>,
        is_terminal: impl Fn(S) -> bool,
        allowed: &[(S, S)],
    ) where
        S: Copy + PartialEq + fmt::Debug + fmt::Display,
    {
        for &from in all {
            for &to in all {
                let expected = allowed.contains(&(from, to));
                let got = check(from, to);
                assert_eq!(got.is_ok(), expected, "{from} -> {to}: got {got:?}");
                if let Err(e) = got {
                    assert_eq!((e.from, e.to), (from, to));
                    assert!(
                        e.to_string().ends_with(&format!("cannot go from {from} to {to}")),
                        "{e}"
                    );
                }
            }
            let has_exit = allowed.iter().any(|(f, _)| *f == from);
            assert_eq!(
                is_terminal(from),
                !has_exit,
                "{from}: terminal iff no transition leaves it"
            );
        }
        for (from, to) in allowed {
            assert!(all.contains(from) && all.contains(to));
        }
    }

    #[test]
    fn job_transitions_are_exactly_the_table() {
        use JobState::*;
        check_table(
            &JobState::ALL,
            check_job_transition,
            JobState::is_terminal,
            &[
                (Pending, Running),
                (Pending, Cancelled),
                (Pending, Failed),
                (Running, Pending),
                (Running, Succeeded),
                (Running, Failed),
                (Running, Cancelled),
            ],
        );
    }

    #[test]
    fn order_transitions_are_exactly_the_table() {
        use OrderState::*;
        check_table(
            &OrderState::ALL,
            check_order_transition,
            OrderState::is_terminal,
            &[
                (Pending, Leased),
                (Pending, Cancelled),
                (Pending, Failed),
                (Leased, Pending),
                (Leased, Done),
                (Leased, Failed),
                (Leased, Cancelled),
            ],
        );
    }

    #[test]
    fn lease_transitions_are_exactly_the_table() {
        use LeaseState::*;
        check_table(
            &LeaseState::ALL,
            check_lease_transition,
            LeaseState::is_terminal,
            &[
                (Assigned, Running),
                (Assigned, Stopping),
                (Assigned, Failed),
                (Assigned, Lost),
                (Running, Stopping),
                (Running, Succeeded),
                (Running, Failed),
                (Running, Lost),
                (Stopping, Cancelled),
                (Stopping, Preempted),
                (Stopping, Failed),
                (Stopping, Succeeded),
                (Stopping, Lost),
            ],
        );
    }

    fn check_names<S>(all: &[S], as_str: impl Fn(S) -> &'static str, expected: &[&str])
    where
        S: Copy + PartialEq + fmt::Debug + fmt::Display + Serialize + serde::de::DeserializeOwned,
    {
        let names: Vec<&str> = all.iter().map(|s| as_str(*s)).collect();
        assert_eq!(names, expected);
        for &s in all {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", as_str(s)), "serialized form is as_str");
            assert_eq!(serde_json::from_str::<S>(&json).unwrap(), s);
            assert_eq!(s.to_string(), as_str(s));
        }
    }

    #[test]
    fn states_serialize_as_snake_case_names() {
        check_names(
            &JobState::ALL,
            JobState::as_str,
            &["pending", "running", "succeeded", "failed", "cancelled"],
        );
        check_names(
            &OrderState::ALL,
            OrderState::as_str,
            &["pending", "leased", "done", "failed", "cancelled"],
        );
        check_names(
            &LeaseState::ALL,
            LeaseState::as_str,
            &[
                "assigned",
                "running",
                "stopping",
                "succeeded",
                "failed",
                "cancelled",
                "preempted",
                "lost",
            ],
        );
    }

    #[test]
    fn refusal_names_the_lifecycle() {
        let err = check_lease_transition(LeaseState::Succeeded, LeaseState::Running).unwrap_err();
        assert_eq!(err.to_string(), "lease cannot go from succeeded to running");
    }
}
