//! Structured logs through `tracing`: human-readable by default, JSON for a pipeline.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::Error;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (human|json)")),
        }
    }
}

/// Installs the global subscriber writing to stderr. `filter` uses `RUST_LOG` syntax
/// (e.g. `info`, `kura_storage_node=debug`).
pub fn init_logging(format: LogFormat, filter_text: &str) -> Result<(), Error> {
    let mut filter = EnvFilter::try_new(filter_text).map_err(|e| Error::Telemetry(e.into()))?;
    // The S3 protocol crate logs every S3 error answer (a 404, a bad signature) at
    // error level; the gateway logs the failures that are its own. Naming `s3s` in the
    // filter (e.g. `info,s3s=debug`) brings its logs back.
    if !filter_text.contains("s3s") {
        if let Ok(quiet) = "s3s=off".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(Error::Telemetry)
}
