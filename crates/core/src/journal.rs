//! The cluster's recent events ([`Journal`]): what `stackctl events` prints
//! and what a watcher that lost its manager catches up from.
//!
//! Every manager keeps the same journal: the events are those `apply`
//! returns, numbered by [`Event::cursor`] (log index, position in the
//! entry), so they are the same on every manager whatever its role. The
//! journal is saved in the Raft snapshots and rebuilt from the log entries
//! replayed after one, so it outlives restarts and failovers. It is bounded:
//! the last [`EVENTS_KEPT`] events; older ones are dropped, and a watcher
//! that asks for events after a dropped one is told what it missed.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::state::Event;

/// An event's place in the cluster's history: its log index and its
/// position among that entry's events ([`Event::cursor`]).
pub type Cursor = (u64, u32);

/// How many events a journal keeps.
pub const EVENTS_KEPT: usize = 10_000;

/// Events after a place in history that the journal no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the events after log index {asked} are no longer kept: the journal keeps the last {EVENTS_KEPT} events, from log index {oldest}"
)]
pub struct Gap {
    /// The log index asked from.
    pub asked: u64,
    /// The log index of the oldest event kept.
    pub oldest: u64,
}

/// The last events of the cluster, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    events: VecDeque<Event>,
    /// The place of the last event dropped (or, for a journal started from
    /// a state whose history is unknown, the last log index before it):
    /// what lies at or before it is not kept.
    #[serde(default)]
    dropped_through: Option<Cursor>,
    /// How many events it keeps ([`EVENTS_KEPT`] unless a test says).
    #[serde(skip, default = "kept")]
    capacity: usize,
}

fn kept() -> usize {
    EVENTS_KEPT
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new()
    }
}

impl Journal {
    /// An empty journal that keeps [`EVENTS_KEPT`] events.
    pub fn new() -> Self {
        Journal { events: VecDeque::new(), dropped_through: None, capacity: EVENTS_KEPT }
    }

    /// An empty journal for a state whose history up to `index` is not known
    /// (a snapshot written before journals were kept).
    pub fn starting_after(index: u64) -> Self {
        Journal { dropped_through: (index > 0).then_some((index, u32::MAX)), ..Journal::new() }
    }

    /// A journal that keeps `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Journal { capacity: capacity.max(1), ..Journal::new() }
    }

    /// Records the events of an applied entry (in cursor order), dropping the
    /// oldest beyond the capacity.
    pub fn record<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            self.events.push_back(e.clone());
        }
        while self.events.len() > self.capacity.max(1) {
            if let Some(e) = self.events.pop_front() {
                self.dropped_through = Some(e.cursor());
            }
        }
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The place of the newest event kept, or of the last one dropped when
    /// none is kept.
    pub fn last_cursor(&self) -> Option<Cursor> {
        self.events.back().map(Event::cursor).or(self.dropped_through)
    }

    /// The events after `cursor` (every event kept for `None`), oldest first;
    /// a [`Gap`] when some of them were dropped.
    pub fn after(&self, cursor: Option<Cursor>) -> Result<impl Iterator<Item = &Event>, Gap> {
        if let Some(dropped) = self.dropped_through {
            // `None` asks for everything there is: what was dropped is not a gap then.
            if let Some(c) = cursor
                && c < dropped
            {
                let oldest = self.events.front().map_or(dropped.0, |e| e.index);
                return Err(Gap { asked: c.0, oldest });
            }
        }
        // Events are in cursor order: skip those at or before it.
        let start = match cursor {
            None => 0,
            Some(c) => self.events.partition_point(|e| e.cursor() <= c),
        };
        Ok(self.events.range(start..))
    }

    /// The events at or after `at` (command time), oldest first.
    pub fn since(&self, at: Timestamp) -> impl Iterator<Item = &Event> {
        // Command times follow the log but may step back (another leader's
        // clock): a scan, not a search.
        self.events.iter().filter(move |e| e.at >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Action, ObjectKind};

    fn event(index: u64, seq: u32) -> Event {
        Event {
            index,
            seq,
            kind: ObjectKind::Task,
            action: Action::Update,
            id: format!("t{index}.{seq}"),
            name: "app_web".into(),
            stack: "app".into(),
            message: "running".into(),
            at: index * 10,
        }
    }

    fn cursors<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<(u64, u32)> {
        events.map(Event::cursor).collect()
    }

    #[test]
    fn keeps_the_last_events_and_resumes_after_a_cursor() {
        let mut j = Journal::with_capacity(4);
        j.record(&[event(1, 0), event(1, 1), event(2, 0)]);
        assert_eq!(cursors(j.after(None).expect("all kept")), [(1, 0), (1, 1), (2, 0)]);
        assert_eq!(cursors(j.after(Some((1, 0))).expect("kept")), [(1, 1), (2, 0)]);
        assert_eq!(cursors(j.after(Some((2, 0))).expect("kept")), []);
        // A cursor from the future (a manager behind the one watched before): nothing yet.
        assert_eq!(cursors(j.after(Some((9, 0))).expect("kept")), []);
        j.record(&[event(3, 0), event(3, 1), event(4, 0)]);
        assert_eq!(j.len(), 4);
        assert_eq!(cursors(j.after(None).expect("all kept")), [(2, 0), (3, 0), (3, 1), (4, 0)]);
        // Resuming right after the last dropped event loses nothing.
        assert_eq!(cursors(j.after(Some((1, 1))).expect("nothing lost")).len(), 4);
        // Resuming before it would skip an event: a gap, said.
        let gap = j.after(Some((1, 0))).err().expect("a gap");
        assert_eq!(gap, Gap { asked: 1, oldest: 2 });
        assert!(gap.to_string().contains("no longer kept"), "{gap}");
        assert_eq!(j.last_cursor(), Some((4, 0)));
    }

    #[test]
    fn since_filters_by_time() {
        let mut j = Journal::new();
        j.record(&[event(1, 0), event(2, 0), event(3, 0)]);
        assert_eq!(cursors(j.since(20)), [(2, 0), (3, 0)]);
    }

    #[test]
    fn a_journal_started_late_knows_it_misses_the_past() {
        let j = Journal::starting_after(7);
        assert!(j.after(Some((5, 0))).is_err());
        assert!(j.after(Some((7, 0))).is_err());
        assert_eq!(cursors(j.after(Some((7, u32::MAX))).expect("after the start")), []);
        assert_eq!(j.last_cursor(), Some((7, u32::MAX)));
        assert!(Journal::starting_after(0).after(Some((0, 0))).is_ok());
    }

    #[test]
    fn survives_encoding() {
        let mut j = Journal::with_capacity(2);
        j.record(&[event(1, 0), event(2, 0), event(3, 0)]);
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).expect("encodes")).expect("decodes");
        assert_eq!(cursors(back.after(None).expect("kept")), [(2, 0), (3, 0)]);
        assert!(back.after(Some((1, 0))).is_ok());
        assert!(back.after(Some((0, 0))).is_err());
    }
}
