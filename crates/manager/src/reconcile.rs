//! The one shape of every manager loop.
//!
//! ```text
//!   not leading ──────────────► wait for the lead (or cancel)
//!        │ leading
//!        ▼
//!   snapshot of the state (an Arc: no lock held while computing)
//!        ▼
//!   decide(state, tick) ── pure core function ──► actions + next wake-up
//!        ▼
//!   act(actions) ── propose through Raft ──► Again │ Wait │ Retry(d) │ Done
//!        ▼
//!   wait for: the applied index (then DEBOUNCE) │ the wake-up (≤ IDLE)
//!             │ a leadership change │ cancellation
//! ```
//!
//! A loop is a [`Reconciler`]: what it decides from a snapshot of the state
//! and a [`Tick`] (the clocks, passed in), and how it carries the decision
//! out. [`run`] is the loop itself, the same for all of them: the
//! controller (orchestrate + schedule), the node monitor (liveness), the
//! membership reconciler and the bootstrap. The decisions live in
//! `stackd_core`; a reconciler only gathers their inputs and proposes their
//! outputs.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stackd_core::ClusterState;
use stackd_core::model::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::now_ms;
use crate::raft::RaftNode;

/// Milliseconds of this process's monotonic clock: for the leader's own
/// memory (heartbeats, when it took the lead), which a step of the wall
/// clock must not age.
pub(crate) fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The clocks of one look, read once by [`run`] and passed in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick {
    /// Wall-clock milliseconds: the `at` of commands, the orchestrators' now.
    pub now: Timestamp,
    /// [`mono_ms`] now.
    pub mono: u64,
    /// [`mono_ms`] when this manager last took the lead.
    pub leading_since: u64,
}

/// What a look decided.
#[derive(Debug)]
pub(crate) struct Pass<A> {
    /// What to carry out; nothing when there is nothing to change.
    pub actions: Vec<A>,
    /// When to look again even if nothing changes (capped at
    /// [`Reconciler::IDLE`]).
    pub wake_in: Option<Duration>,
}

/// What the loop does after [`Reconciler::act`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The state changed under our own proposals: look again at once.
    Again,
    /// Wait for a change or the pass's wake-up.
    Wait,
    /// Something failed: look again after this long (or a change).
    Retry(Duration),
    /// The loop's work is done for good.
    Done,
}

/// One manager loop: its decision and how it is carried out.
pub(crate) trait Reconciler: Send + 'static {
    /// One thing to carry out (a command to propose, a membership step, …).
    type Action: Send;
    /// How long to wait for more changes after an applied entry.
    const DEBOUNCE: Duration;
    /// The longest the loop sleeps without a reason to wake.
    const IDLE: Duration = Duration::from_secs(5);
    /// Apply everything committed (a read barrier) before each look.
    const BARRIER: bool = false;

    /// Decides from a snapshot of the state; gathers the other inputs the
    /// core function needs (the loop's own memory, Raft's membership).
    fn decide(&mut self, raft: &RaftNode, state: &ClusterState, tick: &Tick) -> Pass<Self::Action>;

    /// Carries out `actions` (never empty).
    fn act(&mut self, raft: &RaftNode, actions: Vec<Self::Action>, tick: &Tick) -> impl Future<Output = Next> + Send;
}

/// Runs `r` on every manager until `cancel`; it acts only while this node
/// leads with a majority.
pub(crate) async fn run<R: Reconciler>(raft: RaftNode, mut r: R, cancel: CancellationToken) {
    let mut applied = raft.shared().applied();
    let mut leading = raft.leader_watch();
    let mut leading_since = mono_ms();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if !*leading.borrow_and_update() {
            tokio::select! {
                r = leading.changed() => {
                    if r.is_err() { return; }
                    leading_since = mono_ms();
                    continue;
                }
                () = cancel.cancelled() => return,
            }
        }
        if R::BARRIER
            && let Err(e) = raft.read_barrier().await
        {
            tracing::debug!(error = %e, "read barrier failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                () = cancel.cancelled() => return,
            }
        }
        let tick = Tick { now: now_ms(), mono: mono_ms(), leading_since };
        let pass = {
            // Held only for the computation: an apply meanwhile copies the state.
            let state = raft.shared().snapshot();
            r.decide(&raft, &state, &tick)
        };
        let next = if pass.actions.is_empty() { Next::Wait } else { r.act(&raft, pass.actions, &tick).await };
        let sleep = match next {
            Next::Again => {
                applied.borrow_and_update();
                continue;
            }
            Next::Done => return,
            Next::Retry(d) => d,
            Next::Wait => pass.wake_in.map_or(R::IDLE, |w| w.min(R::IDLE)),
        };
        // The debounce after a change never runs past the wake-up the pass
        // asked for: in a busy cluster (a change every few milliseconds) a
        // node monitor with a 500 ms debounce declared a silent node down
        // up to 500 ms late.
        let wake = tokio::time::Instant::now() + sleep;
        tokio::select! {
            r = applied.changed() => {
                if r.is_err() { return; }
                let debounce_until = (tokio::time::Instant::now() + R::DEBOUNCE).min(wake);
                tokio::time::sleep_until(debounce_until).await;
                applied.borrow_and_update();
            }
            () = tokio::time::sleep(sleep) => {}
            r = leading.changed() => {
                if r.is_err() { return; }
                leading_since = mono_ms();
            }
            () = cancel.cancelled() => return,
        }
    }
}
