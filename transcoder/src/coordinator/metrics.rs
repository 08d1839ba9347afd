//! The coordinator's metrics (request metrics come from `kura_cluster::observe`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a finished-jobs sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Final state.
    pub state: String,
}

/// Counters the coordinator exports on `/metrics`.
#[derive(Clone, Default)]
pub struct CoordinatorMetrics {
    /// Jobs submitted.
    pub jobs_submitted: Counter,
    /// Jobs that ended, by final state.
    pub jobs_finished: Family<StateLabel, Counter>,
    /// Leases granted.
    pub leases_granted: Counter,
    /// Leases that expired without a result.
    pub leases_expired: Counter,
    /// Heartbeats or results refused for a stale fencing token.
    pub fenced: Counter,
    /// Tasks that failed (any class).
    pub task_failures: Counter,
    /// Runnable tasks (set at scrape).
    pub queue_depth: Gauge,
    /// Notifications of queued work received from the database (PostgreSQL): from every
    /// coordinator sharing it, this one's own included (`LISTEN` cannot tell them apart).
    pub database_wakeups: Counter,
    /// 1 while this coordinator listens for that work (PostgreSQL), else 0.
    pub database_listening: Gauge,
}

impl CoordinatorMetrics {
    /// Registers every metric in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "kura_jobs_submitted",
            "Transcoding jobs submitted",
            self.jobs_submitted.clone(),
        );
        r.register(
            "kura_jobs_finished",
            "Jobs that ended, by final state",
            self.jobs_finished.clone(),
        );
        r.register(
            "kura_leases_granted",
            "Task leases granted",
            self.leases_granted.clone(),
        );
        r.register(
            "kura_leases_expired",
            "Task leases that expired",
            self.leases_expired.clone(),
        );
        r.register(
            "kura_fenced_results",
            "Heartbeats or results refused for a stale lease",
            self.fenced.clone(),
        );
        r.register(
            "kura_task_failures",
            "Task failures reported or reaped",
            self.task_failures.clone(),
        );
        r.register(
            "kura_queue_depth",
            "Runnable tasks",
            self.queue_depth.clone(),
        );
        r.register(
            "kura_coordinator_database_wakeups",
            "Notifications of work queued by any coordinator sharing the database, this one included",
            self.database_wakeups.clone(),
        );
        r.register(
            "kura_coordinator_database_listening",
            "1 while this coordinator listens for work other coordinators queue",
            self.database_listening.clone(),
        );
    }

    /// Counts a job that reached a final state.
    pub fn finished(&self, job: &crate::model::Job) {
        if job.state.is_final() {
            let state = format!("{:?}", job.state).to_lowercase();
            self.jobs_finished
                .get_or_create(&StateLabel { state })
                .inc();
        }
    }
}
