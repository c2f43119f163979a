//! Criterion benches of the engine's hot paths on generated fleets: a clearing
//! round, applying and undoing a plan, and the concentration figures. The
//! headline figures come from `agora bench`; these are for comparing changes.

use std::hint::black_box;

use agora_engine::health::Concentration;
use agora_engine::market::Market;
use agora_sim::fleet::{self, Fleet};
use agora_sim::rng::SplitMix64;
use agora_sim::workload::{self, Mix};
use agora_types::{LeaseId, Tier};
use criterion::{Criterion, criterion_group, criterion_main};

/// A job-size mix shaped like the traces (mostly 1 GPU, some 8, a few gangs),
/// inline so the benches do not read files.
fn mix() -> Mix {
    let mut sizes = vec![1; 75];
    sizes.extend([2; 5]);
    sizes.extend([4; 5]);
    sizes.extend([8; 10]);
    sizes.extend([16, 16, 32, 32, 64]);
    Mix {
        sizes,
        large_per_mille: 5,
        spot_per_mille: 350,
        tenants: 200,
    }
}

fn market(fleet: &Fleet, orders: usize, seed: u64) -> Market {
    let mut m = fleet.market();
    for o in workload::orders(&mut SplitMix64::new(seed), &mix(), orders, 1) {
        m.add_order(o);
    }
    m
}

fn clearing(c: &mut Criterion) {
    let small = fleet::named("small", 1).expect("a built-in fleet");
    let m = market(&small, 5_000, 1);
    c.bench_function("clear: small fleet, 5,000 orders", |b| b.iter(|| black_box(m.clear())));

    let plan = m.clear();
    c.bench_function("apply and end a plan: small fleet", |b| {
        b.iter_batched(
            || m.clone(),
            |mut m| {
                for (i, p) in plan.placements.iter().enumerate() {
                    m.start_lease(LeaseId(i as u64 + 1), Tier::OnDemand, p);
                }
                for i in 0..plan.placements.len() {
                    m.end_lease(LeaseId(i as u64 + 1));
                }
                m
            },
            criterion::BatchSize::LargeInput,
        )
    });

    let amounts: Vec<u64> = (0..10_000u64).map(|i| 1 + i % 8).collect();
    c.bench_function("concentration of 10,000 providers", |b| {
        b.iter(|| black_box(Concentration::of(amounts.iter().copied())))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = clearing
}
criterion_main!(benches);
