//! Scheduled cluster snapshots: the policy kept in the state, the record of
//! what was taken, and the leader's pure decision of when to take the next.
//!
//! Exactly one manager takes each tick of the schedule, across failovers:
//! before it takes one, the leader claims the tick through Raft
//! ([`Command::ClaimSnapshot`](crate::Command::ClaimSnapshot)), and `apply`
//! refuses a claim of a tick at or before the last one claimed. A leader
//! that dies after its claim leaves that tick without a snapshot (the next
//! leader says so in an event); the next tick is taken as usual.
//!
//! Times are UTC. A cron pattern has 5 fields (minute, hour, day of month,
//! month, day of week) or 6 with seconds first.

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// The schedule when none was set: every 6 hours, on the hour.
pub const DEFAULT_SCHEDULE: &str = "0 */6 * * *";
/// How many scheduled snapshots each manager keeps in its directory.
pub const DEFAULT_RETENTION: u32 = 10;
/// The most records of taken snapshots kept in the state.
pub const RECORDS_KEPT: usize = 50;

/// When and where the leader takes snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPolicy {
    /// A cron pattern (UTC); empty turns scheduled snapshots off.
    pub schedule: String,
    /// Scheduled snapshots kept in the directory (the oldest go first).
    pub retention: u32,
    /// The directory on each manager (absolute); empty: `DATA_DIR/snapshots`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    /// An S3-compatible bucket each scheduled snapshot is also uploaded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

/// Where scheduled snapshots are uploaded. The credentials are not here:
/// each manager reads them from `credentials_file` or its environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Target {
    /// `http(s)://host[:port]` of the S3 API.
    pub endpoint: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix (`stackd/prod/`); empty: the bucket's root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The region (`us-east-1` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Scheduled snapshots kept in the bucket under the prefix.
    pub retention: u32,
    /// An absolute path on each manager to a credentials file; empty: the
    /// manager's `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credentials_file: String,
}

impl S3Target {
    /// Why the target cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(format!("the S3 endpoint {:?} must start with http:// or https://", self.endpoint));
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!("the S3 bucket {:?} must be a bucket name", self.bucket));
        }
        if self.retention == 0 {
            return Err("the S3 retention must keep at least 1 snapshot".into());
        }
        if !self.credentials_file.is_empty() && !self.credentials_file.starts_with('/') {
            return Err(format!("the S3 credentials file {:?} must be an absolute path", self.credentials_file));
        }
        Ok(())
    }
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self { schedule: DEFAULT_SCHEDULE.to_string(), retention: DEFAULT_RETENTION, dir: String::new(), s3: None }
    }
}

impl SnapshotPolicy {
    /// Why the policy cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !self.schedule.is_empty() {
            parse(&self.schedule)?;
        }
        if self.retention == 0 {
            return Err("retention must keep at least 1 snapshot".into());
        }
        if !self.dir.is_empty() && !self.dir.starts_with('/') {
            return Err(format!("the snapshot directory {:?} must be an absolute path", self.dir));
        }
        self.s3.as_ref().map_or(Ok(()), S3Target::check)
    }
}

/// One scheduled snapshot, as the manager that took it recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The tick of the schedule it was taken for (Unix ms).
    pub tick: Timestamp,
    /// The manager that took it (node id) and its name.
    pub node: String,
    /// The manager's name.
    pub node_name: String,
    /// The file, on that manager; empty when it failed.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The Raft index of the state it holds.
    pub index: u64,
    /// Why it failed; empty when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Where it was uploaded (`s3://bucket/key`); empty without an S3 target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote: String,
    /// Why the upload failed; empty when it did not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_error: String,
}

/// Scheduled snapshots in the cluster state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshots {
    /// The policy; `None`: the defaults ([`SnapshotPolicy::default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<SnapshotPolicy>,
    /// The last tick claimed (Unix ms); 0 before the first.
    #[serde(default)]
    pub claimed: Timestamp,
    /// The manager that claimed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claimed_by: String,
    /// The last snapshots taken, oldest first (at most [`RECORDS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken: Vec<SnapshotRecord>,
}

impl Snapshots {
    /// Whether nothing was ever set or taken (left out of the encoding).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The policy in force.
    pub fn policy(&self) -> SnapshotPolicy {
        self.policy.clone().unwrap_or_default()
    }

    /// Records a claim of `tick` by `node`; refused when the tick is not
    /// after the last one claimed (another manager took it).
    pub fn claim(&mut self, tick: Timestamp, node: &str) -> Result<(), String> {
        if tick <= self.claimed {
            return Err(format!("the snapshot tick {tick} is not after the last one claimed ({})", self.claimed));
        }
        self.claimed = tick;
        self.claimed_by = node.to_string();
        Ok(())
    }

    /// Keeps `record`, dropping the oldest beyond [`RECORDS_KEPT`].
    pub fn record(&mut self, record: SnapshotRecord) {
        self.taken.push(record);
        let over = self.taken.len().saturating_sub(RECORDS_KEPT);
        self.taken.drain(..over);
    }
}

/// A parsed schedule: 5 fields, or 6 with seconds first (no year field).
fn parse(pattern: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| format!("{pattern:?} is not a cron pattern (5 fields, or 6 with seconds first): {e}"))
}

/// The last tick of `pattern` at or before `at`.
fn previous_tick(pattern: &str, at: Timestamp) -> Option<Timestamp> {
    let cron = parse(pattern).ok()?;
    let start = chrono::DateTime::from_timestamp_millis(i64::try_from(at).ok()?)?;
    cron.find_previous_occurrence(&start, true).ok().and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}

/// What the leader should do about scheduled snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Take the snapshot of this tick now.
    Take(Timestamp),
    /// Nothing until this time (Unix ms).
    Until(Timestamp),
    /// Scheduled snapshots are off (or the pattern never fires).
    Off,
}

/// The first tick of `pattern` strictly after `after`.
pub fn next_tick(pattern: &str, after: Timestamp) -> Result<Option<Timestamp>, String> {
    let cron = parse(pattern)?;
    let Some(start) = chrono::DateTime::from_timestamp_millis(i64::try_from(after).unwrap_or(i64::MAX)) else {
        return Ok(None);
    };
    Ok(cron.find_next_occurrence(&start, false).ok().and_then(|t| u64::try_from(t.timestamp_millis()).ok()))
}

/// Whether a snapshot is due at `now`, for a leader that took the lead at
/// `leading_since`: the first tick after both the last claimed and the
/// start of the lead (a tick that fell while no manager led is skipped, not
/// taken late).
pub fn due(snapshots: &Snapshots, leading_since: Timestamp, now: Timestamp) -> Due {
    let policy = snapshots.policy();
    if policy.schedule.is_empty() {
        return Due::Off;
    }
    match next_tick(&policy.schedule, snapshots.claimed.max(leading_since)) {
        // Several ticks passed (a stalled loop, a schedule made more
        // frequent, a step of the clock): only the latest is taken, so that
        // a burst never pushes older snapshots out of the retention.
        Ok(Some(t)) if t <= now => Due::Take(previous_tick(&policy.schedule, now).unwrap_or(t).max(t)),
        Ok(Some(t)) => Due::Until(t),
        _ => Due::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    // 2026-12-07T00:00:00Z
    const DAY: u64 = 1_796_601_600_000;

    #[test]
    fn the_default_fires_every_six_hours_on_the_hour() {
        assert_eq!(next_tick(DEFAULT_SCHEDULE, DAY).expect("parse"), Some(DAY + 360 * MIN));
        assert_eq!(next_tick(DEFAULT_SCHEDULE, DAY - 1).expect("parse"), Some(DAY));
        assert_eq!(next_tick("*/2 * * * * *", DAY).expect("seconds"), Some(DAY + 2_000));
        assert!(next_tick("0 0 1 1 * 2030", DAY).is_err(), "no year field");
    }

    #[test]
    fn after_missed_ticks_only_the_latest_is_taken() {
        let mut s = Snapshots::default();
        s.claim(DAY, "m1").expect("claim");
        // Five hourly ticks missed: one snapshot, of the last of them.
        s.policy = Some(SnapshotPolicy { schedule: "0 * * * *".into(), ..SnapshotPolicy::default() });
        assert_eq!(due(&s, 0, DAY + 300 * MIN + 10), Due::Take(DAY + 300 * MIN));
    }

    #[test]
    fn a_tick_is_due_once_and_only_after_the_lead_began() {
        let mut s = Snapshots::default();
        // The lead began at 00:30: midnight's tick is not taken late.
        assert_eq!(due(&s, DAY + 30 * MIN, DAY + 31 * MIN), Due::Until(DAY + 360 * MIN));
        assert_eq!(due(&s, DAY + 30 * MIN, DAY + 360 * MIN + 5), Due::Take(DAY + 360 * MIN));
        s.claim(DAY + 360 * MIN, "m1").expect("claim");
        assert_eq!(due(&s, DAY + 30 * MIN, DAY + 361 * MIN), Due::Until(DAY + 720 * MIN));
        // A second claim of the same tick (another leader) is refused.
        assert!(s.claim(DAY + 360 * MIN, "m2").is_err());
        assert_eq!(s.claimed_by, "m1");
    }

    #[test]
    fn bad_policies_are_refused_and_an_empty_schedule_is_off() {
        let p = |schedule: &str, retention: u32, dir: &str| SnapshotPolicy {
            schedule: schedule.into(),
            retention,
            dir: dir.into(),
            s3: None,
        };
        assert!(p("not cron", 3, "").check().is_err());
        assert!(p(DEFAULT_SCHEDULE, 0, "").check().is_err());
        assert!(p(DEFAULT_SCHEDULE, 3, "relative/dir").check().is_err());
        assert!(p(DEFAULT_SCHEDULE, 3, "/var/backups/stackd").check().is_ok());
        let off = Snapshots { policy: Some(p("", 3, "")), ..Snapshots::default() };
        assert_eq!(due(&off, 0, DAY), Due::Off);
    }

    #[test]
    fn records_are_bounded() {
        let mut s = Snapshots::default();
        for i in 0..(RECORDS_KEPT as u64 + 5) {
            s.record(SnapshotRecord {
                tick: i,
                node: "n".into(),
                node_name: "m1".into(),
                file: String::new(),
                bytes: 0,
                index: i,
                error: String::new(),
                remote: String::new(),
                remote_error: String::new(),
            });
        }
        assert_eq!(s.taken.len(), RECORDS_KEPT);
        assert_eq!(s.taken[0].tick, 5, "the oldest go first");
    }
}
