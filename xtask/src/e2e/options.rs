//! How big and how long the end-to-end scenario is: the full preset (`cargo xtask e2e`) and
//! the short one (`--short`, what `cargo xtask test` runs).

use std::time::Duration;

/// How big and how long.
#[derive(Clone, Debug)]
pub struct Options {
    pub name: &'static str,
    pub messages: usize,
    pub media: usize,
    pub media_min: usize,
    pub media_max: usize,
    /// Normal clients, each on its own address from 127.0.0.10.
    pub clients: u8,
    pub learning: Duration,
    /// Normal traffic after learning (the restart at its start), before the attack.
    pub after_learning: Duration,
    /// The alert must reach rsyslogd within this of the attack's start.
    pub alert_within: Duration,
    /// Normal traffic kept going after the alert, to catch later false alerts.
    pub grace: Duration,
    /// Normal clients move to a new address (and log in again) about this often.
    pub roam_every: Option<Duration>,
    /// A patient attacker after the grace period.
    pub patient: Option<PatientOptions>,
    /// The agent's `containment.mode` for the service.
    pub containment: ContainMode,
    /// The attacker keeps downloading until its deadline (3 minutes), not just once.
    pub persist: bool,
}

/// `containment.mode` in the run (`off` is not a scenario: it only stops deciding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainMode {
    /// The shipped default: decided, stored and exported as "would throttle"; no packet
    /// touched.
    DryRun,
    /// The kernel throttles the attacker once alerted.
    Enforce,
}

impl ContainMode {
    /// As the agent's configuration spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DryRun => "dry_run",
            Self::Enforce => "enforce",
        }
    }
}

/// The patient attacker: paced to `per_minute`, under the 1-minute bar; it must be alerted
/// within `alert_within` of its start.
#[derive(Clone, Copy, Debug)]
pub struct PatientOptions {
    pub per_minute: u64,
    pub alert_within: Duration,
}

impl Options {
    /// The full scenario: a room of 2000 messages and 160 images (50 KB-2 MB, about 85 MB),
    /// 5 minutes of learning, 2 of normal traffic after it.
    pub fn full() -> Self {
        Self {
            name: "full",
            messages: 2000,
            media: 160,
            media_min: 50_000,
            media_max: 2_000_000,
            clients: 10,
            learning: Duration::from_secs(300),
            after_learning: Duration::from_secs(120),
            alert_within: Duration::from_secs(60),
            grace: Duration::from_secs(20),
            // Mobile clients: a new address every minute or so (a few per client per run).
            roam_every: Some(Duration::from_secs(60)),
            // Half the 1-minute floor (48 MiB): the 10-minute floor (128 MiB) is crossed
            // after about 5.3 minutes.
            patient: Some(PatientOptions {
                per_minute: 24 << 20,
                alert_within: Duration::from_secs(480),
            }),
            // The containment phase: an attacker who keeps downloading for 3 minutes, throttled
            // once alerted (`--containment dry-run` for the same run without it).
            containment: ContainMode::Enforce,
            persist: true,
        }
    }

    /// For `cargo xtask test`: about 3 minutes with pip's install. 60 images of 300 KB-3 MB
    /// (about 70 MB, log-uniform) so that the attack is well over the 48 MiB a minute of
    /// `peer_outlier`'s floor (the clients' bar after so short a learning), in seconds.
    pub fn short() -> Self {
        Self {
            name: "short",
            messages: 300,
            media: 60,
            media_min: 300_000,
            media_max: 3_000_000,
            clients: 6,
            learning: Duration::from_secs(60),
            after_learning: Duration::from_secs(30),
            alert_within: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            // The short run keeps its shape (CI time): fixed clients, one attacker.
            roam_every: None,
            patient: None,
            // The shipped default: the containment is decided and exported, nothing touched.
            containment: ContainMode::DryRun,
            persist: false,
        }
    }
}

/// `cargo xtask e2e` options.
#[derive(clap::Args)]
pub struct Args {
    /// The short preset (what `cargo xtask test` runs): about 3 minutes.
    #[arg(long)]
    short: bool,
    /// Learning period, seconds (overrides the preset).
    #[arg(long)]
    learning_secs: Option<u64>,
    /// Normal traffic after learning and before the attack, seconds (overrides the preset).
    #[arg(long)]
    after_secs: Option<u64>,
    /// `containment.mode` for the homeserver (overrides the preset: full enforces, short
    /// runs the shipped `dry_run`).
    #[arg(long, value_enum)]
    containment: Option<ContainMode>,
}

impl Args {
    pub fn options(&self) -> Options {
        let mut o = if self.short {
            Options::short()
        } else {
            Options::full()
        };
        if let Some(s) = self.learning_secs {
            o.learning = Duration::from_secs(s);
        }
        if let Some(s) = self.after_secs {
            o.after_learning = Duration::from_secs(s);
        }
        if let Some(m) = self.containment {
            o.containment = m;
        }
        o
    }
}
