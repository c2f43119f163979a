//! agora-engine
