//! The worker owns only its `kura-worker-<id>/` inside `--workdir`: whatever else is
//! there (a user pointing `--workdir` at `/tmp` or at their home) is never touched.

use kura_transcoder::worker::{own_workdir, run, WorkerConfig};

#[tokio::test]
async fn the_worker_empties_only_its_own_directory() {
    let parent = tempfile::tempdir().unwrap();
    let keep = parent.path().join("somebody-elses.txt");
    std::fs::write(&keep, b"not the worker's").unwrap();
    std::fs::create_dir(parent.path().join("projects")).unwrap();
    // What a killed earlier run of the same worker left behind.
    let own = own_workdir(parent.path(), "w/1 ");
    assert_eq!(own, parent.path().join("kura-worker-w_1_"));
    std::fs::create_dir_all(own.join("stale")).unwrap();
    let config = WorkerConfig {
        coordinator: "http://127.0.0.1:9".into(),
        gateway: "http://127.0.0.1:9".into(),
        api_key: "worker-test-api-key-0123456789ab".into(),
        cluster_secret: "worker-test-secret-0123456789abcd".into(),
        slots: 1,
        express_slots: 1,
        worker_id: "w/1 ".into(),
        workdir: parent.path().to_path_buf(),
        exec_program: std::env::current_exe().unwrap(),
        threads_per_task: 1,
        memory_bytes: 1 << 30,
        file_bytes: 1 << 30,
    };
    // Stops at once: start (clean its own directory), then shut down (remove it).
    run(config, async {}).await.unwrap();
    assert_eq!(std::fs::read(&keep).unwrap(), b"not the worker's");
    assert!(parent.path().join("projects").is_dir());
    assert!(!own.exists(), "the worker left its directory behind");
}
