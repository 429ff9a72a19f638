//! Stdout sink: one event per line on standard output, for containers and service managers
//! that collect it (`docker logs`, journald). Samples then stay off stdout
//! (`agent.output = "none"`): one stream, one kind of line.

use std::io::Write as _;

use super::{
    Format, Reporter,
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

pub struct StdoutTransport {
    pub format: Format,
    pub network_activity: bool,
}

impl Transport for StdoutTransport {
    fn target(&self) -> String {
        "stdout".to_owned()
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let mut buf = String::new();
        for p in batch {
            for record in p
                .event
                .records(self.format, self.network_activity, reporter)
            {
                buf.push_str(&record);
                buf.push('\n');
            }
        }
        // One write per batch, flushed before the cursor moves.
        let mut out = std::io::stdout().lock();
        out.write_all(buf.as_bytes())?;
        out.flush()?;
        Ok(Sent::all(batch))
    }
}
