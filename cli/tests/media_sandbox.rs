//! The media child's sandbox, tried from inside a real `kura media-exec`: it can reach no
//! network (not even this process on loopback), open no socket, start no program, and
//! not read the worker's environment, which holds its secrets.

use kura_transcoder::worker::sandbox;

#[tokio::test]
async fn the_media_child_reaches_nothing_outside_its_files() {
    // As the worker does at start.
    sandbox::harden_worker().unwrap();
    let kura = std::path::Path::new(env!("CARGO_BIN_EXE_kura"));
    let report = sandbox::probe(kura).await.unwrap();
    assert!(
        report.gaps().is_empty(),
        "gaps: {:?} ({report:?})",
        report.gaps()
    );

    // The same checks outside the sandbox find every door open, so the ones above can
    // fail.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = sandbox::check(Some(listener.local_addr().unwrap()), std::process::id());
    assert_eq!(open.gaps().len(), 4, "{open:?}");
}
