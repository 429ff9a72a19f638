//! What every sink type implements: send a batch of outbox events, say how far it got.
//! The delivery loop (cursors, retries, backoff, the bounded spool, dead letters) is the
//! same for all of them and lives in `delivery`.

use std::io;

use super::Reporter;
use crate::store::Pending;

/// What a transport did with a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// The first `done` events of the batch are finished (delivered, or refused for good and
    /// listed in `rejected`); the rest of the batch is retried later, in order.
    pub done: usize,
    /// Events the receiver refused for good (index in the batch, the receiver's reason):
    /// written to the sink's dead-letter file and counted, never retried.
    pub rejected: Vec<(usize, String)>,
}

impl Sent {
    /// The whole batch was delivered.
    pub const fn all(batch: &[Pending]) -> Self {
        Self {
            done: batch.len(),
            rejected: Vec::new(),
        }
    }
}

/// Why nothing of a batch was delivered. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The receiver answered, but not with success (HTTP status, receiver's message).
    #[error("{0}")]
    Refused(String),
}

/// A sink's way out: file, stdout, syslog, HTTP collectors.
pub trait Transport: Send {
    /// Where it sends, for logs (no credentials).
    fn target(&self) -> String;

    /// Sends `batch` (oldest first; never empty). `Ok` with `done < batch.len()` or `Err`
    /// leaves the rest queued: it is sent again, from the first undone event, after a backoff.
    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError>;
}
