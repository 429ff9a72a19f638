//! `[[sinks]]`: where alert events go. Today: JSON-lines files (with rotation); the network
//! transports join this list.

use std::{ops::Range, path::PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::Format;
use crate::config::Bytes;

/// One `[[sinks]]` entry: `name`, `type`, `format`, then the keys of its type. (One flat
/// table rather than a tagged enum: it keeps line numbers in error messages.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique: the sink's delivery cursor is stored under it.
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default = "default_format")]
    pub format: Format,
    /// `file`: the file (a relative path is under `state.dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `file`: rotate when the file would grow beyond this (`alerts.jsonl` ->
    /// `alerts.jsonl.1`).
    #[serde(default = "default_max_size")]
    pub max_size: Spanned<Bytes>,
    /// `file`: rotated files kept (older ones are deleted).
    #[serde(default = "default_keep")]
    pub keep: Spanned<u32>,
    /// `file`: `batch` fsyncs after every written batch, before the delivery cursor moves
    /// (nothing marked delivered is lost on power failure); `never` leaves it to the OS.
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// One event per line appended to a file, rotated by size.
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Batch,
    Never,
}

const fn default_format() -> Format {
    Format::Json
}

fn default_max_size() -> Spanned<Bytes> {
    Spanned::new(0..0, Bytes::mib(100))
}

fn default_keep() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

const fn default_fsync() -> Fsync {
    Fsync::Batch
}

/// The default: alerts as JSON lines in `state.dir/alerts.jsonl`.
pub fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig {
        name: Spanned::new(0..0, "alerts-file".to_owned()),
        kind: SinkType::File,
        format: Format::Json,
        path: Some(PathBuf::from("alerts.jsonl")),
        max_size: default_max_size(),
        keep: default_keep(),
        fsync: Fsync::Batch,
    }]
}

/// Names unique and non-empty, sizes sane.
pub fn validate(sinks: &[SinkConfig]) -> Result<(), (Range<usize>, String, String)> {
    for (i, sink) in sinks.iter().enumerate() {
        let name = sink.name.get_ref();
        if name.trim().is_empty() {
            return Err((sink.name.span(), format!("sinks[{i}].name"), "empty".into()));
        }
        if sinks[..i].iter().any(|s| s.name.get_ref() == name) {
            return Err((
                sink.name.span(),
                format!("sinks[{i}].name"),
                format!("sink {name:?} is defined twice (names key the delivery cursors)"),
            ));
        }
        match sink.kind {
            SinkType::File => {
                if sink.path.is_none() {
                    return Err((
                        sink.name.span(),
                        format!("sinks[{i}].path"),
                        "a file sink needs a path".into(),
                    ));
                }
                if sink.max_size.get_ref().as_u64() < 4096 {
                    return Err((
                        sink.max_size.span(),
                        format!("sinks[{i}].max_size"),
                        "must be at least 4KiB".into(),
                    ));
                }
                if *sink.keep.get_ref() > 1000 {
                    return Err((
                        sink.keep.span(),
                        format!("sinks[{i}].keep"),
                        "at most 1000 rotated files".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}
