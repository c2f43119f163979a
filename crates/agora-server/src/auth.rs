//! Tokens and roles. A token is 32 random bytes shown once; the exchange stores
//! only its SHA-256 (a high-entropy secret needs no slow hash), so a leaked
//! database leaks no usable token.

use agora_types::{ProviderId, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who a token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "role", content = "id", rename_all = "snake_case")]
pub enum Principal {
    Admin,
    Tenant(TenantId),
    Provider(ProviderId),
}

impl Principal {
    pub fn role(self) -> &'static str {
        match self {
            Principal::Admin => "admin",
            Principal::Tenant(_) => "tenant",
            Principal::Provider(_) => "provider",
        }
    }

    pub fn id(self) -> Option<u64> {
        match self {
            Principal::Admin => None,
            Principal::Tenant(t) => Some(t.0),
            Principal::Provider(p) => Some(p.0),
        }
    }
}

/// A fresh token: `agora_` followed by 64 hex digits from the OS's random source.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("agora_{}", hex::encode(bytes))
}

pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
