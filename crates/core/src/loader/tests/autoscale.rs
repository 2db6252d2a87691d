//! `x-stackd-autoscale`: the forms accepted, and every refusal with its
//! position and key path.

use std::collections::BTreeMap;

use super::{errors, files, web};
use crate::autoscale::{Policy, Target};
use crate::loader::{LoadOptions, SourceFile, load};
use crate::model::ServiceMode;

/// `web`, publishing 8080 through the mesh, with `deploy` (line 5) and the
/// policy's `lines` (from line 7, under `x-stackd-autoscale:` at 6:5).
fn stack(deploy: &str, lines: &[&str]) -> String {
    let mut text = format!(
        "services:\n  web:\n    image: nginx\n    ports: [\"8080:80\"]\n    deploy: {deploy}\n    x-stackd-autoscale:\n"
    );
    for l in lines {
        text.push_str(&format!("      {l}\n"));
    }
    text
}

/// The policy of `stack("{replicas: 2}", lines)`, and its replicas.
fn policy(deploy: &str, lines: &[&str]) -> (Policy, u64) {
    let s = web(&stack(deploy, lines));
    let ServiceMode::Replicated { replicas } = s.mode else { panic!("{:?}", s.mode) };
    (s.autoscale.expect("a policy"), replicas)
}

fn cpu(percent: u32) -> Target {
    Target::Cpu { percent }
}

#[test]
fn the_documented_example_loads() {
    let (p, replicas) = policy(
        "{replicas: 2, resources: {limits: {cpus: \"0.5\"}}}",
        &["min: 2", "max: 12", "target: {cpu: 70%}", "period: 15s", "scale_down_window: 5m", "scale_up_window: 0s"],
    );
    assert_eq!(p, Policy::new(2, 12, cpu(70)));
    assert_eq!(replicas, 2);
}

#[test]
fn defaults_and_other_forms() {
    // min defaults to 1; period and windows to the HPA's.
    assert_eq!(policy("{}", &["max: 3", "target: {cpu: 70%}"]).0, Policy::new(1, 3, cpu(70)));
    // A percent may be quoted, spaced, and up to 1000% (ten cores without a limit).
    assert_eq!(policy("{}", &["max: 3", "target: {cpu: \"250 %\"}"]).0.target, cpu(250));
    assert_eq!(policy("{}", &["max: 3", "target: {cpu: 1000%}"]).0.target, cpu(1000));
    assert_eq!(
        policy("{}", &["max: 3", "target:", "  connections: 50"]).0.target,
        Target::Connections { per_replica: 50 }
    );
    let (p, _) =
        policy("{}", &["max: 3", "target: {cpu: 70%}", "period: 1s", "scale_down_window: 90s", "scale_up_window: 1m"]);
    assert_eq!((p.period, p.down_window, p.up_window), (1000, 90_000, 60_000));
    // Null values keep the defaults.
    let (p, _) = policy("{}", &["min:", "max: 3", "target: {cpu: 70%}", "period:", "scale_down_window:"]);
    assert_eq!(p, Policy::new(1, 3, cpu(70)));
    // min = max: a fixed count, allowed.
    assert_eq!(policy("{replicas: 4}", &["min: 4", "max: 4", "target: {cpu: 70%}"]).1, 4);
}

#[test]
fn without_replicas_the_service_starts_at_min() {
    assert_eq!(policy("{}", &["min: 3", "max: 12", "target: {cpu: 70%}"]).1, 3);
    assert_eq!(policy("{replicas: null}", &["min: 3", "max: 12", "target: {cpu: 70%}"]).1, 3);
    // compose's `scale:` is the written replicas too.
    let text = stack("{}", &["min: 2", "max: 12", "target: {cpu: 70%}"]).replace("    deploy: {}\n", "    scale: 5\n");
    assert_eq!(web(&text).mode, ServiceMode::Replicated { replicas: 5 });
}

#[test]
fn null_is_no_policy_and_other_x_keys_stay_ignored() {
    let text = "services:\n  web:\n    image: nginx\n    x-stackd-autoscale:\n    x-other: {min: 0}\n";
    assert_eq!(web(text).autoscale, None);
}

#[test]
fn variables_are_interpolated_inside_it() {
    let text = stack("{}", &["min: ${MIN}", "max: ${MAX:-12}", "target: {cpu: \"${CPU}%\"}", "period: ${P}"]);
    let env: BTreeMap<String, String> =
        [("MIN", "2"), ("CPU", "60"), ("P", "30s")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let options = LoadOptions { env, ..LoadOptions::default() };
    let loaded = load("shop", &files(&text), &options).unwrap_or_else(|e| panic!("{e}"));
    let p = loaded.spec.services["web"].autoscale.expect("a policy");
    assert_eq!((p.min, p.max, p.target, p.period), (2, 12, cpu(60), 30_000));
    // A failed interpolation is reported where it is written.
    assert_eq!(
        errors(&stack("{}", &["max: ${MAX:?set MAX}", "target: {cpu: 70%}"])),
        ["stack.yml:7:7: services.web.x-stackd-autoscale.max: required variable MAX is missing a value: set MAX"]
    );
}

#[test]
fn bounds_are_checked() {
    let t = "target: {cpu: 70%}";
    assert_eq!(
        errors(&stack("{}", &["min: 0", "max: 3", t])),
        [
            "stack.yml:7:7: services.web.x-stackd-autoscale.min: must be at least 1, got 0: an autoscaled service keeps a replica to measure"
        ]
    );
    assert_eq!(
        errors(&stack("{}", &["min: 5", "max: 3", t])),
        ["stack.yml:7:7: services.web.x-stackd-autoscale.min: min 5 is above max 3"]
    );
    assert_eq!(
        errors(&stack("{}", &["max: 20000", t])),
        ["stack.yml:7:7: services.web.x-stackd-autoscale.max: at most 10000, got 20000"]
    );
    assert_eq!(
        errors(&stack("{}", &["min: -1", "max: 3", t])),
        ["stack.yml:7:7: services.web.x-stackd-autoscale.min: must be a non-negative integer, got -1"]
    );
    assert_eq!(
        errors(&stack("{}", &[t])),
        [
            "stack.yml:6:5: services.web.x-stackd-autoscale: x-stackd-autoscale needs `max:`, the most replicas the autoscaler may run"
        ]
    );
}

#[test]
fn written_replicas_are_within_the_bounds() {
    let p = ["min: 2", "max: 12", "target: {cpu: 70%}"];
    assert_eq!(
        errors(&stack("\n      replicas: 1", &p)),
        [
            "stack.yml:6:7: services.web.deploy.replicas: replicas 1 is below x-stackd-autoscale.min 2: replicas is where the autoscaler starts"
        ]
    );
    let text = stack("{replicas: 13}", &p);
    assert_eq!(
        errors(&text),
        [
            "stack.yml:5:14: services.web.deploy.replicas: replicas 13 is above x-stackd-autoscale.max 12: replicas is where the autoscaler starts"
        ]
    );
    let text = stack("{}", &p).replace("    deploy: {}\n", "    scale: 0\n");
    assert_eq!(
        errors(&text),
        [
            "stack.yml:5:5: services.web.scale: replicas 0 is below x-stackd-autoscale.min 2: replicas is where the autoscaler starts"
        ]
    );
}

#[test]
fn only_replicated_services_are_autoscaled() {
    let p = ["max: 3", "target: {cpu: 70%}"];
    assert_eq!(
        errors(&stack("{mode: global}", &p)),
        [
            "stack.yml:6:5: services.web.x-stackd-autoscale: autoscaling needs a replicated service: global services run one task per node"
        ]
    );
    for mode in ["replicated-job", "global-job"] {
        assert_eq!(
            errors(&stack(&format!("{{mode: {mode}}}"), &p)),
            [
                "stack.yml:6:5: services.web.x-stackd-autoscale: autoscaling needs a replicated service: a job runs to completion, it is not scaled by load"
            ],
            "{mode}"
        );
    }
}

#[test]
fn targets_are_checked() {
    let e = |target: &str| errors(&stack("{}", &["max: 3", target]));
    assert_eq!(
        errors(&stack("{}", &["max: 3"])),
        [
            "stack.yml:6:5: services.web.x-stackd-autoscale: x-stackd-autoscale needs a `target:`: `{cpu: 70%}` or `{connections: 50}`"
        ]
    );
    assert_eq!(
        e("target: {}"),
        [
            "stack.yml:8:7: services.web.x-stackd-autoscale.target: needs one target: `cpu: 70%` (of the CPU limit) or `connections: 50` (per replica)"
        ]
    );
    assert_eq!(
        e("target: {memory: 50%}"),
        [
            "stack.yml:8:16: services.web.x-stackd-autoscale.target.memory: unknown target `memory`: the supported ones are cpu and connections"
        ]
    );
    assert_eq!(
        e("target: {cpus: 50%}"),
        [
            "stack.yml:8:16: services.web.x-stackd-autoscale.target.cpus: unknown target `cpus` (did you mean `cpu`?): the supported ones are cpu and connections"
        ]
    );
    assert_eq!(
        e("target: {cpu: 70%, connections: 50}"),
        [
            "stack.yml:8:26: services.web.x-stackd-autoscale.target.connections: one target only: cpu or connections, not both"
        ]
    );
    assert_eq!(e("target: 70%"), ["stack.yml:8:7: services.web.x-stackd-autoscale.target: must be a mapping, got 70%"]);
}

#[test]
fn a_cpu_target_is_a_whole_percentage() {
    let e = |cpu: &str| errors(&stack("{}", &["max: 3", &format!("target: {{cpu: {cpu}}}")]));
    let at = "stack.yml:8:16: services.web.x-stackd-autoscale.target.cpu";
    assert_eq!(e("70"), [format!("{at}: must be a percentage like 70%, got 70: write the `%`")]);
    assert_eq!(e("0.7"), [format!("{at}: must be a percentage like 70%, got 0.7: write the `%`")]);
    assert_eq!(e("70.5%"), [format!("{at}: must be a whole percentage like 70%, got 70.5%")]);
    assert_eq!(e("high"), [format!("{at}: must be a whole percentage like 70%, got high")]);
    assert_eq!(e("0%"), [format!("{at}: must be a percentage from 1% to 1000%, got 0%")]);
    assert_eq!(e("1001%"), [format!("{at}: must be a percentage from 1% to 1000%, got 1001%")]);
    assert_eq!(e("99999999999%"), [format!("{at}: must be a percentage from 1% to 1000%, got 99999999999%")]);
}

#[test]
fn a_connections_target_is_counted_by_the_mesh() {
    let e = |n: &str| errors(&stack("{}", &["max: 3", &format!("target: {{connections: {n}}}")]));
    let at = "stack.yml:8:16: services.web.x-stackd-autoscale.target.connections";
    assert_eq!(
        e("0"),
        [format!("{at}: must be a whole number of connections per replica from 1 to 4294967295, got 0")]
    );
    assert_eq!(e("1.5"), [format!("{at}: must be a non-negative integer, got 1.5")]);
    assert_eq!(
        e("5000000000"),
        [format!("{at}: must be a whole number of connections per replica from 1 to 4294967295, got 5000000000")]
    );
    let mesh = format!(
        "{at}: a connections target needs a TCP port published through the routing mesh (`published:` with `mode: ingress`): the mesh is what counts the connections"
    );
    let target = ["max: 3", "target: {connections: 50}"];
    // No port; a port in host mode; a UDP port; an unpublished port.
    for ports in [
        "    ports: []\n",
        "    ports: [{target: 80, published: 8080, mode: host}]\n",
        "    ports: [\"53:53/udp\"]\n",
        "    ports: [\"80\"]\n",
    ] {
        let text = stack("{}", &target).replace("    ports: [\"8080:80\"]\n", ports);
        assert_eq!(errors(&text), std::slice::from_ref(&mesh), "{ports}");
    }
}

#[test]
fn durations_are_checked() {
    let e = |line: &str| errors(&stack("{}", &["max: 3", "target: {cpu: 70%}", line]));
    assert_eq!(e("period: 500ms"), ["stack.yml:9:7: services.web.x-stackd-autoscale.period: at least 1s, got 500ms"]);
    assert_eq!(e("period: 0"), ["stack.yml:9:7: services.web.x-stackd-autoscale.period: at least 1s, got 0s"]);
    assert_eq!(
        e("period: 15"),
        ["stack.yml:9:7: services.web.x-stackd-autoscale.period: must be a duration with a unit (like 15s), got 15"]
    );
    assert_eq!(
        e("scale_down_window: soon"),
        [
            "stack.yml:9:7: services.web.x-stackd-autoscale.scale_down_window: must be a duration like 10s, 1m30s or 500ms, got \"soon\""
        ]
    );
    assert_eq!(
        e("scale_up_window: 2h"),
        ["stack.yml:9:7: services.web.x-stackd-autoscale.scale_up_window: at most 1h, got 2h"]
    );
}

#[test]
fn unknown_keys_are_errors() {
    let p = |extra: &str| errors(&stack("{}", &["max: 3", "target: {cpu: 70%}", extra]));
    assert_eq!(
        p("mni: 2"),
        ["stack.yml:9:7: services.web.x-stackd-autoscale.mni: unknown key `mni`: did you mean `min`?"]
    );
    assert_eq!(
        p("scale_down_windows: 5m"),
        [
            "stack.yml:9:7: services.web.x-stackd-autoscale.scale_down_windows: unknown key `scale_down_windows`: did you mean `scale_down_window`?"
        ]
    );
    assert_eq!(
        p("behavior: {}"),
        [
            "stack.yml:9:7: services.web.x-stackd-autoscale.behavior: unknown key `behavior`: x-stackd-autoscale takes min, max, target, period, scale_down_window and scale_up_window"
        ]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: nginx\n    x-stackd-autoscale: 3\n"),
        ["stack.yml:4:5: services.web.x-stackd-autoscale: must be a mapping, got 3"]
    );
    // stackd's own extension keys are checked; under deploy, it is misplaced.
    assert_eq!(
        errors("services:\n  web:\n    image: nginx\n    x-stackd-autoscaling: {max: 3}\n"),
        [
            "stack.yml:4:5: services.web.x-stackd-autoscaling: unknown key `x-stackd-autoscaling`: did you mean `x-stackd-autoscale`?"
        ]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: nginx\n    x-stackd-replicas: 3\n"),
        [
            "stack.yml:4:5: services.web.x-stackd-replicas: unknown key `x-stackd-replicas`: the only x-stackd- key of a service is `x-stackd-autoscale`"
        ]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: nginx\n    deploy:\n      x-stackd-autoscale: {max: 3}\n"),
        [
            "stack.yml:5:7: services.web.deploy.x-stackd-autoscale: x-stackd-autoscale is a key of the service, not of deploy: write it beside `deploy:`"
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = stack("{replicas: 20}", &["min: 0", "max: 20000", "target: {cpu: 0%}", "period: 1ms", "oops: 1"]);
    assert_eq!(
        errors(&text),
        [
            "stack.yml:7:7: services.web.x-stackd-autoscale.min: must be at least 1, got 0: an autoscaled service keeps a replica to measure",
            "stack.yml:8:7: services.web.x-stackd-autoscale.max: at most 10000, got 20000",
            "stack.yml:9:16: services.web.x-stackd-autoscale.target.cpu: must be a percentage from 1% to 1000%, got 0%",
            "stack.yml:10:7: services.web.x-stackd-autoscale.period: at least 1s, got 1ms",
            "stack.yml:11:7: services.web.x-stackd-autoscale.oops: unknown key `oops`: x-stackd-autoscale takes min, max, target, period, scale_down_window and scale_up_window",
        ]
    );
}

/// A later file changes the bounds key by key and replaces the target.
#[test]
fn a_later_file_overrides_it() {
    let base = stack("{}", &["min: 2", "max: 12", "target: {cpu: 70%}", "period: 30s"]);
    let over = "services:\n  web:\n    x-stackd-autoscale:\n      max: 20\n      target: {connections: 50}\n";
    let files =
        [SourceFile { name: "a.yml".into(), text: base }, SourceFile { name: "b.yml".into(), text: over.into() }];
    let loaded = load("shop", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let p = loaded.spec.services["web"].autoscale.expect("a policy");
    assert_eq!((p.min, p.max, p.target, p.period), (2, 20, Target::Connections { per_replica: 50 }, 30_000));
}

/// The example of docs/stack-files.md, "Autoscaling", and the errors it shows.
#[test]
fn the_documentation_example_and_its_errors() {
    let doc = "services:\n  web:\n    image: nginx\n    ports: [\"8080:80\"]\n    deploy:\n      replicas: 2            # where the autoscaler starts\n      resources: {limits: {cpus: \"0.5\"}}\n    x-stackd-autoscale:\n      min: 2\n      max: 12\n      target: {cpu: 70%}     # or: target: {connections: 50}\n      period: 15s\n      scale_down_window: 5m\n      scale_up_window: 0s\n";
    let s = web(doc);
    assert_eq!((s.autoscale, s.mode), (Some(Policy::new(2, 12, cpu(70))), ServiceMode::Replicated { replicas: 2 }));
    assert_eq!(s.task.resources.limits.nano_cpus, 500_000_000);
    let changed = |from: &str, to: &str| errors(&doc.replace(from, to));
    assert_eq!(
        changed("min: 2\n      max: 12", "min: 5\n      max: 3"),
        ["stack.yml:9:7: services.web.x-stackd-autoscale.min: min 5 is above max 3"]
    );
    assert_eq!(
        changed("replicas: 2", "replicas: 1"),
        [
            "stack.yml:6:7: services.web.deploy.replicas: replicas 1 is below x-stackd-autoscale.min 2: replicas is where the autoscaler starts"
        ]
    );
    assert_eq!(
        changed("{cpu: 70%}", "{memory: 50%}"),
        [
            "stack.yml:11:16: services.web.x-stackd-autoscale.target.memory: unknown target `memory`: the supported ones are cpu and connections"
        ]
    );
    assert_eq!(
        changed("replicas: 2", "mode: global"),
        [
            "stack.yml:8:5: services.web.x-stackd-autoscale: autoscaling needs a replicated service: global services run one task per node"
        ]
    );
}
