//! The repository's trace scenario: cluster04 under the duration-agnostic
//! least-attained-service policy beats the published 2D-LAS baseline's
//! average JCT (21,887 s) with the same timing conventions.

use agora_sim::replay::{self, Policy, Timing};
use agora_sim::scenario::{ReplayPolicy, TraceFormat, TraceScenario, is_trace};
use agora_sim::traces;

#[test]
fn cluster04_under_las_beats_the_published_baseline() {
    let dir = format!("{}/../../scenarios", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(format!("{dir}/trace-itp-cluster04.yaml")).unwrap();
    assert!(is_trace(&text));
    let sc = TraceScenario::from_yaml(&text).unwrap();
    let t = &sc.trace;
    assert_eq!(
        (t.format, t.policy, t.nodes, t.gpus_per_node),
        (TraceFormat::MsItp, ReplayPolicy::Las, 80, 8)
    );
    let jobs = traces::read_ms_itp(&std::path::Path::new(&dir).join(&t.file)).unwrap();
    assert_eq!(jobs.len(), 15_802);
    let timing = Timing {
        round_s: t.round.0,
        start_base_s: t.start_cost.base_s,
        start_per_log2_s: t.start_cost.per_log2_s,
        checkpoint_every_rounds: t.checkpoint.every_rounds,
        checkpoint_s: t.checkpoint.cost_s,
    };
    assert_eq!(
        (timing.round_s, timing.checkpoint_every_rounds, timing.checkpoint_s),
        (60, 60, 47)
    );
    let policy = Policy::Las {
        thresholds_gpu_s: t.las_queues.clone(),
    };
    let s = replay::replay_with(&jobs, t.nodes, t.gpus_per_node, timing, &policy);
    assert_eq!(s.jobs, 15_802);
    assert!(s.avg_jct_s < 21_887.0, "{s:?}");
    // Not below what the jobs' own durations allow (the average is 19,982 s).
    assert!(s.avg_jct_s > 19_982.0, "{s:?}");
    assert!((0.7..0.8).contains(&s.utilization), "{s:?}");
}

/// With users' duration estimates (off by up to 50 %), shortest estimated
/// remaining service first beats the published duration-agnostic baseline too.
#[test]
fn cluster04_with_noisy_estimates_beats_the_published_baseline() {
    let dir = format!("{}/../../scenarios", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(format!("{dir}/trace-itp-cluster04-estimates.yaml")).unwrap();
    let sc = TraceScenario::from_yaml(&text).unwrap();
    let t = &sc.trace;
    assert_eq!(t.policy, ReplayPolicy::Srsf);
    let noise = t.estimates.expect("the scenario gives estimates");
    let jobs = traces::read_ms_itp(&std::path::Path::new(&dir).join(&t.file)).unwrap();
    let estimates = replay::estimates(&jobs, noise.noise, noise.seed);
    // Noisy, within the documented factor, and the same for the same seed.
    let off = jobs.iter().zip(&estimates).filter(|(j, e)| j.duration_s != **e).count();
    assert!(off > jobs.len() / 2, "{off} of {} estimates differ", jobs.len());
    for (j, e) in jobs.iter().zip(&estimates) {
        let (lo, hi) = (j.duration_s as f64 / 1.5, j.duration_s as f64 * 1.5);
        assert!((lo.floor().max(1.0)..=hi.ceil()).contains(&(*e as f64)), "{j:?}: {e}");
    }
    assert_eq!(estimates, replay::estimates(&jobs, noise.noise, noise.seed));
    let policy = Policy::Srsf {
        thresholds_gpu_s: t.srsf_queues.clone(),
        estimates_s: estimates,
    };
    let s = replay::replay_with(&jobs, t.nodes, t.gpus_per_node, replay::ELASTICFLOW, &policy);
    assert_eq!(s.jobs, 15_802);
    assert!(s.avg_jct_s < 21_887.0 && s.avg_jct_s > 19_982.0, "{s:?}");
}

#[test]
fn a_trace_scenario_names_its_mistakes() {
    let base = "name: t\ntrace:\n  format: ms-itp\n  file: x.csv\n  nodes: 8\n  gpus_per_node: 8\n";
    assert!(TraceScenario::from_yaml(base).is_ok());
    let e = TraceScenario::from_yaml(&format!("{base}  las_queues: [7200, 3250]\n")).unwrap_err();
    assert!(e.to_string().contains("trace.las_queues"), "{e}");
    let e = TraceScenario::from_yaml(&base.replace("ms-itp", "alibaba")).unwrap_err();
    assert!(e.to_string().contains("alibaba"), "{e}");
    let e = TraceScenario::from_yaml(&format!("{base}  policy: srsf\n")).unwrap_err();
    assert!(e.to_string().contains("trace.estimates"), "{e}");
    let e = TraceScenario::from_yaml(&format!("{base}  policy: srsf\n  estimates: {{noise: -1}}\n")).unwrap_err();
    assert!(e.to_string().contains("trace.estimates.noise"), "{e}");
    assert!(!is_trace("name: t\nproviders: []\n"));
}
