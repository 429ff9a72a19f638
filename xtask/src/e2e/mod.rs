//! The end-to-end scenario on a real homeserver. `cargo xtask e2e` (module `run`) is the
//! product's acceptance test: the agent watching Synapse and nginx through normal use, a
//! restart and an account takeover's bulk download, its alert checked at a real rsyslogd.
//! `cargo xtask e2e-setup` (here) is its ground alone, without the agent: a real Synapse
//! (from the Python Package Index) behind a real nginx (Debian's), both on loopback only and
//! started by this process, populated through the client-server API, then read back in bulk
//! by one user as in the Tchap incident; it prints and writes (`target/e2e/report.json`) what
//! it measured. Every process started is stopped by its pid at the end, also on failure.

mod agent_config;
mod client;
mod containment;
mod daemon;
mod egress_agent;
mod latency;
mod media;
mod nginx;
mod options;
mod prereq;
mod report;
mod rsyslog;
mod run;
mod scenario;
mod servers;
mod source_addr;
mod synapse;
mod traffic;
mod verdict;
mod watch;

use std::{fs, path::Path, thread, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

pub use self::{
    options::{Args as RunArgs, Options},
    prereq::unavailable,
    run::run,
};
use self::{scenario::Amounts, servers::Servers};
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

/// `cargo xtask e2e`: runs the scenario and says how it went; a missing prerequisite is
/// named as such.
pub fn command(root: &Path, tools: &crate::bootstrap::Tools, opts: &Options) -> Result<()> {
    match run(root, tools, opts) {
        Ok(report) => {
            eprintln!("==> e2e ({}) passed: {}", opts.name, report.headline());
            Ok(())
        }
        Err(e) => {
            if let Some(u) = unavailable(&e) {
                eprintln!("==> e2e could not run here: {u}");
            }
            Err(e)
        }
    }
}

fn facts_json(pid: u32) -> Value {
    match daemon::facts(pid) {
        Ok(f) => {
            json!({"pid": f.pid, "comm": f.comm, "cmdline": f.cmdline, "exe": f.exe, "user": f.user})
        }
        Err(e) => json!({"pid": pid, "error": format!("{e:#}")}),
    }
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
        || {
            synapse::install(&venv).map_err(|e| match e {
                synapse::InstallError::Unreachable(why) => anyhow::anyhow!(why),
                synapse::InstallError::Failed(e) => e,
            })
        },
    )?;
    let mut s = Servers::start(&dir, &install.python)?;
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
    let rss_kb = daemon::rss_kb(s.synapse.pid());
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
