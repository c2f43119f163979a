//! Escrow per lease: hold money when a lease starts, settle the cumulative
//! amount due while it runs, release the rest when it ends.
//!
//! Money of a lease flows `TenantAvailable → TenantHeld` (hold, and cover of a
//! shortfall), then `TenantHeld → ProviderEarnings` and `TenantHeld →
//! ExchangeFees` (settle), and what is left `TenantHeld → TenantAvailable`
//! (release). The transfer ids are `lease:<lease>:<leg>:<op>` with `leg` one
//! of `hold`, `cover`, `settle`, `fee`, `release` and `op` a counter kept per
//! lease that advances once per operation that moved money. They are therefore
//! a pure function of the sequence of operations: the same calls on a fresh
//! ledger give the same ids, transfers and chain.
//!
//! Settlement is cumulative: the caller passes the total owed for the lease so
//! far, and the ledger charges the difference from what it has charged. A
//! repeated or late call with an old total is a no-op, so `settle` may be
//! retried freely, and rounding never accumulates: the fee is always
//! `fee_of(charged, fee_bps)` of the cumulative charge.
//!
//! Per hold: `deposited = held + charged + released` and
//! `charged = earned + fees`; per tenant: the `TenantHeld` balance is the sum
//! of `held` over the tenant's holds (closed holds have `held = 0`).

use agora_types::{LeaseId, Micros, ProviderId, TenantId, UnixMs};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::transfer::{EscrowRef, TransferError, TransferId, TransferKind};
use crate::{Ledger, Leg};

/// Basis points in one whole: a fee of 10,000 bps takes everything.
pub const BPS_PER_WHOLE: u32 = 10_000;

/// `floor(amount × fee_bps / 10,000)` for a non-negative amount, computed
/// without overflow for any `i128` amount (`fee_bps` is at most 10,000).
pub fn fee_of(amount: Micros, fee_bps: u32) -> Micros {
    assert!(amount.0 >= 0, "fees are taken on charges, which are never negative");
    assert!(fee_bps <= BPS_PER_WHOLE, "fee rates are checked before use");
    let whole = i128::from(BPS_PER_WHOLE);
    let bps = i128::from(fee_bps);
    // amount = q·10,000 + r, so floor(amount·bps/10,000) = q·bps + floor(r·bps/10,000)
    // exactly, and neither product can overflow.
    let (q, r) = (amount.0 / whole, amount.0 % whole);
    Micros(q * bps + r * bps / whole)
}

/// The escrow of one lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub tenant: TenantId,
    pub provider: ProviderId,
    /// Money in escrow for this lease now; zero once closed.
    pub held: Micros,
    /// Everything ever moved into escrow for this lease (holds and covers).
    pub deposited: Micros,
    /// Everything charged so far: `earned + fees`.
    pub charged: Micros,
    /// The provider's part of `charged`.
    pub earned: Micros,
    /// The exchange's part of `charged`.
    pub fees: Micros,
    /// What `release` returned to the tenant.
    pub released: Micros,
    pub opened_at: UnixMs,
    /// Set by `release`; a closed hold takes no more holds or settlements.
    pub closed_at: Option<UnixMs>,
    /// The `op` of the next escrow operation's transfer ids; private because
    /// only the ledger may advance it, or ids would repeat.
    pub(crate) next_op: u64,
}

impl Hold {
    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }
}

/// What one `settle` call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SettleOutcome {
    /// Charged by this call (provider part plus fee).
    pub charged_now: Micros,
    /// The fee part of `charged_now`.
    pub fee_now: Micros,
    /// Moved from the tenant's available balance into escrow to cover a hold
    /// smaller than what was due.
    pub covered_now: Micros,
    /// What is still owed after this call because the tenant ran out of money;
    /// positive means the lease should be warned and ended. A later settle with
    /// the same or a larger total charges it if the tenant has topped up.
    pub short_by: Micros,
}

/// Why an escrow operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    #[error("hold amount must be positive, got {amount}")]
    NonPositiveAmount { amount: Micros },
    #[error("tenant {tenant} has {available} available, cannot hold {amount}")]
    InsufficientFunds {
        tenant: TenantId,
        available: Micros,
        amount: Micros,
    },
    #[error("lease {lease} has no hold")]
    UnknownLease { lease: LeaseId },
    #[error("hold of lease {lease} is closed")]
    Closed { lease: LeaseId },
    #[error(
        "lease {lease} is held for tenant {held_tenant} and provider {held_provider}, not tenant {tenant} and provider {provider}"
    )]
    PartyMismatch {
        lease: LeaseId,
        held_tenant: TenantId,
        held_provider: ProviderId,
        tenant: TenantId,
        provider: ProviderId,
    },
    #[error("total due for lease {lease} must not be negative, got {total_due}")]
    NegativeDue { lease: LeaseId, total_due: Micros },
    #[error("fee rate must be at most 10000 bps, got {fee_bps}")]
    FeeRateTooHigh { fee_bps: u32 },
    /// Posting the legs failed although the escrow checks passed: only a
    /// ledger at the limits of `i128` gets here.
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

impl Ledger {
    /// Moves `amount` from the tenant's available balance into escrow for
    /// `lease`. A second call for the same lease adds to its hold; it must name
    /// the same tenant and provider.
    pub fn hold(
        &mut self,
        lease: LeaseId,
        tenant: TenantId,
        provider: ProviderId,
        amount: Micros,
        at: UnixMs,
    ) -> Result<(), EscrowError> {
        if amount.0 <= 0 {
            return Err(EscrowError::NonPositiveAmount { amount });
        }
        let op = match self.holds.get(&lease) {
            None => 0,
            Some(hold) if !hold.is_open() => return Err(EscrowError::Closed { lease }),
            Some(hold) if (hold.tenant, hold.provider) != (tenant, provider) => {
                return Err(EscrowError::PartyMismatch {
                    lease,
                    held_tenant: hold.tenant,
                    held_provider: hold.provider,
                    tenant,
                    provider,
                });
            }
            Some(hold) => hold.next_op,
        };
        let available = self.balance(&Account::TenantAvailable(tenant));
        if available < amount {
            return Err(EscrowError::InsufficientFunds {
                tenant,
                available,
                amount,
            });
        }
        let escrow = Some(EscrowRef { lease, provider });
        self.post(
            &[Leg {
                id: TransferId::escrow(lease, "hold", op),
                debit: Account::TenantAvailable(tenant),
                credit: Account::TenantHeld(tenant),
                amount,
                kind: TransferKind::Hold,
                escrow,
            }],
            at,
        )?;
        let hold = self.holds.entry(lease).or_insert_with(|| Hold {
            tenant,
            provider,
            held: Micros::ZERO,
            deposited: Micros::ZERO,
            charged: Micros::ZERO,
            earned: Micros::ZERO,
            fees: Micros::ZERO,
            released: Micros::ZERO,
            opened_at: at,
            closed_at: None,
            next_op: 0,
        });
        hold.held += amount;
        hold.deposited += amount;
        hold.next_op = op + 1;
        Ok(())
    }

    /// Charges the lease up to `total_due`, the cumulative amount owed so far.
    ///
    /// Charges `total_due - charged` if positive (nothing otherwise: settle
    /// never refunds). The fee is cumulative too: after the call `fees ==
    /// fee_of(charged, fee_bps)`, so the fee of this call is the difference.
    /// (Should the rate change during a lease, the new rate applies to the
    /// cumulative charge from then on, but fees already taken are never
    /// returned and a call's fee never exceeds its charge.) The provider gets
    /// the rest. A hold smaller than the charge is first covered from the
    /// tenant's available balance; what even that cannot pay is reported in
    /// [`SettleOutcome::short_by`] and no balance ever goes negative.
    pub fn settle(
        &mut self,
        lease: LeaseId,
        total_due: Micros,
        fee_bps: u32,
        at: UnixMs,
    ) -> Result<SettleOutcome, EscrowError> {
        if fee_bps > BPS_PER_WHOLE {
            return Err(EscrowError::FeeRateTooHigh { fee_bps });
        }
        if total_due.is_negative() {
            return Err(EscrowError::NegativeDue { lease, total_due });
        }
        let hold = self.holds.get(&lease).ok_or(EscrowError::UnknownLease { lease })?;
        if !hold.is_open() {
            return Err(EscrowError::Closed { lease });
        }
        if total_due <= hold.charged {
            return Ok(SettleOutcome::default());
        }
        let due_now = total_due - hold.charged;
        let available = self.balance(&Account::TenantAvailable(hold.tenant));
        let payable = Micros(due_now.0.min(hold.held.0.saturating_add(available.0)));
        let covered_now = Micros((payable.0 - hold.held.0).max(0));
        let short_by = due_now - payable;
        let fee_target = fee_of(hold.charged + payable, fee_bps);
        let fee_now = Micros((fee_target.0 - hold.fees.0).clamp(0, payable.0));
        let earned_now = payable - fee_now;

        let (tenant, provider, op) = (hold.tenant, hold.provider, hold.next_op);
        let escrow = Some(EscrowRef { lease, provider });
        let held = Account::TenantHeld(tenant);
        let legs: Vec<Leg> = [
            (
                covered_now,
                "cover",
                Account::TenantAvailable(tenant),
                held,
                TransferKind::Hold,
            ),
            (
                earned_now,
                "settle",
                held,
                Account::ProviderEarnings(provider),
                TransferKind::Settle,
            ),
            (fee_now, "fee", held, Account::ExchangeFees, TransferKind::Fee),
        ]
        .into_iter()
        .filter(|(amount, ..)| amount.0 > 0)
        .map(|(amount, leg, debit, credit, kind)| Leg {
            id: TransferId::escrow(lease, leg, op),
            debit,
            credit,
            amount,
            kind,
            escrow,
        })
        .collect();
        if !legs.is_empty() {
            self.post(&legs, at)?;
        }
        let hold = self.holds.get_mut(&lease).expect("looked up above");
        if !legs.is_empty() {
            hold.next_op = op + 1;
        }
        hold.deposited += covered_now;
        hold.held = hold.held + covered_now - payable;
        hold.charged += payable;
        hold.earned += earned_now;
        hold.fees += fee_now;
        assert!(
            !hold.held.is_negative(),
            "payable is at most held plus what was covered"
        );
        Ok(SettleOutcome {
            charged_now: payable,
            fee_now,
            covered_now,
            short_by,
        })
    }

    /// Returns the unused rest of the lease's hold to the tenant and closes
    /// the hold. Releasing an unknown or already closed lease returns zero and
    /// changes nothing, so the caller may retry it.
    pub fn release(&mut self, lease: LeaseId, at: UnixMs) -> Result<Micros, EscrowError> {
        let Some(hold) = self.holds.get(&lease) else {
            return Ok(Micros::ZERO);
        };
        if !hold.is_open() {
            return Ok(Micros::ZERO);
        }
        let (rest, tenant, provider, op) = (hold.held, hold.tenant, hold.provider, hold.next_op);
        if rest.0 > 0 {
            self.post(
                &[Leg {
                    id: TransferId::escrow(lease, "release", op),
                    debit: Account::TenantHeld(tenant),
                    credit: Account::TenantAvailable(tenant),
                    amount: rest,
                    kind: TransferKind::Release,
                    escrow: Some(EscrowRef { lease, provider }),
                }],
                at,
            )?;
        }
        let hold = self.holds.get_mut(&lease).expect("looked up above");
        if rest.0 > 0 {
            hold.next_op = op + 1;
        }
        hold.held = Micros::ZERO;
        hold.released += rest;
        hold.closed_at = Some(at);
        Ok(rest)
    }

    /// The hold of a lease, open or closed.
    pub fn hold_of(&self, lease: LeaseId) -> Option<&Hold> {
        self.holds.get(&lease)
    }

    /// Every hold, open and closed, by lease.
    pub fn holds(&self) -> impl Iterator<Item = (LeaseId, &Hold)> + '_ {
        self.holds.iter().map(|(lease, hold)| (*lease, hold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TenantId = TenantId(1);
    const P: ProviderId = ProviderId(2);
    const L: LeaseId = LeaseId(5);

    fn at(ms: i64) -> UnixMs {
        UnixMs(ms)
    }

    /// A ledger where tenant `T` has `amount` available.
    fn funded(amount: i128) -> Ledger {
        let mut ledger = Ledger::new();
        ledger.top_up("topup:1".into(), T, Micros(amount), at(0)).unwrap();
        ledger
    }

    fn ids(ledger: &Ledger) -> Vec<&str> {
        ledger.journal().iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn fee_of_floors_exactly() {
        assert_eq!(fee_of(Micros(0), 250), Micros(0));
        assert_eq!(fee_of(Micros(39), 250), Micros(0)); // 0.975
        assert_eq!(fee_of(Micros(40), 250), Micros(1));
        assert_eq!(fee_of(Micros(1_000_000), 250), Micros(25_000));
        assert_eq!(fee_of(Micros(12_345), 10_000), Micros(12_345));
        assert_eq!(fee_of(Micros(12_345), 0), Micros(0));
        // No overflow at the top of the range: floor((2^127-1)·9999/10000).
        let max = i128::MAX;
        assert_eq!(
            fee_of(Micros(max), 9_999),
            Micros(max / 10_000 * 9_999 + max % 10_000 * 9_999 / 10_000)
        );
        assert_eq!(fee_of(Micros(max), 10_000), Micros(max));
    }

    #[test]
    fn hold_moves_available_to_held() {
        let mut ledger = funded(1_000);
        ledger.hold(L, T, P, Micros(600), at(10)).unwrap();
        assert_eq!(ledger.tenant_balance(T), (Micros(400), Micros(600)));
        let hold = ledger.hold_of(L).unwrap();
        assert_eq!(
            (hold.tenant, hold.provider, hold.held, hold.deposited),
            (T, P, Micros(600), Micros(600))
        );
        assert_eq!(hold.opened_at, at(10));
        assert!(hold.is_open());
        // A second hold tops the first one up.
        ledger.hold(L, T, P, Micros(100), at(20)).unwrap();
        assert_eq!(ledger.hold_of(L).unwrap().held, Micros(700));
        assert_eq!(ids(&ledger), ["topup:1", "lease:5:hold:0", "lease:5:hold:1"]);
        let t = &ledger.journal()[1];
        assert_eq!(
            (t.kind, t.escrow),
            (TransferKind::Hold, Some(EscrowRef { lease: L, provider: P }))
        );
    }

    #[test]
    fn hold_refusals_change_nothing() {
        let mut ledger = funded(100);
        ledger.hold(L, T, P, Micros(50), at(1)).unwrap();
        let before = ledger.clone();
        assert_eq!(
            ledger.hold(LeaseId(6), T, P, Micros(51), at(2)),
            Err(EscrowError::InsufficientFunds {
                tenant: T,
                available: Micros(50),
                amount: Micros(51)
            })
        );
        assert_eq!(
            ledger.hold(L, T, P, Micros(0), at(2)),
            Err(EscrowError::NonPositiveAmount { amount: Micros(0) })
        );
        assert_eq!(
            ledger.hold(L, T, ProviderId(3), Micros(1), at(2)),
            Err(EscrowError::PartyMismatch {
                lease: L,
                held_tenant: T,
                held_provider: P,
                tenant: T,
                provider: ProviderId(3)
            })
        );
        assert_eq!(ledger, before);
        ledger.release(L, at(3)).unwrap();
        assert_eq!(
            ledger.hold(L, T, P, Micros(1), at(4)),
            Err(EscrowError::Closed { lease: L })
        );
    }

    #[test]
    fn settle_charges_the_cumulative_difference_exactly() {
        let mut ledger = funded(10_000);
        ledger.hold(L, T, P, Micros(5_000), at(0)).unwrap();
        let first = ledger.settle(L, Micros(1_000), 250, at(1)).unwrap();
        assert_eq!(
            first,
            SettleOutcome {
                charged_now: Micros(1_000),
                fee_now: Micros(25),
                ..Default::default()
            }
        );
        let second = ledger.settle(L, Micros(2_500), 250, at(2)).unwrap();
        assert_eq!(second.charged_now, Micros(1_500));
        // The same total again, or an older one, charges nothing.
        let before = ledger.clone();
        assert_eq!(
            ledger.settle(L, Micros(2_500), 250, at(3)),
            Ok(SettleOutcome::default())
        );
        assert_eq!(ledger.settle(L, Micros(100), 250, at(3)), Ok(SettleOutcome::default()));
        assert_eq!(ledger, before);
        let hold = ledger.hold_of(L).unwrap();
        assert_eq!(
            (hold.charged, hold.fees, hold.earned, hold.held),
            (Micros(2_500), Micros(62), Micros(2_438), Micros(2_500))
        );
        assert_eq!(ledger.balance(&Account::ProviderEarnings(P)), Micros(2_438));
        assert_eq!(ledger.balance(&Account::ExchangeFees), Micros(62));
        assert_eq!(
            ids(&ledger),
            [
                "topup:1",
                "lease:5:hold:0",
                "lease:5:settle:1",
                "lease:5:fee:1",
                "lease:5:settle:2",
                "lease:5:fee:2"
            ]
        );
    }

    #[test]
    fn fee_rounding_does_not_accumulate() {
        // 2.5% of 39 micros is 0.975: settling 39 micros forty times one at a
        // time must take the same fee as settling 1,560 micros at once.
        let mut step = funded(10_000);
        step.hold(L, T, P, Micros(2_000), at(0)).unwrap();
        let mut fees_per_call = Vec::new();
        for i in 1..=40 {
            fees_per_call.push(step.settle(L, Micros(39 * i), 250, at(i as i64)).unwrap().fee_now.0);
        }
        let mut once = funded(10_000);
        once.hold(L, T, P, Micros(2_000), at(0)).unwrap();
        once.settle(L, Micros(1_560), 250, at(1)).unwrap();
        assert_eq!(step.hold_of(L).unwrap().fees, Micros(39));
        assert_eq!(once.hold_of(L).unwrap().fees, Micros(39));
        assert_eq!(fees_per_call.iter().sum::<i128>(), 39);
        // floor(39·k·0.025) - floor(39·(k-1)·0.025): mostly 1, and 0 where the floor lags.
        assert_eq!(fees_per_call[0], 0);
        assert_eq!(fees_per_call[1], 1);
        assert_eq!(
            step.balance(&Account::ProviderEarnings(P)),
            once.balance(&Account::ProviderEarnings(P))
        );
    }

    #[test]
    fn settle_covers_a_small_hold_from_available() {
        let mut ledger = funded(1_000);
        ledger.hold(L, T, P, Micros(100), at(0)).unwrap();
        let outcome = ledger.settle(L, Micros(300), 0, at(1)).unwrap();
        assert_eq!(
            outcome,
            SettleOutcome {
                charged_now: Micros(300),
                covered_now: Micros(200),
                ..Default::default()
            }
        );
        assert_eq!(ledger.tenant_balance(T), (Micros(700), Micros::ZERO));
        assert_eq!(
            ids(&ledger),
            ["topup:1", "lease:5:hold:0", "lease:5:cover:1", "lease:5:settle:1"]
        );
        let hold = ledger.hold_of(L).unwrap();
        assert_eq!(
            (hold.deposited, hold.held, hold.charged),
            (Micros(300), Micros::ZERO, Micros(300))
        );
    }

    #[test]
    fn settle_shortfall_charges_what_is_possible() {
        let mut ledger = funded(1_000);
        ledger.hold(L, T, P, Micros(600), at(0)).unwrap();
        let outcome = ledger.settle(L, Micros(1_500), 1_000, at(1)).unwrap();
        assert_eq!(
            outcome,
            SettleOutcome {
                charged_now: Micros(1_000),
                fee_now: Micros(100),
                covered_now: Micros(400),
                short_by: Micros(500)
            }
        );
        assert_eq!(ledger.tenant_balance(T), (Micros::ZERO, Micros::ZERO));
        assert_eq!(ledger.balance(&Account::ProviderEarnings(P)), Micros(900));
        // Nothing more to take: the shortfall stands and nothing moves.
        let before = ledger.clone();
        let again = ledger.settle(L, Micros(1_500), 1_000, at(2)).unwrap();
        assert_eq!(
            again,
            SettleOutcome {
                short_by: Micros(500),
                ..Default::default()
            }
        );
        assert_eq!(ledger, before);
        // After a top-up, the same total collects what was owed, fee included.
        ledger.top_up("topup:2".into(), T, Micros(2_000), at(3)).unwrap();
        let paid = ledger.settle(L, Micros(1_500), 1_000, at(4)).unwrap();
        assert_eq!(
            paid,
            SettleOutcome {
                charged_now: Micros(500),
                fee_now: Micros(50),
                covered_now: Micros(500),
                short_by: Micros::ZERO
            }
        );
        assert_eq!(ledger.hold_of(L).unwrap().fees, fee_of(Micros(1_500), 1_000));
        assert_eq!(ledger.tenant_balance(T), (Micros(1_500), Micros::ZERO));
    }

    #[test]
    fn settle_with_a_lower_fee_rate_never_refunds_fees() {
        let mut ledger = funded(10_000);
        ledger.hold(L, T, P, Micros(10_000), at(0)).unwrap();
        ledger.settle(L, Micros(1_000), 1_000, at(1)).unwrap();
        let outcome = ledger.settle(L, Micros(1_100), 0, at(2)).unwrap();
        assert_eq!(outcome.fee_now, Micros::ZERO);
        assert_eq!(outcome.charged_now, Micros(100));
        assert_eq!(ledger.hold_of(L).unwrap().fees, Micros(100));
        // And a higher one never takes more than the call charges.
        let outcome = ledger.settle(L, Micros(1_110), 10_000, at(3)).unwrap();
        assert_eq!((outcome.charged_now, outcome.fee_now), (Micros(10), Micros(10)));
    }

    #[test]
    fn settle_refusals() {
        let mut ledger = funded(100);
        assert_eq!(
            ledger.settle(L, Micros(1), 0, at(0)),
            Err(EscrowError::UnknownLease { lease: L })
        );
        ledger.hold(L, T, P, Micros(100), at(0)).unwrap();
        let before = ledger.clone();
        assert_eq!(
            ledger.settle(L, Micros(1), 10_001, at(0)),
            Err(EscrowError::FeeRateTooHigh { fee_bps: 10_001 })
        );
        assert_eq!(
            ledger.settle(L, Micros(-1), 0, at(0)),
            Err(EscrowError::NegativeDue {
                lease: L,
                total_due: Micros(-1)
            })
        );
        assert_eq!(ledger, before);
        ledger.release(L, at(1)).unwrap();
        assert_eq!(
            ledger.settle(L, Micros(1), 0, at(2)),
            Err(EscrowError::Closed { lease: L })
        );
    }

    #[test]
    fn release_returns_the_rest_once() {
        let mut ledger = funded(1_000);
        ledger.hold(L, T, P, Micros(600), at(0)).unwrap();
        ledger.settle(L, Micros(250), 0, at(1)).unwrap();
        assert_eq!(ledger.release(L, at(2)), Ok(Micros(350)));
        assert_eq!(ledger.tenant_balance(T), (Micros(750), Micros::ZERO));
        let hold = ledger.hold_of(L).unwrap();
        assert_eq!(
            (hold.held, hold.released, hold.closed_at),
            (Micros::ZERO, Micros(350), Some(at(2)))
        );
        assert_eq!(ids(&ledger).last(), Some(&"lease:5:release:2"));
        let before = ledger.clone();
        assert_eq!(ledger.release(L, at(3)), Ok(Micros::ZERO));
        assert_eq!(ledger.release(LeaseId(99), at(3)), Ok(Micros::ZERO));
        assert_eq!(ledger, before);
    }

    #[test]
    fn release_of_a_fully_charged_hold_moves_nothing_but_closes() {
        let mut ledger = funded(100);
        ledger.hold(L, T, P, Micros(100), at(0)).unwrap();
        ledger.settle(L, Micros(100), 0, at(1)).unwrap();
        let len = ledger.len();
        assert_eq!(ledger.release(L, at(2)), Ok(Micros::ZERO));
        assert_eq!(ledger.len(), len);
        assert!(!ledger.hold_of(L).unwrap().is_open());
    }

    #[test]
    fn holds_of_different_leases_are_separate() {
        let mut ledger = funded(1_000);
        ledger.hold(LeaseId(1), T, P, Micros(300), at(0)).unwrap();
        ledger.hold(LeaseId(2), T, ProviderId(3), Micros(300), at(0)).unwrap();
        ledger.settle(LeaseId(1), Micros(100), 0, at(1)).unwrap();
        assert_eq!(ledger.release(LeaseId(2), at(2)), Ok(Micros(300)));
        assert_eq!(ledger.tenant_balance(T), (Micros(700), Micros(200)));
        let leases: Vec<LeaseId> = ledger.holds().map(|(lease, _)| lease).collect();
        assert_eq!(leases, [LeaseId(1), LeaseId(2)]);
    }
}
