//! Backend-independent steps of recording a batch: the order rows are locked in,
//! which installs become first touches, and the counter tallies per partner.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CounterDelta, RecordOutcome};
use crate::domain::PartnerId;
use crate::domain::{AppId, EventKind, NewEvent};

/// The order in which a batch's events are inserted: by (app, partner, dedupe_key),
/// stable so copies keep their input order (the first copy is the one recorded).
/// Concurrent batches then lock dedupe keys in one global order and cannot deadlock.
pub(crate) fn insert_order(events: &[NewEvent]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    let key = |i: usize| {
        (
            events[i].app_id,
            events[i].partner,
            events[i].dedupe_key.as_str(),
        )
    };
    order.sort_by(|&a, &b| key(a).cmp(&key(b)));
    order
}

/// The batch's recorded installs as (position in the batch, event id), in input order.
pub(crate) fn recorded_installs(
    events: &[NewEvent],
    outcomes: &[RecordOutcome],
) -> Vec<(usize, Uuid)> {
    events
        .iter()
        .zip(outcomes)
        .enumerate()
        .filter_map(|(i, (event, outcome))| match outcome {
            RecordOutcome::Recorded { event_id } if event.postback.kind == EventKind::Install => {
                Some((i, *event_id))
            }
            _ => None,
        })
        .collect()
}

/// The installs that may become attributions: those sharing no identifier with an
/// earlier install of the same app in this batch (first touch wins, in input
/// order). The database then decides against the users stored before, by claiming
/// every identifier of each candidate in `user_identities`.
pub(crate) fn first_touches(events: &[NewEvent], installs: &[(usize, Uuid)]) -> Vec<(usize, Uuid)> {
    let mut claimed: HashSet<(AppId, &'static str, &str)> = Default::default();
    let mut new = Vec::new();
    for &(i, event_id) in installs {
        let event = &events[i];
        let ids: Vec<(&'static str, &str)> = event
            .postback
            .ids
            .pairs()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        if ids
            .iter()
            .any(|&(k, v)| claimed.contains(&(event.app_id, k, v)))
        {
            continue;
        }
        claimed.extend(ids.into_iter().map(|(k, v)| (event.app_id, k, v)));
        new.push((i, event_id));
    }
    new
}

/// The start of the clock hour (UTC) an install is counted in.
pub(crate) fn quota_window(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(at)
}

/// New installs of apps with an install quota, per (app, hour window): the quota
/// and their positions in the batch, in input order (earlier deliveries are granted
/// first).
pub(crate) type QuotaDemand = BTreeMap<(AppId, DateTime<Utc>), (u32, Vec<usize>)>;

pub(crate) fn quota_demand(events: &[NewEvent], outcomes: &[RecordOutcome]) -> QuotaDemand {
    let mut demand = QuotaDemand::new();
    for (i, (event, outcome)) in events.iter().zip(outcomes).enumerate() {
        if let (Some(limit), RecordOutcome::Recorded { .. }, EventKind::Install) =
            (event.install_quota, outcome, event.postback.kind)
        {
            demand
                .entry((event.app_id, quota_window(event.received_at)))
                .or_insert((limit, Vec::new()))
                .1
                .push(i);
        }
    }
    demand
}

/// Turn the installs beyond each window's grant into `OverQuota`, and the in-batch
/// copies of them too; returns the (app, event id) of the events that must not stay
/// stored.
pub(crate) fn apply_grants(
    outcomes: &mut [RecordOutcome],
    demand: &QuotaDemand,
    granted: &BTreeMap<(AppId, DateTime<Utc>), i64>,
) -> Vec<(AppId, Uuid)> {
    let mut revoked = Vec::new();
    for (window, (_, positions)) in demand {
        let grant = granted.get(window).copied().unwrap_or(0).max(0) as usize;
        for &i in positions.iter().skip(grant) {
            if let RecordOutcome::Recorded { event_id } = outcomes[i] {
                revoked.push((window.0, event_id));
                outcomes[i] = RecordOutcome::OverQuota;
            }
        }
    }
    if !revoked.is_empty() {
        let gone: HashSet<Uuid> = revoked.iter().map(|&(_, id)| id).collect();
        for outcome in outcomes.iter_mut() {
            if let RecordOutcome::Duplicate { first_event_id } = *outcome {
                if gone.contains(&first_event_id) {
                    *outcome = RecordOutcome::OverQuota;
                }
            }
        }
    }
    revoked
}

/// What one batch adds to one `partner_connections` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConnectionTally {
    pub installs: i64,
    pub events: i64,
    pub duplicates: i64,
    pub organic_ignored: i64,
    pub rejected: i64,
    pub rate_limited: i64,
    /// received_at of the newest recorded install: the new last_success_at.
    pub last_install_at: Option<DateTime<Utc>>,
}

impl ConnectionTally {
    /// A recorded install connects the partner; nothing else changes the status.
    pub fn connects(&self) -> bool {
        self.installs > 0
    }

    pub fn is_noop(&self) -> bool {
        *self == Self::default()
    }
}

/// Fold a batch's outcomes (in input order) and counter deltas into one tally per
/// (app, partner), sorted so that upserts lock rows in one global order.
pub(crate) fn tally_batch(
    events: &[NewEvent],
    outcomes: &[RecordOutcome],
    counters: &[CounterDelta],
) -> BTreeMap<(AppId, PartnerId), ConnectionTally> {
    let mut tallies: BTreeMap<(AppId, PartnerId), ConnectionTally> = BTreeMap::new();
    for (event, outcome) in events.iter().zip(outcomes) {
        let tally = tallies.entry((event.app_id, event.partner)).or_default();
        match (outcome, event.postback.kind) {
            (RecordOutcome::Duplicate { .. }, _) => tally.duplicates += 1,
            (RecordOutcome::Recorded { .. }, EventKind::Event) => tally.events += 1,
            (RecordOutcome::Recorded { .. }, EventKind::Install) => {
                tally.installs += 1;
                tally.last_install_at = tally.last_install_at.max(Some(event.received_at));
            }
            (RecordOutcome::OverQuota, _) => tally.rate_limited += 1,
        }
    }
    for delta in counters {
        let tally = tallies.entry((delta.app_id, delta.partner)).or_default();
        tally.organic_ignored += delta.organic_ignored;
        tally.rejected += delta.rejected;
        tally.rate_limited += delta.rate_limited;
    }
    tallies.retain(|_, tally| !tally.is_noop());
    tallies
}
