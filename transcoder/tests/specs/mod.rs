//! Task specs as a plan makes them, for the store's tests.

use kura_transcoder::model::TaskSpec;

/// A task of `kind` (`encode` or `finalize`) and `weight`; finalize tasks are urgent,
/// as the plan makes them.
pub fn spec(kind: &str, weight: f64) -> TaskSpec {
    let spec = match kind {
        "encode" => {
            serde_json::json!({"start_s": 0.0, "end_s": null, "first_segment": 0, "rungs": []})
        }
        _ => serde_json::json!({"rungs": [], "fps": 25.0, "has_audio": false}),
    };
    serde_json::from_value(serde_json::json!({
        "kind": kind, "spec": spec, "weight": weight, "urgent": kind == "finalize",
    }))
    .expect("a task spec")
}

/// What a job's plan answers in the concurrency suites: `encodes` encodes, then a
/// finalize; any other task answers nothing.
#[allow(dead_code)]
pub fn result_of(kind: &str, encodes: usize) -> kura_transcoder::model::TaskResult {
    match kind {
        "plan" => kura_transcoder::model::TaskResult {
            stages: vec![
                vec![spec("encode", 1.0); encodes],
                vec![spec("finalize", 0.1)],
            ],
            ..Default::default()
        },
        _ => Default::default(),
    }
}
