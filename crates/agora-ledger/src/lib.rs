//! agora-ledger
