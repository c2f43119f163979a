//! Wire types: the job manifest, the HTTP API's documents and the agent protocol.
//!
//! API boundary: every type here is serialized on the wire or on disk; renaming a
//! field is a breaking change for clients, agents and stored events.

pub mod agent;
pub mod api;
pub mod manifest;

pub use manifest::{Manifest, ManifestError};
