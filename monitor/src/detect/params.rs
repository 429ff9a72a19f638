//! Rule parameters as plain numbers (the configuration keeps spans and units), built once per
//! configuration.

use super::{
    baseline::Bar,
    population::{Kind, PopulationBar, TRIM},
    rules::Severity,
    settings::{DetectConfig, RulesConfig},
    window::WindowLen,
};

#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub unknown: Option<(Severity, [(WindowLen, u64); 3])>,
    /// Rule 2, and the bars of the client and destination populations (which also decide, while
    /// a service learns, which peers are heavy, even when the rule is off).
    pub outlier: Option<Severity>,
    pub peers: PopulationBar,
    /// The clients' bar for a newcomer (the newcomer's factor).
    pub newcomers: PopulationBar,
    /// Rule 2's bar for learned destinations (the same settings, untrimmed).
    pub destinations: PopulationBar,
    /// Rule 6, and the bar of the prefix population.
    pub prefix: Option<Severity>,
    pub prefixes: PopulationBar,
    pub rise: Option<Rise>,
    pub baseline: Option<(Severity, Bar)>,
    pub new_dest: Option<(Severity, WindowLen, u64)>,
    pub drip: Option<(Severity, u64)>,
    pub new_clients: Option<(Severity, Bar)>,
    /// Fraction of the bar above which a peer teaches nothing (after learning).
    pub learn_below: f64,
    /// Group prefix lengths, longest first.
    pub ipv4_prefixes: Vec<u8>,
    pub ipv6_prefixes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rise {
    pub severity: Severity,
    pub factor: f64,
    pub min_excess: u64,
}

impl Params {
    pub fn new(rules: &RulesConfig, detect: &DetectConfig) -> Self {
        let unknown = &rules.unknown_volume;
        let outlier = &rules.peer_outlier;
        let prefix = &rules.prefix_outlier;
        let rise = &rules.peer_rise;
        let baseline = &rules.service_baseline;
        let new_dest = &rules.new_destinations;
        let drip = &rules.slow_drip;
        let new_clients = &rules.new_client_volume;
        let (ipv4_prefixes, ipv6_prefixes) = detect.prefixes();
        let peers = PopulationBar {
            quantile: *outlier.quantile.get_ref(),
            factor: *outlier.factor.get_ref(),
            floors: outlier.floor.get_ref().by_window(),
            min_samples: outlier.min_samples,
            windows: outlier.judged(),
            trim: TRIM,
        };
        Self {
            unknown: unknown.enabled.then_some((
                unknown.severity,
                [
                    (WindowLen::OneMinute, unknown.one_minute.as_u64()),
                    (WindowLen::TenMinutes, unknown.ten_minutes.as_u64()),
                    (WindowLen::OneHour, unknown.one_hour.as_u64()),
                ],
            )),
            outlier: outlier.enabled.then_some(outlier.severity),
            peers,
            newcomers: PopulationBar {
                factor: *outlier.newcomer_factor.get_ref(),
                ..peers
            },
            // The learned destinations' own bar: untrimmed, because their rare bursts (a
            // federation server's backfill) are what it must know. Members are the service's
            // own destinations, fixed while it learned: nobody outside can add extremes.
            // Only their day is judged: a partner's bursts (a backfill of hundreds of MiB in
            // minutes) are its protocol, and the first big one would cross any short bar
            // learned before it; a day beyond what any partner receives is what matters.
            destinations: PopulationBar {
                trim: 0,
                windows: [
                    false,
                    false,
                    false,
                    peers.windows[WindowLen::OneDay.index()],
                ],
                ..peers
            },
            prefix: prefix.enabled.then_some(prefix.severity),
            prefixes: PopulationBar {
                quantile: *prefix.quantile.get_ref(),
                factor: *prefix.factor.get_ref(),
                floors: prefix.floor.get_ref().by_window(),
                min_samples: prefix.min_samples,
                windows: prefix.judged(),
                trim: TRIM,
            },
            rise: rise.enabled.then_some(Rise {
                severity: rise.severity,
                factor: *rise.factor.get_ref(),
                min_excess: rise.min_excess.as_u64(),
            }),
            baseline: baseline.enabled.then_some((
                baseline.severity,
                Bar {
                    quantile: *baseline.quantile.get_ref(),
                    factor: *baseline.factor.get_ref(),
                    floor: baseline.floor.as_u64(),
                    min_samples: baseline.min_samples,
                },
            )),
            new_dest: new_dest.enabled.then_some((
                new_dest.severity,
                *new_dest.window.get_ref(),
                u64::from(*new_dest.max_new.get_ref()),
            )),
            drip: drip
                .enabled
                .then_some((drip.severity, drip.threshold.as_u64())),
            new_clients: new_clients.enabled.then_some((
                new_clients.severity,
                Bar {
                    quantile: *new_clients.quantile.get_ref(),
                    factor: *new_clients.factor.get_ref(),
                    floor: new_clients.floor.as_u64(),
                    min_samples: new_clients.min_samples,
                },
            )),
            learn_below: *detect.learn_below.get_ref(),
            ipv4_prefixes,
            ipv6_prefixes,
        }
    }

    /// How a population of `kind` becomes a bar.
    pub fn bar(&self, kind: Kind) -> &PopulationBar {
        match kind {
            Kind::Clients => &self.peers,
            Kind::Destinations => &self.destinations,
            Kind::Prefixes => &self.prefixes,
        }
    }
}
