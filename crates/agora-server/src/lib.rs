//! agora-server
