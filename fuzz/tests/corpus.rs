//! Replays every input under `corpus/<target>/` and `regressions/<target>/` through its
//! target on stable Rust: past findings stay fixed in the ordinary test suite.

use std::path::Path;

#[test]
fn corpus_and_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (name, target) in kura_fuzz::TARGETS {
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("readable directory").path();
                let data = std::fs::read(&path).expect("readable input");
                eprintln!("{name}: {}", path.display());
                target(&data);
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no corpus found");
}
