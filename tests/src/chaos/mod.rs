//! The chaos harness: the whole bus under random kills and server restarts
//! while its sources change, then a check that it converged to the sources.
//!
//! It runs the real binaries — `qms-extractor` against `qms-sim`,
//! `infoclinica-extractor` against a sample database in the local Firebird
//! 3, two `loader`s and the `matcher` — against a NATS server and a
//! PostgreSQL cluster of its own (temp dirs, free ports). For
//! [`Options::duration`] it kills a random process with SIGKILL or
//! restarts NATS (kill -9) or PostgreSQL (`pg_ctl -m immediate`) every
//! [`Options::pause`], while rows are added, edited, removed and restored
//! in the sources. Then the chaos stops and the harness waits until the
//! pipeline has caught up (both extractors completed two syncs since, the
//! loaders' consumer and the matcher's change feed drained, every person
//! event published, the live keys equal the sources' keys), runs `etl
//! rematch`, checks the person events on the bus against the outbox and
//! the persons ([`crate::person_events`]), and compares PostgreSQL record
//! by record with a reference: the same binaries run once, undisturbed,
//! over the final sources into a fresh stream and database.
//! `cargo run -p testkit --bin chaos -- --help`; deploy/README.md, "Chaos
//! test".

mod binaries;
mod fleet;
pub mod privacy;
mod run;
mod sources;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use binaries::Binaries;
pub use sources::Changes;
pub use verify::{Comparison, KeyDiff, Rematch};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long processes are killed and servers restarted.
    pub duration: Duration,
    /// Records of each source at the start.
    pub records: u64,
    pub seed: u64,
    /// Shortest and longest time between two kills or restarts.
    pub pause: (Duration, Duration),
    /// Longest wait for the pipeline to catch up after the chaos.
    pub converge_timeout: Duration,
    /// Installed binaries; none: built with cargo.
    pub bin_dir: Option<PathBuf>,
    /// Keep the run directory (logs) even when every check passes.
    pub keep: bool,
}

impl Options {
    /// The form the test suite runs (well under two minutes).
    pub fn short(seed: u64) -> Options {
        Options {
            duration: Duration::from_secs(20),
            records: 1000,
            seed,
            pause: (Duration::from_millis(700), Duration::from_millis(2500)),
            converge_timeout: Duration::from_secs(45),
            bin_dir: None,
            keep: false,
        }
    }
}

/// What happened and what the checks found.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub chaos: Duration,
    /// Per process: name, SIGKILLs, exits of its own (why).
    pub processes: Vec<(String, u32, Vec<String>)>,
    pub nats_restarts: u32,
    pub postgres_restarts: u32,
    /// Kills of the qMS extractor aimed at the middle of a publish: tried,
    /// and done while its messages were arriving.
    pub qms_publish_strikes: (u32, u32),
    pub qms_changes: Changes,
    pub infoclinica_changes: Changes,
    /// Time from the end of the chaos until caught up; none: not within
    /// the timeout.
    pub converged: Option<Duration>,
    pub converge_timeout: Duration,
    /// What was still missing at the timeout.
    pub lag: Option<String>,
    /// Key sets of the reference run against the sources (a sanity check
    /// of the reference itself).
    pub reference_keys: Vec<(String, KeyDiff)>,
    pub comparison: Comparison,
    pub rematch: Option<Rematch>,
    /// Person events published, and what is wrong with them against the
    /// outbox and the persons (`crate::person_events`); none: not checked.
    pub events: Option<(usize, Vec<String>)>,
    /// Non-zero exits on the final SIGTERM.
    pub unclean_stops: Vec<String>,
    /// Personal values of the run found in logs, dead-letter reasons or
    /// the operator's listings (kind and place only); none when checked
    /// and clean.
    pub privacy: Option<Vec<privacy::Leak>>,
    /// Where the logs are (kept when a check failed or with `keep`).
    pub run_dir: Option<PathBuf>,
}

impl Summary {
    /// Every check that failed, in words.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, _, exits) in &self.processes {
            if !exits.is_empty() {
                out.push(format!("{name} exited by itself {} time(s)", exits.len()));
            }
        }
        if self.converged.is_none() {
            out.push(format!(
                "did not catch up within {:?} of the chaos's end: {}",
                self.converge_timeout,
                self.lag.as_deref().unwrap_or("?")
            ));
        }
        for (source, diff) in &self.reference_keys {
            if !diff.is_empty() {
                out.push(format!(
                    "reference run differs from {source}'s keys: {diff:?}"
                ));
            }
        }
        if self.comparison.mismatches() > 0 {
            out.push(format!(
                "{} record(s) differ from the sources",
                self.comparison.mismatches()
            ));
        }
        match &self.rematch {
            Some(r) if !r.moves_nothing() => out.push(format!("re-match: {}", r.line)),
            None => out.push("re-match did not run".into()),
            _ => {}
        }
        match &self.events {
            Some((_, problems)) if !problems.is_empty() => {
                out.push(format!("person events: {}", problems.join("; ")))
            }
            None => out.push("person events not checked".into()),
            _ => {}
        }
        match &self.privacy {
            Some(leaks) if !leaks.is_empty() => {
                let found: Vec<String> = leaks
                    .iter()
                    .map(|l| format!("{} ×{} in {}", l.kind, l.count, l.place))
                    .collect();
                out.push(format!("personal data found: {}", found.join(", ")));
            }
            None => out.push("personal data not looked for".into()),
            _ => {}
        }
        out
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kills: u32 = self.processes.iter().map(|p| p.1).sum();
        let per: Vec<String> = self
            .processes
            .iter()
            .map(|(n, k, _)| format!("{n} {k}"))
            .collect();
        writeln!(f, "chaos summary (seed {})", self.seed)?;
        writeln!(f, "  chaos:      {:.1} s", self.chaos.as_secs_f64())?;
        writeln!(f, "  kills:      {kills} ({})", per.join(", "))?;
        writeln!(
            f,
            "  restarts:   {} (nats {}, postgresql {})",
            self.nats_restarts + self.postgres_restarts,
            self.nats_restarts,
            self.postgres_restarts
        )?;
        writeln!(
            f,
            "  qms mid-publish kills: {} of {} tries (part of the kills above)",
            self.qms_publish_strikes.1, self.qms_publish_strikes.0
        )?;
        for (source, c) in [
            ("qms", &self.qms_changes),
            ("infoclinica", &self.infoclinica_changes),
        ] {
            writeln!(
                f,
                "  {source:<11} +{} added, {} changed, {} removed, {} restored",
                c.added, c.changed, c.removed, c.restored
            )?;
        }
        for (name, _, exits) in &self.processes {
            for why in exits {
                writeln!(f, "  own exit:   {name}: {why}")?;
            }
        }
        let c = &self.comparison;
        writeln!(
            f,
            "  records:    {} in PostgreSQL ({} live, {} deleted); sources hold {}",
            c.records, c.live, c.deleted, c.reference
        )?;
        match self.converged {
            Some(t) => writeln!(f, "  converged:  {:.1} s after the chaos", t.as_secs_f64())?,
            None => writeln!(f, "  converged:  NO within {:?}", self.converge_timeout)?,
        }
        writeln!(
            f,
            "  mismatches: {} (missing {}, wrongly deleted {}, content differs {}, not deleted {})",
            c.mismatches(),
            sample(&c.missing),
            sample(&c.wrongly_deleted),
            sample(&c.content_differs),
            sample(&c.not_deleted)
        )?;
        match &self.rematch {
            Some(r) => writeln!(f, "  re-match:   {}", r.line)?,
            None => writeln!(f, "  re-match:   not run")?,
        }
        match &self.events {
            Some((n, problems)) if problems.is_empty() => writeln!(
                f,
                "  events:     {n} person events on the bus, each outbox row once and in order; \
                 replayed, they give the persons PostgreSQL holds"
            )?,
            Some((n, problems)) => {
                writeln!(f, "  events:     {n} on the bus: {}", problems.join("; "))?
            }
            None => writeln!(f, "  events:     not checked")?,
        }
        if self.privacy.as_ref().is_some_and(Vec::is_empty) {
            writeln!(
                f,
                "  privacy:    no name, birth date, document, SNILS, OMS, phone or e-mail in \
                 any log, dead-letter reason, person event or etl listing"
            )?;
        }
        for stop in &self.unclean_stops {
            writeln!(f, "  stop:       {stop}")?;
        }
        if let Some(dir) = &self.run_dir {
            writeln!(f, "  logs:       {}", dir.display())?;
        }
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "  result:     PASS")
        } else {
            write!(f, "  result:     FAIL: {}", failures.join("; "))
        }
    }
}

/// The count and the first few keys of a list.
fn sample(keys: &[String]) -> String {
    let first: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    match first.is_empty() {
        true => "0".into(),
        false => format!("{}: {}", keys.len(), first.join(" ")),
    }
}

/// Runs the harness: sets everything up, the chaos, the wait, the checks.
/// An error is a failure of the harness itself (a server that would not
/// start, a source it could not change); the product's failures are in
/// the summary. The logs are kept on either.
pub async fn run(options: &Options) -> anyhow::Result<Summary> {
    let binaries = match &options.bin_dir {
        Some(dir) => Binaries::installed(dir)?,
        None => tokio::task::spawn_blocking(Binaries::build).await??,
    };
    let dir = tempfile::Builder::new().prefix("etl-chaos-").tempdir()?;
    match run_in(binaries, options, dir.path()).await {
        Ok(mut summary) => {
            if options.keep || !summary.passed() {
                summary.run_dir = Some(dir.keep());
            }
            Ok(summary)
        }
        Err(e) => Err(e.context(format!("logs in {}", dir.keep().display()))),
    }
}

async fn run_in(binaries: Binaries, options: &Options, dir: &Path) -> anyhow::Result<Summary> {
    let binaries = binaries.snapshot(&dir.join("bin"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut rig = run::Rig::start(binaries, options, dir).await?;
    let mut summary = Summary {
        seed: options.seed,
        converge_timeout: options.converge_timeout,
        ..Default::default()
    };
    let started = Instant::now();
    rig.chaos(options, &mut rng).await?;
    summary.chaos = started.elapsed();
    rig.freeze()?;
    match rig.converge(options.converge_timeout).await? {
        Ok(took) => summary.converged = Some(took),
        Err(lag) => summary.lag = Some(lag),
    }
    summary.rematch = Some(rig.rematch().await);
    let events = rig.events(options.converge_timeout).await?;
    summary.events = Some((events.bus.len(), events.problems.clone()));
    summary.unclean_stops = rig.stop();
    summary.processes = rig
        .fleet
        .iter()
        .map(|p| (p.name.clone(), p.kills, p.exits.clone()))
        .collect();
    summary.nats_restarts = rig.bus.nats_restarts;
    summary.postgres_restarts = rig.bus.postgres_restarts;
    summary.qms_publish_strikes = (rig.qms_publish_strikes, rig.qms_publish_kills);
    summary.qms_changes = rig.qms.changes.clone();
    summary.infoclinica_changes = rig.firebird.changes.clone();
    rig.reference(options.converge_timeout).await?;
    rig.compare(&mut summary).await?;
    summary.privacy = Some(rig.privacy(&events.bus).await?);
    Ok(summary)
}
