//! What the outbox holds and the sinks send: an alert event or a containment event. Every
//! format has both; a sink renders whichever comes, in outbox order.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    Format, Reporter, containment, containment_syslog, ecs_containment, event_id, http,
    ocsf_remediation, syslog,
};
use crate::{contain::record::ContainmentEvent, detect::alerts::AlertEvent};

/// One outbox event. Serialized as the event itself (the agent's JSON format).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "a batch of the outbox at a time: boxing would only add an allocation per event"
)]
pub enum Exported {
    Alert(AlertEvent),
    Containment(ContainmentEvent),
}

impl Exported {
    /// The alert event, if it is one.
    pub fn alert(&self) -> Option<&AlertEvent> {
        match self {
            Self::Alert(e) => Some(e),
            Self::Containment(_) => None,
        }
    }

    pub fn at(&self) -> Timestamp {
        match self {
            Self::Alert(e) => e.at,
            Self::Containment(e) => e.at,
        }
    }

    /// The stable id receivers deduplicate by.
    pub fn id(&self) -> Uuid {
        match self {
            Self::Alert(e) => event_id(e),
            Self::Containment(e) => containment::containment_event_id(e),
        }
    }

    /// The event as a JSON value in `format`: an object for json, ocsf and ecs; a string for
    /// CEF and text.
    pub fn value(&self, format: Format, reporter: &Reporter) -> Value {
        match self {
            Self::Alert(e) => http::event_value(format, e, reporter),
            Self::Containment(e) => containment::containment_event_value(format, e, reporter),
        }
    }

    /// What a sink sends for it: the event in `format`, then for an alert, with
    /// `network_activity` (OCSF only), the Network Activity it is about.
    pub fn records(
        &self,
        format: Format,
        network_activity: bool,
        reporter: &Reporter,
    ) -> Vec<String> {
        match self {
            Self::Alert(e) => super::records(format, network_activity, e, reporter).collect(),
            Self::Containment(e) => vec![containment::render_containment(format, e, reporter)],
        }
    }

    /// The RFC 5424 messages for it (see [`Self::records`]).
    pub fn syslog_messages(
        &self,
        reporter: &Reporter,
        facility: u8,
        payload: syslog::Payload,
        network_activity: bool,
    ) -> Vec<String> {
        match self {
            Self::Alert(e) => {
                let mut out = vec![syslog::message(e, reporter, facility, payload)];
                if network_activity
                    && let Some(m) = syslog::network_activity_message(e, reporter, facility)
                {
                    out.push(m);
                }
                out
            }
            Self::Containment(e) => {
                vec![containment_syslog::message(e, reporter, facility, payload)]
            }
        }
    }

    /// An Elasticsearch document: ECS, or OCSF with `@timestamp` added.
    pub fn document(&self, format: Format, reporter: &Reporter) -> Value {
        let mut doc = match (self, format) {
            (Self::Alert(e), Format::Ocsf) => super::ocsf::detection_finding(e, reporter),
            (Self::Alert(e), _) => return super::ecs::alert(e, reporter),
            (Self::Containment(e), Format::Ocsf) => {
                ocsf_remediation::network_remediation(e, reporter)
            }
            (Self::Containment(e), _) => return ecs_containment::document(e, reporter),
        };
        if let Value::Object(map) = &mut doc {
            map.insert("@timestamp".into(), Value::String(self.at().to_string()));
        }
        doc
    }
}

impl From<AlertEvent> for Exported {
    fn from(e: AlertEvent) -> Self {
        Self::Alert(e)
    }
}

impl From<ContainmentEvent> for Exported {
    fn from(e: ContainmentEvent) -> Self {
        Self::Containment(e)
    }
}
