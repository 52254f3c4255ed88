//! Keeping tables bounded: the in-process prune schedule (`retention.*`); the same
//! work runs by hand as `postback-gateway prune`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{RetentionPolicy, Store};

/// Prune now and then every `every` until `stop`: create the coming months'
/// partitions, drop the months past retention, forget old dedupe keys, clear the
/// raw payload, IP address and user agent of events older than `privacy.raw_days`. Failures
/// are logged and retried at the next round; on a fleet every node may run it.
pub async fn prune_loop(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let now = chrono::Utc::now();
        let result = async {
            store.prepare_months(now).await?;
            store.prune(now, policy, false).await
        }
        .await;
        match result {
            Ok(report)
                if !report.months.is_empty()
                    || report.dedupe_keys > 0
                    || report.raw_cleared > 0 =>
            {
                tracing::info!(
                    months = ?report.months,
                    events = report.events,
                    dedupe_keys = report.dedupe_keys,
                    raw_cleared = report.raw_cleared,
                    "pruned"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "prune failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Keep the delivery log within `deliveries.*` until `stop`.
pub async fn prune_deliveries_loop(
    store: Arc<dyn Store>,
    config: crate::config::DeliveriesConfig,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(config.prune_every_secs.max(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = store
            .prune_deliveries(
                chrono::Utc::now(),
                config.keep_per_partner,
                config.keep_days,
                config.keep_unauthenticated,
            )
            .await
        {
            tracing::warn!(error = %crate::error_chain(&e), "pruning the delivery log failed");
        }
    }
}
