//! What the scenario needs from outside the repository: root, nginx (Debian), rsyslogd
//! (Debian, through bootstrap) and Synapse (the Python Package Index). When one of them
//! cannot be had, the error is an [`Unavailable`], which a caller such as `cargo xtask test`
//! reports as a skipped scenario; any other error is a failure.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::Result;

use super::{nginx, rsyslog, synapse};
use crate::cmd;

/// Something the scenario needs could not be installed or found.
#[derive(Debug)]
pub struct Unavailable {
    /// What is missing: "nginx (Debian package)", "matrix-synapse", "rsyslogd (Debian package
    /// rsyslog)", ...
    pub what: String,
    pub why: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "e2e scenario unavailable: could not install {}: {}",
            self.what, self.why
        )
    }
}

impl std::error::Error for Unavailable {}

/// The [`Unavailable`] in `e`'s chain, if the scenario failed for want of a prerequisite.
pub fn unavailable(e: &anyhow::Error) -> Option<&Unavailable> {
    e.chain().find_map(|c| c.downcast_ref::<Unavailable>())
}

fn missing(what: &str, why: impl fmt::Display) -> anyhow::Error {
    Unavailable {
        what: what.to_owned(),
        why: why.to_string(),
    }
    .into()
}

/// Everything installed.
pub struct Installed {
    pub synapse: synapse::Install,
    pub rsyslogd: PathBuf,
}

/// Installs (or finds) nginx, rsyslogd and the pinned Synapse in `dir/venv`.
pub fn prerequisites(dir: &Path) -> Result<Installed> {
    if !cmd::is_root() {
        return Err(missing(
            "the scenario's servers and agent",
            "root is needed (apt-get, the agent's BPF programs): run `sudo cargo xtask e2e`",
        ));
    }
    cmd::step(
        "nginx (Debian package; the host's service is not started)",
        nginx::install,
    )
    .map_err(|e| missing("nginx (Debian package)", format!("{e:#}")))?;
    let rsyslogd = rsyslog::binary().ok_or_else(|| {
        missing(
            "rsyslogd (Debian package rsyslog)",
            "not found: `cargo xtask bootstrap` installs it",
        )
    })?;
    let venv = dir.join("venv");
    let synapse = cmd::step(
        &format!(
            "matrix-synapse {} (pinned dependencies) in {}",
            synapse::VERSION,
            venv.display()
        ),
        || {
            synapse::install(&venv).map_err(|e| match e {
                synapse::InstallError::Unreachable(why) => missing("matrix-synapse", why),
                synapse::InstallError::Failed(e) => e,
            })
        },
    )?;
    Ok(Installed { synapse, rsyslogd })
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn an_unavailable_prerequisite_is_found_under_context() {
        let e = Err::<(), _>(missing(
            "nginx (Debian package)",
            "apt-get install nginx: 404",
        ))
        .context("step failed: nginx")
        .context("e2e")
        .unwrap_err();
        let u = unavailable(&e).expect("found in the chain");
        assert_eq!(u.what, "nginx (Debian package)");
        assert!(u.to_string().contains("could not install nginx"));
        let other = anyhow::anyhow!("the agent did not alert");
        assert!(unavailable(&other.context("e2e")).is_none());
    }
}
