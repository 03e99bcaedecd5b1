//! An in-process loader for integration tests, of this crate and of the
//! crates upstream (extractors) and downstream (matcher) of it, which check
//! what actually lands in PostgreSQL. Not used by the service itself.

use std::time::Duration;

use etl_runtime::database::DatabaseSettings;
use proto::bus::StreamSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Settings, Summary};

/// Loader settings on a test's database, NATS server and stream, with small
/// batches and short retry delays so that tests see their effects quickly.
pub fn settings(
    db: &DatabaseSettings,
    nats_url: &str,
    stream: &StreamSettings,
    consumer: &str,
) -> Settings {
    let mut s = Settings {
        database: db.clone(),
        ..Default::default()
    };
    s.nats.url = nats_url.into();
    s.stream = stream.clone();
    s.loader.consumer = consumer.into();
    s.loader.batch_size = 500;
    s.loader.retry.initial = Duration::from_millis(100);
    s.loader.retry.max = Duration::from_secs(2);
    s
}

/// A loader running as a task of the test's runtime.
pub struct RunningLoader {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<Summary>>,
}

impl RunningLoader {
    pub fn start(settings: Settings) -> RunningLoader {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(crate::run(settings, shutdown.clone()));
        RunningLoader { shutdown, task }
    }

    /// Graceful stop; panics if the loader does not stop within 30 s or
    /// returns an error.
    pub async fn stop(self) -> Summary {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("loader stops within 30 s")
            .expect("loader task")
            .expect("loader returns Ok")
    }
}
