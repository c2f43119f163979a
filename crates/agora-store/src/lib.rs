//! agora-store
