//! `[metrics]`: the Prometheus endpoint, off unless `listen` is set.

use std::{net::SocketAddr, ops::Range};

use serde::{Deserialize, Serialize};
use toml::Spanned;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` to serve `GET /metrics` on (e.g. "127.0.0.1:9464"); unset: no endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<String>>,
}

impl MetricsConfig {
    /// The address to listen on, if any (validated at load).
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.as_ref().and_then(|l| l.get_ref().parse().ok())
    }

    pub fn validate(&self) -> Result<(), (Range<usize>, String, String)> {
        if let Some(listen) = &self.listen
            && listen.get_ref().parse::<SocketAddr>().is_err()
        {
            return Err((
                listen.span(),
                "metrics.listen".into(),
                format!(
                    "{:?} is not ip:port (e.g. \"127.0.0.1:9464\"; host names are not resolved)",
                    listen.get_ref()
                ),
            ));
        }
        Ok(())
    }
}
