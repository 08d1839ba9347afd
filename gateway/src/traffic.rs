//! This gateway's traffic over the last hour, for the console's charts: every
//! [`INTERVAL`] the request totals of both APIs (native and S3) and the bytes moved are
//! read and the rates since the previous reading kept, [`SAMPLES`] of them. In memory
//! only: a restarted gateway starts a new hour (Prometheus is where history lives; this
//! is what the console shows without one).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use kura_cluster::observe::{latency_quantile, HttpTotals, TotalsSnapshot};
use serde::Serialize;

use crate::Gateway;

/// Time between two samples: fine enough to see a spike, 360 points an hour.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Samples kept: one hour at [`INTERVAL`].
pub const SAMPLES: usize = 360;

/// Rates over one interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// End of the interval, ms since the epoch.
    pub t_ms: u64,
    /// Requests answered per second.
    pub requests_per_sec: f64,
    /// 4xx answers per second.
    pub client_errors_per_sec: f64,
    /// 5xx answers per second.
    pub server_errors_per_sec: f64,
    /// Median latency to the response head, ms (a bucket bound); `None`: no request.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms (a bucket bound).
    pub p99_ms: Option<f64>,
    /// Object bytes received per second.
    pub bytes_in_per_sec: f64,
    /// Object bytes sent per second.
    pub bytes_out_per_sec: f64,
}

/// What one reading holds.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Request totals.
    pub http: TotalsSnapshot,
    /// Object bytes received so far.
    pub bytes_in: u64,
    /// Object bytes sent so far.
    pub bytes_out: u64,
}

/// The rates between two readings `secs` apart, ending at `t_ms`.
pub fn rates(before: &Reading, now: &Reading, secs: f64, t_ms: u64) -> Sample {
    let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs.max(f64::EPSILON);
    let buckets: Vec<u64> = now
        .http
        .latency
        .iter()
        .zip(before.http.latency.iter().chain(std::iter::repeat(&0)))
        .map(|(n, b)| n.saturating_sub(*b))
        .collect();
    Sample {
        t_ms,
        requests_per_sec: per_sec(before.http.requests, now.http.requests),
        client_errors_per_sec: per_sec(before.http.client_errors, now.http.client_errors),
        server_errors_per_sec: per_sec(before.http.server_errors, now.http.server_errors),
        p50_ms: latency_quantile(&buckets, 0.5).map(|s| s * 1000.0),
        p99_ms: latency_quantile(&buckets, 0.99).map(|s| s * 1000.0),
        bytes_in_per_sec: per_sec(before.bytes_in, now.bytes_in),
        bytes_out_per_sec: per_sec(before.bytes_out, now.bytes_out),
    }
}

/// The last hour of samples.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    fn push(&self, s: Sample) {
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == SAMPLES {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }
}

fn read(gw: &Gateway, totals: &HttpTotals) -> Reading {
    Reading {
        http: totals.snapshot(),
        bytes_in: gw.cluster.metrics.bytes_uploaded.get(),
        bytes_out: gw.cluster.metrics.bytes_downloaded.get(),
    }
}

/// Samples this gateway's traffic every [`INTERVAL`], forever.
pub async fn sample_forever(gw: Arc<Gateway>, totals: Arc<HttpTotals>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut before = read(&gw, &totals);
    let mut at = std::time::Instant::now();
    loop {
        tick.tick().await;
        let now = read(&gw, &totals);
        let secs = at.elapsed().as_secs_f64();
        at = std::time::Instant::now();
        gw.traffic
            .push(rates(&before, &now, secs, kura_cluster::hlc::wall_ms()));
        before = now;
    }
}

/// `GET /v1/admin/traffic` (admin token): `{interval_secs, samples: [...]}`.
pub async fn handler(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "interval_secs": INTERVAL.as_secs(),
        "samples": gw.traffic.samples(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_over_the_interval() {
        let before = Reading {
            http: TotalsSnapshot {
                requests: 100,
                client_errors: 1,
                server_errors: 0,
                latency: vec![100, 0, 0],
            },
            bytes_in: 0,
            bytes_out: 1000,
        };
        let now = Reading {
            http: TotalsSnapshot {
                requests: 200,
                client_errors: 11,
                server_errors: 5,
                latency: vec![150, 49, 1],
            },
            bytes_in: 5000,
            bytes_out: 1000,
        };
        let s = rates(&before, &now, 10.0, 7);
        assert_eq!(s.requests_per_sec, 10.0);
        assert_eq!(s.client_errors_per_sec, 1.0);
        assert_eq!(s.server_errors_per_sec, 0.5);
        assert_eq!(s.bytes_in_per_sec, 500.0);
        assert_eq!(s.bytes_out_per_sec, 0.0);
        // 50 in the first bucket (<= 0.1 ms), 49 in the second, 1 in the third.
        assert_eq!(s.p50_ms, Some(0.1));
        assert_eq!(s.p99_ms, Some(0.2));
        let idle = rates(&now, &now, 10.0, 8);
        assert_eq!((idle.requests_per_sec, idle.p50_ms), (0.0, None));
        let h = History::default();
        for t in 0..(SAMPLES as u64 + 5) {
            h.push(rates(&now, &now, 10.0, t));
        }
        let kept = h.samples();
        assert_eq!(kept.len(), SAMPLES);
        assert_eq!(kept[0].t_ms, 5);
    }
}
