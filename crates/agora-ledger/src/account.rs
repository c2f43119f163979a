//! The accounts of the ledger and their stable text form (`tenant:3:available`).
//!
//! The text form is what the ledger shows operators and what it serializes to,
//! so an account reads the same in JSON, in logs and in the store's tables.

use std::fmt;
use std::str::FromStr;

use agora_types::{ProviderId, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One account of the double-entry ledger.
///
/// Sign convention: a balance is what the account holds. A transfer *debits*
/// (decreases) one account and *credits* (increases) another by the same
/// amount, so the sum of all balances is zero at all times. `Funding` stands
/// for the world outside the exchange; it is the only account allowed to go
/// negative, and `-balance(Funding)` is the money that entered the exchange.
///
/// The derived order (variant first, then id) is the order in which
/// [`crate::Ledger::accounts`] lists accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// The outside world: top-ups come from here and payouts go back here.
    Funding,
    /// Money a tenant may spend: new holds are taken from it.
    TenantAvailable(TenantId),
    /// Escrow: money held for a tenant's running leases. Only the escrow
    /// operations ([`crate::Ledger::hold`], `settle`, `release`) move money in
    /// or out of it, which keeps it equal to the sum of the tenant's open holds.
    TenantHeld(TenantId),
    /// What a provider has earned from settled leases.
    ProviderEarnings(ProviderId),
    /// The exchange's take rate.
    ExchangeFees,
}

impl Account {
    /// Whether the balance may go below zero (only the outside world may).
    pub fn may_go_negative(self) -> bool {
        matches!(self, Account::Funding)
    }

    /// Whether only the escrow operations may move money through this account.
    pub fn is_escrow(self) -> bool {
        matches!(self, Account::TenantHeld(_))
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Funding => f.write_str("funding"),
            Account::TenantAvailable(t) => write!(f, "tenant:{t}:available"),
            Account::TenantHeld(t) => write!(f, "tenant:{t}:held"),
            Account::ProviderEarnings(p) => write!(f, "provider:{p}:earnings"),
            Account::ExchangeFees => f.write_str("exchange:fees"),
        }
    }
}

/// The text is not one of the forms [`Account`]'s `Display` writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an account (expected funding, exchange:fees, tenant:<id>:available, tenant:<id>:held or provider:<id>:earnings)"
)]
pub struct ParseAccountError(pub String);

impl FromStr for Account {
    type Err = ParseAccountError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseAccountError(text.to_string());
        // Parse the id strictly (digits only) so that every account has exactly
        // one text form: `tenant:+3:held` or `tenant: 3:held` would otherwise
        // parse too and break the round trip.
        let id = |digits: &str| -> Result<u64, ParseAccountError> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            if digits.len() > 1 && digits.starts_with('0') {
                return Err(bad());
            }
            digits.parse().map_err(|_| bad())
        };
        match text {
            "funding" => return Ok(Account::Funding),
            "exchange:fees" => return Ok(Account::ExchangeFees),
            _ => {}
        }
        let mut parts = text.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("tenant"), Some(n), Some("available"), None) => Ok(Account::TenantAvailable(TenantId(id(n)?))),
            (Some("tenant"), Some(n), Some("held"), None) => Ok(Account::TenantHeld(TenantId(id(n)?))),
            (Some("provider"), Some(n), Some("earnings"), None) => Ok(Account::ProviderEarnings(ProviderId(id(n)?))),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Account {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Account> {
        vec![
            Account::Funding,
            Account::TenantAvailable(TenantId(3)),
            Account::TenantHeld(TenantId(0)),
            Account::ProviderEarnings(ProviderId(u64::MAX)),
            Account::ExchangeFees,
        ]
    }

    #[test]
    fn display_and_parse_round_trip() {
        let shown: Vec<String> = all_kinds().iter().map(Account::to_string).collect();
        assert_eq!(
            shown,
            [
                "funding",
                "tenant:3:available",
                "tenant:0:held",
                "provider:18446744073709551615:earnings",
                "exchange:fees"
            ]
        );
        for account in all_kinds() {
            assert_eq!(account.to_string().parse::<Account>(), Ok(account));
        }
    }

    #[test]
    fn parse_rejects_other_spellings() {
        for text in [
            "",
            "Funding",
            "tenant:3",
            "tenant::held",
            "tenant:+3:held",
            "tenant: 3:held",
            "tenant:03:held",
            "tenant:3:held:x",
            "provider:3:available",
            "tenant:99999999999999999999:held",
        ] {
            assert_eq!(
                text.parse::<Account>(),
                Err(ParseAccountError(text.to_string())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn serializes_as_its_text_form() {
        let json = serde_json::to_string(&Account::TenantHeld(TenantId(7))).unwrap();
        assert_eq!(json, "\"tenant:7:held\"");
        let back: Account = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Account::TenantHeld(TenantId(7)));
        assert!(serde_json::from_str::<Account>("\"tenant:x:held\"").is_err());
    }

    #[test]
    fn only_funding_may_go_negative() {
        let negative: Vec<Account> = all_kinds().into_iter().filter(|a| a.may_go_negative()).collect();
        assert_eq!(negative, [Account::Funding]);
    }
}
