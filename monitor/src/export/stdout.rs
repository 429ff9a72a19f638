//! Stdout sink: one event per line on standard output, for containers and service managers
//! that collect it (`docker logs`, journald). Samples then stay off stdout
//! (`agent.output = "none"`): one stream, one kind of line.

use std::io::Write as _;

use super::{
    Format, Reporter, render,
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

pub struct StdoutTransport {
    pub format: Format,
}

impl Transport for StdoutTransport {
    fn target(&self) -> String {
        "stdout".to_owned()
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let mut buf = String::new();
        for p in batch {
            buf.push_str(&render(self.format, &p.event, reporter));
            buf.push('\n');
        }
        // One write per batch, flushed before the cursor moves.
        let mut out = std::io::stdout().lock();
        out.write_all(buf.as_bytes())?;
        out.flush()?;
        Ok(Sent::all(batch))
    }
}
