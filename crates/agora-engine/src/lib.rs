//! The pure core of the exchange: the market (an incremental index of nodes,
//! free GPUs, pending orders and leases, and the clearing round that turns
//! them into a plan) and the lifecycle transition tables.
//!
//! Architecture invariant: this crate does no IO, reads no clock and no RNG,
//! and iterates only ordered collections where the order reaches an output,
//! so the same sequence of calls always yields the same plans. The server and
//! the simulator drive the same code.

pub mod health;
pub mod lifecycle;
pub mod market;
pub mod spot;

pub use lifecycle::{
    JobState, LeaseState, OrderState, TransitionError, check_job_transition, check_lease_transition,
    check_order_transition,
};
pub use market::{
    Allocation, AskSummary, Demand, Lease, Market, Node, NodeSpec, OrderSpec, Placement, Preemption, ReservedUse,
    RoundInputs, RoundPlan, SitePower, SiteSpec, Unplaced,
};
