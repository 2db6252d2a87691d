use proptest::prelude::*;

use super::*;

fn policy(min: u64, max: u64) -> Policy {
    Policy::new(min, max, Target::Cpu { percent: 70 })
}

/// What replicas running `demand` replicas' worth of work at the target
/// measure: the target × demand / replicas.
fn measure(p: &Policy, demand: f64, replicas: u64, at: Timestamp) -> Measurement {
    Measurement { at, value: p.target.value() * demand / replicas.max(1) as f64, replicas }
}

/// Runs the autoscaler every period over `demands` (one per period) from
/// `start` replicas, keeping its history as the leader does; the replicas
/// after each decision.
fn simulate(p: &Policy, start: u64, demands: &[f64]) -> Vec<u64> {
    let mut replicas = start;
    let mut history = Vec::new();
    let mut out = Vec::new();
    for (i, d) in demands.iter().enumerate() {
        let now = (i as u64 + 1) * PERIOD;
        let m = measure(p, *d, replicas, now);
        let decision = decide(p, replicas, Some(&m), &history, false, now);
        if let Some(r) = decision.recommendation {
            history.push(r);
        }
        history = keep(&history, p, now);
        replicas = decision.replicas;
        out.push(replicas);
    }
    out
}

#[test]
fn a_rise_scales_up_at_once_and_a_fall_waits_for_the_window() {
    let p = policy(1, 12);
    // 1 replica at 3.5× its target: 4 at once.
    let d = decide(&p, 1, Some(&measure(&p, 3.5, 1, 1000)), &[], false, 1000);
    assert_eq!(d.replicas, 4);
    assert!(matches!(d.reason, Reason::Up { wanted: 4, .. }), "{d:?}");
    assert_eq!(d.wake_at, 1000 + PERIOD);
    // The load falls to 1 replica's worth: held while the window remembers 4.
    let history = [Recommendation { at: 1000, replicas: 4 }];
    let d = decide(&p, 4, Some(&measure(&p, 1.0, 4, 60_000)), &history, false, 60_000);
    assert_eq!(d.replicas, 4);
    assert!(matches!(d.reason, Reason::Stabilised { wanted: 1, kept: 4, .. }), "{d:?}");
    assert!(d.describe(&p, 4).contains("asks for 1, but the last 300 s asked for up to 4"), "{}", d.describe(&p, 4));
    // After the window: down, by at most half per decision.
    let d = decide(&p, 4, Some(&measure(&p, 1.0, 4, 302_000)), &history, false, 302_000);
    assert_eq!(d.replicas, 2);
    assert!(matches!(d.reason, Reason::Down { wanted: 1, .. }), "{d:?}");
}

#[test]
fn a_step_up_is_bounded() {
    let p = policy(1, 100);
    let d = decide(&p, 2, Some(&measure(&p, 50.0, 2, 1000)), &[], false, 1000);
    assert_eq!(d.replicas, 2 + UP_STEP_MIN, "at least +4");
    let d = decide(&p, 10, Some(&measure(&p, 50.0, 10, 1000)), &[], false, 1000);
    assert_eq!(d.replicas, 20, "at most doubling");
}

#[test]
fn nothing_changes_without_metrics_or_during_a_rollout_and_it_says_why() {
    let p = policy(2, 12);
    let d = decide(&p, 5, None, &[], false, 100_000);
    assert_eq!((d.replicas, d.recommendation), (5, None));
    assert!(d.describe(&p, 5).contains("no metrics (nothing measured yet)"), "{}", d.describe(&p, 5));
    let old = measure(&p, 10.0, 5, 1000);
    let d = decide(&p, 5, Some(&old), &[], false, 1000 + STALE_AFTER + 1);
    assert_eq!(d.replicas, 5);
    assert!(matches!(&d.reason, Reason::NoMetrics(why) if why.contains("old")), "{d:?}");
    let empty = Measurement { at: 1000, value: 0.0, replicas: 0 };
    assert_eq!(decide(&p, 5, Some(&empty), &[], false, 1000).replicas, 5);
    let d = decide(&p, 5, Some(&measure(&p, 10.0, 5, 1000)), &[], true, 1000);
    assert_eq!((d.replicas, d.reason.clone()), (5, Reason::Rollout));
    // Bounds win over everything, even without metrics.
    assert_eq!(decide(&p, 1, None, &[], true, 1000).replicas, 2);
    assert_eq!(decide(&p, 20, None, &[], false, 1000).replicas, 12);
}

#[test]
fn connections_are_a_target_too() {
    let p = Policy { target: Target::Connections { per_replica: 100 }, ..policy(1, 10) };
    let m = Measurement { at: 1000, value: 250.0, replicas: 2 };
    let d = decide(&p, 2, Some(&m), &[], false, 1000);
    assert_eq!(d.replicas, 5);
    assert!(d.describe(&p, 2).contains("250.0 connections against a target of 100.0 connections"));
}

proptest! {
    #[test]
    fn never_outside_min_and_max(
        min in 0u64..6, extra in 0u64..10, start in 0u64..30,
        demands in prop::collection::vec(0.0f64..40.0, 1..60),
        rollout in any::<bool>(),
    ) {
        let p = policy(min, min + extra);
        let mut replicas = start;
        let mut history = Vec::new();
        for (i, d) in demands.iter().enumerate() {
            let now = (i as u64 + 1) * PERIOD;
            let decision = decide(&p, replicas, Some(&measure(&p, *d, replicas, now)), &history, rollout, now);
            prop_assert!(decision.replicas >= p.min && decision.replicas <= p.max, "{decision:?}");
            history.extend(decision.recommendation);
            history = keep(&history, &p, now);
            replicas = decision.replicas;
        }
    }

    #[test]
    fn no_change_within_the_tolerance_band(
        min in 1u64..4, current in 4u64..20, off in -0.099f64..0.099,
        history in prop::collection::vec((0u64..300_000, 1u64..30), 0..20),
    ) {
        let p = policy(min, 30);
        let now = 300_000;
        let history: Vec<Recommendation> = history.into_iter().map(|(at, replicas)| Recommendation { at, replicas }).collect();
        let m = Measurement { at: now, value: p.target.value() * (1.0 + off), replicas: current };
        let d = decide(&p, current, Some(&m), &history, false, now);
        prop_assert_eq!(d.replicas, current);
        prop_assert!(matches!(d.reason, Reason::Tolerance { .. }), "{:?}", d);
    }

    #[test]
    fn a_constant_load_converges_and_stays(demand in 0.1f64..30.0, start in 1u64..30) {
        let p = policy(1, 30);
        // Long enough for the window to let every fall through.
        let runs = simulate(&p, start, &vec![demand; 80]);
        let settled = runs[40];
        prop_assert!(runs[40..].iter().all(|r| *r == settled), "{runs:?}");
        // Where it settled the load is within the tolerance, or it is the
        // least whole count that carries it.
        let ratio = demand / settled as f64;
        prop_assert!(
            (ratio - 1.0).abs() <= TOLERANCE + 1e-9 || settled == (demand.ceil() as u64).clamp(1, 30),
            "demand {demand}: settled at {settled} ({runs:?})"
        );
    }

    #[test]
    fn a_load_faster_than_the_window_never_flaps(
        low in 0.5f64..4.0, high in 4.0f64..12.0, half in 1usize..9, periods in 30usize..80,
    ) {
        // `half` periods high, `half` low: a cycle shorter than the window.
        prop_assume!((2 * half) as u64 * PERIOD < DOWN_WINDOW);
        let p = policy(1, 30);
        let demands: Vec<f64> = (0..periods).map(|i| if (i / half) % 2 == 0 { high } else { low }).collect();
        let runs = simulate(&p, 1, &demands);
        // Once it went down it never goes up again, and it never went down
        // before the top: the count rises, then holds.
        let top = runs.iter().position(|r| *r == *runs.iter().max().unwrap_or(&1)).unwrap_or(0);
        prop_assert!(runs[..=top].windows(2).all(|w| w[0] <= w[1]), "{runs:?}");
        prop_assert!(runs[top..].iter().all(|r| *r == runs[top]), "flapped: {runs:?}");
    }
}

#[test]
fn a_load_beyond_the_bounds_says_the_bound_holds() {
    let p = policy(1, 3);
    let m = Measurement { at: 0, value: 140.0, replicas: 3 };
    let d = decide(&p, 3, Some(&m), &[], false, 0);
    assert_eq!(d.replicas, 3);
    assert!(matches!(d.reason, Reason::Limited { asked: 6, .. }), "{d:?}");
    assert_eq!(d.describe(&p, 3), "stays at 3: 140% CPU against a target of 70% CPU asks for 6, the policy's max 3");
    let p = policy(2, 5);
    let m = Measurement { at: 0, value: 10.0, replicas: 2 };
    let d = decide(&p, 2, Some(&m), &[], false, 0);
    assert_eq!(d.describe(&p, 2), "stays at 2: 10% CPU against a target of 70% CPU asks for 1, the policy's min 2");
}
