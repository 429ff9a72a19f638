//! `cargo xtask e2e-setup`: the ground of the end-to-end scenario. A real Synapse (from the
//! Python Package Index) behind a real nginx (Debian's), both on loopback only and started by
//! this process, populated through the client-server API, then read back in bulk by one user
//! as in the Tchap incident. Prints and writes (`target/e2e/report.json`) what it measured;
//! stops both servers by their pids at the end, also on failure.

mod client;
mod daemon;
mod media;
mod nginx;
mod scenario;
mod synapse;

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use self::{daemon::Daemon, scenario::Amounts};
use crate::cmd;

/// `cargo xtask e2e-setup` options.
#[derive(clap::Args)]
pub struct Args {
    /// Text messages to post.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Images to upload and post.
    #[arg(long, default_value_t = 100)]
    media: usize,
    /// Users posting at once.
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Smallest image, bytes.
    #[arg(long, default_value_t = 50_000)]
    media_min: usize,
    /// Largest image, bytes.
    #[arg(long, default_value_t = 2_000_000)]
    media_max: usize,
    /// Seconds to keep both servers up after the read-back (to look at them by hand).
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
}

impl Args {
    fn amounts(&self) -> Amounts {
        Amounts {
            users: self.users,
            messages: self.messages,
            media: self.media,
            media_min: self.media_min,
            media_max: self.media_max,
        }
    }
}

/// True once `GET {base}/_matrix/client/versions` answers 200.
fn versions_ok(base: &str) -> bool {
    client::agent()
        .get(&format!("{base}/_matrix/client/versions"))
        .call()
        .is_ok_and(|r| r.status().is_success())
}

fn facts_json(pid: u32) -> Value {
    match daemon::facts(pid) {
        Ok(f) => {
            json!({"pid": f.pid, "comm": f.comm, "cmdline": f.cmdline, "exe": f.exe, "user": f.user})
        }
        Err(e) => json!({"pid": pid, "error": format!("{e:#}")}),
    }
}

/// Both servers, running; dropping this stops them (nginx first).
struct Servers {
    nginx: Daemon,
    synapse: Daemon,
    /// Synapse itself (the admin API is not proxied).
    admin_base: String,
    /// nginx: what clients use.
    base: String,
    secret: String,
    hs_dir: PathBuf,
    synapse_start: Duration,
    nginx_start: Duration,
}

fn start_servers(dir: &Path, python: &Path) -> Result<Servers> {
    let synapse_port = daemon::free_port()?;
    let nginx_port = daemon::free_port()?;
    let admin_base = format!("http://127.0.0.1:{synapse_port}");
    let base = format!("http://127.0.0.1:{nginx_port}");

    let hs_dir = dir.join("synapse");
    let (layout, secret) = cmd::step("generate and patch homeserver.yaml", || {
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
        Ok((layout, synapse::shared_secret(&patched)?))
    })?;

    let mut synapse = synapse::start(python, &layout)?;
    let synapse_start = cmd::step(&format!("Synapse answers on {admin_base}"), || {
        synapse.wait_until(synapse::START_TIMEOUT, || versions_ok(&admin_base))
    })?;

    // As Debian's own nginx.conf: workers as www-data when the master runs as root.
    let user = (cmd::is_root()
        && fs::read_to_string("/etc/passwd")
            .is_ok_and(|p| p.lines().any(|l| l.starts_with("www-data:"))))
    .then_some("www-data");
    let mut nginx = nginx::start(&nginx::Settings {
        prefix: &dir.join("nginx"),
        port: nginx_port,
        upstream_port: synapse_port,
        user,
    })?;
    let nginx_start = cmd::step(&format!("nginx proxies {base} to Synapse"), || {
        nginx.wait_until(nginx::START_TIMEOUT, || versions_ok(&base))
    })?;
    Ok(Servers {
        nginx,
        synapse,
        admin_base,
        base,
        secret,
        hs_dir,
        synapse_start,
        nginx_start,
    })
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What was read back is what was written.
fn check(pop: &scenario::Population, read: &scenario::ReadBack) -> Result<()> {
    ensure!(
        read.text_events == pop.messages && read.image_events == pop.media,
        "read back {} texts and {} images, {} and {} were posted",
        read.text_events,
        read.image_events,
        pop.messages,
        pop.media
    );
    ensure!(
        read.media_bytes == pop.media_bytes,
        "downloaded {} media bytes, {} were uploaded",
        read.media_bytes,
        pop.media_bytes
    );
    Ok(())
}

pub fn setup(root: &Path, args: &Args) -> Result<()> {
    let dir = root.join("target").join("e2e");
    fs::create_dir_all(&dir)?;
    cmd::step(
        "nginx (Debian package; the host's service is not started)",
        nginx::install,
    )?;
    let venv = dir.join("venv");
    let install = cmd::step(
        &format!("matrix-synapse {} in {}", synapse::VERSION, venv.display()),
        || synapse::install(&venv),
    )?;
    let mut s = start_servers(&dir, &install.python)?;
    let processes = json!({
        "synapse": facts_json(s.synapse.pid()),
        "nginx_master": facts_json(s.nginx.pid()),
        "nginx_workers": daemon::children(s.nginx.pid()).into_iter().map(facts_json).collect::<Vec<_>>(),
    });
    eprintln!("    processes: {processes:#}");

    let cpu = |s: &Servers| {
        let workers: f64 = daemon::children(s.nginx.pid())
            .into_iter()
            .filter_map(daemon::cpu_secs)
            .sum();
        (daemon::cpu_secs(s.synapse.pid()).unwrap_or(0.0), workers)
    };
    let cpu_start = cpu(&s);
    let pop = cmd::step("populate through nginx", || {
        scenario::populate(&s.base, &s.admin_base, &s.secret, args.amounts())
    })?;
    let cpu_populated = cpu(&s);
    let read = cmd::step("read everything back through nginx", || {
        scenario::read_back(&s.base, &s.admin_base, &s.secret, &pop.room)
    })?;
    check(&pop, &read)?;
    let cpu_read = cpu(&s);
    let rss_kb = vm_rss_kb(s.synapse.pid());
    if args.hold_secs > 0 {
        eprintln!(
            "==> holding both servers for {} s: Synapse {}, nginx {}",
            args.hold_secs, s.admin_base, s.base
        );
        thread::sleep(Duration::from_secs(args.hold_secs));
    }
    let nginx_stop = s.nginx.stop();
    let synapse_stop = s.synapse.stop();

    let report = json!({
        "synapse_version": synapse::VERSION,
        "python": install.python.display().to_string(),
        "pip_install_secs": install.pip_secs,
        "venv_bytes": install.venv_bytes,
        "synapse_start_secs": s.synapse_start.as_secs_f64(),
        "synapse_rss_kb_after_run": rss_kb,
        "nginx_start_secs": s.nginx_start.as_secs_f64(),
        "stop_secs": {"nginx": nginx_stop.as_secs_f64(), "synapse": synapse_stop.as_secs_f64()},
        "processes": processes,
        "population": {
            "users": args.users,
            "messages": pop.messages,
            "message_secs": pop.message_secs,
            "messages_per_sec": pop.messages as f64 / pop.message_secs,
            "media": pop.media,
            "media_bytes": pop.media_bytes,
            "media_secs": pop.media_secs,
            "total_secs": pop.secs,
            "synapse_cpu_secs": cpu_populated.0 - cpu_start.0,
            "nginx_workers_cpu_secs": cpu_populated.1 - cpu_start.1,
        },
        "read_back": {
            "pages": read.pages,
            "page_bytes": read.page_bytes,
            "text_events": read.text_events,
            "image_events": read.image_events,
            "media_bytes": read.media_bytes,
            "media_secs": read.media_secs,
            "total_secs": read.secs,
            "bytes_served": read.page_bytes + read.media_bytes,
            "synapse_cpu_secs": cpu_read.0 - cpu_populated.0,
            "nginx_workers_cpu_secs": cpu_read.1 - cpu_populated.1,
        },
        "database_bytes": fs::metadata(s.hs_dir.join("homeserver.db")).map(|m| m.len()).ok(),
        "media_store_bytes": synapse::dir_bytes(&s.hs_dir.join("media_store")),
    });
    let out = dir.join("report.json");
    fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("==> report written to {}", out.display());
    Ok(())
}
