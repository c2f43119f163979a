//! agora-agent
