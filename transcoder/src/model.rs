//! The job model shared by the coordinator, workers and clients.
//!
//! A **job** turns one source object into outputs under a profile. It runs as **stages**
//! of **tasks**: a job starts with one `plan` task; a task's result may add further stages
//! (the plan adds the parallel encode tasks, then a finalize task). A stage starts when
//! the previous one has fully succeeded; the job succeeds when its last stage does. The
//! coordinator knows nothing of video: it stores and schedules tasks' [`Work`] and
//! keeps their [`Part`]s for the tasks after them, without looking inside.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::work::{Part, Work, TASK_PROTOCOL};

/// Lifecycle of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// At least one task has been leased.
    Running,
    /// Still running, and already plays: the master playlist is published with the
    /// lowest rendition and the audio; higher renditions are added when encoded.
    Playable,
    /// Every stage succeeded.
    Succeeded,
    /// A task failed for good.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// Whether the job will change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// Why a task failed, as the worker classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The source cannot be processed (corrupt, truncated, unsupported): never retried.
    BadInput,
    /// The source is not audio or video at all (no format FFmpeg recognises, or no
    /// audio or video stream): never retried; a batch reports it as skipped.
    NotMedia,
    /// Something that may work next time (network, a node down, out of disk).
    Transient,
    /// A limit was hit (time, memory, output size): retried, maybe on another worker.
    Limit,
    /// The worker itself broke (crash, bug).
    Internal,
    /// The worker lost its lease (expired or reassigned).
    LeaseExpired,
    /// Cancelled by a user.
    Cancelled,
}

impl FailureClass {
    /// The source's fault, the same on any worker: never retried, never charged to the
    /// worker.
    pub fn is_the_inputs(self) -> bool {
        matches!(self, FailureClass::BadInput | FailureClass::NotMedia)
    }
}

/// A failure with its class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Class.
    pub class: FailureClass,
    /// Human-readable reason.
    pub message: String,
}

/// Lifecycle of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// In a later stage; not runnable yet.
    Pending,
    /// Runnable (possibly after a backoff).
    Queued,
    /// Leased to a worker.
    Leased,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled with its job.
    Cancelled,
}

/// What a worker should do, with a weight for progress and scheduling. On the wire:
/// `{"kind": ..., "spec": ..., "weight": ..., "urgent": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's kind and parameters.
    #[serde(flatten)]
    pub work: Work,
    /// Share of the job's work, for progress (any positive scale); also what the
    /// scheduler charges for it.
    #[serde(default = "one")]
    pub weight: f64,
    /// It publishes what a person waits for (playlists): leased before every other
    /// task of its job's priority.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
}

fn one() -> f64 {
    1.0
}

/// A lease held by a worker on a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Fencing token: unique and increasing over every lease ever granted. Heartbeats
    /// and results must carry it; any other token is refused.
    pub token: u64,
    /// Worker holding it.
    pub worker: String,
    /// Expiry, ms since the epoch; extended by heartbeats.
    pub expires_ms: u64,
}

/// One task of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task id (`<job id>.<n>`).
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Stage number.
    pub stage: u32,
    /// What to do.
    pub spec: TaskSpec,
    /// State.
    pub state: TaskState,
    /// Leases granted so far.
    pub attempts: u32,
    /// Not to be leased before this time (backoff), ms since the epoch.
    pub ready_ms: u64,
    /// Current lease, while leased.
    pub lease: Option<Lease>,
    /// 0..1, reported by heartbeats.
    pub progress: f64,
    /// Last failure, if any.
    pub last_error: Option<Failure>,
    /// Workers it failed on (not for bad input), each once: a failure that another
    /// worker reproduces is the task's, not the worker's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_on: Vec<String>,
}

/// What a worker reports when a task succeeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Values merged into the job's public `outputs` (`master`, `renditions`, `audio`,
    /// `poster`, `thumbnails`, `probe`, `source_etag`).
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// What it encoded, for the job's later tasks (kept with the job by
    /// [`crate::work::PartOf::key`], replacing an earlier attempt's; never public).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// Stages to append to the job (each a set of tasks that may run in parallel).
    #[serde(default)]
    pub stages: Vec<Vec<TaskSpec>>,
    /// This task published a master playlist that plays: the job becomes
    /// [`JobState::Playable`] (if it is not done with this task).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub playable: bool,
}

/// A transcoding job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Job id: time-ordered, so listing by id is listing by submission.
    pub id: String,
    /// Source object, `bucket/key`.
    pub source: String,
    /// Profile name.
    pub profile: String,
    /// 0..=9; higher runs first (fresh uploads overtake batch backfills).
    pub priority: u8,
    /// State.
    pub state: JobState,
    /// 0..1: the weighted sum of its tasks' progress.
    pub progress: f64,
    /// Why it failed.
    pub error: Option<Failure>,
    /// Leases granted over all its tasks.
    pub attempts: u32,
    /// Batch it belongs to.
    pub batch: Option<String>,
    /// Who submitted it: a short digest of the API key used (never the key), so the
    /// scheduler can share the workers fairly between keys. Absent in jobs stored by
    /// versions before fair scheduling (they all count as one tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Completion webhook URL.
    pub webhook: Option<String>,
    /// When it first played (ms since the epoch): a task published a playable master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playable_ms: Option<u64>,
    /// Merged public task outputs.
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// The parts its tasks encoded, by [`crate::work::PartOf::key`]: internal (see
    /// [`Job::public`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, Part>,
    /// Number of stages so far.
    pub stages: u32,
    /// Stage running now.
    pub current_stage: u32,
    /// Task ids, in creation order.
    pub tasks: Vec<String>,
    /// Submission time, ms since the epoch.
    pub created_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_ms: u64,
}

impl Job {
    /// The job as its users see it: without the parts its tasks keep for each other,
    /// nor the internal outputs of jobs run by task protocol 1 (`segments.*`,
    /// `quality.*`).
    pub fn public(mut self) -> Job {
        self.parts.clear();
        self.outputs
            .retain(|k, _| !(k.starts_with("segments.") || k.starts_with("quality.")));
        self
    }
}

/// A job submission.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SubmitJob {
    /// Source object, `bucket/key`.
    pub source: String,
    /// Profile name.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Priority 0..=9 (default [`DEFAULT_PRIORITY`]).
    #[serde(default)]
    pub priority: Option<u8>,
    /// Completion webhook URL.
    #[serde(default)]
    pub webhook: Option<String>,
}

fn default_profile() -> String {
    "default".to_string()
}

/// Priority of a job submitted alone (e.g. on upload): above batch backfills.
pub const DEFAULT_PRIORITY: u8 = 5;

/// Bytes kura may append to a source key to name its outputs
/// (`{key}.hls/a{lease token}/{rendition}/{segment}`: under 50 today, room left for
/// longer rendition and file names). A source whose key leaves less room under
/// `kura_cluster::names::MAX_KEY_LEN` is refused at submit, not failed by a worker.
pub const OUTPUT_KEY_ROOM: usize = 128;
/// Priority of jobs submitted by a batch.
pub const BATCH_PRIORITY: u8 = 2;
/// The heaviest task a worker's express slot takes (weights are media seconds ×
/// renditions for an encode). 15: plans, posters and playlists (weight ≤ 1), the audio
/// of up to 150 s, and the first pass (one small rendition) of clips up to 15 s — the
/// steps between a short upload and its first playback, a second or two of CPU each —
/// while no range of a long video (30 s × renditions) qualifies. So a short upload
/// plays without waiting for a regular slot busy with a long encode; the price is that
/// the express slot's task shares the cores with the regular slots' for that moment.
pub const LIGHT_TASK_COST: f64 = 15.0;
/// The object a job's last `finalize` writes once every rendition of `source` (a key,
/// or `bucket/key`: the answer is then `bucket/...` too) is published, made with `profile` from the source version `etag`: batches skip
/// sources that have it (see `coordinator::batch`). Under the source's `.hls/` folder,
/// so it is never a source itself and goes with the outputs.
pub fn done_marker(source: &str, profile: &str, etag: &str) -> String {
    format!("{source}.hls/transcoded/{profile}/{etag}")
}

/// Highest priority.
pub const MAX_PRIORITY: u8 = 9;

/// A worker's request for a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The worker's id.
    pub worker: String,
    /// How long to wait for a task when there is none, ms (capped by the coordinator).
    #[serde(default)]
    pub wait_ms: u64,
    /// Only a task of at most this weight (a worker's express slot).
    #[serde(default)]
    pub max_cost: Option<f64>,
    /// The task protocol the worker speaks ([`TASK_PROTOCOL`]).
    #[serde(default = "crate::work::unversioned")]
    pub protocol: u32,
}

/// A leased task as handed to a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The task protocol of this assignment ([`TASK_PROTOCOL`] of the coordinator).
    #[serde(default = "crate::work::unversioned")]
    pub protocol: u32,
    /// The task.
    pub task: Task,
    /// Its job's source object.
    pub source: String,
    /// Its job's profile.
    pub profile: String,
    /// Fencing token to present with heartbeats and results.
    pub token: u64,
    /// Lease length in ms: heartbeat well within it.
    pub lease_ms: u64,
    /// The job's public outputs so far (the probe, the source's ETag...).
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// The parts earlier tasks encoded, e.g. for the task that stitches playlists from
    /// the segments encoded before it.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// Heartbeat body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The lease's fencing token.
    pub token: u64,
    /// 0..1.
    pub progress: f64,
}

/// Completion body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Completion {
    /// The lease's fencing token.
    pub token: u64,
    /// The result.
    pub result: TaskResult,
}

/// Failure body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailureReport {
    /// The lease's fencing token.
    pub token: u64,
    /// What went wrong.
    pub failure: Failure,
}
