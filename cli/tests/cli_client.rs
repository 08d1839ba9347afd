//! The client subcommands end to end: `kura dev` runs as a real process on a loopback
//! port, and the real `kura` binary is run against it for `put`, `get`, `ls`, `stat` and
//! `rm`. Checked: bytes come back identical (whole, to a file or stdout, and as ranges),
//! listings page through everything, metadata survives, and every failure has its exit
//! code (1 server error, 2 usage, 3 unreachable, 4 not found) and a clear message.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{free_port, kura_bin, KuraProcess};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// The API key the dev cluster is started with.
const CLI_API_KEY: &str = "cli-test-api-key-0123456789abcdef";

/// A real video, larger than one 4 MiB chunk.
const VIDEO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/media/video/hello-720p-8s.mp4"
);

/// Size of the generated random file: 9 MiB, three chunks, the last one partial.
const RANDOM_LEN: usize = 9 * 1024 * 1024;

// ---- Harness ----

/// `kura dev` with its data in `<dir>/kura-data`, where `kura dev` itself would put it.
struct Dev {
    process: KuraProcess,
    dir: tempfile::TempDir,
    /// An empty working directory for client runs, so no `./kura-data/api-key` is found.
    elsewhere: tempfile::TempDir,
}

impl Dev {
    async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("kura-cli-").tempdir()?;
        let mut args: Vec<OsString> = vec!["dev".into(), "--data".into()];
        args.push(dir.path().join("kura-data").into());
        args.extend(["--api-key".into(), CLI_API_KEY.into()]);
        // Tests run side by side: no fixed S3 port (the default 9000 would collide).
        args.extend(["--s3-listen".into(), "127.0.0.1:0".into()]);
        let process = KuraProcess::start("dev", args).await?;
        Ok(Self {
            process,
            dir,
            elsewhere: tempfile::tempdir()?,
        })
    }

    /// A `kura` client command with `KURA_GATEWAY` and `KURA_API_KEY` set for this
    /// cluster, run in an empty directory.
    fn kura<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = bare_kura(args);
        cmd.current_dir(self.elsewhere.path())
            .env("KURA_GATEWAY", self.process.url())
            .env("KURA_API_KEY", CLI_API_KEY);
        cmd
    }

    /// Runs a client command that must succeed; returns its stdout.
    fn ok<I, S>(&self, args: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.kura(args))?.success()
    }

    /// A file path in the scratch directory.
    fn scratch(&self, name: &str) -> PathBuf {
        self.elsewhere.path().join(name)
    }

    async fn stop(self) -> Result<()> {
        self.process.stop().await?;
        Ok(())
    }
}

/// `kura <args>` with no `KURA_*` variable of the test's environment and no stdin.
fn bare_kura<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(kura_bin());
    cmd.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KURA_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// What a finished command left.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    what: String,
}

impl Run {
    fn success(self) -> Result<Vec<u8>> {
        ensure!(
            self.code == Some(0),
            "{} exited {:?}: {}",
            self.what,
            self.code,
            self.stderr
        );
        Ok(self.stdout)
    }

    /// Checks the exit code and that stderr mentions `needle`.
    fn fails(self, code: i32, needle: &str) -> Result<String> {
        ensure!(
            self.code == Some(code) && self.stderr.contains(needle),
            "{}: expected exit {code} and {needle:?} on stderr, got {:?}: {}",
            self.what,
            self.code,
            self.stderr
        );
        Ok(self.stderr)
    }
}

fn run(mut cmd: Command) -> Result<Run> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    Ok(Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    })
}

/// Runs `cmd` with `input` on its stdin.
fn run_with_stdin(mut cmd: Command, input: Vec<u8>) -> Result<Run> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    // The child may stop reading early (an error); a broken pipe then is expected.
    let _ = writer.join();
    Ok(Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    })
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// A temp path as a `&str` argument (temp paths are ASCII).
fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Keys printed by `kura ls`: `DATE  SIZE  KEY`, the size right-aligned, the key last
/// (keys may contain spaces).
fn listed_keys(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let rest = l.split_once(' ').map_or("", |(_, r)| r.trim_start());
            rest.split_once("  ").map_or("", |(_, k)| k).to_string()
        })
        .collect()
}

// ---- Tests ----

#[tokio::test]
async fn put_then_get_returns_the_same_bytes_whole_and_in_ranges() -> Result<()> {
    let dev = Dev::start().await?;
    let video = std::fs::read(VIDEO).with_context(|| format!("reading {VIDEO}"))?;
    let random = random_bytes(7, RANDOM_LEN);
    let random_path = s(&dev.scratch("random.bin"));
    std::fs::write(&random_path, &random)?;
    let video_key = "media/clips/hello 8s ü?#.mp4";

    // Uploads: a real video under a key with a space, non-ASCII, `?` and `#`; a file;
    // stdin. Each prints the stored ETag, which the client checked against its own hash.
    let out = String::from_utf8(dev.ok(["put", VIDEO, video_key])?)?;
    ensure!(out.contains(&blake3_hex(&video)), "put printed {out}");
    ensure!(out.contains("2 chunk(s)"), "put printed {out}");
    let out = String::from_utf8(dev.ok(["put", &random_path, "media/random.bin"])?)?;
    ensure!(out.contains(&blake3_hex(&random)), "put printed {out}");
    let piped = run_with_stdin(
        dev.kura(["put", "-", "media/from-stdin.bin"]),
        random.clone(),
    )?;
    let out = String::from_utf8(piped.success()?)?;
    ensure!(out.contains(&blake3_hex(&random)), "put - printed {out}");

    // Whole objects to files (no part file left), to stdout, and into a directory.
    let got = dev.scratch("video.mp4");
    dev.ok(["get", video_key, &s(&got)])?;
    ensure!(std::fs::read(&got)? == video, "video differs after get");
    ensure!(
        !dev.scratch("video.mp4.part").exists(),
        "part file left behind"
    );
    for key in ["media/random.bin", "media/from-stdin.bin"] {
        let got = dev.scratch("random.out");
        dev.ok(["get", key, &s(&got)])?;
        ensure!(std::fs::read(&got)? == random, "{key} differs after get");
        let stdout = dev.ok(["get", key, "-"])?;
        ensure!(stdout == random, "{key} differs on stdout");
    }
    let stdout = dev.ok(["get", video_key])?;
    ensure!(stdout == video, "video differs on stdout");
    let dir = dev.scratch("downloads");
    std::fs::create_dir(&dir)?;
    dev.ok(["get", video_key, &s(&dir)])?;
    ensure!(std::fs::read(dir.join("hello 8s ü?#.mp4"))? == video);

    // Ranges: first bytes, across the 4 MiB chunk boundary, the tail, a suffix.
    let mib4 = 4 * 1024 * 1024;
    let cases: [(&str, &[u8]); 4] = [
        ("0-99", &random[..100]),
        ("4194000-4194999", &random[mib4 - 304..mib4 + 696]),
        ("9437000-", &random[9_437_000..]),
        ("-1000", &random[RANDOM_LEN - 1000..]),
    ];
    for (range, want) in cases {
        let stdout = dev.ok(["get", "media/random.bin", "--range", range])?;
        ensure!(
            stdout == want,
            "range {range}: {} bytes differ",
            stdout.len()
        );
    }
    let part = dev.scratch("part.bin");
    dev.ok(["get", video_key, &s(&part), "--range", "0-7"])?;
    ensure!(std::fs::read(&part)? == video[..8]);
    run(dev.kura(["get", "media/random.bin", "--range", "99999999-"]))?
        .fails(1, "kura: 416 range_not_satisfiable: ")?;

    // A failed download leaves an existing file as it was, and no part file.
    let keep = dev.scratch("keep.txt");
    std::fs::write(&keep, b"old")?;
    run(dev.kura(["get", "media/missing", &s(&keep)]))?.fails(4, "kura: 404 not_found: ")?;
    ensure!(std::fs::read(&keep)? == b"old");
    ensure!(!dev.scratch("keep.txt.part").exists());
    dev.stop().await
}

#[tokio::test]
async fn ls_pages_through_prefixes_stat_shows_metadata_and_rm_deletes() -> Result<()> {
    let dev = Dev::start().await?;
    let keys = [
        "media/a/1.txt",
        "media/a/2 two.txt",
        "media/a/3.txt",
        "media/a/4.txt",
        "media/a/5.txt",
        "media/b/x.txt",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = format!("object {i}\n").repeat(i + 1).into_bytes();
        run_with_stdin(dev.kura(["put", "-", key]), body)?.success()?;
    }
    let a_keys: Vec<String> = keys[..5]
        .iter()
        .map(|k| k["media/".len()..].to_string())
        .collect();

    // Under a prefix, in one page and in pages of 2 and 1 (the client follows the cursor).
    for limit in ["1000", "2", "1"] {
        let out = dev.ok(["ls", "media/a/", "--limit", limit])?;
        ensure!(
            listed_keys(&out) == a_keys,
            "limit {limit}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    let everything = dev.ok(["ls", "media", "--limit", "4"])?;
    ensure!(listed_keys(&everything).len() == keys.len());
    let first = String::from_utf8(everything)?;
    let first = first.lines().next().context("empty listing")?;
    ensure!(
        first.contains("  9  a/1.txt") && first.contains('T'),
        "line {first:?}"
    );

    // JSON lines carry key, size and etag.
    let out = dev.ok(["ls", "media/a/", "--limit", "2", "--json"])?;
    let rows: Vec<serde_json::Value> = String::from_utf8(out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(rows.len() == 5);
    ensure!(
        rows[1]["key"] == "a/2 two.txt" && rows[1]["size"] == 18,
        "{}",
        rows[1]
    );
    let two = "object 1\n".repeat(2);
    ensure!(rows[1]["etag"] == blake3_hex(two.as_bytes()).as_str());

    // stat: size, ETag, content type and metadata as uploaded.
    let meta_path = dev.scratch("notes.txt");
    std::fs::write(&meta_path, b"hello")?;
    dev.ok([
        "put",
        &s(&meta_path),
        "media/c/",
        "--content-type",
        "text/markdown",
        "--meta",
        "Lang=ja",
        "--meta",
        "title=Cat video",
    ])?;
    let out = String::from_utf8(dev.ok(["stat", "media/c/notes.txt"])?)?;
    for line in [
        "object: media/c/notes.txt",
        "size: 5",
        &format!("etag: {}", blake3_hex(b"hello")),
        "content-type: text/markdown",
        "meta.lang: ja",
        "meta.title: Cat video",
    ] {
        ensure!(
            out.lines().any(|l| l == line),
            "no {line:?} in stat:\n{out}"
        );
    }
    ensure!(out.contains("last-modified: 20"), "stat:\n{out}");

    // rm: the object is gone for get, stat and ls; exit code 4 tells "not found".
    dev.ok(["rm", "media/a/2 two.txt"])?;
    run(dev.kura(["get", "media/a/2 two.txt"]))?.fails(4, "404")?;
    run(dev.kura(["stat", "media/a/2 two.txt"]))?.fails(4, "404")?;
    let out = dev.ok(["ls", "media/a/", "--limit", "2"])?;
    ensure!(listed_keys(&out).len() == 4 && !listed_keys(&out).contains(&a_keys[1]));
    dev.stop().await
}

#[tokio::test]
async fn failures_have_their_exit_codes_and_clear_messages() -> Result<()> {
    let dev = Dev::start().await?;
    let url = dev.process.url();
    let big = dev.scratch("big.bin");
    std::fs::write(&big, random_bytes(3, RANDOM_LEN))?;

    // A wrong API key: 1, with the gateway's status and code (also for a large upload,
    // which the gateway refuses before reading the body).
    for args in [
        vec!["ls", "media"],
        vec!["get", "media/x"],
        vec!["put", &s(&big), "media/big.bin"],
    ] {
        let mut cmd = dev.kura(&args);
        cmd.args(["--api-key", "not-the-key"]);
        run(cmd)?.fails(1, "kura: 401 unauthorized: ")?;
    }
    let piped = run_with_stdin(
        dev.kura(["put", "-", "media/big.bin", "--api-key", "wrong"]),
        random_bytes(4, RANDOM_LEN),
    )?;
    piped.fails(1, "401")?;

    // Nothing listening: 3, naming the URL.
    let nowhere = format!("http://127.0.0.1:{}", free_port()?);
    let mut cmd = dev.kura(["stat", "media/x", "--gateway", &nowhere]);
    cmd.env_remove("KURA_GATEWAY");
    run(cmd)?.fails(3, &format!("cannot reach the gateway at {nowhere}"))?;

    // Bad names, ranges and flags are caught locally: 2.
    run(dev.kura(["get", "media/a/../b"]))?.fails(2, "'..' path segment")?;
    run(dev.kura(["stat", "Media/x"]))?.fails(2, "invalid bucket name \"Media\"")?;
    run(dev.kura(["rm", "media"]))?.fails(2, "expected bucket/key")?;
    run(dev.kura(["put", "-", "media/"]))?.fails(2, "full bucket/key")?;
    run(dev.kura(["get", "media/x", "--range", "9-3"]))?.fails(2, "FIRST is after LAST")?;
    run(dev.kura(["ls", "media", "--limit", "0"]))?.fails(2, "--limit")?;
    run(dev.kura(["put", &s(&big), "media/y", "--meta", "novalue"]))?.fails(2, "NAME=VALUE")?;
    let huge = format!("k={}", "v".repeat(3000));
    run(dev.kura(["put", &s(&big), "media/y", "--meta", &huge]))?.fails(2, "metadata")?;
    run(dev.kura(["put", "/no/such/file", "media/y"]))?.fails(1, "/no/such/file")?;

    // `bucket/` takes the file's name as key. Without a key given, ./kura-data/api-key
    // (as `kura dev` writes it) is used if present.
    run(dev.kura(["put", &s(&big), "media/"]))?.success()?;
    let mut cmd = bare_kura(["ls", "media", "--gateway", &url]);
    cmd.current_dir(dev.dir.path());
    ensure!(listed_keys(&run(cmd)?.success()?) == ["big.bin"]);
    let mut cmd = bare_kura(["ls", "media", "--gateway", &url]);
    cmd.current_dir(dev.elsewhere.path());
    run(cmd)?.fails(2, "no API key")?;
    dev.stop().await
}

#[tokio::test]
async fn put_resume_continues_after_the_client_is_killed() -> Result<()> {
    let dev = Dev::start().await?;
    let data = common::random_bytes(common::test_seed(), 24 * 1_000_000 + 321);
    let file = dev.scratch("big.bin");
    std::fs::write(&file, &data)?;
    let state = tempfile::tempdir()?;
    let put = |dev: &Dev| {
        let mut cmd = dev.kura([
            OsStr::new("put"),
            file.as_os_str(),
            OsStr::new("media/big.bin"),
            OsStr::new("--resume"),
            OsStr::new("--piece-bytes"),
            OsStr::new("1000000"),
        ]);
        cmd.env("XDG_STATE_HOME", state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    // The first put is SIGKILLed once at least 3 pieces are durable.
    let mut first = put(&dev).spawn()?;
    let dir = state.path().join("kura/uploads");
    let client = reqwest::Client::new();
    let killed_at = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let url = std::fs::read_dir(&dir)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| std::fs::read_to_string(e.ok()?.path()).ok());
            if let Some(url) = url {
                let r = client
                    .head(url.trim())
                    .bearer_auth(CLI_API_KEY)
                    .header("tus-resumable", "1.0.0")
                    .send()
                    .await?;
                let at: u64 = r
                    .headers()
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                if at >= 3_000_000 {
                    first.kill()?;
                    first.wait()?;
                    return anyhow::Ok(at);
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .context("the first put never got 3 pieces in")??;
    ensure!(
        killed_at < data.len() as u64,
        "the put finished before it was killed"
    );
    // Run again: it continues from the durable offset and completes.
    let status = put(&dev).status()?;
    ensure!(status.success(), "kura put --resume failed: {status}");
    ensure!(
        std::fs::read_dir(&dir)?.next().is_none(),
        "the state file was not removed after completion"
    );
    let out = dev.scratch("big.back");
    dev.ok([
        OsStr::new("get"),
        OsStr::new("media/big.bin"),
        out.as_os_str(),
    ])?;
    ensure!(std::fs::read(&out)? == data, "the resumed object differs");
    dev.stop().await
}
