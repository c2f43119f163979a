//! Workloads and fleets for the simulator and the benchmarks: readers for real
//! GPU job traces, generators for fleets (a Colossus-scale provider beside
//! thousands of small ones) and for order streams, all driven by an explicit
//! seed so every run can be reproduced.
//!
//! Architecture invariant: no clock and no global randomness; every generator
//! takes its seed (see [`rng::SplitMix64`]).

pub mod fleet;
pub mod market;
pub mod plots;
pub mod replay;
pub mod rng;
pub mod scenario;
pub mod traces;
pub mod workload;
