//! Progress reporting: shared byte counters updated by the pipeline, shown as an indicatif
//! bar on a terminal (stderr) or as one log line every 10 seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default, Debug)]
pub(crate) struct Counters {
    read: AtomicU64,
    stored: AtomicU64,
}

impl Counters {
    pub(crate) fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_stored(&self, n: u64) {
        self.stored.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    pub(crate) fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
}

/// Shows progress until dropped.
pub(crate) struct Reporter {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Start reporting `what` (e.g. "backup app"); `quiet` shows nothing. `total` is the
/// expected size of what is read, when known: the bar then shows progress and an ETA.
/// On a terminal: an indicatif bar on stderr. Otherwise: one structured log line every
/// `$BACKSTOP_PROGRESS_INTERVAL` (default 10s; also e.g. 500ms), no escape codes.
pub(crate) fn start(
    what: &str,
    counters: Arc<Counters>,
    total: Option<u64>,
    quiet: bool,
) -> Reporter {
    if quiet {
        return Reporter {
            task: None,
            bar: None,
        };
    }
    let start = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = match total {
            Some(t) if t > 0 => {
                let b = indicatif::ProgressBar::new(t);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix} [{bar:28}] {bytes} of ~{total_bytes} {binary_bytes_per_sec} {msg} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            }
            _ => {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix} {msg} [{elapsed_precise}]",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                b
            }
        };
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let b = bar.clone();
        let sized = total.is_some_and(|t| t > 0);
        let task = tokio::spawn(async move {
            loop {
                if sized {
                    let read = counters.read();
                    // The expected size is an estimate: never let the bar look finished early.
                    b.set_length(b.length().unwrap_or(0).max(read + read / 50 + 1));
                    b.set_position(read);
                    b.set_message(format!(
                        "stored {} ratio {:.2}",
                        crate::text::human_bytes(counters.stored()),
                        ratio(&counters)
                    ));
                } else {
                    b.set_message(line(&counters, start));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        return Reporter {
            task: Some(task),
            bar: Some(bar),
        };
    }
    let what = what.to_string();
    let every = crate::config::env::progress_interval();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let secs = start.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                task = what.as_str(),
                read_bytes = counters.read(),
                stored_bytes = counters.stored(),
                read_bytes_per_second = (counters.read() as f64 / secs) as u64,
                expected_bytes = total,
                "{what}: {}",
                line(&counters, start)
            );
        }
    });
    Reporter {
        task: Some(task),
        bar: None,
    }
}

fn ratio(c: &Counters) -> f64 {
    let stored = c.stored();
    if stored > 0 {
        c.read() as f64 / stored as f64
    } else {
        0.0
    }
}

fn line(c: &Counters, start: Instant) -> String {
    let read = c.read();
    let stored = c.stored();
    let secs = start.elapsed().as_secs_f64().max(0.001);
    let ratio = if stored > 0 {
        read as f64 / stored as f64
    } else {
        0.0
    };
    format!(
        "read {} ({}/s), stored {} (ratio {ratio:.2})",
        crate::text::human_bytes(read),
        crate::text::human_bytes((read as f64 / secs) as u64),
        crate::text::human_bytes(stored)
    )
}
