//! Progress of long work (an initial load, a large delta pass, a download,
//! a replay, a re-match, an import): on a terminal a bar with the count,
//! the rate and the time left; otherwise (a service under systemd, cron) a
//! log line every `log.progress_interval` (default 10 s) with the same
//! figures. Counts
//! only: never a record's content.
//!
//! Log lines and bars share stderr: the services' log writer
//! ([`log_writer`]) prints each line above the bars, so neither garbles the
//! other.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Time between two log lines when no bar is shown, unless `log.progress_interval`
/// says otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

/// `log.progress_interval` in milliseconds, set when logging is set up.
static EVERY_MS: AtomicU64 = AtomicU64::new(DEFAULT_EVERY.as_millis() as u64);

/// Sets the interval of the progress lines of this process.
pub fn set_default_every(every: Duration) {
    EVERY_MS.store(every.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things with this name (`rows`, `messages`, `records`, `changes`).
    Items(&'static str),
    /// Bytes (shown as KiB, MiB …).
    Bytes,
    /// Nothing: work in phases (a re-match, a model's training) shows the
    /// time it has taken (keep it moving with [`Progress::heartbeat`]).
    Time,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Items(name) => name,
            Unit::Bytes => "bytes",
            Unit::Time => "seconds",
        }
    }
}

/// `total` when unknown.
const UNKNOWN: u64 = u64::MAX;

/// The progress of one piece of work; shared by reference between the
/// tasks doing it. Dropping it removes its bar.
pub struct Progress {
    task: String,
    unit: Unit,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
    every: Duration,
    bar: Option<ProgressBar>,
}

/// The bars of this process, drawn on stderr (a terminal only).
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

fn stderr_is_terminal() -> bool {
    static TERMINAL: OnceLock<bool> = OnceLock::new();
    *TERMINAL.get_or_init(|| std::io::stderr().is_terminal())
}

impl Progress {
    /// Starts showing the progress of `task` (a name without personal
    /// data, e.g. `initial load of branch-1`) out of `total` if known: a bar
    /// if stderr is a terminal, else log lines.
    pub fn start(task: impl Into<String>, unit: Unit, total: Option<u64>) -> Progress {
        Progress::new(task.into(), unit, total, stderr_is_terminal())
    }

    /// Log lines only, whatever stderr is.
    pub fn lines(task: impl Into<String>, unit: Unit, total: Option<u64>) -> Progress {
        Progress::new(task.into(), unit, total, false)
    }

    fn new(task: String, unit: Unit, total: Option<u64>, with_bar: bool) -> Progress {
        let bar = with_bar.then(|| {
            let bar = bars().add(ProgressBar::new(total.unwrap_or(0)));
            bar.set_style(style(unit, total.is_some()));
            bar.set_message(task.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            task,
            unit,
            total: AtomicU64::new(total.unwrap_or(UNKNOWN)),
            done: AtomicU64::new(0),
            started: now,
            last_line: Mutex::new(now),
            every: Duration::from_millis(EVERY_MS.load(Ordering::Relaxed)),
            bar,
        }
    }

    /// Time between two log lines (no effect on a bar).
    pub fn every(mut self, every: Duration) -> Progress {
        self.every = every;
        self
    }

    /// The total became known or changed.
    pub fn set_total(&self, total: Option<u64>) {
        self.total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_style(style(self.unit, total.is_some()));
            bar.set_length(total.unwrap_or(0));
        }
    }

    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t != UNKNOWN)
    }

    /// `n` more done.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        self.show(done);
    }

    /// `done` in all so far.
    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.show(done);
    }

    /// A log line if one is due, even if nothing more was done.
    pub fn tick(&self) {
        self.show(self.done());
    }

    fn show(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= self.every {
                    *last = Instant::now();
                    drop(last);
                    self.log_line();
                }
            }
        }
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Per second since the start.
    pub fn rate(&self) -> f64 {
        let seconds = self.started.elapsed().as_secs_f64();
        if seconds > 0.0 {
            self.done() as f64 / seconds
        } else {
            0.0
        }
    }

    /// Time left at the rate so far, if the total is known and work is done.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.total()?;
        let rate = self.rate();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(total.saturating_sub(self.done()) as f64 / rate))
    }

    fn log_line(&self) {
        let elapsed_s = self.started.elapsed().as_secs();
        if self.unit == Unit::Time {
            tracing::info!(task = %self.task, elapsed_s, "progress");
            return;
        }
        tracing::info!(
            task = %self.task,
            done = self.done(),
            total = self.total(),
            unit = self.unit.name(),
            per_second = self.rate().round() as u64,
            elapsed_s,
            eta_s = self.eta().map(|d| d.as_secs()),
            "progress"
        );
    }

    /// Runs `f` (which prints) with the bars out of its way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(_) => bars().suspend(f),
            None => f(),
        }
    }

    /// Until the returned guard is dropped, a log line every interval even
    /// when nothing is counted (a bar's spinner and clock move by
    /// themselves). A thread of its own: it goes on while the work holds
    /// the async runtime's threads.
    pub fn heartbeat(self: &Arc<Self>) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (progress, stop) = (Arc::clone(self), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    progress.tick();
                }
            })
        };
        Heartbeat {
            stop,
            thread: Some(thread),
        }
    }

    /// Removes the bar (callers log their own summary line).
    pub fn finish(self) {}
}

/// See [`Progress::heartbeat`].
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            bars().remove(&bar);
        }
    }
}

fn style(unit: Unit, known_total: bool) -> ProgressStyle {
    let (pos, len, rate) = match unit {
        Unit::Items(_) => ("{human_pos}", "{human_len}", "{per_sec}"),
        Unit::Bytes => (
            "{binary_bytes}",
            "{binary_total_bytes}",
            "{binary_bytes_per_sec}",
        ),
        Unit::Time => ("", "", ""),
    };
    let template = if unit == Unit::Time {
        "{spinner} {msg} {elapsed}".to_string()
    } else if known_total {
        format!("{{msg}} [{{wide_bar}}] {pos}/{len} {{percent}}% {rate} {{elapsed}} ETA {{eta}}")
    } else {
        format!("{{spinner}} {{msg}}: {pos} {rate} {{elapsed}}")
    };
    ProgressStyle::with_template(&template)
        .expect("a valid template")
        .progress_chars("=> ")
}

/// The writer of log lines to stderr: each line is printed above the bars
/// of this process (if any), which are redrawn below it.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if stderr_is_terminal() {
            bars().suspend(|| std::io::stderr().write_all(buf))?;
        } else {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left() {
        let p = Progress::lines("test", Unit::Items("rows"), Some(1000));
        assert_eq!(p.eta(), None, "nothing done yet");
        std::thread::sleep(Duration::from_millis(50));
        p.inc(100);
        p.inc(150);
        assert_eq!(p.done(), 250);
        let taken = p.started.elapsed().as_secs_f64();
        let rate = p.rate();
        assert!(rate > 0.0 && rate <= 250.0 / 0.05, "{rate}");
        // 750 left at the rate so far: about three times the time taken.
        let eta = p.eta().unwrap().as_secs_f64();
        assert!(
            (eta - 3.0 * taken).abs() < 0.1 * taken + 0.01,
            "{eta} {taken}"
        );
        p.set_total(None);
        assert_eq!(p.eta(), None);
        p.finish();
    }

    /// Log lines written by `f`, through a subscriber of this thread.
    fn logged(f: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = buffer.clone();
            move || SharedWriter(buffer.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct SharedWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_come_once_per_interval_with_counts_and_rate() {
        let logs = logged(|| {
            let p = Progress::lines("initial load of branch", Unit::Items("rows"), Some(100))
                .every(Duration::from_millis(30));
            p.inc(10);
            p.inc(10);
            std::thread::sleep(Duration::from_millis(40));
            p.inc(10);
            p.inc(10);
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "one line per interval: {logs}");
        for field in [
            "progress",
            "task=initial load of branch",
            "done=30",
            "total=100",
            "unit=\"rows\"",
            "per_second=",
            "eta_s=",
        ] {
            assert!(lines[0].contains(field), "{field} in {logs}");
        }
    }

    #[test]
    fn work_in_phases_shows_its_time() {
        let logs = logged(|| {
            let p = Progress::lines("re-match", Unit::Time, None).every(Duration::from_millis(20));
            std::thread::sleep(Duration::from_millis(30));
            p.tick();
        });
        assert!(
            logs.contains("progress task=re-match elapsed_s=0"),
            "{logs}"
        );
        // The heartbeat ticks from a thread of its own.
        let p = Arc::new(Progress::lines("re-match", Unit::Time, None).every(Duration::ZERO));
        let before = *p.last_line.lock().unwrap();
        let beat = p.heartbeat();
        std::thread::sleep(Duration::from_millis(250));
        drop(beat);
        assert!(
            *p.last_line.lock().unwrap() > before,
            "a line was due and written"
        );
    }
}
