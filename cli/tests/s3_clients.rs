//! The S3 API as the clients people already use see it, against a real cluster (three
//! `kura node` processes and a `kura gateway --s3-listen`): boto3 (current PyPI
//! version, default checksum settings), the aws CLI, rclone and s3cmd, installed by
//! `scripts/install-deps.sh`. Objects written through S3 are read through the native
//! API and the reverse; a multipart upload started through one gateway is continued
//! through a second one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{
    free_port, metric_value, random_bytes, test_seed, Cluster, KuraProcess, API_KEY, SECRET, ZONES,
};

/// The S3 key pair the gateway is started with.
const ACCESS_KEY: &str = "KURAS3TESTACCESS";
const SECRET_KEY: &str = "kura-s3-test-secret-0123456789ab";

/// Base domain of virtual-hosted-style buckets (resolved by no DNS: clients use the
/// gateway as their HTTP proxy to reach it).
const S3_DOMAIN: &str = "s3.kura.test";

/// Longest any one client command may take (a sync of a few MiB takes seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Multi-process tests share two cores: one cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where `scripts/install-deps.sh` put boto3 and the aws CLI.
fn venv() -> PathBuf {
    std::env::var_os("KURA_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kura-test-venv"))
}

struct S3Cluster {
    cluster: Cluster,
    endpoint: String,
    /// The gateway serving `endpoint`.
    first: KuraProcess,
    /// A second gateway on the same nodes (its own S3 listener).
    second: KuraProcess,
    second_endpoint: String,
    /// HOME and config files of the clients, so nothing of the machine's own is read.
    home: tempfile::TempDir,
}

/// What a client command printed.
struct Ran {
    stdout: String,
    stderr: String,
}

/// Attempts at starting a gateway on a fresh S3 port (a port found free can be taken
/// by another process before the gateway binds it).
const S3_PORT_ATTEMPTS: usize = 3;

/// Starts `kura gateway` over `spec`'s nodes with an S3 listener; its S3 endpoint.
async fn s3_gateway(name: &str, spec: &str) -> Result<(KuraProcess, String)> {
    let keys = format!("{ACCESS_KEY}:{SECRET_KEY}");
    let mut last = None;
    for _ in 0..S3_PORT_ATTEMPTS {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let args = [
            "gateway",
            "--nodes",
            spec,
            "--api-keys",
            API_KEY,
            "--cluster-secret",
            SECRET,
            "--s3-listen",
            &listen,
            "--s3-keys",
            &keys,
            "--s3-domain",
            S3_DOMAIN,
        ];
        match KuraProcess::start(name, args).await {
            Ok(p) => return Ok((p, format!("http://{listen}"))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.context("no attempt")?)
}

impl S3Cluster {
    /// Three nodes (and the harness's plain gateway, used for native calls), and two
    /// gateways with the S3 API over them.
    async fn start() -> Result<Self> {
        let cluster = Cluster::start().await?;
        let spec = cluster
            .nodes
            .iter()
            .zip(ZONES)
            .map(|(n, zone)| format!("{}={}@{zone}", n.name(), n.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let (first, endpoint) = s3_gateway("s3-gateway-1", &spec).await?;
        let (second, second_endpoint) = s3_gateway("s3-gateway-2", &spec).await?;
        let listen = endpoint.trim_start_matches("http://").to_string();
        let home = tempfile::Builder::new().prefix("kura-s3-home-").tempdir()?;
        let s3cmd = format!(
            "[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nhost_base = {listen}\n\
             host_bucket = {listen}\nuse_https = False\nbucket_location = us-east-1\n"
        );
        std::fs::write(home.path().join(".s3cfg"), s3cmd)?;
        Ok(Self {
            cluster,
            endpoint,
            first,
            second,
            second_endpoint,
            home,
        })
    }

    /// Runs `program args` with the S3 environment (endpoint, keys, region; rclone's
    /// remote `kura:`), failing on a non-zero exit unless `may_fail`.
    async fn run_with(&self, program: &Path, args: &[&str], may_fail: bool) -> Result<(bool, Ran)> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.home.path())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("KURA_SECOND_ENDPOINT", &self.second_endpoint)
            .env("KURA_S3_DOMAIN", S3_DOMAIN)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", self.home.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("aws-credentials"),
            )
            .env("RCLONE_CONFIG", self.home.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_KURA_TYPE", "s3")
            .env("RCLONE_CONFIG_KURA_PROVIDER", "Other")
            .env("RCLONE_CONFIG_KURA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("RCLONE_CONFIG_KURA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("RCLONE_CONFIG_KURA_ENDPOINT", &self.endpoint)
            .env("RCLONE_CONFIG_KURA_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("{} {args:?} timed out", program.display()))?
            .with_context(|| {
                format!(
                    "starting {} (scripts/install-deps.sh installs it)",
                    program.display()
                )
            })?;
        let ran = Ran {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let ok = out.status.success();
        ensure!(
            ok || may_fail,
            "{} {args:?} failed ({}):\n{}\n{}",
            program.display(),
            out.status,
            ran.stdout,
            ran.stderr
        );
        Ok((ok, ran))
    }

    async fn run(&self, program: &Path, args: &[&str]) -> Result<Ran> {
        Ok(self.run_with(program, args, false).await?.1)
    }

    async fn aws(&self, args: &[&str]) -> Result<Ran> {
        self.run(&venv().join("bin/aws"), args).await
    }

    async fn stop(self) -> Result<()> {
        for g in [self.first, self.second] {
            let status = g.stop().await?;
            ensure!(status.success(), "an S3 gateway exited with {status}");
        }
        self.cluster.stop().await
    }
}

/// A folder tree of `files` files (sizes up to 3 MiB, some empty, nested folders, a name
/// with spaces), from `seed`.
fn make_tree(root: &Path, seed: u64, files: usize) -> Result<()> {
    for i in 0..files {
        let dir = root
            .join(format!("d{}", i % 4))
            .join(format!("sub {}", i % 3));
        std::fs::create_dir_all(&dir)?;
        let len = match i % 5 {
            0 => 0,
            1 => 100,
            2 => 70_000,
            3 => 1_500_000,
            _ => 3_000_000 + i,
        };
        std::fs::write(
            dir.join(format!("file {i}.bin")),
            random_bytes(seed + i as u64, len),
        )?;
    }
    Ok(())
}

/// Every file under `a` is under `b` with the same bytes, and the reverse.
fn same_tree(a: &Path, b: &Path) -> Result<()> {
    fn files(root: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(root)?.to_path_buf());
                }
            }
        }
        out.sort();
        Ok(out)
    }
    let (fa, fb) = (files(a)?, files(b)?);
    ensure!(fa == fb, "different files:\n{fa:?}\n{fb:?}");
    for f in fa {
        ensure!(
            std::fs::read(a.join(&f))? == std::fs::read(b.join(&f))?,
            "{} differs",
            f.display()
        );
    }
    Ok(())
}

#[tokio::test]
async fn boto3_with_default_checksums_sees_s3_semantics() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let s3 = S3Cluster::start().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/boto3_suite.py");
    let seed = test_seed().to_string();
    let python = venv().join("bin/python");
    let ran = s3
        .run(&python, &[script.to_str().context("script path")?, &seed])
        .await?;
    eprintln!("{}", ran.stdout);
    ensure!(
        ran.stdout.contains("ok: cleanup"),
        "the suite did not finish"
    );
    // Its GETs went both ways: signed successes through the fast read path, errors
    // (missing keys, failed preconditions, expired URLs) and other forms through s3s.
    let text = reqwest::get(format!("{}/metrics", s3.first.url()))
        .await?
        .text()
        .await?;
    for name in [
        "kura_gateway_s3_fast_reads_total",
        "kura_gateway_s3_fast_declined_total",
    ] {
        let n = metric_value(&text, name).unwrap_or(0.0);
        ensure!(n >= 5.0, "{name} = {n}: expected both paths to serve GETs");
    }
    s3.stop().await
}

#[tokio::test]
async fn aws_cli_copies_syncs_and_presigns() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let s3 = S3Cluster::start().await?;
    let seed = test_seed();
    let work = tempfile::tempdir()?;
    let (tree, down) = (work.path().join("tree"), work.path().join("down"));
    make_tree(&tree, seed, 20)?;
    let tree_s = tree.to_str().context("path")?;
    let down_s = down.to_str().context("path")?;
    s3.aws(&["s3", "mb", "s3://cli-bucket"]).await?;
    let first = s3
        .aws(&["s3", "sync", tree_s, "s3://cli-bucket/tree"])
        .await?;
    ensure!(
        first.stdout.matches("upload:").count() == 20,
        "{}",
        first.stdout
    );
    // Nothing changed: the second sync transfers nothing.
    let second = s3
        .aws(&["s3", "sync", tree_s, "s3://cli-bucket/tree"])
        .await?;
    ensure!(
        !second.stdout.contains("upload:"),
        "second sync uploaded: {}",
        second.stdout
    );
    s3.aws(&["s3", "sync", "s3://cli-bucket/tree", down_s])
        .await?;
    same_tree(&tree, &down)?;
    // One object with metadata: its ETag is the MD5 of what was sent.
    let one = work.path().join("one.bin");
    let bytes = random_bytes(seed ^ 1, 2_500_000);
    std::fs::write(&one, &bytes)?;
    s3.aws(&[
        "s3",
        "cp",
        one.to_str().context("path")?,
        "s3://cli-bucket/one.bin",
        "--metadata",
        "take=7",
    ])
    .await?;
    let head = s3
        .aws(&[
            "s3api",
            "head-object",
            "--bucket",
            "cli-bucket",
            "--key",
            "one.bin",
        ])
        .await?;
    let head: serde_json::Value = serde_json::from_str(&head.stdout)?;
    let md5 = format!("\"{}\"", md5_hex(&bytes));
    ensure!(
        head["ETag"] == md5.as_str(),
        "ETag {} vs {md5}",
        head["ETag"]
    );
    ensure!(head["Metadata"]["take"] == "7", "{head}");
    let part = work.path().join("part.bin");
    s3.aws(&[
        "s3api",
        "get-object",
        "--bucket",
        "cli-bucket",
        "--key",
        "one.bin",
        "--range",
        "bytes=1000000-1000099",
        part.to_str().context("path")?,
    ])
    .await?;
    ensure!(
        std::fs::read(&part)? == bytes[1_000_000..1_000_100],
        "range bytes differ"
    );
    // Server-side copy, then a presigned GET with a plain HTTP client.
    s3.aws(&[
        "s3",
        "cp",
        "s3://cli-bucket/one.bin",
        "s3://cli-bucket/two.bin",
    ])
    .await?;
    let url = s3
        .aws(&[
            "s3",
            "presign",
            "s3://cli-bucket/two.bin",
            "--expires-in",
            "300",
        ])
        .await?;
    let got = reqwest::get(url.stdout.trim()).await?;
    ensure!(
        got.status() == reqwest::StatusCode::OK,
        "presigned GET: {}",
        got.status()
    );
    ensure!(got.bytes().await? == bytes, "presigned GET bytes differ");
    // A bucket with objects is not removed; --force empties it first.
    let (ok, ran) = s3
        .run_with(
            &venv().join("bin/aws"),
            &["s3", "rb", "s3://cli-bucket"],
            true,
        )
        .await?;
    ensure!(
        !ok && ran.stderr.contains("BucketNotEmpty"),
        "{}",
        ran.stderr
    );
    s3.aws(&["s3", "rb", "s3://cli-bucket", "--force"]).await?;
    let ls = s3.aws(&["s3", "ls"]).await?;
    ensure!(!ls.stdout.contains("cli-bucket"), "{}", ls.stdout);
    s3.stop().await
}

#[tokio::test]
async fn rclone_syncs_and_checks_both_ways() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let s3 = S3Cluster::start().await?;
    let rclone = Path::new("/usr/bin/rclone");
    let seed = test_seed();
    let work = tempfile::tempdir()?;
    let (tree, down) = (work.path().join("tree"), work.path().join("down"));
    make_tree(&tree, seed, 24)?;
    let tree_s = tree.to_str().context("path")?;
    let down_s = down.to_str().context("path")?;
    s3.run(rclone, &["mkdir", "kura:rc-bucket"]).await?;
    s3.run(rclone, &["sync", tree_s, "kura:rc-bucket/tree"])
        .await?;
    // `check` compares sizes and MD5 hashes (the ETags): no differences.
    s3.run(rclone, &["check", tree_s, "kura:rc-bucket/tree"])
        .await?;
    s3.run(rclone, &["sync", "kura:rc-bucket/tree", down_s])
        .await?;
    same_tree(&tree, &down)?;
    // Change, add and delete files, sync again: the bucket follows.
    std::fs::write(
        tree.join("d0/sub 0/file 0.bin"),
        random_bytes(seed ^ 9, 12_345),
    )?;
    std::fs::write(tree.join("d1/new.bin"), random_bytes(seed ^ 10, 800_000))?;
    std::fs::remove_file(tree.join("d2/sub 2/file 2.bin"))?;
    s3.run(rclone, &["sync", tree_s, "kura:rc-bucket/tree"])
        .await?;
    s3.run(rclone, &["check", tree_s, "kura:rc-bucket/tree"])
        .await?;
    s3.run(rclone, &["sync", "kura:rc-bucket/tree", down_s])
        .await?;
    same_tree(&tree, &down)?;
    s3.stop().await
}

#[tokio::test]
async fn s3cmd_puts_lists_and_gets() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let s3 = S3Cluster::start().await?;
    let s3cmd = Path::new("/usr/bin/s3cmd");
    let work = tempfile::tempdir()?;
    let file = work.path().join("s3cmd.bin");
    let bytes = random_bytes(test_seed(), 1_234_567);
    std::fs::write(&file, &bytes)?;
    let file_s = file.to_str().context("path")?;
    s3.run(s3cmd, &["mb", "s3://cmd-bucket"]).await?;
    s3.run(s3cmd, &["put", file_s, "s3://cmd-bucket/dir/s3cmd.bin"])
        .await?;
    let ls = s3
        .run(s3cmd, &["ls", "--recursive", "s3://cmd-bucket"])
        .await?;
    ensure!(
        ls.stdout.contains("s3://cmd-bucket/dir/s3cmd.bin"),
        "{}",
        ls.stdout
    );
    let back = work.path().join("back.bin");
    s3.run(
        s3cmd,
        &[
            "get",
            "s3://cmd-bucket/dir/s3cmd.bin",
            back.to_str().context("path")?,
        ],
    )
    .await?;
    ensure!(std::fs::read(&back)? == bytes, "s3cmd get bytes differ");
    s3.run(s3cmd, &["del", "s3://cmd-bucket/dir/s3cmd.bin"])
        .await?;
    s3.run(s3cmd, &["rb", "s3://cmd-bucket"]).await?;
    s3.stop().await
}

#[tokio::test]
async fn native_and_s3_apis_share_objects_and_buckets() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let s3 = S3Cluster::start().await?;
    let native = s3.cluster.client()?;
    let seed = test_seed();
    // A native PUT into a bucket nobody created: the bucket now exists for S3.
    let a = random_bytes(seed, 300_000);
    native.put("shared", "native.bin", a.clone()).await?;
    let ls = s3.aws(&["s3", "ls"]).await?;
    ensure!(ls.stdout.contains("shared"), "{}", ls.stdout);
    let work = tempfile::tempdir()?;
    let got = work.path().join("got.bin");
    s3.aws(&[
        "s3",
        "cp",
        "s3://shared/native.bin",
        got.to_str().context("path")?,
    ])
    .await?;
    ensure!(
        std::fs::read(&got)? == a,
        "S3 read of a native object differs"
    );
    // Its S3 ETag is kura's blake3 (it was never hashed with MD5).
    let head = s3
        .aws(&[
            "s3api",
            "head-object",
            "--bucket",
            "shared",
            "--key",
            "native.bin",
        ])
        .await?;
    let head: serde_json::Value = serde_json::from_str(&head.stdout)?;
    let blake = format!("\"{}\"", blake3::hash(&a).to_hex());
    ensure!(head["ETag"] == blake.as_str(), "{head}");
    // An S3 PUT is a native object.
    let b = random_bytes(seed ^ 2, 5_000_000);
    let file = work.path().join("b.bin");
    std::fs::write(&file, &b)?;
    s3.aws(&[
        "s3",
        "cp",
        file.to_str().context("path")?,
        "s3://shared/s3.bin",
    ])
    .await?;
    let back = native
        .get("shared", "s3.bin")
        .await?
        .context("native GET: missing")?;
    ensure!(back[..] == b[..], "native read of an S3 object differs");
    s3.stop().await
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}
