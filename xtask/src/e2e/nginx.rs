//! A real nginx (Debian's package) in front of Synapse, as homeservers are deployed: its own
//! configuration and prefix under `target/e2e/nginx`, one loopback port, the Matrix client
//! API proxied to Synapse. The host's `/etc/nginx` and its service are never touched.

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::daemon::Daemon;
use crate::{bootstrap, cmd};

pub const PACKAGE: &str = "nginx";
pub const BINARY: &str = "/usr/sbin/nginx";

/// Installs Debian's nginx if it is missing, with the host's service kept stopped
/// (`policy-rc.d`, as for rsyslog in bootstrap).
pub fn install() -> Result<()> {
    bootstrap::apt_install(&[PACKAGE])?;
    anyhow::ensure!(
        Path::new(BINARY).exists(),
        "{BINARY} missing after installing {PACKAGE} (root and apt-get are needed)"
    );
    Ok(())
}

/// What the configuration needs.
pub struct Settings<'a> {
    /// Directory for the pid file, logs and temporary files.
    pub prefix: &'a Path,
    pub port: u16,
    pub upstream_port: u16,
    /// Worker user, as Debian's own configuration sets it (`www-data`) when nginx runs as
    /// root; `None` leaves nginx's default.
    pub user: Option<&'a str>,
}

/// The whole `nginx.conf`: one server on 127.0.0.1:`port` proxying `/_matrix` and
/// `/_synapse/client` (the paths Synapse's reverse-proxy guide exposes) to Synapse; bodies up
/// to 100 MB (Synapse's own `max_upload_size` here).
pub fn config(s: &Settings<'_>) -> String {
    let p = s.prefix.display();
    let user = s.user.map(|u| format!("user {u};\n")).unwrap_or_default();
    format!(
        "# Written by `cargo xtask e2e-setup`.
{user}worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 512;
}}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    server {{
        listen 127.0.0.1:{port};
        server_name e2e.test;
        client_max_body_size 100M;
        location ~ ^(/_matrix|/_synapse/client) {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Host $host;
        }}
    }}
}}
",
        port = s.port,
        upstream = s.upstream_port,
    )
}

/// Writes the configuration and starts nginx in the foreground (`daemon off;`) so that the
/// master is this process's child and is stopped by its pid.
pub fn start(s: &Settings<'_>) -> Result<Daemon> {
    fs::create_dir_all(s.prefix.join("tmp"))?;
    let conf = s.prefix.join("nginx.conf");
    fs::write(&conf, config(s)).with_context(|| format!("writing {}", conf.display()))?;
    let error_log = s.prefix.join("error.log");
    let base = |c: &mut Command| {
        c.arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(s.prefix)
            .arg("-e")
            .arg(&error_log);
    };
    let mut test = Command::new(BINARY);
    base(&mut test);
    cmd::run(test.arg("-t").arg("-q")).context("nginx -t refused the configuration")?;
    let mut run = Command::new(BINARY);
    base(&mut run);
    run.args(["-g", "daemon off;"]);
    Daemon::spawn("nginx", &mut run, &s.prefix.join("nginx.stdout.log"))
}

pub const START_TIMEOUT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_and_proxies_matrix() {
        let c = config(&Settings {
            prefix: Path::new("/t/nginx"),
            port: 4000,
            upstream_port: 5000,
            user: Some("www-data"),
        });
        assert!(c.contains("\nuser www-data;\n"));
        assert!(c.contains("listen 127.0.0.1:4000;"));
        assert_eq!(c.matches("listen ").count(), 1, "one listener");
        assert!(c.contains("proxy_pass http://127.0.0.1:5000;"));
        assert!(c.contains("location ~ ^(/_matrix|/_synapse/client)"));
        assert!(c.contains("client_max_body_size 100M;"));
        assert!(c.contains("pid /t/nginx/nginx.pid;"));
        assert!(
            !c.contains("/etc/nginx") && !c.contains("/var/log"),
            "nothing of the host's"
        );
        assert_eq!(c.matches('{').count(), c.matches('}').count());
        let no_user = config(&Settings {
            prefix: Path::new("/t"),
            port: 1,
            upstream_port: 2,
            user: None,
        });
        assert!(!no_user.contains("user "));
    }
}
