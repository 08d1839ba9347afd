//! `kura put` and `kura get`, and their streaming: upload bodies read from a file or stdin
//! a buffer at a time, downloads written as they arrive (to stdout, or to `FILE.part`
//! renamed to `FILE` only once complete and verified), a blake3 of the bytes computed on the
//! way, and a progress bar on stderr when it is a terminal. Memory stays bounded by
//! [`READ_BUFFER`] and the HTTP stack's buffers, whatever the object's size.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kura_gateway::http::MAX_META_BYTES;
use reqwest::header::{self, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::client::{header_str, object_name, usage, Conn, GetArgs, PutArgs};
use super::resumable;

/// Bytes read from the source per upload buffer. 256 KiB: large enough that per-buffer
/// overhead (a syscall, a hash update, a frame) is small, small beside the gateway's 4 MiB
/// chunks so the upload pipeline stays full.
pub const READ_BUFFER: usize = 256 * 1024;

/// Longest wait for the next piece of a download before it is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Uploads larger than this (or of unknown size) check the API key first (see
/// `client::Conn::preflight`). 256 KiB: smaller bodies fit the socket buffers, so the
/// gateway's early answer is read; larger ones would see a broken pipe instead.
const PREFLIGHT_OVER: u64 = 256 * 1024;

/// How often the progress bar is redrawn at most.
const PROGRESS_HZ: u8 = 10;

// ---- Progress ----

/// A progress bar on stderr for `len` bytes (a spinner with a byte count if unknown);
/// hidden when stderr is not a terminal, so logs and pipes stay clean.
pub fn progress(len: Option<u64>, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(PROGRESS_HZ));
    bar.set_message(label.to_string());
    bar
}

// ---- Uploads ----

/// Where an upload's bytes come from.
pub struct Source {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    /// Size, when the source is a regular file.
    pub len: Option<u64>,
}

impl Source {
    /// Opens `path`, or stdin for `-`.
    pub async fn open(path: &Path) -> Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                reader: Box::new(tokio::io::stdin()),
                len: None,
            });
        }
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let meta = file
            .metadata()
            .await
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        if meta.is_dir() {
            bail!("{} is a directory", path.display());
        }
        let len = meta.is_file().then_some(meta.len());
        Ok(Self {
            reader: Box::new(file),
            len,
        })
    }
}

/// What an upload body saw once it has been sent: its byte count and blake3.
#[derive(Clone, Default)]
pub struct Digest(Arc<Mutex<(blake3::Hasher, u64)>>);

impl Digest {
    fn update(&self, data: &[u8]) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        g.0.update(data);
        g.1 += data.len() as u64;
    }

    /// Bytes seen so far and the blake3 hex of them.
    pub fn finish(&self) -> (u64, String) {
        let g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (g.1, g.0.finalize().to_hex().to_string())
    }
}

/// A streamed request body over `source`, [`READ_BUFFER`] at a time, advancing `bar`
/// and hashing into the returned [`Digest`] as it goes.
pub fn upload_body(source: Source, bar: ProgressBar) -> (reqwest::Body, Digest) {
    let digest = Digest::default();
    let seen = digest.clone();
    let stream = ReaderStream::with_capacity(source.reader, READ_BUFFER).inspect(move |r| {
        if let Ok(data) = r {
            seen.update(data);
            bar.inc(data.len() as u64);
        }
    });
    (reqwest::Body::wrap_stream(stream), digest)
}

// ---- Downloads ----

/// Where a download goes.
pub enum Sink {
    /// Standard output.
    Stdout(tokio::io::Stdout),
    /// `part`, renamed to `dest` by [`Sink::commit`]; removed if dropped before.
    File {
        file: tokio::fs::File,
        part: PathBuf,
        dest: PathBuf,
        committed: bool,
    },
}

impl Sink {
    /// Standard output.
    pub fn stdout() -> Self {
        Sink::Stdout(tokio::io::stdout())
    }

    /// A new `dest.part` next to `dest` (replacing a stale one).
    pub async fn file(dest: &Path) -> Result<Self> {
        let part = part_path(dest);
        let file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("creating {}", part.display()))?;
        Ok(Sink::File {
            file,
            part,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    fn writer(&mut self) -> &mut (dyn AsyncWrite + Send + Unpin) {
        match self {
            Sink::Stdout(s) => s,
            Sink::File { file, .. } => file,
        }
    }

    fn name(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File { part, .. } => part.display().to_string(),
        }
    }

    /// Makes the download visible: flushes stdout, or syncs the part file and renames it
    /// over the destination (so the name holds the old file or the whole new one).
    pub async fn commit(mut self) -> Result<()> {
        match &mut self {
            Sink::Stdout(s) => s.flush().await.context("writing stdout")?,
            Sink::File {
                file,
                part,
                dest,
                committed,
            } => {
                file.flush().await?;
                file.sync_all()
                    .await
                    .with_context(|| format!("syncing {}", part.display()))?;
                tokio::fs::rename(&part, &dest).await.with_context(|| {
                    format!("renaming {} to {}", part.display(), dest.display())
                })?;
                *committed = true;
            }
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Sink::File {
            part,
            committed: false,
            ..
        } = self
        {
            let _ = std::fs::remove_file(part);
        }
    }
}

/// `dest` with `.part` appended to its file name.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(OsString::from).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

/// Copies `body` into `sink` as it arrives, advancing `bar`. Fails if the stream breaks
/// off, stalls for [`IDLE_TIMEOUT`], or ends short of `expect_len`; if `expect_etag` is
/// given (a whole-object download), also if the bytes' blake3 hex differs from it.
/// Returns the byte count. Nothing is committed here: see [`Sink::commit`].
pub async fn download<S, E>(
    body: S,
    sink: &mut Sink,
    bar: &ProgressBar,
    expect_len: Option<u64>,
    expect_etag: Option<&str>,
) -> Result<u64>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut body = body;
    let mut hasher = expect_etag.map(|_| blake3::Hasher::new());
    let mut n: u64 = 0;
    let name = sink.name();
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, body.next())
            .await
            .with_context(|| format!("download stalled for {IDLE_TIMEOUT:?} after {n} bytes"))?;
        let Some(data) = next else { break };
        let data = data.with_context(|| format!("download broke off after {n} bytes"))?;
        if let Some(h) = hasher.as_mut() {
            h.update(&data);
        }
        sink.writer()
            .write_all(&data)
            .await
            .with_context(|| format!("writing {name}"))?;
        n += data.len() as u64;
        bar.inc(data.len() as u64);
    }
    if let Some(len) = expect_len {
        if n != len {
            bail!("download ended after {n} of {len} bytes");
        }
    }
    if let (Some(h), Some(etag)) = (hasher, expect_etag) {
        let got = h.finalize().to_hex();
        if got.as_str() != etag {
            bail!("downloaded bytes hash to blake3 {got}, but the object's ETag is {etag}");
        }
    }
    Ok(n)
}

// ---- put and get ----

/// The gateway's answer to an upload.
#[derive(Deserialize)]
struct PutReply {
    bucket: String,
    key: String,
    size: u64,
    etag: String,
    chunks: usize,
}

/// `kura put`: streams the file (or stdin) to the gateway and checks that the ETag it
/// stored is the blake3 of the bytes sent.
pub async fn put(args: PutArgs) -> Result<()> {
    let stdin = args.file == Path::new("-");
    let target = match (args.target.ends_with('/'), args.file.file_name()) {
        (true, Some(name)) if !stdin => format!("{}{}", args.target, name.to_string_lossy()),
        (true, _) => return Err(usage("give the full bucket/key when reading stdin")),
        (false, _) => args.target.clone(),
    };
    let (bucket, key) = object_name(&target)?;
    // The gateway refuses these before reading the body; see PREFLIGHT_OVER.
    let meta_bytes: usize = args.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if meta_bytes > MAX_META_BYTES {
        return Err(usage(format!(
            "--meta: {meta_bytes} bytes of metadata, at most {MAX_META_BYTES} are allowed"
        )));
    }
    let conn = Conn::new(&args.conn)?;
    let source = Source::open(&args.file).await?;
    let len = source.len;
    let content_type = args
        .content_type
        .clone()
        .or_else(|| guess_content_type(&args.file).map(str::to_string));
    match len {
        Some(n) if args.resume || n > resumable::RESUMABLE_OVER => {
            let r = resumable::Resumable {
                file: &args.file,
                len: n,
                bucket,
                key,
                content_type,
                meta: &args.meta,
                piece: args
                    .piece_bytes
                    .unwrap_or(resumable::DEFAULT_PIECE_BYTES)
                    .max(1),
            };
            return resumable::put(&conn, r).await;
        }
        None if args.resume => return Err(usage("--resume needs a file, not stdin")),
        _ => {}
    }
    if len.is_none_or(|n| n > PREFLIGHT_OVER) {
        conn.preflight(bucket, key).await?;
    }
    let bar = progress(len, &target);
    let (body, digest) = upload_body(source, bar.clone());
    let mut req = conn
        .request(Method::PUT, &conn.object_url(bucket, key))
        .body(body);
    if let Some(n) = len {
        req = req.header(header::CONTENT_LENGTH, n);
    }
    if let Some(ct) = content_type {
        let v = HeaderValue::from_str(&ct).map_err(|_| usage("bad --content-type"))?;
        req = req.header(header::CONTENT_TYPE, v);
    }
    for (name, value) in &args.meta {
        let name = HeaderName::try_from(format!("x-kura-meta-{name}"))?;
        req = req.header(name, HeaderValue::from_str(value)?);
    }
    let resp = conn.send(req).await;
    bar.finish_and_clear();
    let reply: PutReply = resp?.json().await.context("reading the upload reply")?;
    let (sent, local) = digest.finish();
    if reply.size != sent || reply.etag != local {
        bail!(
            "the gateway stored {} bytes with ETag {}, but {sent} bytes with blake3 {local} were sent",
            reply.size,
            reply.etag
        );
    }
    println!(
        "{}/{}  {} bytes  {} chunk(s)  etag {}",
        reply.bucket, reply.key, reply.size, reply.chunks, reply.etag
    );
    Ok(())
}

/// Media types of the extensions a media store mostly sees.
fn guess_content_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mpeg" | "mpg" => "video/mpeg",
        "ts" => "video/mp2t",
        "m3u8" => "application/vnd.apple.mpegurl",
        "mp3" => "audio/mpeg",
        "m4a" | "aac" => "audio/mp4",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// `kura get`: streams the object (or a range) to stdout or `FILE.part`, checks a whole
/// object against its ETag, then renames the part file to `FILE`.
pub async fn get(args: GetArgs) -> Result<()> {
    let (bucket, key) = object_name(&args.target)?;
    let conn = Conn::new(&args.conn)?;
    let dest = match &args.file {
        None => None,
        Some(p) if p == Path::new("-") => None,
        Some(p) if p.is_dir() => match key.rsplit('/').next() {
            Some(name) if !name.is_empty() => Some(p.join(name)),
            _ => return Err(usage(format!("{key:?} has no file name; give FILE"))),
        },
        Some(p) => Some(p.clone()),
    };
    let mut req = conn.request(Method::GET, &conn.object_url(bucket, key));
    if let Some(r) = &args.range {
        req = req.header(header::RANGE, r);
    }
    let resp = tokio::time::timeout(IDLE_TIMEOUT, conn.send(req))
        .await
        .context("the gateway did not answer")??;
    // A whole object (200) is checked against its ETag when that is a content hash; a
    // range (206) cannot be, nor an object assembled from multipart parts.
    let etag = (resp.status() == StatusCode::OK)
        .then(|| header_str(resp.headers(), header::ETAG))
        .flatten()
        .map(|e| e.trim_matches('"').to_string())
        .filter(|e| kura_cluster::record::etag_is_content_hash(e));
    let len = resp.content_length();
    let mut sink = match &dest {
        Some(p) => Sink::file(p).await?,
        None => Sink::stdout(),
    };
    let bar = progress(len, &args.target);
    let copied = download(resp.bytes_stream(), &mut sink, &bar, len, etag.as_deref()).await;
    if let Err(e) = copied {
        bar.abandon();
        return Err(e);
    }
    sink.commit().await?;
    bar.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn verified_download_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let etag = blake3::hash(b"hello world").to_hex();
        let mut sink = Sink::file(&dest).await.unwrap();
        let bar = ProgressBar::hidden();
        let n = download(
            body(&[b"hello", b" world"]),
            &mut sink,
            &bar,
            Some(11),
            Some(&etag),
        )
        .await
        .unwrap();
        assert_eq!(n, 11);
        assert!(!dest.exists(), "visible before commit");
        sink.commit().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        assert!(!part_path(&dest).exists());
    }

    #[tokio::test]
    async fn bad_etag_or_short_body_leaves_the_old_file_and_no_part() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::write(&dest, b"old").unwrap();
        let bar = ProgressBar::hidden();
        let wrong = blake3::hash(b"something else").to_hex();
        let mut sink = Sink::file(&dest).await.unwrap();
        let e = download(body(&[b"hello"]), &mut sink, &bar, Some(5), Some(&wrong))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("ETag"), "{e}");
        drop(sink);
        let mut sink = Sink::file(&dest).await.unwrap();
        let e = download(body(&[b"hel"]), &mut sink, &bar, Some(5), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("3 of 5"), "{e}");
        drop(sink);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert!(!part_path(&dest).exists());
    }

    #[test]
    fn part_paths() {
        assert_eq!(part_path(Path::new("a/b.mp4")), Path::new("a/b.mp4.part"));
        assert_eq!(part_path(Path::new("x")), Path::new("x.part"));
    }
}
