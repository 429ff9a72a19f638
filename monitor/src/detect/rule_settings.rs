//! `[rules.*]` of the configuration: one table per rule, keyed by the rule's stable id.
//! Parsed by serde (unknown keys refused), checked by [`validate_rules`] for ranges.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, de};
use toml::Spanned;

use super::{
    rules::Severity,
    settings::{Invalid, invalid, unspanned},
    window::WindowLen,
};
use crate::config::Bytes;

/// `[rules.*]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    pub unknown_volume: UnknownVolumeConfig,
    pub peer_outlier: PeerOutlierConfig,
    pub service_baseline: ServiceBaselineConfig,
    pub new_destinations: NewDestinationsConfig,
    pub slow_drip: SlowDripConfig,
    pub prefix_outlier: PrefixOutlierConfig,
    pub peer_rise: PeerRiseConfig,
    pub new_client_volume: NewClientVolumeConfig,
}

/// Rule 1: bytes to one destination the service connected to and never learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnknownVolumeConfig {
    pub enabled: bool,
    pub severity: Severity,
    /// Alert when the volume to one unknown destination in the last minute exceeds this.
    #[serde(rename = "1m")]
    pub one_minute: Bytes,
    #[serde(rename = "10m")]
    pub ten_minutes: Bytes,
    #[serde(rename = "1h")]
    pub one_hour: Bytes,
}

impl Default for UnknownVolumeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::High,
            one_minute: Bytes::mib(32),
            ten_minutes: Bytes::mib(128),
            one_hour: Bytes::mib(256),
        }
    }
}

/// The bar of a population per window length: below these it never goes, and until the
/// population is armed it is these. Written as a table `{ 1m = "48MiB", 10m = ..., 1h = ...,
/// 24h = ... }` (missing windows keep their defaults), or, as before windows other than one
/// minute were judged, one size: the one-minute floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Floors {
    #[serde(rename = "1m")]
    pub one_minute: Bytes,
    #[serde(rename = "10m")]
    pub ten_minutes: Bytes,
    #[serde(rename = "1h")]
    pub one_hour: Bytes,
    #[serde(rename = "24h")]
    pub one_day: Bytes,
}

impl Floors {
    /// Defaults for one client: above a new device's initial sync (about 70 MiB in two
    /// minutes), below what a bulk download takes in a few minutes or a patient pull of
    /// 4 MiB a minute takes in an hour (1h) or a couple of hours (24h: 512 MiB a day is more
    /// than a heavy user's busiest day needs, and what a patient pull adds up to first).
    pub const CLIENT: Self = Self {
        one_minute: Bytes::mib(48),
        ten_minutes: Bytes::mib(128),
        one_hour: Bytes::mib(192),
        one_day: Bytes::mib(512),
    };

    /// Defaults for one prefix group, which sums several households or phones: a day's
    /// floor of a few heavy clients.
    pub const PREFIX: Self = Self {
        one_day: Bytes::mib(768),
        ..Self::CLIENT
    };

    /// By `WindowLen::index`.
    pub fn by_window(&self) -> [u64; 4] {
        [
            self.one_minute.as_u64(),
            self.ten_minutes.as_u64(),
            self.one_hour.as_u64(),
            self.one_day.as_u64(),
        ]
    }
}

impl<'de> Deserialize<'de> for Floors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(rename = "1m")]
            one_minute: Option<Bytes>,
            #[serde(rename = "10m")]
            ten_minutes: Option<Bytes>,
            #[serde(rename = "1h")]
            one_hour: Option<Bytes>,
            #[serde(rename = "24h")]
            one_day: Option<Bytes>,
        }
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Floors;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a table of sizes by window ({ 1m = "48MiB", 1h = "192MiB" }) or one size"#,
                )
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Floors, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let d = Floors::CLIENT;
                Ok(Floors {
                    one_minute: t.one_minute.unwrap_or(d.one_minute),
                    ten_minutes: t.ten_minutes.unwrap_or(d.ten_minutes),
                    one_hour: t.one_hour.unwrap_or(d.one_hour),
                    one_day: t.one_day.unwrap_or(d.one_day),
                })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Floors, E> {
                let size = Bytes::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(Floors {
                    one_minute: size,
                    ..Floors::CLIENT
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Floors, E> {
                Ok(Floors {
                    one_minute: Bytes(v),
                    ..Floors::CLIENT
                })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Floors, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not a size")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The windows a population rule judges: all four unless given.
fn all_windows() -> Vec<Spanned<WindowLen>> {
    WindowLen::ALL.into_iter().map(unspanned).collect()
}

/// Rule 2: one client (or one learned destination) above its population of the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerOutlierConfig {
    pub enabled: bool,
    pub severity: Severity,
    /// The windows judged, among 1m, 10m, 1h and 24h.
    pub windows: Vec<Spanned<WindowLen>>,
    /// The form before several windows: only this one is judged. Kept so that existing
    /// files still load; `windows` is the key to use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Spanned<WindowLen>>,
    /// The quantile of per-peer volumes (one value per peer and hour; per day for 24h) the
    /// bar starts from.
    pub quantile: Spanned<f64>,
    /// Bar = max(floor, quantile value x factor x the service's activity).
    pub factor: Spanned<f64>,
    /// The factor for a newcomer (a client first seen in the last 24 hours, and for IPv6
    /// whose /64 is new too): between 1 and `factor`. An address with no history of its own
    /// gets the population's quantile, not the tolerance an established client has earned.
    pub newcomer_factor: Spanned<f64>,
    pub floor: Spanned<Floors>,
    /// Values the population must hold for a window before its quantile is used.
    pub min_samples: u64,
}

impl PeerOutlierConfig {
    /// The windows in force (`window`, when given, wins: an old file means what it meant).
    pub fn judged(&self) -> [bool; 4] {
        let mut on = [false; 4];
        match &self.window {
            Some(w) => on[w.get_ref().index()] = true,
            None => self
                .windows
                .iter()
                .for_each(|w| on[w.get_ref().index()] = true),
        }
        on
    }
}

impl Default for PeerOutlierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::High,
            windows: all_windows(),
            window: None,
            quantile: unspanned(0.999),
            factor: unspanned(3.0),
            newcomer_factor: unspanned(1.0),
            floor: unspanned(Floors::CLIENT),
            min_samples: 100,
        }
    }
}

/// Rule 6: one network prefix (several clients of one provider) above the service's
/// population of prefix groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixOutlierConfig {
    pub enabled: bool,
    pub severity: Severity,
    pub windows: Vec<Spanned<WindowLen>>,
    pub quantile: Spanned<f64>,
    pub factor: Spanned<f64>,
    pub floor: Spanned<Floors>,
    pub min_samples: u64,
}

impl PrefixOutlierConfig {
    pub fn judged(&self) -> [bool; 4] {
        let mut on = [false; 4];
        self.windows
            .iter()
            .for_each(|w| on[w.get_ref().index()] = true);
        on
    }
}

impl Default for PrefixOutlierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::High,
            windows: all_windows(),
            quantile: unspanned(0.999),
            factor: unspanned(3.0),
            floor: unspanned(Floors::PREFIX),
            min_samples: 100,
        }
    }
}

/// Rule 7: a heavy peer (or prefix) above its own curve for the time of day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerRiseConfig {
    pub enabled: bool,
    pub severity: Severity,
    /// Bar over ten minutes = max(the curve's usual busiest ten minutes at this hour x
    /// `factor` x the service's activity, the curve + `min_excess`, the population's bar).
    pub factor: Spanned<f64>,
    pub min_excess: Bytes,
}

impl Default for PeerRiseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::High,
            factor: unspanned(1.5),
            min_excess: Bytes::mib(64),
        }
    }
}

/// Rule 8: the service's bytes per hour to clients first seen in the last 24 hours, above
/// its own curve for that hour of day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewClientVolumeConfig {
    pub enabled: bool,
    pub severity: Severity,
    pub quantile: Spanned<f64>,
    pub factor: Spanned<f64>,
    pub floor: Bytes,
    /// Days an hour of day needs before its own values are used (else the whole day's).
    pub min_samples: u64,
}

impl Default for NewClientVolumeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Medium,
            quantile: unspanned(0.99),
            factor: unspanned(2.0),
            floor: Bytes::mib(512),
            min_samples: 3,
        }
    }
}

/// Rule 3: the service's total per minute against its own baseline for that hour of day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceBaselineConfig {
    pub enabled: bool,
    pub severity: Severity,
    pub quantile: Spanned<f64>,
    pub factor: Spanned<f64>,
    pub floor: Bytes,
    /// Minutes recorded in an hour-of-day slot before it is used (else the whole-day
    /// baseline is).
    pub min_samples: u64,
}

impl Default for ServiceBaselineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Medium,
            quantile: unspanned(0.99),
            factor: unspanned(4.0),
            floor: Bytes::mib(256),
            min_samples: 30,
        }
    }
}

/// Rule 4: many destinations the service connected to, never seen before, in one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewDestinationsConfig {
    pub enabled: bool,
    pub severity: Severity,
    pub window: Spanned<WindowLen>,
    /// Alert when more first-seen unknown destinations than this appear in the window.
    pub max_new: Spanned<u32>,
}

impl Default for NewDestinationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Medium,
            window: unspanned(WindowLen::TenMinutes),
            max_new: unspanned(50),
        }
    }
}

/// Rule 5: cumulative bytes over 24 hours to one destination the service connected to and
/// never learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowDripConfig {
    pub enabled: bool,
    pub severity: Severity,
    pub threshold: Bytes,
}

impl Default for SlowDripConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Medium,
            threshold: Bytes::mib(256),
        }
    }
}

fn check_quantile(q: &Spanned<f64>, key: &str) -> Result<(), Invalid> {
    let v = *q.get_ref();
    if v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(invalid(
            q.span(),
            key,
            format!("{v} is not a quantile strictly between 0 and 1"),
        ))
    }
}

fn check_factor(f: &Spanned<f64>, key: &str, min: f64) -> Result<(), Invalid> {
    let v = *f.get_ref();
    if v.is_finite() && v >= min && v <= 1000.0 {
        Ok(())
    } else {
        Err(invalid(
            f.span(),
            key,
            format!("{v} must be a number from {min} to 1000"),
        ))
    }
}

fn check_windows(windows: &[Spanned<WindowLen>], enabled: bool, key: &str) -> Result<(), Invalid> {
    for (i, w) in windows.iter().enumerate() {
        if windows[..i].iter().any(|o| o.get_ref() == w.get_ref()) {
            return Err(invalid(
                w.span(),
                format!("{key}[{i}]"),
                format!("{} is listed twice", w.get_ref()),
            ));
        }
    }
    if enabled && windows.is_empty() {
        return Err(invalid(
            0..0,
            key,
            "no window to judge (give some of \"1m\", \"10m\", \"1h\", \"24h\", or set enabled = false)",
        ));
    }
    Ok(())
}

fn check_floors(floors: &Spanned<Floors>, key: &str) -> Result<(), Invalid> {
    let f = floors.get_ref();
    for (name, v) in [
        ("1m", f.one_minute),
        ("10m", f.ten_minutes),
        ("1h", f.one_hour),
        ("24h", f.one_day),
    ] {
        if v.as_u64() < 1 << 20 {
            return Err(invalid(
                floors.span(),
                format!("{key}.{name}"),
                format!(
                    "{} bytes is below 1 MiB: every busy client would be an outlier",
                    v.as_u64()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks what serde cannot: ranges of quantiles, factors, windows and floors.
pub fn validate_rules(rules: &RulesConfig) -> Result<(), Invalid> {
    let outlier = &rules.peer_outlier;
    check_quantile(&outlier.quantile, "rules.peer_outlier.quantile")?;
    check_factor(&outlier.factor, "rules.peer_outlier.factor", 1.0)?;
    check_factor(
        &outlier.newcomer_factor,
        "rules.peer_outlier.newcomer_factor",
        1.0,
    )?;
    if outlier.newcomer_factor.get_ref() > outlier.factor.get_ref() {
        return Err(invalid(
            outlier.newcomer_factor.span(),
            "rules.peer_outlier.newcomer_factor",
            format!(
                "{} is above rules.peer_outlier.factor ({}): a newcomer would get more \
                 tolerance than an established client",
                outlier.newcomer_factor.get_ref(),
                outlier.factor.get_ref()
            ),
        ));
    }
    check_windows(
        &outlier.windows,
        outlier.enabled,
        "rules.peer_outlier.windows",
    )?;
    check_floors(&outlier.floor, "rules.peer_outlier.floor")?;
    let prefix = &rules.prefix_outlier;
    check_quantile(&prefix.quantile, "rules.prefix_outlier.quantile")?;
    check_factor(&prefix.factor, "rules.prefix_outlier.factor", 1.0)?;
    check_windows(
        &prefix.windows,
        prefix.enabled,
        "rules.prefix_outlier.windows",
    )?;
    check_floors(&prefix.floor, "rules.prefix_outlier.floor")?;
    check_factor(&rules.peer_rise.factor, "rules.peer_rise.factor", 1.05)?;
    let clients = &rules.new_client_volume;
    check_quantile(&clients.quantile, "rules.new_client_volume.quantile")?;
    check_factor(&clients.factor, "rules.new_client_volume.factor", 1.0)?;
    let baseline = &rules.service_baseline;
    check_quantile(&baseline.quantile, "rules.service_baseline.quantile")?;
    check_factor(&baseline.factor, "rules.service_baseline.factor", 1.0)?;
    let n = &rules.new_destinations;
    if *n.window.get_ref() == WindowLen::OneDay {
        return Err(invalid(
            n.window.span(),
            "rules.new_destinations.window",
            "use 1m, 10m or 1h",
        ));
    }
    if *n.max_new.get_ref() == 0 {
        return Err(invalid(
            n.max_new.span(),
            "rules.new_destinations.max_new",
            "0 would alert on every new destination",
        ));
    }
    Ok(())
}
