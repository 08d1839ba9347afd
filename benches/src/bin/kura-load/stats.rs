//! Latency samples, content generation and process memory.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

/// `len` bytes determined by `seed` (splitmix64), so any reader can check what it got.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed;
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Outcomes and latencies of one kind of operation.
#[derive(Default)]
pub struct OpStats {
    pub latencies: Vec<Duration>,
    pub ok: u64,
    pub status_5xx: u64,
    pub other_errors: u64,
    pub wrong_bytes: u64,
    pub bytes: u64,
}

impl OpStats {
    pub fn merge(&mut self, other: OpStats) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.status_5xx += other.status_5xx;
        self.other_errors += other.other_errors;
        self.wrong_bytes += other.wrong_bytes;
        self.bytes += other.bytes;
    }

    pub fn report(&mut self) -> Value {
        json!({
            "ok": self.ok,
            "5xx": self.status_5xx,
            "other_errors": self.other_errors,
            "wrong_bytes": self.wrong_bytes,
            "bytes": self.bytes,
            "latency_ms": percentiles(&mut self.latencies),
        })
    }
}

/// p50, p90, p99, p99.9 and max, in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    json!({
        "n": samples.len(),
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": at(1.0),
    })
}

/// Per operation stats, by name.
pub type ByOp = BTreeMap<&'static str, OpStats>;

/// Peak resident memory (VmHWM) and current RSS of each `NAME=PID`, in MiB.
pub fn memory(pids: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for spec in pids {
        let Some((name, pid)) = spec.split_once('=') else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k as f64 / 1024.0)
        };
        out.insert(
            name.to_string(),
            json!({ "peak_rss_mib": kib("VmHWM:"), "rss_mib": kib("VmRSS:") }),
        );
    }
    Value::Object(out)
}
