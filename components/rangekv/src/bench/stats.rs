//! What a benchmark run measured: HDR latency histograms and failures per operation kind,
//! shared by the workers, read once a second for the progress line and at the end for the
//! report (a table for people, or one JSON object with `--json`).

use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;

use super::workload::OpKind;

/// Latencies of one operation kind, in microseconds, and its failures.
pub struct OpStats {
    pub latency: Histogram<u64>,
    pub errors: u64,
    /// The first failure, shown in the report so a run that fails is not silently fast.
    pub first_error: Option<String>,
}

impl OpStats {
    pub fn new() -> OpStats {
        OpStats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
            first_error: None,
        }
    }

    pub fn ops(&self) -> u64 {
        self.latency.len()
    }

    fn quantile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "ops": self.ops(),
            "errors": self.errors,
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "max_us": self.latency.max(),
            "first_error": self.first_error,
        })
    }
}

/// Per-kind statistics shared by every worker (one short lock per operation).
pub struct Recorder {
    kinds: Vec<Mutex<OpStats>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            kinds: OpKind::ALL
                .iter()
                .map(|_| Mutex::new(OpStats::new()))
                .collect(),
        }
    }

    /// Records one operation that started at `started`.
    pub fn record<T, E: std::fmt::Display>(
        &self,
        kind: OpKind,
        started: Instant,
        outcome: &Result<T, E>,
    ) {
        let micros = started.elapsed().as_micros().max(1) as u64;
        let mut s = self.kinds[kind.index()].lock();
        match outcome {
            Ok(_) => {
                let _ = s.latency.record(micros);
            }
            Err(e) => {
                s.errors += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(e.to_string());
                }
            }
        }
    }

    /// Completed operations and failures so far, all kinds.
    pub fn totals(&self) -> (u64, u64) {
        self.kinds.iter().fold((0, 0), |(ops, errs), k| {
            let k = k.lock();
            (ops + k.ops(), errs + k.errors)
        })
    }

    /// One progress line: throughput over the last interval, then p50/p99 so far per kind.
    pub fn progress_line(
        &self,
        elapsed: Duration,
        interval_ops: u64,
        interval: Duration,
    ) -> String {
        let mut line = format!(
            "[{:>4}s] {:>8.0} ops/s",
            elapsed.as_secs(),
            interval_ops as f64 / interval.as_secs_f64().max(1e-9)
        );
        for kind in OpKind::ALL {
            let s = self.kinds[kind.index()].lock();
            if s.ops() == 0 && s.errors == 0 {
                continue;
            }
            line.push_str(&format!(
                " | {} p50 {} p99 {}",
                kind.name(),
                fmt_us(s.quantile_us(0.5)),
                fmt_us(s.quantile_us(0.99))
            ));
            if s.errors > 0 {
                line.push_str(&format!(" ({} errors)", s.errors));
            }
        }
        line
    }

    /// The final table, one row per kind that ran.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "ops", "errors", "p50 us", "p99 us", "p999 us", "max us"
        );
        for kind in OpKind::ALL {
            let s = self.kinds[kind.index()].lock();
            if s.ops() == 0 && s.errors == 0 {
                continue;
            }
            out.push_str(&format!(
                "{:<7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
                kind.name(),
                s.ops(),
                s.errors,
                s.quantile_us(0.5),
                s.quantile_us(0.99),
                s.quantile_us(0.999),
                s.latency.max()
            ));
            if let Some(e) = &s.first_error {
                out.push_str(&format!("        first {} error: {e}\n", kind.name()));
            }
        }
        out
    }

    /// The per-kind statistics as a JSON object keyed by kind name.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for kind in OpKind::ALL {
            let s = self.kinds[kind.index()].lock();
            if s.ops() == 0 && s.errors == 0 {
                continue;
            }
            map.insert(kind.name().to_string(), s.to_json());
        }
        serde_json::Value::Object(map)
    }
}

fn fmt_us(us: u64) -> String {
    if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes_are_timed_and_failures_counted_apart() {
        let r = Recorder::new();
        let t = Instant::now();
        r.record(OpKind::Read, t, &Ok::<(), String>(()));
        r.record(OpKind::Read, t, &Err::<(), _>("region unavailable"));
        r.record(OpKind::Read, t, &Err::<(), _>("second"));
        r.record(OpKind::Update, t, &Ok::<(), String>(()));
        assert_eq!(r.totals(), (2, 2));
        let j = r.to_json();
        assert_eq!(j["read"]["ops"], 1);
        assert_eq!(j["read"]["errors"], 2);
        assert_eq!(j["read"]["first_error"], "region unavailable");
        assert!(j.get("scan").is_none(), "kinds that never ran are left out");
        let table = r.table();
        assert!(table.contains("first read error: region unavailable"));
        assert!(!table.contains("scan"));
    }

    #[test]
    fn progress_shows_interval_throughput() {
        let r = Recorder::new();
        r.record(OpKind::Scan, Instant::now(), &Ok::<(), String>(()));
        let line = r.progress_line(Duration::from_secs(3), 500, Duration::from_millis(500));
        assert!(line.starts_with("[   3s]     1000 ops/s"), "{line}");
        assert!(line.contains("scan p50"), "{line}");
    }
}
