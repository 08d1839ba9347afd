//! The lease order: which queued task runs next.
//!
//! Policy (ARCHITECTURE.md, "Transcoding"):
//! 1. **Bands** are served strictly in order: higher job priority first, and within one
//!    priority the *urgent* tasks before the rest: those the planner marks so (the
//!    playlists that make a job playable, then complete), and the last task of a job
//!    to start — when a lease leaves a job one queued task, that task (the last range
//!    of a nearly done job, a clip's second pass once its first playlist is out) is
//!    moved to the urgent band. So a job that is almost done is never left waiting for
//!    a slot behind someone else's long encode. Each job has at most one task moved so
//!    at a time, so no job can fill the band.
//! 2. Within a band, **tenants** (API keys) share the slots by start-time fair queueing:
//!    each has a virtual-time tag that grows by the cost of every task it is leased; the
//!    smallest tag goes next, and a tenant that becomes active starts at the band's
//!    virtual time (the tag of the last one served), so it neither jumps the queue with
//!    credit saved while idle nor waits behind the others' history.
//! 3. Within a tenant, **flows** share the tenant's turns the same way. A flow is a job
//!    on its own, or a whole batch: a short upload is never stuck behind a long one, and
//!    a 10,000-object backfill counts as one flow instead of drowning everything else.
//! 4. Within a flow, **jobs in submission order** (a batch finishes job after job rather
//!    than all at once at the end), and a job's tasks in ready-time order; a task backed
//!    off after a failure is skipped until its time comes.
//!
//! Costs are the tasks' own weights (seconds × renditions for an encode), so a clip of
//! 17 s is charged a fraction of what one range of a long video is charged, and gets its
//! few tasks through between two of the long job's.
//!
//! This is soft state: tags live in memory and start from zero when the store opens (the
//! queued tasks themselves are durable in the `ready` column family and rebuilt from it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The smallest cost charged for a lease, so a task of weight 0 still moves its flow on.
pub const MIN_COST: f64 = 0.1;

/// A queued task as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    /// Task id.
    pub task: String,
    /// Its job.
    pub job: String,
    /// Who submitted the job.
    pub tenant: String,
    /// The job (`j<id>`) or its batch (`b<id>`).
    pub flow: String,
    /// The job's priority.
    pub priority: u8,
    /// Whether it publishes what a person waits for (its spec is `urgent`: playlists).
    pub urgent: bool,
    /// Not to be leased before (ms since the epoch).
    pub ready_ms: u64,
    /// Charged to its tenant and flow when leased.
    pub cost: f64,
}

/// Band order: higher priority first, then urgent tasks first.
type BandKey = Reverse<(u8, bool)>;

/// The band of a queued task.
fn band_of(q: &Queued) -> BandKey {
    Reverse((q.priority, q.urgent))
}

/// A virtual-time tag as an ordered key (tags are finite and ≥ 0, whose bit patterns
/// sort like their values).
fn tag_key(tag: f64) -> u64 {
    tag.max(0.0).to_bits()
}

#[derive(Default)]
struct Flow {
    tag: f64,
    /// `(job, ready_ms, task)`: jobs in submission order (ids are time-ordered).
    tasks: BTreeSet<(String, u64, String)>,
}

#[derive(Default)]
struct Tenant {
    tag: f64,
    /// Start tag of the flow served last: where a newly active flow starts.
    vclock: f64,
    flows: HashMap<String, Flow>,
    order: BTreeSet<(u64, String)>,
}

#[derive(Default)]
struct Band {
    /// Start tag of the tenant served last: where a newly active tenant starts.
    vclock: f64,
    tenants: HashMap<String, Tenant>,
    order: BTreeSet<(u64, String)>,
}

/// The queued tasks, in lease order.
#[derive(Default)]
pub struct Scheduler {
    bands: BTreeMap<BandKey, Band>,
    queued: HashMap<String, Queued>,
    /// The queued tasks of each job.
    by_job: HashMap<String, BTreeSet<String>>,
}

impl Scheduler {
    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Queues a task (replacing an earlier entry of the same task).
    pub fn insert(&mut self, q: Queued) {
        self.remove(&q.task);
        let band = self.bands.entry(band_of(&q)).or_default();
        let band_clock = band.vclock;
        let tenant = band.tenants.entry(q.tenant.clone()).or_insert_with(|| {
            band.order.insert((tag_key(band_clock), q.tenant.clone()));
            Tenant {
                tag: band_clock,
                vclock: band_clock,
                ..Tenant::default()
            }
        });
        let tenant_clock = tenant.vclock;
        let flow = tenant.flows.entry(q.flow.clone()).or_insert_with(|| {
            tenant.order.insert((tag_key(tenant_clock), q.flow.clone()));
            Flow {
                tag: tenant_clock,
                ..Flow::default()
            }
        });
        flow.tasks
            .insert((q.job.clone(), q.ready_ms, q.task.clone()));
        self.by_job
            .entry(q.job.clone())
            .or_default()
            .insert(q.task.clone());
        self.queued.insert(q.task.clone(), q);
    }

    /// Takes a task out of the queue without charging anyone (cancelled, or its job
    /// finished). Returns its entry.
    pub fn remove(&mut self, task: &str) -> Option<Queued> {
        let q = self.queued.remove(task)?;
        if let Some(tasks) = self.by_job.get_mut(&q.job) {
            tasks.remove(task);
            if tasks.is_empty() {
                self.by_job.remove(&q.job);
            }
        }
        let bk = band_of(&q);
        let Some(band) = self.bands.get_mut(&bk) else {
            return Some(q);
        };
        if let Some(tenant) = band.tenants.get_mut(&q.tenant) {
            if let Some(flow) = tenant.flows.get_mut(&q.flow) {
                flow.tasks
                    .remove(&(q.job.clone(), q.ready_ms, q.task.clone()));
                if flow.tasks.is_empty() {
                    tenant.order.remove(&(tag_key(flow.tag), q.flow.clone()));
                    tenant.flows.remove(&q.flow);
                }
            }
            if tenant.flows.is_empty() {
                band.order.remove(&(tag_key(tenant.tag), q.tenant.clone()));
                band.tenants.remove(&q.tenant);
            }
        }
        if band.tenants.is_empty() {
            self.bands.remove(&bk);
        }
        Some(q)
    }

    /// The task to lease next at `now`, if any is ready (and costs at most `max_cost`,
    /// when given: a worker's express slot takes only light tasks).
    pub fn pick(&self, now: u64, max_cost: Option<f64>) -> Option<&Queued> {
        let fits = |task: &str| {
            self.queued
                .get(task)
                .filter(|q| max_cost.is_none_or(|m| q.cost <= m))
        };
        for band in self.bands.values() {
            for (_, tname) in &band.order {
                let Some(tenant) = band.tenants.get(tname) else {
                    continue;
                };
                for (_, fname) in &tenant.order {
                    let Some(flow) = tenant.flows.get(fname) else {
                        continue;
                    };
                    let ready = flow
                        .tasks
                        .iter()
                        .filter(|(_, at, _)| *at <= now)
                        .find_map(|(_, _, task)| fits(task));
                    if ready.is_some() {
                        return ready;
                    }
                }
            }
        }
        None
    }

    /// Takes a task out of the queue because it was leased, charging its cost to its
    /// tenant and flow. If that leaves its job one queued task, that one moves to the
    /// urgent band (see the module documentation).
    pub fn lease(&mut self, task: &str) -> Option<Queued> {
        let q = self.charge(task)?;
        self.promote_last(&q.job);
        Some(q)
    }

    /// Moves the job's one queued task, if it has exactly one, to the urgent band.
    fn promote_last(&mut self, job: &str) {
        let last = match self.by_job.get(job) {
            Some(tasks) if tasks.len() == 1 => tasks.iter().next().cloned(),
            _ => None,
        };
        if let Some(mut q) = last.and_then(|t| self.queued.get(&t).cloned()) {
            if !q.urgent {
                q.urgent = true;
                self.insert(q);
            }
        }
    }

    /// Charges a leased task's cost to its tenant and flow and takes it out.
    fn charge(&mut self, task: &str) -> Option<Queued> {
        let q = self.queued.get(task)?.clone();
        if let Some(band) = self.bands.get_mut(&band_of(&q)) {
            if let Some(tenant) = band.tenants.get_mut(&q.tenant) {
                let cost = q.cost.max(MIN_COST);
                band.vclock = tenant.tag;
                band.order.remove(&(tag_key(tenant.tag), q.tenant.clone()));
                tenant.tag += cost;
                band.order.insert((tag_key(tenant.tag), q.tenant.clone()));
                if let Some(flow) = tenant.flows.get_mut(&q.flow) {
                    tenant.vclock = flow.tag;
                    tenant.order.remove(&(tag_key(flow.tag), q.flow.clone()));
                    flow.tag += cost;
                    tenant.order.insert((tag_key(flow.tag), q.flow.clone()));
                }
            }
        }
        self.remove(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued task of its own job (so that no lease leaves a job one task: these
    /// tests are of the fair order; `a_jobs_last_task_to_start_goes_first` is of that).
    fn q(task: &str, tenant: &str, flow: &str, prio: u8, cost: f64) -> Queued {
        Queued {
            task: task.into(),
            job: task.into(),
            tenant: tenant.into(),
            flow: flow.into(),
            priority: prio,
            urgent: false,
            ready_ms: 0,
            cost,
        }
    }

    /// Leases until empty (or `n` leases), returning the task ids in order.
    fn drain(s: &mut Scheduler, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(t) = s.pick(u64::MAX, None).map(|q| q.task.clone()) else {
                break;
            };
            s.lease(&t).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn a_short_job_queued_behind_a_long_one_goes_next() {
        let mut s = Scheduler::default();
        for i in 0..20 {
            s.insert(q(&format!("long.{i:02}"), "k", "j1", 5, 120.0));
        }
        let first = drain(&mut s, 2);
        assert_eq!(first, ["long.00", "long.01"]);
        for i in 0..3 {
            s.insert(q(&format!("short.{i}"), "k", "j2", 5, 17.0));
        }
        // The short job's three tasks cost less together than one range of the long
        // one: all three go before the long job's next range.
        assert_eq!(
            drain(&mut s, 4),
            ["short.0", "short.1", "short.2", "long.02"]
        );
        assert_eq!(s.len(), 17);
    }

    #[test]
    fn equal_flows_alternate_and_ties_are_fifo() {
        let mut s = Scheduler::default();
        for i in 0..3 {
            s.insert(q(&format!("a.{i}"), "k", "j1", 5, 10.0));
            s.insert(q(&format!("b.{i}"), "k", "j2", 5, 10.0));
        }
        assert_eq!(drain(&mut s, 6), ["a.0", "b.0", "a.1", "b.1", "a.2", "b.2"]);
        assert!(s.is_empty());
    }

    #[test]
    fn tenants_share_before_their_flows_do() {
        let mut s = Scheduler::default();
        // Tenant "bulk" has 10 flows, tenant "solo" one: solo still gets every other turn.
        for f in 0..10 {
            for i in 0..2 {
                s.insert(q(&format!("bulk{f}.{i}"), "bulk", &format!("j{f}"), 5, 1.0));
            }
        }
        for i in 0..5 {
            s.insert(q(&format!("solo.{i}"), "solo", "jx", 5, 1.0));
        }
        let order = drain(&mut s, 10);
        let solo = order.iter().filter(|t| t.starts_with("solo")).count();
        assert_eq!(solo, 5, "{order:?}");
    }

    #[test]
    fn a_batch_is_one_flow_and_runs_its_jobs_in_order() {
        let mut s = Scheduler::default();
        for j in 0..3 {
            for i in 0..2 {
                let mut e = q(&format!("batch{j}.{i}"), "k", "bB", 2, 1.0);
                e.job = format!("job{j}");
                s.insert(e);
            }
        }
        for i in 0..2 {
            let mut e = q(&format!("upload.{i}"), "k", "jU", 2, 1.0);
            e.job = "upload".into();
            s.insert(e);
        }
        // The batch's jobs one after the other, sharing turns with the upload as one
        // flow; each job's second task goes as soon as its first has started (the last
        // task of a job to start is urgent).
        assert_eq!(
            drain(&mut s, 8),
            [
                "batch0.0", "batch0.1", "upload.0", "upload.1", "batch1.0", "batch1.1", "batch2.0",
                "batch2.1"
            ]
        );
    }

    #[test]
    fn priority_then_urgent_bands_are_strict() {
        let mut s = Scheduler::default();
        s.insert(q("low", "k", "j1", 2, 1.0));
        let mut fin = q("finish", "k", "j2", 5, 1.0);
        fin.urgent = true;
        s.insert(fin);
        s.insert(q("high", "k", "j3", 5, 1.0));
        s.insert(q("top", "other", "j4", 9, 1.0));
        assert_eq!(drain(&mut s, 4), ["top", "finish", "high", "low"]);
    }

    #[test]
    fn a_backed_off_task_is_skipped_until_its_time() {
        let mut s = Scheduler::default();
        let mut later = q("retry", "k", "j1", 5, 1.0);
        later.ready_ms = 5_000;
        s.insert(later);
        s.insert(q("other", "k", "j2", 5, 1.0));
        assert_eq!(s.pick(1_000, None).map(|q| q.task.as_str()), Some("other"));
        s.remove("other");
        assert!(s.pick(1_000, None).is_none());
        assert_eq!(s.pick(5_000, None).map(|q| q.task.as_str()), Some("retry"));
    }

    #[test]
    fn an_express_pick_finds_the_first_light_task_in_order() {
        let mut s = Scheduler::default();
        s.insert(q("encode", "k", "j1", 5, 120.0));
        s.insert(q("plan", "k", "j2", 5, 1.0));
        s.insert(q("finalize", "k", "j1", 5, 0.5));
        assert_eq!(s.pick(0, None).map(|q| q.task.as_str()), Some("encode"));
        assert_eq!(
            s.pick(0, Some(2.0)).map(|q| q.task.as_str()),
            Some("finalize")
        );
        s.remove("finalize");
        assert_eq!(s.pick(0, Some(2.0)).map(|q| q.task.as_str()), Some("plan"));
        s.remove("plan");
        assert!(s.pick(0, Some(2.0)).is_none());
    }

    #[test]
    fn a_tenant_returning_from_idle_has_no_saved_credit() {
        let mut s = Scheduler::default();
        for i in 0..10 {
            s.insert(q(&format!("busy.{i}"), "busy", "j1", 5, 1.0));
        }
        drain(&mut s, 6);
        // "late" was idle for all of that: it alternates with "busy" from now on
        // instead of being owed six turns.
        for i in 0..3 {
            s.insert(q(&format!("late.{i}"), "late", "j2", 5, 1.0));
        }
        let order = drain(&mut s, 4);
        assert_eq!(
            order.iter().filter(|t| t.starts_with("late")).count(),
            2,
            "{order:?}"
        );
        // Removing everything leaves no state behind.
        for t in [
            "busy.8", "busy.9", "late.2", "busy.7", "busy.6", "late.1", "late.0",
        ] {
            s.remove(t);
        }
        assert!(s.is_empty() && s.bands.is_empty());
    }

    #[test]
    fn a_jobs_last_task_to_start_goes_first() {
        let mut s = Scheduler::default();
        let of_job = |task: &str, job: &str, flow: &str| Queued {
            job: job.into(),
            ..q(task, "k", flow, 5, 10.0)
        };
        // A long job's three ranges, and another job's two, one tenant.
        for t in ["long.0", "long.1", "long.2"] {
            s.insert(of_job(t, "long", "jlong"));
        }
        for t in ["other.0", "other.1"] {
            s.insert(of_job(t, "other", "jother"));
        }
        // Alternating flows, until a lease leaves a job one task: that one goes next.
        assert_eq!(drain(&mut s, 2), ["long.0", "other.0"]);
        assert!(s.queued["other.1"].urgent, "other's last task");
        assert_eq!(drain(&mut s, 1), ["other.1"]);
        assert_eq!(drain(&mut s, 2), ["long.1", "long.2"]);
        // A job with one task queued from the start (a plan) is not moved: no lease of
        // its own left it so.
        s.insert(of_job("plan.0", "plan", "jplan"));
        assert!(!s.queued["plan.0"].urgent);
    }
}
