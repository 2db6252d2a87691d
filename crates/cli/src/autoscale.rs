//! How an autoscaled service (`x-stackd-autoscale`) shows in `service ls`
//! and `service inspect`: pure text from the service the manager sent.

use stackd_core::autoscale::{Policy, Target};
use stackd_core::model::Service;

/// The REPLICAS column's tail for an autoscaled service: ` (auto)`, or
/// ` (auto 2→5)` with the last change of count the autoscaler made.
pub fn replicas_tail(s: &Service) -> String {
    if s.spec.autoscale.is_none() {
        return String::new();
    }
    let last = s.autoscale.as_ref().and_then(|a| a.decisions.iter().rev().find(|d| d.from != d.to));
    match last {
        Some(d) => format!(" (auto {}→{})", d.from, d.to),
        None => " (auto)".into(),
    }
}

fn target_text(t: Target) -> String {
    match t {
        Target::Cpu { percent } => format!("{percent}% CPU per replica"),
        Target::Connections { per_replica } => format!("{per_replica} connections per replica"),
    }
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms >= 60_000 { format!("{} min", ms / 60_000) } else { format!("{} s", ms / 1000) }
}

/// The policy in one line: `1–4 replicas, target 50% CPU per replica, decided every 15 s, scale-down window 5 min`.
pub fn policy_text(p: &Policy) -> String {
    let mut text = format!(
        "{}–{} replicas, target {}, decided every {}, scale-down window {}",
        p.min,
        p.max,
        target_text(p.target),
        seconds(p.period),
        seconds(p.down_window)
    );
    if p.up_window > 0 {
        text.push_str(&format!(", scale-up window {}", seconds(p.up_window)));
    }
    text
}

/// The lines `service inspect` prints for an autoscaled service (none for
/// another): the policy, the last measurement against the target, the last
/// decisions (newest first) with `age` of their time.
pub fn inspect_lines(s: &Service, age: impl Fn(u64) -> String) -> Vec<String> {
    let Some(p) = &s.spec.autoscale else { return Vec::new() };
    let mut lines = vec![format!("Autoscale: {}", policy_text(p))];
    let status = s.autoscale.as_ref();
    let measured = match status {
        None => "nothing yet (the leader decides every period from the agents' reports)".to_string(),
        Some(a) => match a.measured_milli {
            Some(m) => {
                let value = m as f64 / 1000.0;
                let unit = match p.target {
                    Target::Cpu { .. } => format!("{value:.0}% CPU"),
                    Target::Connections { .. } => format!("{value:.1} connections"),
                };
                format!("{unit} per replica against {} ({})", target_text(p.target), age(a.measured_at))
            }
            None => format!("no metrics ({})", age(a.measured_at)),
        },
    };
    lines.push(format!("Measured:  {measured}"));
    if let Some(a) = status.filter(|a| !a.decisions.is_empty()) {
        lines.push("Decisions:".into());
        for d in a.decisions.iter().rev() {
            lines.push(format!("  {:>16}  {}", age(d.at), d.reason));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use stackd_core::model::{AutoscaleDecision, AutoscaleStatus, ServiceSpec, TaskTemplate};

    use super::*;

    fn service(policy: Option<Policy>) -> Service {
        let mut spec = ServiceSpec::replicated("web", 2, TaskTemplate::default());
        spec.autoscale = policy;
        Service::new("id".into(), "s", spec, 0)
    }

    fn decision(at: u64, from: u64, to: u64, reason: &str) -> AutoscaleDecision {
        AutoscaleDecision { at, from, to, reason: reason.into() }
    }

    #[test]
    fn the_replicas_column_names_the_last_change() {
        assert_eq!(replicas_tail(&service(None)), "");
        let mut s = service(Some(Policy::new(1, 8, Target::Cpu { percent: 70 })));
        assert_eq!(replicas_tail(&s), " (auto)");
        s.autoscale = Some(AutoscaleStatus {
            measured_at: 3,
            measured_milli: Some(90_000),
            decisions: vec![decision(1, 2, 5, "up"), decision(2, 5, 5, "stays at 5: within 10%")],
        });
        assert_eq!(replicas_tail(&s), " (auto 2→5)");
    }

    #[test]
    fn inspect_shows_the_policy_the_measurement_and_the_decisions_newest_first() {
        let mut p = Policy::new(1, 4, Target::Cpu { percent: 50 });
        p.period = 5_000;
        p.down_window = 30_000;
        let mut s = service(Some(p));
        let at = |t: u64| format!("t{t}");
        assert_eq!(
            inspect_lines(&s, at),
            [
                "Autoscale: 1–4 replicas, target 50% CPU per replica, decided every 5 s, scale-down window 30 s",
                "Measured:  nothing yet (the leader decides every period from the agents' reports)"
            ]
        );
        s.autoscale = Some(AutoscaleStatus {
            measured_at: 9,
            measured_milli: Some(123_400),
            decisions: vec![decision(1, 1, 3, "1 → 3: first"), decision(2, 3, 3, "stays at 3: second")],
        });
        let lines = inspect_lines(&s, at);
        assert_eq!(lines[1], "Measured:  123% CPU per replica against 50% CPU per replica (t9)");
        assert_eq!(lines[2], "Decisions:");
        assert!(lines[3].ends_with("t2  stays at 3: second"), "{}", lines[3]);
        assert!(lines[4].ends_with("t1  1 → 3: first"), "{}", lines[4]);
        s.autoscale = Some(AutoscaleStatus { measured_at: 9, measured_milli: None, decisions: vec![] });
        assert_eq!(inspect_lines(&s, at)[1], "Measured:  no metrics (t9)");
        assert!(inspect_lines(&service(None), at).is_empty());
        let p = Policy::new(2, 12, Target::Connections { per_replica: 50 });
        assert_eq!(
            policy_text(&p),
            "2–12 replicas, target 50 connections per replica, decided every 15 s, scale-down window 5 min"
        );
    }
}
