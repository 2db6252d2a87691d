//! `WatchEvents`: the cluster's events, as they are applied, after those
//! kept in the journal when asked (`stackctl events`, `deploy --wait`).
//!
//! Every manager has the same events with the same places (`index`, `seq`:
//! see [`stackd_core::journal`]), so a watcher whose manager went away
//! resumes on another one after the last event it received: the kept events
//! after it, then the new ones, none lost and none twice. The watch
//! subscribes to new events before it reads the journal; what is in both is
//! sent once.

use std::pin::Pin;

use stackd_core::state::Event;
use stackd_proto::v1;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::Control;
use crate::raft::Shared;

/// The events `WatchEvents` streams.
pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

/// Events a slow watcher may have waiting before the pump waits for it.
const BUFFER: usize = 256;

/// Which events a watcher wants.
struct Filter {
    stack: String,
    since_at: u64,
}

impl Filter {
    fn keeps(&self, e: &Event) -> bool {
        (self.stack.is_empty() || e.stack == self.stack) && e.at >= self.since_at
    }
}

/// `WatchEvents`: the kept events first when asked (`history`, or `resume`
/// after a given event), then each new one (none with `kept_only`).
pub(super) fn watch(ctl: &Control, r: v1::WatchEventsRequest) -> EventStream {
    let shared = ctl.raft.shared().clone();
    // Subscribe before reading the journal: an event applied in between is
    // in both, and sent once; none falls between the two.
    let live = shared.events();
    let filter = Filter { stack: r.stack, since_at: r.since_at };
    let after = r.resume.then_some((r.after_index, r.after_seq));
    let (tx, rx) = mpsc::channel(BUFFER);
    let first = if r.history || r.resume {
        shared.events_after(after, |e| filter.keeps(e))
    } else {
        // From now on: only what the journal does not hold yet.
        shared.events_after(None, |_| false)
    };
    match first {
        Ok((replay, _)) if r.kept_only => {
            tokio::spawn(async move {
                for e in &replay {
                    if tx.send(Ok(v1::Event::from(e))).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok((replay, covered)) => {
            let covered = match (after, covered) {
                (Some(a), Some(c)) => Some(a.max(c)),
                (a, c) => a.or(c),
            };
            tokio::spawn(pump(shared, live, filter, replay, covered, tx));
        }
        Err(gap) => {
            // The channel is new and empty: the error is queued at once.
            let _ = tx.try_send(Err(Status::out_of_range(gap.to_string())));
        }
    }
    Box::pin(ReceiverStream::new(rx))
}

/// Sends `replay`, then the live events after `covered`; catches up from the
/// journal when the live events overflowed. Ends when the watcher goes away.
async fn pump(
    shared: std::sync::Arc<Shared>,
    mut live: broadcast::Receiver<Event>,
    filter: Filter,
    replay: Vec<Event>,
    mut covered: Option<(u64, u32)>,
    tx: mpsc::Sender<Result<v1::Event, Status>>,
) {
    for e in &replay {
        if tx.send(Ok(v1::Event::from(e))).await.is_err() {
            return;
        }
    }
    loop {
        match live.recv().await {
            Ok(e) => {
                if covered.is_some_and(|c| e.cursor() <= c) {
                    continue;
                }
                covered = Some(e.cursor());
                if filter.keeps(&e) && tx.send(Ok(v1::Event::from(&e))).await.is_err() {
                    return;
                }
            }
            // This watcher fell behind the live events: the journal has them.
            Err(broadcast::error::RecvError::Lagged(_)) => match shared.events_after(covered, |e| filter.keeps(e)) {
                Ok((events, last)) => {
                    for e in &events {
                        if tx.send(Ok(v1::Event::from(e))).await.is_err() {
                            return;
                        }
                    }
                    covered = match (covered, last) {
                        (Some(a), Some(c)) => Some(a.max(c)),
                        (a, c) => a.or(c),
                    };
                }
                Err(gap) => {
                    let _ = tx.send(Err(Status::data_loss(gap.to_string()))).await;
                    return;
                }
            },
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
