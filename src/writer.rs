//! Group commit: request handlers hand parsed postbacks to one writer task, which
//! commits whatever has queued up in a single transaction and only then answers each
//! waiting request. The transaction runs in the writer's own task, so a client that
//! disconnects cannot cancel it half-way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::domain::PartnerId;
use crate::domain::{AppId, NewEvent};
use crate::quota::Quota;
use crate::store::deliveries::{Answer, Decided, NewDelivery, UnauthenticatedDelivery, Verdict};
use crate::store::{Batch, CounterDelta, RecordOutcome, Store, StoreError};
use crate::telemetry;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Batches written concurrently: while one waits for its commit to reach the
    /// disk, the next is already being written.
    pub writers: usize,
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The queue is full: answered 503 so the partner retries later.
    #[error("too many postbacks waiting to be written")]
    Overloaded,
    #[error("database unavailable")]
    Unavailable,
    /// The writer stopped (shutdown) before taking the postback.
    #[error("writer stopped")]
    Stopped,
    #[error("database error")]
    Failed,
}

enum Job {
    Record(
        Box<NewEvent>,
        Option<Box<NewDelivery>>,
        oneshot::Sender<Result<RecordOutcome, WriteError>>,
    ),
    Count(CounterDelta, Option<Box<NewDelivery>>),
    Unauthenticated(Box<UnauthenticatedDelivery>),
}

/// Delivery log rows whose batch could not be written (the database was away):
/// kept, answered `unavailable`, for the next batch that commits.
#[derive(Default)]
struct Unwritten {
    deliveries: Vec<NewDelivery>,
}

/// Most log rows kept while the database is away; older ones are dropped.
const MAX_UNWRITTEN: usize = 10_000;

impl Unwritten {
    fn keep(&mut self, rows: impl IntoIterator<Item = NewDelivery>) {
        self.deliveries.extend(rows);
        let over = self.deliveries.len().saturating_sub(MAX_UNWRITTEN);
        self.deliveries.drain(..over);
    }
}

/// The handle request handlers hold; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer task. It ends once every `Writer` clone is dropped and the
    /// queue is drained.
    /// `quota`'s pending counts are written with each batch.
    pub fn spawn(
        store: Arc<dyn Store>,
        quota: Arc<Quota>,
        config: WriterConfig,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let unwritten = Arc::new(std::sync::Mutex::new(Unwritten::default()));
        let tasks: Vec<JoinHandle<()>> = (0..config.writers.max(1))
            .map(|_| {
                tokio::spawn(run(
                    store.clone(),
                    quota.clone(),
                    rx.clone(),
                    unwritten.clone(),
                    config,
                ))
            })
            .collect();
        let all = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (Self { tx }, all)
    }

    /// Queue one event (and its delivery log row, answered from the event's
    /// outcome) and wait until its transaction committed.
    pub async fn record(
        &self,
        event: NewEvent,
        delivery: Option<NewDelivery>,
    ) -> Result<RecordOutcome, WriteError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .try_send(Job::Record(Box::new(event), delivery.map(Box::new), done))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    telemetry::writer_queue_full();
                    WriteError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
            })?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Postbacks and counter increments waiting for a writer, and the queue's size
    /// (for the `postback_gateway_writer_queue_*` gauges).
    pub fn queue_depth(&self) -> (usize, usize) {
        let capacity = self.tx.max_capacity();
        (capacity - self.tx.capacity(), capacity)
    }

    /// Queue counter increments and the delivery log row of a request that stores
    /// no event; they are committed with the next batch.
    pub async fn count(&self, delta: CounterDelta, delivery: Option<NewDelivery>) {
        if self
            .tx
            .send(Job::Count(delta, delivery.map(Box::new)))
            .await
            .is_err()
        {
            tracing::warn!("writer stopped; counter increment dropped");
        }
    }

    /// Queue a row of the unauthenticated log; dropped when the queue is full.
    pub fn log_unauthenticated(&self, row: UnauthenticatedDelivery) {
        let _ = self.tx.try_send(Job::Unauthenticated(Box::new(row)));
    }
}

/// One writer: take a batch off the shared queue (one writer at a time), write it.
async fn run(
    store: Arc<dyn Store>,
    quota: Arc<Quota>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    unwritten: Arc<std::sync::Mutex<Unwritten>>,
    config: WriterConfig,
) {
    loop {
        let mut jobs = Vec::with_capacity(config.max_batch);
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, config.max_batch).await == 0 {
                return; // every sender is gone and the queue is empty
            }
            if !config.max_wait.is_zero() && jobs.len() < config.max_batch {
                let deadline = tokio::time::Instant::now() + config.max_wait;
                while jobs.len() < config.max_batch {
                    let room = config.max_batch - jobs.len();
                    match tokio::time::timeout_at(deadline, rx.recv_many(&mut jobs, room)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
        write_batch(store.as_ref(), &quota, &unwritten, jobs).await;
    }
}

async fn write_batch(
    store: &dyn Store,
    quota: &Quota,
    unwritten: &std::sync::Mutex<Unwritten>,
    jobs: Vec<Job>,
) {
    let mut events = Vec::new();
    let mut waiters = Vec::new();
    let mut counts: HashMap<(AppId, PartnerId), CounterDelta> = HashMap::new();
    let mut deliveries = std::mem::take(
        &mut unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deliveries,
    );
    let mut unauthenticated = Vec::new();
    for job in jobs {
        match job {
            Job::Record(event, delivery, done) => {
                if let Some(mut delivery) = delivery {
                    if let Decided::ByEvent { index, .. } = &mut delivery.decided {
                        *index = events.len();
                    }
                    deliveries.push(*delivery);
                }
                events.push(*event);
                waiters.push(done);
            }
            Job::Unauthenticated(row) => unauthenticated.push(*row),
            Job::Count(d, delivery) => {
                deliveries.extend(delivery.map(|d| *d));
                let entry = counts.entry((d.app_id, d.partner)).or_insert(CounterDelta {
                    organic_ignored: 0,
                    rejected: 0,
                    rate_limited: 0,
                    ..d
                });
                entry.organic_ignored += d.organic_ignored;
                entry.rejected += d.rejected;
                entry.rate_limited += d.rate_limited;
            }
        }
    }
    let counters: Vec<CounterDelta> = counts.into_values().collect();
    telemetry::batch_written(events.len());
    let usage = quota.take_pending();
    let result = store
        .record(Batch {
            events: &events,
            counters: &counters,
            quota: &usage,
            deliveries: &deliveries,
            unauthenticated: &unauthenticated,
        })
        .await;
    if result.is_err() {
        quota.restore(usage);
    }
    match result {
        Ok(recorded) => {
            // Before answering: the answers' headers read these counts.
            quota.note_installs(&recorded.installs);
            for (done, outcome) in waiters.into_iter().zip(recorded.outcomes) {
                let _ = done.send(Ok(outcome));
            }
        }
        Err(StoreError::Unavailable(e)) => {
            telemetry::db_error("unavailable");
            tracing::warn!(error = %e, batch = events.len(), "database unavailable; batch answered 503");
            // The log still says what each request was answered: 503 for the events.
            let unavailable = Answer {
                status: 503,
                verdict: Verdict::Unavailable,
                reason: "database unavailable; the partner should send it again".to_owned(),
                event_id: None,
            };
            let rows = deliveries.into_iter().map(|mut d| {
                if matches!(d.decided, Decided::ByEvent { .. }) {
                    d.decided = Decided::Already(unavailable.clone());
                }
                d
            });
            unwritten
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep(rows);

            for done in waiters {
                let _ = done.send(Err(WriteError::Unavailable));
            }
        }
        Err(e) if events.len() > 1 => {
            // One bad row must not fail its neighbours: write each on its own.
            telemetry::db_error("other");
            tracing::error!(error = ?e, batch = events.len(), "batch failed; retrying its postbacks one by one");
            let mut by_event: HashMap<usize, NewDelivery> = HashMap::new();
            let mut others = Vec::new();
            for d in deliveries {
                match d.decided {
                    Decided::ByEvent { index, .. } => {
                        by_event.insert(index, d);
                    }
                    _ => others.push(d),
                }
            }
            let rest = Batch {
                counters: &counters,
                deliveries: &others,
                unauthenticated: &unauthenticated,
                ..Batch::default()
            };
            if let Err(e) = store.record(rest).await {
                tracing::error!(error = ?e, "counter increments lost");
            }
            for (i, (event, done)) in events.into_iter().zip(waiters).enumerate() {
                let own: Vec<NewDelivery> = by_event
                    .remove(&i)
                    .map(|mut d| {
                        if let Decided::ByEvent { index, .. } = &mut d.decided {
                            *index = 0;
                        }
                        d
                    })
                    .into_iter()
                    .collect();
                let result = store
                    .record(Batch {
                        events: std::slice::from_ref(&event),
                        deliveries: &own,
                        ..Batch::default()
                    })
                    .await;
                if let Ok(recorded) = &result {
                    quota.note_installs(&recorded.installs);
                }
                let _ = done.send(single_result(result.map(|r| r.outcomes)));
            }
        }
        Err(e) => {
            telemetry::db_error("other");
            tracing::error!(error = ?e, "writing a postback failed");
            for done in waiters {
                let _ = done.send(Err(WriteError::Failed));
            }
        }
    }
}

fn single_result(
    result: Result<Vec<RecordOutcome>, StoreError>,
) -> Result<RecordOutcome, WriteError> {
    match result {
        Ok(mut outcomes) => outcomes.pop().ok_or(WriteError::Failed),
        Err(StoreError::Unavailable(_)) => Err(WriteError::Unavailable),
        Err(e) => {
            tracing::error!(error = ?e, "writing a postback failed");
            Err(WriteError::Failed)
        }
    }
}
