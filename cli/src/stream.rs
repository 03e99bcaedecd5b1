//! `etl wait` and `etl delete-stream`.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;

use crate::Settings;

#[derive(clap::Args)]
pub struct WaitArgs {
    /// Durable consumer to watch.
    #[arg(long, default_value = "loader")]
    consumer: String,
    /// Give up after this many seconds (exit code 1).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub async fn wait(settings: &Settings, args: WaitArgs) -> anyhow::Result<()> {
    let client = settings.nats.connect("etl-wait").await?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&settings.stream.name)
        .await
        .context("stream not found")?;
    let start = Instant::now();
    loop {
        if let Ok(mut consumer) = stream
            .get_consumer::<jetstream::consumer::pull::Config>(&args.consumer)
            .await
        {
            let info = consumer.info().await?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                println!(
                    "consumer {} has processed every message ({:.1} s)",
                    args.consumer,
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(args.timeout),
            "timed out waiting for consumer {}",
            args.consumer
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// Confirm: every message in the stream is lost.
    #[arg(long)]
    yes: bool,
}

pub async fn delete(settings: &Settings, args: DeleteArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.yes,
        "this deletes stream {} and all its messages: pass --yes",
        settings.stream.name
    );
    let client = settings.nats.connect("etl-admin").await?;
    let js = jetstream::new(client);
    match js.delete_stream(&settings.stream.name).await {
        Ok(_) => println!("stream {} deleted", settings.stream.name),
        Err(e) if e.to_string().contains("not found") => {
            println!("stream {} did not exist", settings.stream.name)
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
