//! The containment book: turns alert events into containments under the safety rails,
//! renews them while their alert stays open, lifts them when it ends, expires them by TTL,
//! and says which ones the kernel must enforce. Pure: no clock, no kernel, no database.

use std::collections::{BTreeMap, HashSet};

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};

use super::{
    record::{
        Action, Containment, ContainmentEvent, ContainmentEventKind, ContainmentState, Decider,
        Enforcement, Start,
    },
    settings::{ActionKind, ContainmentConfig, Mode},
};
use crate::detect::{
    alerts::{AlertEvent, AlertEventKind, AlertStatus, Peer, Suppression},
    classes::DestinationClass,
};

/// Why a containment was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    KillSwitch,
    /// The service is not one of `[[services]]` (an unmatched process's group).
    NotConfigured,
    /// Internal, allowlisted or learned: never contained.
    Protected(DestinationClass),
    /// `containment.max_per_service` reached.
    TooMany,
}

impl Refusal {
    pub const fn name(self) -> &'static str {
        match self {
            Self::KillSwitch => "kill_switch",
            Self::NotConfigured => "service_not_configured",
            Self::Protected(DestinationClass::Internal) => "internal_destination",
            Self::Protected(DestinationClass::Allowlisted) => "allowlisted_destination",
            Self::Protected(_) => "learned_destination",
            Self::TooMany => "max_per_service",
        }
    }

    pub fn explain(self, max: u32) -> String {
        match self {
            Self::KillSwitch => "containment.kill_switch is on".to_owned(),
            Self::NotConfigured => {
                "only services configured in [[services]] are contained".to_owned()
            }
            Self::Protected(class) => {
                format!("the destination is {}: never contained", class.name())
            }
            Self::TooMany => {
                format!("the service already has {max} active containments (max_per_service)")
            }
        }
    }
}

/// Classes the rails protect.
pub fn protected(class: DestinationClass) -> bool {
    matches!(
        class,
        DestinationClass::Internal | DestinationClass::Allowlisted | DestinationClass::Learned
    )
}

/// The rails every new containment passes, the policy's and an operator's alike.
pub fn check_rails(
    settings: &ContainmentConfig,
    configured: bool,
    class: DestinationClass,
    active_for_service: usize,
) -> Result<(), Refusal> {
    if settings.kill_switch {
        return Err(Refusal::KillSwitch);
    }
    if !configured {
        return Err(Refusal::NotConfigured);
    }
    if protected(class) {
        return Err(Refusal::Protected(class));
    }
    if active_for_service >= settings.max_per_service() as usize {
        return Err(Refusal::TooMany);
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainStats {
    pub started: u64,
    pub renewed: u64,
    pub lifted: u64,
    pub expired: u64,
    pub refused: BTreeMap<&'static str, u64>,
}

pub struct ContainmentBook {
    settings: ContainmentConfig,
    configured: HashSet<String>,
    /// Whether the kernel accepted the enforcing programs: without them, `enforce` decides
    /// in dry run (the containments say so).
    kernel_enforces: bool,
    active: Vec<Containment>,
    /// Open alerts whose containment an operator lifted: the policy does not contain their
    /// peer again while they stay open (the operator's call stands over the next update).
    spared: HashSet<uuid::Uuid>,
    /// Bumped whenever the set the kernel must enforce changes.
    generation: u64,
    pub stats: ContainStats,
}

impl ContainmentBook {
    pub fn new(settings: ContainmentConfig, services: impl IntoIterator<Item = String>) -> Self {
        Self {
            settings,
            configured: services.into_iter().collect(),
            kernel_enforces: false,
            active: Vec::new(),
            spared: HashSet::new(),
            generation: 0,
            stats: ContainStats::default(),
        }
    }

    pub fn settings(&self) -> &ContainmentConfig {
        &self.settings
    }

    pub fn set_kernel_enforces(&mut self, yes: bool) {
        self.kernel_enforces = yes;
    }

    /// The enforcement a containment started now gets.
    pub fn enforcement(&self) -> Enforcement {
        if self.settings.mode == Mode::Enforce && self.kernel_enforces {
            Enforcement::Enforced
        } else {
            Enforcement::DryRun
        }
    }

    pub fn is_configured(&self, service: &str) -> bool {
        self.configured.contains(service)
    }

    pub fn active(&self) -> &[Containment] {
        &self.active
    }

    pub fn active_for(&self, service: &str) -> usize {
        self.active.iter().filter(|c| c.service == service).count()
    }

    /// Changes with every change of what the kernel must enforce.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The containments the kernel must apply now (none unless enforcing).
    pub fn enforced(&self) -> impl Iterator<Item = &Containment> {
        self.active
            .iter()
            .filter(|c| c.enforcement == Enforcement::Enforced)
    }

    /// New settings (a reload). A changed mode, or the kill switch, lifts every active
    /// containment: each was decided under the old settings, and the next alert update
    /// decides again under the new ones.
    pub fn reconfigure(
        &mut self,
        settings: ContainmentConfig,
        services: impl IntoIterator<Item = String>,
        now: Timestamp,
        out: &mut Vec<ContainmentEvent>,
    ) {
        let reason = if settings.kill_switch && !self.settings.kill_switch {
            Some("containment.kill_switch turned on".to_owned())
        } else if settings.mode != self.settings.mode {
            Some(format!(
                "containment.mode changed to {}",
                settings.mode.name()
            ))
        } else {
            None
        };
        self.settings = settings;
        self.configured = services.into_iter().collect();
        if let Some(reason) = reason {
            self.lift_where(|_| true, &reason, &Decider::Policy, now, out);
        }
        // A service no longer configured keeps nothing contained.
        let configured = self.configured.clone();
        self.lift_where(
            |c| !configured.contains(&c.service),
            "the service is no longer in [[services]]",
            &Decider::Policy,
            now,
            out,
        );
    }

    /// Answers an alert event: starts, renews or lifts.
    pub fn on_alert(&mut self, e: &AlertEvent, now: Timestamp, out: &mut Vec<ContainmentEvent>) {
        let a = &e.alert;
        match e.event {
            AlertEventKind::Resolved => {
                let id = a.id;
                self.spared.remove(&id);
                self.lift_where(
                    |c| c.alert_id == Some(id),
                    "its alert resolved",
                    &Decider::Policy,
                    now,
                    out,
                );
                return;
            }
            AlertEventKind::Suppressed => {
                let id = a.id;
                self.spared.remove(&id);
                self.lift_where(
                    |c| c.alert_id == Some(id),
                    "its alert was suppressed",
                    &Decider::Policy,
                    now,
                    out,
                );
                return;
            }
            AlertEventKind::Acknowledged => return,
            AlertEventKind::Opened | AlertEventKind::Updated => {}
        }
        if self.settings.mode == Mode::Off
            || a.status != AlertStatus::Open
            || self.spared.contains(&a.id)
        {
            return;
        }
        let Some((peer, target, action)) = self.decision(e) else {
            return;
        };
        let ttl = SignedDuration::try_from(self.settings.ttl()).unwrap_or(SignedDuration::ZERO);
        let expires_at = now.checked_add(ttl).unwrap_or(now);
        // Already contained (the same target, or a prefix holding it): renewed.
        if let Some(c) = self
            .active
            .iter_mut()
            .find(|c| c.service == a.service && c.target.contains(&target))
        {
            if !self.settings.kill_switch {
                c.renewed_at = now;
                c.expires_at = c.expires_at.max(expires_at);
                c.renewals += 1;
                self.stats.renewed += 1;
                out.push(ContainmentEvent {
                    event: ContainmentEventKind::Renewed,
                    at: now,
                    containment: c.clone(),
                });
            }
            return;
        }
        if let Err(refusal) = check_rails(
            &self.settings,
            self.is_configured(&a.service),
            peer.class,
            self.active_for(&a.service),
        ) {
            *self.stats.refused.entry(refusal.name()).or_default() += 1;
            tracing::warn!(
                alert = %a.id,
                service = %a.service,
                peer = %target,
                refused = refusal.name(),
                "containment not started: {}",
                refusal.explain(self.settings.max_per_service())
            );
            return;
        }
        let c = Containment::start(Start {
            service: a.service.clone(),
            target,
            action,
            enforcement: self.enforcement(),
            alert: Some((a.id, a.rule)),
            reason: format!("{}: {}", a.title, crate::alert_output::summary(a)),
            decided_by: Decider::Policy,
            at: now,
            expires_at,
        });
        self.start(c, now, out);
    }

    /// What `[[containment.actions]]` says to do about the alert's peer: the peer, its target
    /// (the address, or the prefix group's network) and the action; none without an entry.
    fn decision<'a>(&self, e: &'a AlertEvent) -> Option<(&'a Peer, IpNet, Action)> {
        let a = &e.alert;
        let peer = a.peer.as_ref()?;
        let choice = self.settings.action_for(a.rule, a.severity)?;
        let target = match peer.prefix_len {
            Some(len) => IpNet::new(peer.addr, len).ok()?.trunc(),
            None => IpNet::from(peer.addr),
        };
        let action = match (choice.action.get_ref(), &choice.rate) {
            (ActionKind::Throttle, Some(rate)) => Action::Throttle {
                bytes_per_sec: rate.get_ref().as_u64(),
            },
            _ => Action::Block,
        };
        Some((peer, target, action))
    }

    /// Starts `c` (the policy's, or an operator's that passed the rails).
    fn start(&mut self, c: Containment, now: Timestamp, out: &mut Vec<ContainmentEvent>) {
        self.stats.started += 1;
        if c.enforcement == Enforcement::Enforced {
            self.generation += 1;
        }
        out.push(ContainmentEvent {
            event: ContainmentEventKind::Started,
            at: now,
            containment: c.clone(),
        });
        self.active.push(c);
    }

    /// Takes in a containment already stored as started (by `contain add`, or before a
    /// restart). One past its TTL is expired at the next [`tick`](Self::tick).
    pub fn adopt(&mut self, mut c: Containment) {
        if !c.is_active() || self.active.iter().any(|a| a.id == c.id) {
            return;
        }
        // Enforced only if this agent enforces: a restart into dry run touches nothing.
        if c.enforcement == Enforcement::Enforced && self.enforcement() != Enforcement::Enforced {
            c.enforcement = Enforcement::DryRun;
        }
        if c.enforcement == Enforcement::Enforced {
            self.generation += 1;
        }
        self.active.push(c);
    }

    /// Forgets an active containment that an operator lifted (`contain lift` wrote the
    /// event); its alert, if any, is spared from now on. Returns whether it was active here.
    pub fn forget(&mut self, id: uuid::Uuid) -> bool {
        let Some(i) = self.active.iter().position(|c| c.id == id) else {
            return false;
        };
        let c = self.active.swap_remove(i);
        if let Some(alert) = c.alert_id {
            self.spared.insert(alert);
        }
        self.generation += 1;
        true
    }

    /// The policy leaves `alert`'s peer alone while the alert stays open (an operator lifted
    /// its containment before a restart).
    pub fn spare(&mut self, alert: uuid::Uuid) {
        self.spared.insert(alert);
    }

    /// Expires what is past its TTL.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<ContainmentEvent>) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].expires_at > now {
                i += 1;
                continue;
            }
            let mut c = self.active.swap_remove(i);
            c.state = ContainmentState::Expired;
            c.ended_at = Some(now);
            c.end_reason = Some("its TTL ran out without its alert renewing it".to_owned());
            c.ended_by = Some(Decider::Policy);
            self.end(c, ContainmentEventKind::Expired, now, out);
        }
    }

    /// Lifts the containment `id`; none if it is not active.
    pub fn lift(
        &mut self,
        id: uuid::Uuid,
        reason: &str,
        by: &Decider,
        now: Timestamp,
        out: &mut Vec<ContainmentEvent>,
    ) -> bool {
        let before = out.len();
        self.lift_where(|c| c.id == id, reason, by, now, out);
        out.len() != before
    }

    /// An operator learned `addr` for `service` (`alerts ack --learn`): never contained.
    pub fn on_learned(
        &mut self,
        service: &str,
        addr: std::net::IpAddr,
        now: Timestamp,
        out: &mut Vec<ContainmentEvent>,
    ) {
        self.lift_where(
            |c| c.service == service && c.covers(addr),
            "the operator learned the destination",
            &Decider::Policy,
            now,
            out,
        );
    }

    /// An operator suppressed alerts: what they cover is no longer contained.
    pub fn on_suppression(
        &mut self,
        s: &Suppression,
        now: Timestamp,
        out: &mut Vec<ContainmentEvent>,
    ) {
        self.lift_where(
            |c| {
                s.service.as_ref().is_none_or(|svc| *svc == c.service)
                    && s.rule.is_none_or(|r| c.rule == Some(r))
                    && s.peer.is_none_or(|p| c.covers(p))
            },
            "its alerts were suppressed",
            &Decider::Policy,
            now,
            out,
        );
    }

    /// Lifts everything (shutdown keeps them stored: a restart enforces them again until
    /// their TTL; this is for mode off and the kill switch).
    pub fn lift_all(&mut self, reason: &str, now: Timestamp, out: &mut Vec<ContainmentEvent>) {
        self.lift_where(|_| true, reason, &Decider::Policy, now, out);
    }

    fn lift_where(
        &mut self,
        pred: impl Fn(&Containment) -> bool,
        reason: &str,
        by: &Decider,
        now: Timestamp,
        out: &mut Vec<ContainmentEvent>,
    ) {
        let mut i = 0;
        while i < self.active.len() {
            if !pred(&self.active[i]) {
                i += 1;
                continue;
            }
            let mut c = self.active.swap_remove(i);
            c.state = ContainmentState::Lifted;
            c.ended_at = Some(now);
            c.end_reason = Some(reason.to_owned());
            c.ended_by = Some(by.clone());
            self.end(c, ContainmentEventKind::Lifted, now, out);
        }
    }

    fn end(
        &mut self,
        c: Containment,
        kind: ContainmentEventKind,
        now: Timestamp,
        out: &mut Vec<ContainmentEvent>,
    ) {
        match kind {
            ContainmentEventKind::Expired => self.stats.expired += 1,
            _ => self.stats.lifted += 1,
        }
        if c.enforcement == Enforcement::Enforced {
            self.generation += 1;
        }
        out.push(ContainmentEvent {
            event: kind,
            at: now,
            containment: c,
        });
    }

    /// The kernel's counts of what it held back, per containment id.
    pub fn set_dropped(&mut self, id: uuid::Uuid, bytes: u64, packets: u64) {
        if let Some(c) = self.active.iter_mut().find(|c| c.id == id) {
            c.dropped_bytes = bytes;
            c.dropped_packets = packets;
        }
    }
}
