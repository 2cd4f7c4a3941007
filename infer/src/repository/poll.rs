//! Polling the repository (`--repository-poll-secs`): every period, each model folder is
//! brought up to date with its latest version, new folders are loaded and models whose
//! folder is gone are removed. A load that failed is retried only once its files change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::Repository;

/// Polls `repository` every `period`, forever.
pub async fn every(repository: Arc<Repository>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        once(&repository).await;
    }
}

/// One pass over the repository: every model on disk or served, one after another (a load
/// failure is logged and counted where it happens).
pub async fn once(repository: &Repository) {
    let source = repository.source.clone();
    let on_disk = match tokio::task::spawn_blocking(move || source.model_names()).await {
        Ok(Ok((names, _))) => names,
        Ok(Err(e)) => {
            tracing::warn!("repository poll: {e}");
            return;
        }
        Err(_) => return,
    };
    let known: Vec<String> = repository.table.read().keys().cloned().collect();
    let names: BTreeSet<String> = on_disk.into_iter().chain(known).collect();
    for name in names {
        let _ = repository.sync(&name, false).await;
    }
}
