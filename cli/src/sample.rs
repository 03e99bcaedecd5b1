//! `etl sample`: publishes generated patients as an extractor would.

use anyhow::Context;
use async_nats::jetstream;
use chrono::Utc;
use proto::{bus, Envelope};

use crate::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// Source name (subject `<prefix>.<source>`).
    #[arg(long, default_value = "qms")]
    source: String,
    /// How many patients.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Generator seed: the same seed gives the same patients.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Afterwards, publish a newer version with a changed phone for this many.
    #[arg(long, default_value_t = 0)]
    changes: u64,
    /// Afterwards, publish deletions of this many.
    #[arg(long, default_value_t = 0)]
    deletes: u64,
    /// Also publish this many poison messages (undecodable, birth date in the
    /// future, no source id), to show the dead-letter path.
    #[arg(long, default_value_t = 0)]
    poison: u64,
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        bus::is_valid_source_name(&args.source),
        "invalid source name"
    );
    let client = settings.nats.connect("etl-sample").await?;
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &settings.stream)
        .await
        .context("creating the stream")?;

    let style = if args.source == "infoclinica" {
        synth::SourceIdStyle::Infoclinica
    } else {
        synth::SourceIdStyle::Qms
    };
    let generator = synth::Generator::new(args.seed).with_source_id_style(style);
    let now = Utc::now();
    let version = now.timestamp_micros();
    let mut publisher = bus::Publisher::new(&js, &settings.stream, 2048);

    for i in 0..args.count {
        publisher
            .send(
                &generator
                    .patient(i)
                    .into_envelope(&args.source, version, now),
            )
            .await?;
    }
    for i in 0..args.changes.min(args.count) {
        let mut patient = generator.patient(i);
        patient.record.phones.clear();
        let phone = format!("7999{:07}", i);
        patient.record.phones.push(proto::Phone {
            number: proto::Checked::valid(phone),
            preferred: true,
        });
        publisher
            .send(&patient.into_envelope(&args.source, version + 1, now))
            .await?;
    }
    for i in (args.count.saturating_sub(args.deletes))..args.count {
        publisher
            .send(&Envelope::delete(
                &args.source,
                generator.source_id(i),
                version + 2,
                now,
            ))
            .await?;
    }
    let published = publisher.settle().await?;
    // Poison messages are not envelopes: published raw, without a message id.
    let subject = settings.stream.subject(&args.source);
    for i in 0..args.poison {
        let payload = poison(i, &args.source);
        js.publish(subject.clone(), payload.into()).await?.await?;
    }
    let (stored, duplicates) = (published.stored + args.poison, published.duplicates);
    client.flush().await?;
    println!(
        "published to {subject}: {stored} messages stored, {duplicates} dropped by the stream as duplicates"
    );
    Ok(())
}

fn poison(i: u64, source: &str) -> Vec<u8> {
    let record = proto::PatientRecord {
        last_name: Some("Пример".into()),
        ..Default::default()
    };
    match i % 3 {
        0 => b"\xc1 this is not MessagePack".to_vec(),
        1 => {
            let mut e = Envelope::upsert(source, format!("poison-{i}"), 1, Utc::now(), record);
            e.record.as_mut().unwrap().birth_date =
                Some(Utc::now().date_naive() + chrono::Days::new(365));
            e.encode()
        }
        _ => Envelope::upsert(source, "", 1, Utc::now(), record).encode(),
    }
}
