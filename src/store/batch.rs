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

/// The installs that become attributions: those whose user is not `known` (an
/// index into `installs`) and shares no identifier with an earlier install of the
/// same app in this batch; first touch wins, in input order.
pub(crate) fn first_touches(
    events: &[NewEvent],
    installs: &[(usize, Uuid)],
    known: &HashSet<usize>,
) -> Vec<(usize, Uuid)> {
    let mut claimed: HashSet<(AppId, &'static str, &str)> = Default::default();
    let mut new = Vec::new();
    for (pos, &(i, event_id)) in installs.iter().enumerate() {
        let event = &events[i];
        let ids: Vec<(&'static str, &str)> = event
            .postback
            .ids
            .pairs()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        if known.contains(&pos)
            || ids
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

/// What one batch adds to one `partner_connections` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConnectionTally {
    pub installs: i64,
    pub events: i64,
    pub duplicates: i64,
    pub organic_ignored: i64,
    pub rejected: i64,
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
        }
    }
    for delta in counters {
        let tally = tallies.entry((delta.app_id, delta.partner)).or_default();
        tally.organic_ignored += delta.organic_ignored;
        tally.rejected += delta.rejected;
    }
    tallies.retain(|_, tally| !tally.is_noop());
    tallies
}
