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
use crate::store::{CounterDelta, RecordOutcome, Store, StoreError};
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
        oneshot::Sender<Result<RecordOutcome, WriteError>>,
    ),
    Count(CounterDelta),
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
        let tasks: Vec<JoinHandle<()>> = (0..config.writers.max(1))
            .map(|_| tokio::spawn(run(store.clone(), quota.clone(), rx.clone(), config)))
            .collect();
        let all = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (Self { tx }, all)
    }

    /// Queue one event and wait until its transaction committed.
    pub async fn record(&self, event: NewEvent) -> Result<RecordOutcome, WriteError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .try_send(Job::Record(Box::new(event), done))
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

    /// Queue counter increments; they are committed with the next batch.
    pub async fn count(&self, delta: CounterDelta) {
        if self.tx.send(Job::Count(delta)).await.is_err() {
            tracing::warn!("writer stopped; counter increment dropped");
        }
    }
}

/// One writer: take a batch off the shared queue (one writer at a time), write it.
async fn run(
    store: Arc<dyn Store>,
    quota: Arc<Quota>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
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
        write_batch(store.as_ref(), &quota, jobs).await;
    }
}

async fn write_batch(store: &dyn Store, quota: &Quota, jobs: Vec<Job>) {
    let mut events = Vec::new();
    let mut waiters = Vec::new();
    let mut counts: HashMap<(AppId, PartnerId), CounterDelta> = HashMap::new();
    for job in jobs {
        match job {
            Job::Record(event, done) => {
                events.push(*event);
                waiters.push(done);
            }
            Job::Count(d) => {
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
    let result = store.record_batch(&events, &counters, &usage).await;
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
            for done in waiters {
                let _ = done.send(Err(WriteError::Unavailable));
            }
        }
        Err(e) if events.len() > 1 => {
            // One bad row must not fail its neighbours: write each on its own.
            telemetry::db_error("other");
            tracing::error!(error = ?e, batch = events.len(), "batch failed; retrying its postbacks one by one");
            if let Err(e) = store.record_batch(&[], &counters, &[]).await {
                tracing::error!(error = ?e, "counter increments lost");
            }
            for (event, done) in events.into_iter().zip(waiters) {
                let result = store
                    .record_batch(std::slice::from_ref(&event), &[], &[])
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
