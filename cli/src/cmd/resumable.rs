//! `kura put` through the resumable upload path (tus, `/v1/uploads`): large files go in
//! pieces; the upload's URL is kept in a state file until it completes, so a network
//! error is retried from the durable offset the gateway reports, and a put that was
//! interrupted (Ctrl-C, a lost connection, a reboot) continues when run again
//! (`kura put --resume`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::client::Conn;
use super::transfer::progress;

/// Files larger than this go through the resumable path: a break in a large upload
/// costs the piece in flight, not the whole file. 64 MiB: below it a plain PUT
/// finishes in well under a second on a LAN and there is little to resume.
pub const RESUMABLE_OVER: u64 = 64 * 1024 * 1024;

/// Bytes per PATCH by default: big enough that a request's overhead is nothing beside
/// it, small enough that a break re-sends at most this much (the gateway keeps what
/// arrived of a broken piece anyway).
pub const DEFAULT_PIECE_BYTES: u64 = 64 * 1024 * 1024;

/// Tries per piece before giving up (the state file stays: run again to continue).
const ATTEMPTS: u32 = 5;

/// First pause after a failed piece; doubles each try.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What to upload, and how.
pub(super) struct Resumable<'a> {
    /// The file.
    pub file: &'a Path,
    /// Its size.
    pub len: u64,
    /// Target.
    pub bucket: &'a str,
    /// Target.
    pub key: &'a str,
    /// Media type.
    pub content_type: Option<String>,
    /// User metadata.
    pub meta: &'a [(String, String)],
    /// Bytes per PATCH.
    pub piece: u64,
}

fn tus(conn: &Conn, method: Method, url: &str) -> reqwest::RequestBuilder {
    conn.request(method, url).header("tus-resumable", "1.0.0")
}

/// Where the URL of an unfinished upload of this file to this target is kept.
fn state_file(conn: &Conn, r: &Resumable<'_>) -> Result<PathBuf> {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .context("neither XDG_STATE_HOME nor HOME is set")?
        .join("kura/uploads");
    let abs = std::fs::canonicalize(r.file).unwrap_or_else(|_| r.file.to_path_buf());
    let modified = std::fs::metadata(r.file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    for part in [
        abs.to_string_lossy().as_bytes(),
        &r.len.to_le_bytes(),
        &modified.to_le_bytes(),
        conn.base().as_bytes(),
        r.bucket.as_bytes(),
        r.key.as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(dir.join(format!("{}.url", &h.finalize().to_hex()[..32])))
}

fn metadata(r: &Resumable<'_>) -> String {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let mut pairs = vec![
        format!("bucket {}", b64(r.bucket)),
        format!("key {}", b64(r.key)),
    ];
    if let Some(ct) = &r.content_type {
        pairs.push(format!("content-type {}", b64(ct)));
    }
    for (k, v) in r.meta {
        pairs.push(format!("meta-{k} {}", b64(v)));
    }
    pairs.join(",")
}

/// The durable offset of the upload at `url`; `None` if it no longer exists.
async fn offset(conn: &Conn, url: &str) -> Result<Option<u64>> {
    let resp = tus(conn, Method::HEAD, url).send().await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let resp = resp.error_for_status()?;
    let v = resp
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the gateway gave no Upload-Offset")?;
    Ok(Some(v))
}

async fn create(conn: &Conn, r: &Resumable<'_>) -> Result<String> {
    let req = tus(conn, Method::POST, &format!("{}/v1/uploads", conn.base()))
        .header("upload-length", r.len)
        .header("upload-metadata", metadata(r));
    let resp = conn.send(req).await?;
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the gateway gave no upload Location")?;
    Ok(format!("{}{loc}", conn.base()))
}

async fn send_piece(conn: &Conn, url: &str, file: &Path, at: u64, len: u64) -> Result<u64> {
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(at)).await?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf).await?;
    let req = tus(conn, Method::PATCH, url)
        .header("upload-offset", at)
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/offset+octet-stream"),
        )
        .header(CONTENT_LENGTH, buf.len())
        .body(buf);
    let resp = conn.send(req).await?;
    resp.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the gateway gave no Upload-Offset")
}

/// Uploads `r`, continuing a saved upload of the same file to the same target.
pub(super) async fn put(conn: &Conn, r: Resumable<'_>) -> Result<()> {
    let state = state_file(conn, &r)?;
    let saved = std::fs::read_to_string(&state).ok();
    let resumed = match saved {
        Some(url) => offset(conn, url.trim())
            .await?
            .map(|at| (url.trim().to_string(), at)),
        None => None,
    };
    let (url, mut at) = match resumed {
        Some(found) => found,
        None => (create(conn, &r).await?, 0),
    };
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&state, &url).with_context(|| format!("writing {}", state.display()))?;
    let bar = progress(Some(r.len), &format!("{}/{}", r.bucket, r.key));
    bar.set_position(at);
    let mut tries = 0;
    while at < r.len {
        let len = r.piece.min(r.len - at);
        match send_piece(conn, &url, r.file, at, len).await {
            Ok(next) => {
                at = next;
                tries = 0;
            }
            Err(e) => {
                tries += 1;
                if tries >= ATTEMPTS {
                    bar.abandon();
                    return Err(e.context(format!(
                        "upload interrupted at byte {at}; run `kura put --resume` with the \
                         same file and target to continue"
                    )));
                }
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(tries - 1)).await;
                // Whatever of the piece arrived is durable: continue from there.
                match offset(conn, &url).await {
                    Ok(Some(now)) => at = now,
                    Ok(None) => bail!("the upload disappeared: {e:#}"),
                    Err(_) => {}
                }
            }
        }
        bar.set_position(at);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&state);
    println!(
        "{}/{}  {} bytes  (resumable upload)",
        r.bucket, r.key, r.len
    );
    Ok(())
}
