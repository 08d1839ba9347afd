//! The ffmpeg and ffprobe CLIs, as the media tests use them: to make inputs and to
//! check the engine's outputs independently of the libraries the engine uses.
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs a tool that must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ffprobe -of json` with `args` on `file`.
pub fn ffprobe(args: &[&str], file: &Path) -> Value {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(file);
    serde_json::from_str(&run(&mut cmd)).expect("ffprobe json")
}

/// Generates `dir/name` with the ffmpeg CLI (test input only; the engine never uses it).
pub fn generate(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(&path));
    path
}

/// A JSON number or numeric string as f64 (NaN otherwise).
pub fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}
