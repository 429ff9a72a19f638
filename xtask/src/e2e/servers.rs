//! Synapse and nginx together, as the scenario runs them: generated and patched
//! configuration, both started and ready, and restarted in place (same ports and data, new
//! processes) as an operator's `systemctl restart` would.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{client, daemon, daemon::Daemon, nginx, synapse};
use crate::cmd;

/// True once `GET {base}/_matrix/client/versions` answers 200.
pub fn versions_ok(base: &str) -> bool {
    client::agent()
        .get(&format!("{base}/_matrix/client/versions"))
        .call()
        .is_ok_and(|r| r.status().is_success())
}

/// Both servers, running; dropping this stops them (nginx first).
pub struct Servers {
    pub nginx: Daemon,
    pub synapse: Daemon,
    /// Synapse itself (the admin API is not proxied).
    pub admin_base: String,
    /// nginx: what clients use.
    pub base: String,
    pub secret: String,
    pub hs_dir: PathBuf,
    pub synapse_start: Duration,
    pub nginx_start: Duration,
    python: PathBuf,
    nginx_prefix: PathBuf,
    nginx_port: u16,
    synapse_port: u16,
    nginx_user: Option<&'static str>,
}

/// One restart of both servers.
#[derive(Debug, serde::Serialize)]
pub struct Restart {
    pub old_pids: [u32; 2],
    pub new_pids: [u32; 2],
    /// nginx stopped -> nginx answering again.
    pub down_secs: f64,
}

impl Servers {
    /// Generates Synapse's configuration in `dir/synapse` and starts Synapse, then nginx in
    /// `dir/nginx`, each on a free loopback port.
    pub fn start(dir: &Path, python: &Path) -> Result<Self> {
        let synapse_port = daemon::free_port()?;
        // nginx listens where a web server would: below the clients' ephemeral ports.
        let nginx_port = daemon::free_service_port()?;
        let admin_base = format!("http://127.0.0.1:{synapse_port}");
        let base = format!("http://127.0.0.1:{nginx_port}");

        let hs_dir = dir.join("synapse");
        let secret = cmd::step("generate and patch homeserver.yaml", || {
            let layout = synapse::generate(python, &hs_dir)?;
            let generated = fs::read_to_string(layout.config())?;
            let patched = synapse::patch_config(
                &generated,
                &synapse::Settings {
                    port: synapse_port,
                    data_dir: &hs_dir,
                    public_baseurl: &format!("{base}/"),
                },
            )?;
            fs::write(layout.config(), &patched)?;
            synapse::shared_secret(&patched)
        })?;
        // As Debian's own nginx.conf: workers as www-data when the master runs as root.
        let nginx_user = (cmd::is_root()
            && fs::read_to_string("/etc/passwd")
                .is_ok_and(|p| p.lines().any(|l| l.starts_with("www-data:"))))
        .then_some("www-data");
        let (synapse, synapse_start) = start_synapse(python, &hs_dir, &admin_base)?;
        let nginx_prefix = dir.join("nginx");
        let (nginx, nginx_start) =
            start_nginx(&nginx_prefix, nginx_port, synapse_port, nginx_user, &base)?;
        Ok(Self {
            nginx,
            synapse,
            admin_base,
            base,
            secret,
            hs_dir,
            synapse_start,
            nginx_start,
            python: python.to_owned(),
            nginx_prefix,
            nginx_port,
            synapse_port,
            nginx_user,
        })
    }

    /// Stops nginx and Synapse by their pids and starts them again on the same ports and
    /// data.
    pub fn restart(&mut self) -> Result<Restart> {
        let old_pids = [self.synapse.pid(), self.nginx.pid()];
        let started = Instant::now();
        self.nginx.stop();
        self.synapse.stop();
        (self.synapse, self.synapse_start) =
            start_synapse(&self.python, &self.hs_dir, &self.admin_base)?;
        (self.nginx, self.nginx_start) = start_nginx(
            &self.nginx_prefix,
            self.nginx_port,
            self.synapse_port,
            self.nginx_user,
            &self.base,
        )?;
        Ok(Restart {
            old_pids,
            new_pids: [self.synapse.pid(), self.nginx.pid()],
            down_secs: started.elapsed().as_secs_f64(),
        })
    }
}

fn start_synapse(python: &Path, hs_dir: &Path, admin_base: &str) -> Result<(Daemon, Duration)> {
    let layout = synapse::Layout {
        dir: hs_dir.to_owned(),
    };
    let mut d = synapse::start(python, &layout)?;
    let took = cmd::step(&format!("Synapse answers on {admin_base}"), || {
        d.wait_until(synapse::START_TIMEOUT, || versions_ok(admin_base))
    })?;
    Ok((d, took))
}

fn start_nginx(
    prefix: &Path,
    port: u16,
    upstream_port: u16,
    user: Option<&str>,
    base: &str,
) -> Result<(Daemon, Duration)> {
    let mut d = nginx::start(&nginx::Settings {
        prefix,
        port,
        upstream_port,
        user,
    })?;
    let took = cmd::step(&format!("nginx proxies {base} to Synapse"), || {
        d.wait_until(nginx::START_TIMEOUT, || versions_ok(base))
    })?;
    Ok((d, took))
}
