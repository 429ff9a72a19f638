//! The containment book's decisions: rails, renewal, lifting and expiry.

use jiff::Timestamp;

use super::{
    policy::ContainmentBook,
    record::{Action, ContainmentEvent, ContainmentEventKind, ContainmentState, Enforcement},
    settings::{ContainmentConfig, Mode},
};
use crate::{
    config::{Config, Origin},
    detect::{
        alerts::{AlertEvent, AlertEventKind, AlertStatus, Suppression},
        classes::DestinationClass,
        rules::{RuleId, Severity},
    },
    export::fixtures::opened,
};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_780_322_460 + secs).unwrap()
}

/// An opened high-severity alert about `peer` for `messaging`, of a destination `class`.
fn alert(peer: &str, class: DestinationClass) -> AlertEvent {
    let mut e = opened();
    let p = e.alert.peer.as_mut().unwrap();
    p.addr = peer.parse().unwrap();
    p.class = class;
    e.alert.id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, peer.as_bytes());
    e
}

fn config(text: &str) -> ContainmentConfig {
    Config::parse(text, &Origin::Embedded).unwrap().containment
}

fn book(text: &str) -> ContainmentBook {
    let mut b = ContainmentBook::new(config(text), ["messaging".to_owned()]);
    b.set_kernel_enforces(true);
    b
}

fn kinds(events: &[ContainmentEvent]) -> Vec<ContainmentEventKind> {
    events.iter().map(|e| e.event).collect()
}

#[test]
fn the_default_decides_in_dry_run_and_throttles_high_alerts() {
    let mut b = book("");
    let mut out = vec![];
    b.on_alert(
        &alert("2001:db8::8a", DestinationClass::Client),
        t(0),
        &mut out,
    );
    assert_eq!(kinds(&out), [ContainmentEventKind::Started]);
    let c = &out[0].containment;
    assert_eq!(
        c.enforcement,
        Enforcement::DryRun,
        "a fresh install touches nothing"
    );
    assert_eq!(
        c.action,
        Action::Throttle {
            bytes_per_sec: 256 << 10
        }
    );
    assert_eq!(c.target.to_string(), "2001:db8::8a/128");
    assert_eq!(c.expires_at, t(3600));
    assert!(c.verb().starts_with("would throttle"), "{}", c.verb());
    assert_eq!(b.enforced().count(), 0, "nothing for the kernel");
}

#[test]
fn enforce_mode_gives_the_kernel_its_containments_and_only_when_it_can() {
    let text = "[containment]\nmode = \"enforce\"\n";
    let mut b = book(text);
    let mut out = vec![];
    let g = b.generation();
    b.on_alert(
        &alert("198.51.100.7", DestinationClass::Unknown),
        t(0),
        &mut out,
    );
    assert_eq!(out[0].containment.enforcement, Enforcement::Enforced);
    assert_eq!(b.enforced().count(), 1);
    assert_ne!(b.generation(), g, "the kernel's set changed");

    let mut refused = ContainmentBook::new(config(text), ["messaging".to_owned()]);
    refused.set_kernel_enforces(false);
    let mut out = vec![];
    refused.on_alert(
        &alert("198.51.100.7", DestinationClass::Unknown),
        t(0),
        &mut out,
    );
    assert_eq!(
        out[0].containment.enforcement,
        Enforcement::DryRun,
        "a kernel that refused enforcement still gets dry run"
    );
    assert_eq!(refused.enforced().count(), 0);
}

#[test]
fn the_rails_refuse_protected_destinations_unconfigured_services_and_too_many() {
    let mut b = book("[containment]\nmax_per_service = 2\n");
    let mut out = vec![];
    for class in [
        DestinationClass::Internal,
        DestinationClass::Allowlisted,
        DestinationClass::Learned,
    ] {
        b.on_alert(&alert("198.51.100.7", class), t(0), &mut out);
    }
    assert!(out.is_empty(), "never a protected destination: {out:?}");
    let mut other = alert("198.51.100.8", DestinationClass::Unknown);
    other.alert.service = "/usr/bin/curl".into();
    b.on_alert(&other, t(0), &mut out);
    assert!(out.is_empty(), "only [[services]]");
    for peer in ["198.51.100.9", "198.51.100.10", "198.51.100.11"] {
        b.on_alert(&alert(peer, DestinationClass::Client), t(0), &mut out);
    }
    assert_eq!(out.len(), 2, "max_per_service = 2");
    assert_eq!(b.stats.refused["max_per_service"], 1);
    assert_eq!(b.stats.refused["internal_destination"], 1);
    assert_eq!(b.stats.refused["allowlisted_destination"], 1);
    assert_eq!(b.stats.refused["learned_destination"], 1);
    assert_eq!(b.stats.refused["service_not_configured"], 1);
}

#[test]
fn an_open_alert_renews_and_its_end_lifts() {
    let mut b = book("");
    let mut out = vec![];
    let mut e = alert("198.51.100.7", DestinationClass::Client);
    b.on_alert(&e, t(0), &mut out);
    e.event = AlertEventKind::Updated;
    b.on_alert(&e, t(3000), &mut out);
    assert_eq!(
        kinds(&out),
        [ContainmentEventKind::Started, ContainmentEventKind::Renewed]
    );
    assert_eq!(
        out[1].containment.expires_at,
        t(6600),
        "renewed from the update"
    );
    assert_eq!(b.active().len(), 1, "one containment, not two");
    b.tick(t(3700), &mut out);
    assert_eq!(out.len(), 2, "renewed: not expired at the first TTL");

    e.event = AlertEventKind::Resolved;
    e.alert.status = AlertStatus::Resolved;
    b.on_alert(&e, t(4000), &mut out);
    assert_eq!(out[2].event, ContainmentEventKind::Lifted);
    assert_eq!(out[2].containment.state, ContainmentState::Lifted);
    assert_eq!(
        out[2].containment.end_reason.as_deref(),
        Some("its alert resolved")
    );
    assert_eq!(b.active().len(), 0);
}

#[test]
fn an_operators_lift_stands_while_its_alert_stays_open() {
    let mut b = book("");
    let mut out = vec![];
    let mut e = alert("198.51.100.7", DestinationClass::Client);
    b.on_alert(&e, t(0), &mut out);
    let id = out[0].containment.id;
    assert!(b.forget(id), "contain lift: the agent forgets it");
    assert!(!b.forget(id), "only once");
    e.event = AlertEventKind::Updated;
    b.on_alert(&e, t(60), &mut out);
    assert_eq!(out.len(), 1, "not contained again by the next update");
    assert_eq!(b.active().len(), 0);

    // Its end clears the mark: the same alert id opened later is contained again.
    e.event = AlertEventKind::Resolved;
    e.alert.status = AlertStatus::Resolved;
    b.on_alert(&e, t(120), &mut out);
    e.event = AlertEventKind::Opened;
    e.alert.status = AlertStatus::Open;
    b.on_alert(&e, t(180), &mut out);
    assert_eq!(out.last().unwrap().event, ContainmentEventKind::Started);

    // Restored after a restart: `spare` (from the database) has the same effect.
    let mut restarted = book("");
    restarted.spare(e.alert.id);
    let mut out = vec![];
    e.event = AlertEventKind::Updated;
    restarted.on_alert(&e, t(240), &mut out);
    assert_eq!(out.len(), 0);
}

#[test]
fn a_containment_expires_without_renewal() {
    let mut b = book("[containment]\nttl = \"10m\"\n");
    let mut out = vec![];
    b.on_alert(
        &alert("198.51.100.7", DestinationClass::Client),
        t(0),
        &mut out,
    );
    b.tick(t(599), &mut out);
    assert_eq!(out.len(), 1);
    b.tick(t(600), &mut out);
    assert_eq!(out[1].event, ContainmentEventKind::Expired);
    assert_eq!(out[1].containment.state, ContainmentState::Expired);
    assert_eq!(b.active().len(), 0);
}

#[test]
fn a_peer_inside_a_contained_prefix_renews_the_prefix() {
    let mut b = book("");
    let mut out = vec![];
    let mut group = alert("198.51.100.0", DestinationClass::Client);
    group.alert.peer.as_mut().unwrap().prefix_len = Some(24);
    b.on_alert(&group, t(0), &mut out);
    assert_eq!(out[0].containment.target.to_string(), "198.51.100.0/24");
    b.on_alert(
        &alert("198.51.100.77", DestinationClass::Client),
        t(60),
        &mut out,
    );
    assert_eq!(kinds(&out)[1], ContainmentEventKind::Renewed);
    assert_eq!(b.active().len(), 1);
}

#[test]
fn learning_suppressing_mode_changes_and_the_kill_switch_lift() {
    let mut b = book("");
    let mut out = vec![];
    b.on_alert(
        &alert("198.51.100.7", DestinationClass::Client),
        t(0),
        &mut out,
    );
    b.on_learned("messaging", "198.51.100.7".parse().unwrap(), t(1), &mut out);
    assert_eq!(out.last().unwrap().event, ContainmentEventKind::Lifted);

    b.on_alert(
        &alert("198.51.100.8", DestinationClass::Client),
        t(2),
        &mut out,
    );
    b.on_suppression(
        &Suppression {
            rule: None,
            service: Some("messaging".into()),
            peer: Some("198.51.100.8".parse().unwrap()),
            until: None,
        },
        t(3),
        &mut out,
    );
    assert!(b.active().is_empty(), "suppressed");

    b.on_alert(
        &alert("198.51.100.9", DestinationClass::Client),
        t(4),
        &mut out,
    );
    let n = out.len();
    b.reconfigure(
        config("[containment]\nkill_switch = true\n"),
        ["messaging".to_owned()],
        t(5),
        &mut out,
    );
    assert_eq!(out.len(), n + 1);
    assert!(b.active().is_empty(), "the kill switch lifts everything");
    b.on_alert(
        &alert("198.51.100.10", DestinationClass::Client),
        t(6),
        &mut out,
    );
    assert_eq!(out.len(), n + 1, "and starts nothing");
    assert_eq!(b.stats.refused["kill_switch"], 1);

    b.reconfigure(config(""), ["messaging".to_owned()], t(7), &mut out);
    b.on_alert(
        &alert("198.51.100.10", DestinationClass::Client),
        t(8),
        &mut out,
    );
    assert_eq!(b.active().len(), 1);
    b.reconfigure(
        config("[containment]\nmode = \"off\"\n"),
        ["messaging".to_owned()],
        t(9),
        &mut out,
    );
    assert!(b.active().is_empty(), "off lifts everything at once");
    b.on_alert(
        &alert("198.51.100.11", DestinationClass::Client),
        t(10),
        &mut out,
    );
    assert!(b.active().is_empty(), "off decides nothing");
    assert_eq!(b.settings().mode, Mode::Off);
}

#[test]
fn an_adopted_enforced_containment_is_dry_run_where_the_agent_does_not_enforce() {
    let mut enforcing = book("[containment]\nmode = \"enforce\"\n");
    let mut out = vec![];
    enforcing.on_alert(
        &alert("198.51.100.7", DestinationClass::Client),
        t(0),
        &mut out,
    );
    let stored = out[0].containment.clone();
    let mut dry = book("");
    dry.adopt(stored.clone());
    assert_eq!(dry.active()[0].enforcement, Enforcement::DryRun);
    assert_eq!(dry.enforced().count(), 0);
    let mut again = book("[containment]\nmode = \"enforce\"\n");
    again.adopt(stored.clone());
    again.adopt(stored);
    assert_eq!(again.active().len(), 1, "adopted once");
    assert_eq!(again.enforced().count(), 1);
    assert!(again.forget(again.active()[0].id));
    assert_eq!(again.enforced().count(), 0);
}

#[test]
fn bad_containment_settings_name_the_key() {
    let err = |text: &str| {
        Config::parse(text, &Origin::Embedded)
            .unwrap_err()
            .to_string()
    };
    let e = err("[containment]\nmode = \"on\"\n");
    assert!(e.contains("containment.mode"), "{e}");
    let e = err("[containment]\nttl = \"10s\"\n");
    assert!(e.contains("containment.ttl: 10s is out of range"), "{e}");
    let e = err("[containment]\nmax_per_service = 0\n");
    assert!(e.contains("containment.max_per_service"), "{e}");
    let e = err("[[containment.actions]]\nmin_severity = \"high\"\naction = \"throttle\"\n");
    assert!(
        e.contains("containment.actions[0].rate: throttle needs a rate"),
        "{e}"
    );
    let e =
        err("[[containment.actions]]\nmin_severity = \"high\"\naction = \"throttle\"\nrate = 10\n");
    assert!(e.contains("that is a block"), "{e}");
    let e = err(
        "[[containment.actions]]\nmin_severity = \"high\"\naction = \"block\"\nrate = \"1MiB\"\n",
    );
    assert!(e.contains("a block has no rate"), "{e}");
    let e = err("[[containment.actions]]\naction = \"block\"\n");
    assert!(e.contains("needs `rule` or `min_severity`"), "{e}");
    // A rule-specific action comes before the severity default.
    let c = config(
        "[[containment.actions]]\nrule = \"peer_outlier\"\naction = \"block\"\n\
         [[containment.actions]]\nmin_severity = \"low\"\naction = \"throttle\"\nrate = \"1MiB\"\n",
    );
    assert_eq!(
        c.action_for(RuleId::PeerOutlier, Severity::Low)
            .map(|a| *a.action.get_ref()),
        Some(super::settings::ActionKind::Block)
    );
    assert_eq!(
        c.action_for(RuleId::SlowDrip, Severity::Medium)
            .map(|a| *a.action.get_ref()),
        Some(super::settings::ActionKind::Throttle)
    );
}
