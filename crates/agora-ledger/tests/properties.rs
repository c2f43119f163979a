//! Property tests of the ledger's invariants over random sequences of
//! operations, valid and invalid: money is conserved, nothing but `Funding`
//! goes negative, the journal verifies, the same operations give the same
//! ledger, every charge (of a lease or of a contract) is split exactly into
//! earnings and fees, repeating a contract charge or resale credit is a no-op,
//! and resale credits never pass on more than a lease earned.

use std::collections::BTreeMap;

use agora_ledger::{
    Account, ContractError, ContractId, EscrowError, LeaseId, Ledger, Micros, ProviderId, TenantId, TransferError,
    TransferId, TransferKind, UnixMs, fee_of,
};
use proptest::prelude::*;

/// One call on the ledger. Small id ranges make leases, tenants and transfer
/// ids collide often, so duplicates, conflicts, top-ups of holds and
/// operations on closed leases all happen.
#[derive(Clone, Debug)]
enum Op {
    TopUp {
        key: u8,
        tenant: u64,
        amount: i128,
    },
    /// Tenant-to-tenant or tenant-to-outside adjustment.
    Move {
        key: u8,
        from: u64,
        to: Option<u64>,
        amount: i128,
    },
    Hold {
        lease: u64,
        tenant: u64,
        provider: u64,
        amount: i128,
    },
    /// Settles to `charged + more` (so most calls charge something); `more`
    /// may be negative, which must be a no-op. `bad_rate` uses a fee rate
    /// above 100%, which must be refused.
    Settle {
        lease: u64,
        more: i128,
        bad_rate: bool,
    },
    Release {
        lease: u64,
    },
    /// Charges a contract to `charged + more`; the random parties often
    /// differ from the contract's, which must be refused.
    ChargeContract {
        contract: u64,
        tenant: u64,
        provider: u64,
        more: i128,
        bad_rate: bool,
    },
    /// Credits `holder` up to `credited + more` for a lease; `right_provider`
    /// names the lease's provider, otherwise a random one (usually refused).
    CreditResale {
        lease: u64,
        holder: u64,
        more: i128,
        right_provider: bool,
        provider: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..6, 0u64..3, -5i128..5_000).prop_map(|(key, tenant, amount)| Op::TopUp { key, tenant, amount }),
        1 => (0u8..4, 0u64..3, proptest::option::of(0u64..3), -5i128..2_000)
            .prop_map(|(key, from, to, amount)| Op::Move { key, from, to, amount }),
        3 => (0u64..5, 0u64..3, 0u64..3, -5i128..3_000)
            .prop_map(|(lease, tenant, provider, amount)| Op::Hold { lease, tenant, provider, amount }),
        4 => (0u64..6, -50i128..2_500, proptest::bool::weighted(0.05))
            .prop_map(|(lease, more, bad_rate)| Op::Settle { lease, more, bad_rate }),
        1 => (0u64..6).prop_map(|lease| Op::Release { lease }),
        3 => (0u64..3, 0u64..3, 0u64..3, -50i128..3_000, proptest::bool::weighted(0.05))
            .prop_map(|(contract, tenant, provider, more, bad_rate)| Op::ChargeContract {
                contract,
                tenant,
                provider,
                more,
                bad_rate,
            }),
        5 => (0u64..5, 0u64..3, -20i128..1_500, proptest::bool::weighted(0.9), 0u64..3)
            .prop_map(|(lease, holder, more, right_provider, provider)| Op::CreditResale {
                lease,
                holder,
                more,
                right_provider,
                provider,
            }),
    ]
}

/// Applies one operation at time `step` and checks that a refused one
/// changed nothing and that a settle's outcome adds up.
fn apply(ledger: &mut Ledger, op: &Op, fee_bps: u32, step: usize) {
    let at = UnixMs(step as i64 * 1_000);
    let before = ledger.clone();
    let refused = match *op {
        Op::TopUp { key, tenant, amount } => ledger
            .top_up(TransferId(format!("topup:{key}")), TenantId(tenant), Micros(amount), at)
            .is_err(),
        Op::Move { key, from, to, amount } => {
            let credit = to.map_or(Account::Funding, |t| Account::TenantAvailable(TenantId(t)));
            let result = ledger.transfer(
                TransferId(format!("move:{key}")),
                Account::TenantAvailable(TenantId(from)),
                credit,
                Micros(amount),
                TransferKind::Adjustment,
                at,
            );
            if let Err(TransferError::InsufficientFunds { balance, .. }) = &result {
                assert!(balance.0 < amount);
            }
            result.is_err()
        }
        Op::Hold {
            lease,
            tenant,
            provider,
            amount,
        } => {
            let result = ledger.hold(
                LeaseId(lease),
                TenantId(tenant),
                ProviderId(provider),
                Micros(amount),
                at,
            );
            if let Err(EscrowError::InsufficientFunds { available, .. }) = &result {
                assert!(available.0 < amount);
            }
            result.is_err()
        }
        Op::Settle { lease, more, bad_rate } => {
            let charged = ledger.hold_of(LeaseId(lease)).map_or(Micros::ZERO, |h| h.charged);
            let total_due = Micros((charged.0 + more).max(0));
            let rate = if bad_rate { 10_001 } else { fee_bps };
            match ledger.settle(LeaseId(lease), total_due, rate, at) {
                Ok(outcome) => {
                    let hold = ledger.hold_of(LeaseId(lease)).unwrap();
                    let due_now = Micros(more.max(0));
                    assert_eq!(outcome.charged_now + outcome.short_by, due_now);
                    assert!(outcome.fee_now <= outcome.charged_now);
                    assert!(!outcome.short_by.is_negative() && !outcome.covered_now.is_negative());
                    if outcome.short_by.0 > 0 {
                        // A shortfall only when the tenant has nothing left anywhere.
                        assert_eq!(hold.held, Micros::ZERO);
                        assert_eq!(ledger.balance(&Account::TenantAvailable(hold.tenant)), Micros::ZERO);
                    }
                    assert_eq!(hold.charged, charged + outcome.charged_now);
                    false
                }
                Err(err) => {
                    assert!(bad_rate || matches!(err, EscrowError::UnknownLease { .. } | EscrowError::Closed { .. }));
                    true
                }
            }
        }
        Op::Release { lease } => {
            let rest = ledger.release(LeaseId(lease), at).unwrap();
            assert!(!rest.is_negative());
            false
        }
        Op::ChargeContract {
            contract,
            tenant,
            provider,
            more,
            bad_rate,
        } => {
            let (contract, tenant, provider) = (ContractId(contract), TenantId(tenant), ProviderId(provider));
            let charged = ledger.contract_charges(contract).map_or(Micros::ZERO, |c| c.charged);
            let total_due = Micros((charged.0 + more).max(0));
            let rate = if bad_rate { 10_001 } else { fee_bps };
            match ledger.charge_contract(contract, tenant, provider, total_due, rate, at) {
                Ok(outcome) => {
                    assert_eq!(outcome.charged_now + outcome.short_by, Micros(more.max(0)));
                    assert!(outcome.fee_now <= outcome.charged_now && !outcome.fee_now.is_negative());
                    if outcome.short_by.0 > 0 {
                        assert_eq!(ledger.balance(&Account::TenantAvailable(tenant)), Micros::ZERO);
                    }
                    if outcome.charged_now.0 > 0 {
                        let charges = ledger.contract_charges(contract).unwrap();
                        assert_eq!((charges.tenant, charges.provider), (tenant, provider));
                        assert_eq!(charges.charged, charged + outcome.charged_now);
                    }
                    // The same call again is a no-op.
                    let after = ledger.clone();
                    let again = ledger
                        .charge_contract(contract, tenant, provider, total_due, rate, at)
                        .unwrap();
                    assert_eq!((again.charged_now, again.short_by), (Micros::ZERO, outcome.short_by));
                    assert_eq!(*ledger, after, "repeating {op:?} changed the ledger");
                    false
                }
                Err(err) => {
                    assert!(bad_rate || matches!(err, ContractError::PartyMismatch { .. }), "{err}");
                    true
                }
            }
        }
        Op::CreditResale {
            lease,
            holder,
            more,
            right_provider,
            provider,
        } => {
            let (lease, holder) = (LeaseId(lease), TenantId(holder));
            let provider = match ledger.hold_of(lease) {
                Some(hold) if right_provider => hold.provider,
                _ => ProviderId(provider),
            };
            let credited = ledger.resale_credited(lease, holder);
            let total = Micros((credited.0 + more).max(0));
            match ledger.credit_resale(lease, provider, holder, total, at) {
                Ok(now) => {
                    assert!(!now.is_negative() && now.0 <= more.max(0));
                    assert_eq!(ledger.resale_credited(lease, holder), credited + now);
                    if now.0 < more {
                        // Held back only when the provider has nothing left, or
                        // the lease's earnings are all passed on.
                        let hold = ledger.hold_of(lease).unwrap();
                        let lease_credited: i128 = (0..3).map(|h| ledger.resale_credited(lease, TenantId(h)).0).sum();
                        assert!(
                            ledger.balance(&Account::ProviderEarnings(provider)) == Micros::ZERO
                                || lease_credited == hold.earned.0
                        );
                    }
                    let after = ledger.clone();
                    assert_eq!(
                        ledger.credit_resale(lease, provider, holder, total, at),
                        Ok(Micros::ZERO)
                    );
                    assert_eq!(*ledger, after, "repeating {op:?} changed the ledger");
                    false
                }
                Err(err) => {
                    assert!(
                        matches!(
                            err,
                            ContractError::UnknownLease { .. }
                                | ContractError::ProviderMismatch { .. }
                                | ContractError::OwnLease { .. }
                        ),
                        "{err}"
                    );
                    true
                }
            }
        }
    };
    if refused {
        assert_eq!(*ledger, before, "a refused {op:?} changed the ledger");
    }
}

fn check_invariants(ledger: &Ledger, fee_bps: u32) {
    // (1) Money is conserved.
    assert_eq!(ledger.accounts().map(|(_, b)| b.0).sum::<i128>(), 0);
    // (2) Nothing but Funding is negative, no hold either.
    for (account, balance) in ledger.accounts() {
        assert!(
            account.may_go_negative() || !balance.is_negative(),
            "{account} is {balance}"
        );
    }
    let mut earned_by_provider: BTreeMap<ProviderId, i128> = BTreeMap::new();
    let mut fees = 0;
    for (lease, hold) in ledger.holds() {
        for amount in [
            hold.held,
            hold.deposited,
            hold.charged,
            hold.earned,
            hold.fees,
            hold.released,
        ] {
            assert!(!amount.is_negative(), "lease {lease}: {hold:?}");
        }
        // (5) Every charge is split exactly into the provider's part and the fee,
        // and the fee is exactly the rate applied to the cumulative charge.
        assert_eq!(hold.charged, hold.earned + hold.fees, "lease {lease}");
        assert_eq!(hold.fees, fee_of(hold.charged, fee_bps), "lease {lease}");
        assert_eq!(
            hold.deposited,
            hold.held + hold.charged + hold.released,
            "lease {lease}"
        );
        *earned_by_provider.entry(hold.provider).or_default() += hold.earned.0;
        fees += hold.fees.0;
        // (6) A lease never passes on more than its provider earned from it.
        let passed_on: i128 = (0..3).map(|h| ledger.resale_credited(lease, TenantId(h)).0).sum();
        assert!(passed_on <= hold.earned.0, "lease {lease} passed on {passed_on}");
    }
    for (contract, charges) in ledger.contracts() {
        // (5) The same for contracts: the fee is the rate on the cumulative charge.
        assert!(charges.charged.0 > 0, "contract {contract}");
        assert_eq!(charges.fees, fee_of(charges.charged, fee_bps), "contract {contract}");
        assert_eq!(charges.charged, charges.earned() + charges.fees);
        *earned_by_provider.entry(charges.provider).or_default() += charges.earned().0;
        fees += charges.fees.0;
    }
    for ((lease, holder), credit) in ledger.resales() {
        assert!(credit.credited.0 > 0, "lease {lease} holder {holder}");
        *earned_by_provider.entry(credit.provider).or_default() -= credit.credited.0;
    }
    // (5) … and the accounts agree with the holds and contracts: the provider
    // accounts hold exactly what their leases and contracts earned less what
    // they passed on, and the fee account the fees.
    for provider in 0..3 {
        let provider = ProviderId(provider);
        assert_eq!(
            ledger.balance(&Account::ProviderEarnings(provider)).0,
            earned_by_provider.get(&provider).copied().unwrap_or(0)
        );
    }
    assert_eq!(ledger.balance(&Account::ExchangeFees).0, fees);
    // (3) The journal alone gives the same state.
    let report = ledger.verify().unwrap_or_else(|err| panic!("verify failed: {err}"));
    assert_eq!(report.transfers, ledger.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_operation(
        ops in proptest::collection::vec(op(), 0..80),
        fee_bps in prop_oneof![Just(0u32), Just(10_000u32), 0u32..=10_000],
    ) {
        let mut ledger = Ledger::new();
        for (step, op) in ops.iter().enumerate() {
            apply(&mut ledger, op, fee_bps, step);
            check_invariants(&ledger, fee_bps);
        }
    }

    #[test]
    fn same_operations_give_the_same_ledger(
        ops in proptest::collection::vec(op(), 0..80),
        fee_bps in 0u32..=10_000,
    ) {
        // (4) Determinism: a fresh ledger fed the same calls ends identical,
        // chain head included, and so does one restored from a snapshot.
        let run = || {
            let mut ledger = Ledger::new();
            for (step, op) in ops.iter().enumerate() {
                apply(&mut ledger, op, fee_bps, step);
            }
            ledger
        };
        let first = run();
        let second = run();
        prop_assert_eq!(first.head(), second.head());
        prop_assert_eq!(&first, &second);
        let restored: Ledger = serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
        prop_assert_eq!(&restored, &first);
        // The restored ledger continues exactly like the original.
        let (mut a, mut b) = (first, restored);
        for (step, op) in ops.iter().enumerate() {
            apply(&mut a, op, fee_bps, ops.len() + step);
            apply(&mut b, op, fee_bps, ops.len() + step);
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn charging_a_contract_in_steps_equals_charging_at_once(
        steps in proptest::collection::vec(0i128..5_000, 1..20),
        fee_bps in 0u32..=10_000,
    ) {
        let contract = ContractId(1);
        let (tenant, provider) = (TenantId(1), ProviderId(1));
        let setup = || {
            let mut ledger = Ledger::new();
            ledger.top_up("topup".into(), tenant, Micros(1_000_000), UnixMs(0)).unwrap();
            ledger
        };
        let mut stepped = setup();
        let mut total = 0;
        for (i, step) in steps.iter().enumerate() {
            total += step;
            stepped.charge_contract(contract, tenant, provider, Micros(total), fee_bps, UnixMs(i as i64)).unwrap();
        }
        let mut once = setup();
        once.charge_contract(contract, tenant, provider, Micros(total), fee_bps, UnixMs(0)).unwrap();
        for account in [Account::TenantAvailable(tenant), Account::ProviderEarnings(provider), Account::ExchangeFees] {
            prop_assert_eq!(stepped.balance(&account), once.balance(&account));
        }
        if total > 0 {
            let (a, b) = (stepped.contract_charges(contract).unwrap(), once.contract_charges(contract).unwrap());
            prop_assert_eq!((a.charged, a.fees), (b.charged, b.fees));
            prop_assert_eq!(a.fees, fee_of(Micros(total), fee_bps));
        }
    }

    #[test]
    fn settling_in_steps_equals_settling_at_once(
        steps in proptest::collection::vec(0i128..5_000, 1..20),
        fee_bps in 0u32..=10_000,
        hold in 1i128..50_000,
    ) {
        // Cumulative settlement: any path to the same total charges the same
        // amount and takes the same fee as a single call.
        let setup = || {
            let mut ledger = Ledger::new();
            ledger.top_up("topup".into(), TenantId(1), Micros(1_000_000), UnixMs(0)).unwrap();
            ledger.hold(LeaseId(1), TenantId(1), ProviderId(1), Micros(hold), UnixMs(0)).unwrap();
            ledger
        };
        let mut stepped = setup();
        let mut total = 0;
        for (i, step) in steps.iter().enumerate() {
            total += step;
            stepped.settle(LeaseId(1), Micros(total), fee_bps, UnixMs(i as i64)).unwrap();
        }
        let mut once = setup();
        once.settle(LeaseId(1), Micros(total), fee_bps, UnixMs(0)).unwrap();
        let (a, b) = (stepped.hold_of(LeaseId(1)).unwrap(), once.hold_of(LeaseId(1)).unwrap());
        prop_assert_eq!((a.charged, a.fees, a.earned, a.held), (b.charged, b.fees, b.earned, b.held));
        prop_assert_eq!(a.charged, Micros(total));
        prop_assert_eq!(stepped.tenant_balance(TenantId(1)), once.tenant_balance(TenantId(1)));
    }
}
