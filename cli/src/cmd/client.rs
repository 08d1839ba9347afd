//! Client subcommands against a gateway's public API: `kura put`, `get`, `ls`, `rm` and
//! `stat`. Arguments are checked locally first (bucket and key rules, ranges, metadata);
//! failures map to exit codes scripts can test (see [`EXIT_FAILURE`] and the others).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kura_cluster::names::{check_bucket, check_key, encode_key_path};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::transfer;

/// A failure the gateway reported (its status, code and message are printed).
pub const EXIT_FAILURE: u8 = 1;
/// Bad arguments (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Nothing answered at the gateway URL.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The object does not exist (404), so scripts can test existence.
pub const EXIT_NOT_FOUND: u8 = 4;

/// Gateway used when neither `--gateway` nor `KURA_GATEWAY` is given (`kura dev`'s).
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// Where `kura dev` writes its API key, relative to the directory it runs in.
pub const DEV_API_KEY_FILE: &str = "kura-data/api-key";

/// Longest wait to connect to the gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Objects asked for per listing page by default (the gateway's largest page).
const DEFAULT_LIST_LIMIT: u16 = 1000;

// ---- Arguments ----

/// Shown under every client subcommand's `--help`.
pub(super) const EXIT_CODES_HELP: &str =
    "Exit codes: 0 success, 1 error reported by the gateway (or a \
    local one), 2 usage error, 3 gateway unreachable, 4 object not found.";

/// The client subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Upload a file (or stdin) as an object.
    #[command(after_help = EXIT_CODES_HELP)]
    Put(PutArgs),
    /// Download an object (or a byte range of it) to a file or stdout.
    #[command(after_help = EXIT_CODES_HELP)]
    Get(GetArgs),
    /// List objects of a bucket, optionally under a key prefix.
    #[command(after_help = EXIT_CODES_HELP)]
    Ls(LsArgs),
    /// Delete an object (succeeds also if there was none).
    #[command(after_help = EXIT_CODES_HELP)]
    Rm(RmArgs),
    /// Show an object's size, ETag, content type, modification time and metadata.
    #[command(after_help = EXIT_CODES_HELP)]
    Stat(StatArgs),
}

/// Which gateway to talk to, and as whom.
#[derive(Args, Debug)]
pub struct GatewayOpts {
    /// Gateway base URL.
    #[arg(long, env = "KURA_GATEWAY", default_value = DEFAULT_GATEWAY, value_name = "URL")]
    pub gateway: String,
    /// API key. If neither --api-key nor KURA_API_KEY is given, ./kura-data/api-key
    /// (written by `kura dev`) is read when it exists.
    #[arg(long, env = "KURA_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

/// `kura put FILE bucket/key`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// File to upload; `-` reads stdin.
    pub file: PathBuf,
    /// Destination `bucket/key`; `bucket/` or `bucket/dir/` appends FILE's name.
    #[arg(value_name = "BUCKET/KEY")]
    pub target: String,
    /// Media type stored with the object (default: guessed from FILE's extension).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// User metadata `name=value`, returned on GET as `x-kura-meta-name`; repeatable.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Upload in resumable pieces, continuing an interrupted upload of this file to this
    /// target if there is one (files over 64 MiB always do).
    #[arg(long)]
    pub resume: bool,
    /// Bytes per piece of a resumable upload [default: 64 MiB].
    #[arg(long, hide = true, value_name = "BYTES")]
    pub piece_bytes: Option<u64>,
    #[command(flatten)]
    pub conn: GatewayOpts,
}

/// `kura get bucket/key [FILE]`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Object `bucket/key`.
    #[arg(value_name = "BUCKET/KEY")]
    pub target: String,
    /// Output file (written as FILE.part, renamed when complete); none or `-` for stdout.
    /// A directory receives the key's last segment as file name.
    pub file: Option<PathBuf>,
    /// Only these bytes: `FIRST-LAST` (inclusive), `FIRST-` (to the end) or `-N` (the last N).
    #[arg(long, value_name = "RANGE", value_parser = parse_range, allow_hyphen_values = true)]
    pub range: Option<String>,
    #[command(flatten)]
    pub conn: GatewayOpts,
}

/// `kura ls bucket[/prefix]`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Bucket, optionally followed by `/` and a key prefix.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub target: String,
    /// Objects per request (every page is listed, following the gateway's cursor).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIST_LIMIT,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// One JSON object per line: key, size, etag, content_type, last_modified_ms.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: GatewayOpts,
}

/// `kura rm bucket/key`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Object `bucket/key`.
    #[arg(value_name = "BUCKET/KEY")]
    pub target: String,
    #[command(flatten)]
    pub conn: GatewayOpts,
}

/// `kura stat bucket/key`.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// Object `bucket/key`.
    #[arg(value_name = "BUCKET/KEY")]
    pub target: String,
    #[command(flatten)]
    pub conn: GatewayOpts,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    let name = name.to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("metadata name {name:?}: use a-z, 0-9 and '-'"));
    }
    if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(format!("metadata {name}: value must be printable ASCII"));
    }
    Ok((name, value.to_string()))
}

/// Checks a `--range` and returns it as a `Range` header value.
fn parse_range(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?}: expected FIRST-LAST, FIRST- or -N (byte offsets)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let num = |x: &str| {
        (!x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()))
            .then(|| x.parse::<u64>().ok())
            .flatten()
    };
    match (a.is_empty(), b.is_empty()) {
        (false, true) => num(a).ok_or_else(bad)?,
        (true, false) => match num(b) {
            Some(n) if n > 0 => n,
            _ => return Err(bad()),
        },
        (false, false) => match (num(a), num(b)) {
            (Some(x), Some(y)) if x <= y => y,
            (Some(_), Some(_)) => return Err(format!("{s:?}: FIRST is after LAST")),
            _ => return Err(bad()),
        },
        (true, true) => return Err(bad()),
    };
    Ok(format!("bytes={s}"))
}

// ---- Errors and exit codes ----

/// Failures that choose an exit code other than [`EXIT_FAILURE`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway answered with an error status.
    #[error("{} {code}: {message}", status.as_u16())]
    Server {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// Nothing answered at the gateway URL.
    #[error(
        "cannot reach the gateway at {url}: {why} (is it running? set --gateway or KURA_GATEWAY)"
    )]
    Unreachable { url: String, why: String },
    /// Arguments found wrong before any request.
    #[error("{0}")]
    Usage(String),
}

/// Runs a client subcommand; prints any error as `kura: …` and returns the exit code.
pub async fn run(cmd: ClientCommand) -> ExitCode {
    let result = match cmd {
        ClientCommand::Put(a) => transfer::put(a).await,
        ClientCommand::Get(a) => transfer::get(a).await,
        ClientCommand::Ls(a) => ls(a).await,
        ClientCommand::Rm(a) => rm(a).await,
        ClientCommand::Stat(a) => stat(a).await,
    };
    finish(result)
}

/// Prints a failed command's error as `kura: …` and maps it to the exit code.
pub(super) fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kura: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        Some(ClientError::Server { status, .. }) if *status == StatusCode::NOT_FOUND => {
            EXIT_NOT_FOUND
        }
        Some(ClientError::Server { .. }) | None => EXIT_FAILURE,
        Some(ClientError::Unreachable { .. }) => EXIT_UNREACHABLE,
        Some(ClientError::Usage(_)) => EXIT_USAGE,
    }
}

pub(super) fn usage(msg: impl Into<String>) -> anyhow::Error {
    ClientError::Usage(msg.into()).into()
}

/// Splits and checks `bucket/key`.
pub(super) fn object_name(target: &str) -> Result<(&str, &str)> {
    let (bucket, key) = target
        .split_once('/')
        .ok_or_else(|| usage(format!("{target:?}: expected bucket/key")))?;
    check_bucket(bucket).map_err(|e| usage(e.to_string()))?;
    check_key(key).map_err(|e| usage(format!("{target:?}: {e}")))?;
    Ok((bucket, key))
}

// ---- Talking to the gateway ----

/// A gateway base URL with an HTTP client and the `Authorization` header.
pub(super) struct Conn {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
}

impl Conn {
    pub(super) fn new(opts: &GatewayOpts) -> Result<Self> {
        let base = opts.gateway.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| usage(format!("--gateway {:?}: {e}", opts.gateway)))?;
        if url.scheme() != "http" {
            return Err(usage(format!(
                "--gateway {base}: only http:// is supported (put TLS in front of the gateway)"
            )));
        }
        let key = match opts.api_key.as_ref().filter(|k| !k.is_empty()) {
            Some(k) => k.clone(),
            None => std::fs::read_to_string(DEV_API_KEY_FILE)
                .map(|s| s.trim().to_string())
                .map_err(|_| {
                    usage(format!(
                        "no API key: pass --api-key or set KURA_API_KEY \
                         (./{DEV_API_KEY_FILE}, written by `kura dev`, is used if it exists)"
                    ))
                })?,
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| usage("the API key is not a valid header value"))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("kura/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base, auth })
    }

    /// The gateway's base URL.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/v1/o/{bucket}/{}", self.base, encode_key_path(key))
    }

    pub(super) fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .header(header::AUTHORIZATION, self.auth.clone())
    }

    /// Sends `req`; an error status becomes [`ClientError::Server`], a connection that
    /// cannot be made [`ClientError::Unreachable`].
    pub(super) async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(ClientError::Unreachable {
                    url: self.base.clone(),
                    why: root_cause(&e),
                }
                .into())
            }
            Err(e) => {
                let url = e.url().map_or(self.base.clone(), |u| u.to_string());
                bail!("request to {url} failed: {}", root_cause(&e));
            }
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(server_error(resp).await.into())
    }

    /// Checks the API key and that the gateway answers with a `HEAD` of the object. A
    /// gateway that refuses an upload (401) answers before reading the body and closes
    /// the connection, so a client still sending a large body sees a broken pipe instead
    /// of the answer. Other statuses (404 for a new key, even 503) are left to the upload.
    pub(super) async fn preflight(&self, bucket: &str, key: &str) -> Result<()> {
        let req = self
            .request(Method::HEAD, &self.object_url(bucket, key))
            .timeout(transfer::IDLE_TIMEOUT);
        match self.send(req).await {
            Err(e) => match e.downcast_ref::<ClientError>() {
                Some(ClientError::Server { status, .. })
                    if *status != StatusCode::UNAUTHORIZED && *status != StatusCode::FORBIDDEN =>
                {
                    Ok(())
                }
                _ => Err(e),
            },
            Ok(_) => Ok(()),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The gateway's JSON error body (absent for HEAD).
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

async fn server_error(resp: Response) -> ClientError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error, b.message),
        Err(_) => {
            let reason = status.canonical_reason().unwrap_or("error");
            let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
            let message = match text.trim() {
                "" => reason.to_ascii_lowercase(),
                t => t.chars().take(200).collect(),
            };
            (code, message)
        }
    };
    ClientError::Server {
        status,
        code,
        message,
    }
}

pub(super) fn header_str(h: &HeaderMap, name: HeaderName) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

// ---- ls ----

/// One page of `GET /v1/o/{bucket}`.
#[derive(Deserialize)]
struct ListPage {
    objects: Vec<serde_json::Map<String, serde_json::Value>>,
    next_after: Option<String>,
}

async fn ls(args: LsArgs) -> Result<()> {
    let (bucket, prefix) = args.target.split_once('/').unwrap_or((&args.target, ""));
    check_bucket(bucket).map_err(|e| usage(e.to_string()))?;
    let conn = Conn::new(&args.conn)?;
    let url = format!("{}/v1/o/{bucket}", conn.base);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![
            ("prefix", prefix.to_string()),
            ("limit", args.limit.to_string()),
        ];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let req = conn
            .request(Method::GET, &url)
            .query(&query)
            .timeout(transfer::IDLE_TIMEOUT);
        let page: ListPage = conn.send(req).await?.json().await?;
        for o in &page.objects {
            if args.json {
                writeln!(out, "{}", serde_json::Value::Object(o.clone()))?;
            } else {
                let key = o.get("key").and_then(|v| v.as_str()).unwrap_or_default();
                let size = o.get("size").and_then(|v| v.as_u64()).unwrap_or_default();
                let ms = o.get("last_modified_ms").and_then(|v| v.as_u64());
                let when = ms.map(iso_utc).unwrap_or_default();
                writeln!(out, "{when:20}  {size:>13}  {key}")?;
            }
        }
        out.flush().context("writing stdout")?;
        match page.next_after {
            Some(next) if after.as_ref().is_none_or(|a| next > *a) => after = Some(next),
            Some(next) => bail!("the gateway's listing cursor did not advance ({next:?})"),
            None => return Ok(()),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for milliseconds since the Unix epoch.
fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, years ≥ 1970).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

// ---- rm and stat ----

async fn rm(args: RmArgs) -> Result<()> {
    let (bucket, key) = object_name(&args.target)?;
    let conn = Conn::new(&args.conn)?;
    let req = conn
        .request(Method::DELETE, &conn.object_url(bucket, key))
        .timeout(transfer::IDLE_TIMEOUT);
    conn.send(req).await?;
    Ok(())
}

async fn stat(args: StatArgs) -> Result<()> {
    let (bucket, key) = object_name(&args.target)?;
    let conn = Conn::new(&args.conn)?;
    let req = conn
        .request(Method::HEAD, &conn.object_url(bucket, key))
        .timeout(transfer::IDLE_TIMEOUT);
    let resp = conn.send(req).await?;
    let h = resp.headers();
    let get = |name| header_str(h, name).unwrap_or_default();
    let modified = httpdate::parse_http_date(&get(header::LAST_MODIFIED))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| iso_utc(d.as_millis() as u64))
        .unwrap_or_default();
    let mut out = format!(
        "object: {bucket}/{key}\nsize: {}\netag: {}\ncontent-type: {}\nlast-modified: {modified}\n",
        get(header::CONTENT_LENGTH),
        get(header::ETAG).trim_matches('"'),
        get(header::CONTENT_TYPE),
    );
    let mut meta: Vec<(&str, &str)> = h
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().strip_prefix("x-kura-meta-")?, v.to_str().ok()?)))
        .collect();
    meta.sort_unstable();
    for (k, v) in meta {
        out.push_str(&format!("meta.{k}: {v}\n"));
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-99").unwrap(), "bytes=0-99");
        assert_eq!(parse_range("100-").unwrap(), "bytes=100-");
        assert_eq!(parse_range("-500").unwrap(), "bytes=-500");
        for bad in ["", "-", "5-2", "-0", "a-b", "1-2-3", "+1-2", " 1-2"] {
            assert!(parse_range(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata() {
        assert_eq!(
            parse_meta("Lang=en US").unwrap(),
            ("lang".into(), "en US".into())
        );
        for bad in ["novalue", "=x", "a b=c", "k=\u{e9}", "k=a\nb"] {
            assert!(parse_meta(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn object_names() {
        assert_eq!(
            object_name("media/a b/c.mp4").unwrap(),
            ("media", "a b/c.mp4")
        );
        for bad in ["media", "Media/x", "media/", "media/../x", "ab/x"] {
            let e = object_name(bad).unwrap_err();
            assert_eq!(exit_code(&e), EXIT_USAGE, "{bad:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_735_689_599_999), "2024-12-31T23:59:59Z");
    }
}
