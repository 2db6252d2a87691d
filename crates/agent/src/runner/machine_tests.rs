//! One test per transition of the runner's decision core.

use stackd_core::model::{DesiredState, TaskState};

use super::*;

fn view(desired: DesiredState, known_state: TaskState) -> View {
    View { desired, known_state, known_container: String::new(), known_health: String::new() }
}

fn fresh() -> View {
    view(DesiredState::Running, TaskState::Assigned)
}

fn found(id: &str, state: FoundState) -> Option<Found> {
    Some(Found { id: id.into(), state, health: String::new() })
}

fn states(step: &Step) -> Vec<TaskState> {
    step.reports.iter().map(|r| r.state).collect()
}

fn running(id: &str, health: &str) -> Phase {
    Phase::Running { container_id: id.into(), health: health.into() }
}

#[test]
fn starts_by_locating() {
    assert_eq!(start(), (Phase::Locating, Step { reports: vec![], op: Some(Op::Locate) }));
}

#[test]
fn nothing_found_prepares() {
    let (phase, step) = next(Phase::Locating, Event::Located(None), &fresh());
    assert_eq!(phase, Phase::Preparing);
    assert_eq!(states(&step), vec![TaskState::Preparing]);
    assert_eq!(step.reports[0].message, "preparing");
    assert_eq!(step.op, Some(Op::EnsureImage));
}

#[test]
fn volumes_ready_ensures_the_networks() {
    let (phase, step) = next(Phase::Mounting, Event::VolumesReady, &fresh());
    assert_eq!((phase, step), (Phase::Networking, Step { reports: vec![], op: Some(Op::EnsureNetworks) }));
}

#[test]
fn a_volume_that_cannot_be_had_rejects_the_task() {
    let why = "volume shop_data exists on this node with driver local, no options, but the stack wants …";
    let (phase, step) = next(Phase::Mounting, Event::VolumesFailed(why.into()), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Rejected });
    assert_eq!(states(&step), vec![TaskState::Rejected]);
    assert_eq!((step.reports[0].message.as_str(), step.reports[0].err.as_str()), ("volume unavailable", why));
    assert_eq!(step.op, None);
}

#[test]
fn a_task_shut_down_while_its_volumes_are_made_ends_before_start() {
    let (phase, step) = next(Phase::Mounting, Event::VolumesReady, &view(DesiredState::Shutdown, TaskState::Preparing));
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(states(&step), vec![TaskState::Shutdown]);
}

#[test]
fn an_unexpected_event_while_mounting_retries_the_volumes() {
    let (phase, step) = next(Phase::Mounting, Event::NetworksReady, &fresh());
    assert_eq!((phase, step.op), (Phase::Mounting, Some(Op::EnsureVolumes)));
}

#[test]
fn nothing_found_for_a_running_task_fails_it() {
    let v = View { known_container: "c0ffee".into(), ..view(DesiredState::Running, TaskState::Running) };
    let (phase, step) = next(Phase::Locating, Event::Located(None), &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(states(&step), vec![TaskState::Failed]);
    assert_eq!(step.reports[0].err, "container c0ffee disappeared");
    assert_eq!(step.op, None);
}

#[test]
fn nothing_found_for_a_terminal_task_does_nothing() {
    let (phase, step) = next(Phase::Locating, Event::Located(None), &view(DesiredState::Running, TaskState::Complete));
    assert_eq!(phase, Phase::Done { state: TaskState::Complete });
    assert_eq!(step, Step::default());
}

#[test]
fn nothing_found_for_a_task_to_shut_down_reports_shutdown() {
    let (phase, step) = next(Phase::Locating, Event::Located(None), &view(DesiredState::Shutdown, TaskState::Assigned));
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(states(&step), vec![TaskState::Shutdown]);
}

#[test]
fn adopts_a_running_container() {
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Running)), &fresh());
    assert_eq!(phase, running("c1", ""));
    assert_eq!(states(&step), vec![TaskState::Running]);
    assert_eq!(step.reports[0].container_id, "c1");
    assert_eq!(step.op, Some(watch("c1", "")));
}

#[test]
fn adopting_what_the_manager_knows_reports_nothing() {
    let v = View { known_container: "c1".into(), ..view(DesiredState::Running, TaskState::Running) };
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Running)), &v);
    assert_eq!(phase, running("c1", ""));
    assert!(step.reports.is_empty());
    assert_eq!(step.op, Some(watch("c1", "")));
    // Another container id is news.
    let v = View { known_container: "c0".into(), ..v };
    let (_, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Running)), &v);
    assert_eq!(states(&step), vec![TaskState::Running]);
}

#[test]
fn adopting_a_running_container_of_a_task_to_shut_down_stops_it() {
    let v = view(DesiredState::Shutdown, TaskState::Running);
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Running)), &v);
    assert!(matches!(phase, Phase::Stopping { cause: StopCause::Shutdown, .. }));
    assert_eq!(step.op, Some(Op::Stop("c1".into())));
}

#[test]
fn a_running_container_of_a_terminal_task_is_stopped_silently() {
    let v = view(DesiredState::Running, TaskState::Failed);
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Running)), &v);
    assert!(matches!(phase, Phase::Stopping { cause: StopCause::Silent(TaskState::Failed), .. }));
    assert!(step.reports.is_empty());
    let (phase, step) = next(phase, Event::Stopped { exit_code: Some(137) }, &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert!(step.reports.is_empty());
}

#[test]
fn adopting_an_exited_container_reports_its_end() {
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Exited(0))), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Complete });
    assert_eq!(states(&step), vec![TaskState::Complete]);
    assert_eq!(step.reports[0].exit_code, Some(0));

    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Exited(3))), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step.reports[0].err, "exit code 3");
    assert_eq!(step.reports[0].exit_code, Some(3));
    assert_eq!(step.op, None, "an exited container is never restarted nor recreated");
}

#[test]
fn adopting_an_exited_container_of_a_terminal_task_reports_nothing() {
    let v = view(DesiredState::Running, TaskState::Failed);
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Exited(3))), &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step, Step::default());
}

#[test]
fn adopting_a_created_container_starts_it_once_its_ports_are_free() {
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Created)), &fresh());
    assert_eq!(phase, awaiting("c1", ""));
    assert_eq!(states(&step), vec![TaskState::Starting]);
    assert_eq!(step.op, Some(Op::CheckPorts("c1".into())));
}

fn awaiting(id: &str, held: &str) -> Phase {
    Phase::AwaitingPorts { container_id: id.into(), held: held.into() }
}

fn held(holder: &str, managed: bool, waited_ms: u64) -> Event {
    Event::PortsHeld { holder: holder.into(), managed, waited_ms }
}

/// Issue 12, defect 1: a port held by a container of the cluster (one in its
/// stop grace period) is waited for, the wait shown once per holder.
#[test]
fn a_port_held_by_a_stopping_task_is_waited_for() {
    let h = "host port 8080/tcp is held by container app_web.1.x (task x)";
    let (phase, step) = next(awaiting("c1", ""), held(h, true, 0), &fresh());
    assert_eq!(phase, awaiting("c1", h));
    assert_eq!(states(&step), vec![TaskState::Starting]);
    assert_eq!(step.reports[0].message, format!("waiting: {h}"));
    assert_eq!(step.op, Some(Op::CheckPorts("c1".into())));
    // Still held: checked again, nothing new reported.
    let (phase, step) = next(phase, held(h, true, 3_000), &fresh());
    assert_eq!(phase, awaiting("c1", h));
    assert_eq!(step, Step::op(Op::CheckPorts("c1".into())));
    // Free: start.
    let (phase, step) = next(phase, Event::PortsFree, &fresh());
    assert_eq!(phase, Phase::Starting { container_id: "c1".into() });
    assert_eq!(step, Step::op(Op::Start("c1".into())));
}

#[test]
fn a_port_wait_is_bounded_and_one_held_outside_stackd_fails_at_once() {
    let h = "host port 8080/tcp is held by container app_web.1.x (task x)";
    let (phase, step) = next(awaiting("c1", h), held(h, true, PORT_WAIT_MS), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step.reports[0].err, format!("{h} after 60 s"));
    let h = "host port 8080/tcp is held by container nginx, which stackd does not manage";
    let (phase, step) = next(awaiting("c1", ""), held(h, false, 0), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step.reports[0].err, h);
    assert_eq!(step.reports[0].container_id, "c1");
}

#[test]
fn a_task_shut_down_while_it_waits_for_a_port_never_starts() {
    let v = view(DesiredState::Shutdown, TaskState::Starting);
    let (phase, step) = next(awaiting("c1", "x"), held("x", true, 1_000), &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(states(&step), vec![TaskState::Shutdown]);
}

#[test]
fn image_ready_ensures_the_volumes() {
    let (phase, step) = next(Phase::Preparing, Event::ImageReady, &fresh());
    assert_eq!(phase, Phase::Mounting);
    assert_eq!(step, Step { reports: vec![], op: Some(Op::EnsureVolumes) });
}

#[test]
fn networks_ready_creates() {
    let (phase, step) = next(Phase::Networking, Event::NetworksReady, &fresh());
    assert_eq!(phase, Phase::Creating);
    assert_eq!(step, Step { reports: vec![], op: Some(Op::Create) });
}

#[test]
fn networks_ready_after_shutdown_request_stops_there() {
    let v = view(DesiredState::Shutdown, TaskState::Preparing);
    let (phase, step) = next(Phase::Networking, Event::NetworksReady, &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(states(&step), vec![TaskState::Shutdown]);
    assert_eq!(step.op, None);
}

#[test]
fn a_missing_network_rejects() {
    let err = "external network infra does not exist on this node".to_string();
    let (phase, step) = next(Phase::Networking, Event::NetworksFailed(err.clone()), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Rejected });
    assert_eq!(states(&step), vec![TaskState::Rejected]);
    assert_eq!(step.reports[0].message, "network unavailable");
    assert_eq!(step.reports[0].err, err);
    assert_eq!(step.op, None);
}

#[test]
fn an_unexpected_event_while_networking_ensures_again() {
    let (phase, step) = next(Phase::Networking, Event::Started { health: String::new() }, &fresh());
    assert_eq!(phase, Phase::Networking);
    assert_eq!(step, Step { reports: vec![], op: Some(Op::EnsureNetworks) });
}

#[test]
fn image_ready_after_shutdown_request_stops_there() {
    let v = view(DesiredState::Shutdown, TaskState::Preparing);
    let (phase, step) = next(Phase::Preparing, Event::ImageReady, &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(states(&step), vec![TaskState::Shutdown]);
}

#[test]
fn missing_image_rejects() {
    let err = "image x not found locally and pull failed: no registry".to_string();
    let (phase, step) = next(Phase::Preparing, Event::ImageFailed(err.clone()), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Rejected });
    assert_eq!(states(&step), vec![TaskState::Rejected]);
    assert_eq!(step.reports[0].err, err);
}

#[test]
fn created_checks_its_ports() {
    let (phase, step) = next(Phase::Creating, Event::Created("c1".into()), &fresh());
    assert_eq!(phase, awaiting("c1", ""));
    assert_eq!(states(&step), vec![TaskState::Starting]);
    assert_eq!(step.reports[0].container_id, "c1");
    assert_eq!(step.op, Some(Op::CheckPorts("c1".into())));
}

#[test]
fn create_failure_rejects() {
    let (phase, step) = next(Phase::Creating, Event::CreateFailed("bad mount".into()), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Rejected });
    assert_eq!(step.reports[0].err, "bad mount");
}

#[test]
fn name_conflict_with_the_same_task_adopts() {
    let (phase, step) = next(Phase::Creating, Event::Located(found("c9", FoundState::Running)), &fresh());
    assert_eq!(phase, running("c9", ""));
    assert_eq!(states(&step), vec![TaskState::Running]);
}

#[test]
fn started_runs_and_watches() {
    let started = Event::Started { health: String::new() };
    let (phase, step) = next(Phase::Starting { container_id: "c1".into() }, started, &fresh());
    assert_eq!(phase, running("c1", ""));
    assert_eq!(states(&step), vec![TaskState::Running]);
    assert_eq!(step.reports[0].container_id, "c1");
    assert_eq!(step.op, Some(watch("c1", "")));
}

/// Issue 12, defect 2: a container with a health check (its own or the
/// image's) is reported with its health from the start, so the manager never
/// counts it up before its check passed.
#[test]
fn started_with_a_health_check_reports_it_starting() {
    let started = Event::Started { health: "starting".into() };
    let (phase, step) = next(Phase::Starting { container_id: "c1".into() }, started, &fresh());
    assert_eq!(phase, running("c1", "starting"));
    assert_eq!(step.reports[0].health, "starting");
    assert_eq!(step.op, Some(watch("c1", "starting")));
}

#[test]
fn started_after_shutdown_request_stops() {
    let v = view(DesiredState::Shutdown, TaskState::Starting);
    let (phase, step) =
        next(Phase::Starting { container_id: "c1".into() }, Event::Started { health: String::new() }, &v);
    assert!(matches!(phase, Phase::Stopping { cause: StopCause::Shutdown, .. }));
    assert_eq!(step.op, Some(Op::Stop("c1".into())));
}

#[test]
fn start_failure_fails() {
    let (phase, step) =
        next(Phase::Starting { container_id: "c1".into() }, Event::StartFailed("no such file".into()), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step.reports[0].err, "no such file");
    assert_eq!(step.reports[0].container_id, "c1");
}

#[test]
fn exit_zero_completes() {
    let (phase, step) = next(running("c1", ""), Event::Exited(0), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Complete });
    assert_eq!(step.reports[0].message, "container exited");
    assert_eq!(step.reports[0].err, "");
    assert_eq!(step.reports[0].exit_code, Some(0));
}

#[test]
fn a_completed_job_task_stays_complete_when_it_is_no_longer_wanted() {
    // The orchestrator marks a completed job task desired shutdown: its
    // container stays as it is (no stop, no new report), and an agent that
    // restarts finds the exited container and leaves it alone too.
    let done = Phase::Done { state: TaskState::Complete };
    let wanted_no_more = view(DesiredState::Shutdown, TaskState::Complete);
    let (phase, step) = next(done.clone(), Event::ShutdownRequested, &wanted_no_more);
    assert_eq!((phase, step), (done.clone(), Step::default()));
    let (phase, step) = next(Phase::Locating, Event::Located(found("c1", FoundState::Exited(0))), &wanted_no_more);
    assert_eq!((phase, step), (done, Step::default()));
}

#[test]
fn exit_non_zero_fails() {
    let (phase, step) = next(running("c1", ""), Event::Exited(3), &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step.reports[0].err, "exit code 3");
    assert_eq!(step.reports[0].exit_code, Some(3));
    assert_eq!(step.op, None);
}

#[test]
fn exit_while_shutdown_is_wanted_is_a_shutdown() {
    let v = view(DesiredState::Shutdown, TaskState::Running);
    let (phase, step) = next(running("c1", ""), Event::Exited(143), &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(step.reports[0].exit_code, Some(143));
}

#[test]
fn vanished_container_fails() {
    let (phase, step) = next(running("c1", ""), Event::Vanished, &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(step.reports[0].err, "container c1 disappeared");
}

#[test]
fn shutdown_request_stops_then_reports_shutdown() {
    let v = view(DesiredState::Shutdown, TaskState::Running);
    let (phase, step) = next(running("c1", "healthy"), Event::ShutdownRequested, &v);
    assert_eq!(
        phase,
        Phase::Stopping { container_id: "c1".into(), health: "healthy".into(), cause: StopCause::Shutdown }
    );
    assert!(step.reports.is_empty());
    assert_eq!(step.op, Some(Op::Stop("c1".into())));
    let (phase, step) = next(phase, Event::Stopped { exit_code: Some(143) }, &v);
    assert_eq!(phase, Phase::Done { state: TaskState::Shutdown });
    assert_eq!(states(&step), vec![TaskState::Shutdown]);
    assert_eq!(step.reports[0].exit_code, Some(143));
    assert_eq!(step.reports[0].container_id, "c1");
}

#[test]
fn health_changes_are_reported() {
    let ev = |s: &str| Event::Health { status: s.into(), output: String::new() };
    let (phase, step) = next(running("c1", ""), ev("starting"), &fresh());
    assert_eq!(phase, running("c1", "starting"));
    assert_eq!(states(&step), vec![TaskState::Running]);
    assert_eq!(step.reports[0].health, "starting");
    let (phase, step) = next(phase, ev("healthy"), &fresh());
    assert_eq!(phase, running("c1", "healthy"));
    assert_eq!(step.reports[0].health, "healthy");
    assert_eq!(step.op, Some(watch("c1", "healthy")));
    // The same health again is no news.
    let (phase, step) = next(phase, ev("healthy"), &fresh());
    assert_eq!(phase, running("c1", "healthy"));
    assert!(step.reports.is_empty());
}

/// Issue 12, defect 1: an unhealthy container is failed only once stopped,
/// as in Swarm: until then it holds its ports, and its task its slot.
#[test]
fn unhealthy_stops_then_fails() {
    let ev = Event::Health { status: "unhealthy".into(), output: "wget: can't connect\n".into() };
    let (phase, step) = next(running("c1", "healthy"), ev, &fresh());
    assert!(matches!(phase, Phase::Stopping { cause: StopCause::Unhealthy(_), .. }));
    assert_eq!(states(&step), vec![TaskState::Running], "not failed while it stops");
    assert_eq!(step.reports[0].health, "unhealthy");
    assert_eq!(step.reports[0].message, "container unhealthy: stopping it");
    assert_eq!(step.op, Some(Op::Stop("c1".into())));
    let (phase, step) = next(phase, Event::Stopped { exit_code: Some(137) }, &fresh());
    assert_eq!(phase, Phase::Done { state: TaskState::Failed });
    assert_eq!(states(&step), vec![TaskState::Failed]);
    assert_eq!(step.reports[0].err, "unhealthy: wget: can't connect");
    assert_eq!(step.reports[0].exit_code, Some(137));
    assert_eq!(step.reports[0].health, "unhealthy");
}

#[test]
fn an_adopted_unhealthy_container_is_stopped_then_failed() {
    let found = Some(Found { id: "c1".into(), state: FoundState::Running, health: "unhealthy".into() });
    let (phase, step) = next(Phase::Locating, Event::Located(found), &fresh());
    assert!(matches!(phase, Phase::Stopping { cause: StopCause::Unhealthy(_), .. }));
    assert_eq!(states(&step), vec![TaskState::Running]);
    assert_eq!(step.op, Some(Op::Stop("c1".into())));
}

/// Issue 12, defect 6: the manager took the task back after its node
/// returned; the runner, which never stopped it, says it runs.
#[test]
fn a_task_taken_back_reports_it_runs() {
    let (phase, step) = next(running("c1", "healthy"), Event::Reassigned, &fresh());
    assert_eq!(phase, running("c1", "healthy"));
    assert_eq!(states(&step), vec![TaskState::Running]);
    assert_eq!((step.reports[0].container_id.as_str(), step.reports[0].health.as_str()), ("c1", "healthy"));
    assert_eq!(step.op, Some(watch("c1", "healthy")));
}

#[test]
fn unexpected_events_resume_the_phase() {
    let (phase, step) = next(running("c1", ""), Event::ImageReady, &fresh());
    assert_eq!(phase, running("c1", ""));
    assert_eq!(step, Step { reports: vec![], op: Some(watch("c1", "")) });
    let done = Phase::Done { state: TaskState::Complete };
    assert_eq!(next(done.clone(), Event::Exited(1), &fresh()), (done, Step::default()));
}
