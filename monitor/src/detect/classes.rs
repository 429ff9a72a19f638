//! Destination classes: `internal` (configured networks), `allowlisted` (CIDRs or host names,
//! optionally per port and service), `learned` (seen during learning or confirmed by an
//! operator: the detector knows that, not this file), else `unknown` for destinations the
//! service connected to, and `client` for peers that came to it.

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::settings::{AllowConfig, DestinationsConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationClass {
    Internal,
    Allowlisted,
    Learned,
    Unknown,
    /// A peer that came to the service (it served the peer): judged against the population
    /// of the service's clients, not by whether it was seen before.
    Client,
}

impl DestinationClass {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Allowlisted => "allowlisted",
            Self::Learned => "learned",
            Self::Unknown => "unknown",
            Self::Client => "client",
        }
    }
}

/// Parses `10.0.0.0/8` or a bare address (a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{text:?} is not an address or a network (CIDR)"))
}

/// Host names: letters, digits, `-`, `.`, `_`; a leading `*.` matches any subdomain.
pub fn check_host_pattern(text: &str) -> Result<(), String> {
    let name = text.strip_prefix("*.").unwrap_or(text);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a host name (or a `*.suffix` pattern)"
        ))
    }
}

#[derive(Clone, Debug)]
enum AllowTarget {
    Net(IpNet),
    /// Exact name, lower case, no trailing dot.
    Host(String),
    /// `*.example.org`, stored as `.example.org`.
    Suffix(String),
}

#[derive(Clone, Debug)]
struct AllowRule {
    target: AllowTarget,
    ports: Vec<u16>,
    services: Vec<String>,
}

impl AllowRule {
    fn applies(&self, service: &str, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port))
            && (self.services.is_empty() || self.services.iter().any(|s| s == service))
    }
}

/// Classifies destinations as internal or allowlisted. Cheap enough to run per sample: a few
/// prefix comparisons, then the allowlist (short in practice) only for external addresses.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    internal: Vec<IpNet>,
    allow: Vec<AllowRule>,
    /// Addresses the allowlisted host names resolved to, by allow-rule index.
    resolved: HashMap<IpAddr, Vec<usize>>,
}

impl Classifier {
    /// Builds from validated configuration (entries that fail to parse were refused there).
    pub fn new(config: &DestinationsConfig) -> Self {
        let internal = config
            .internal
            .iter()
            .filter_map(|n| parse_net(n.get_ref()).ok())
            .collect();
        let allow = config
            .allow
            .iter()
            .filter_map(|a| allow_rule(a.get_ref()))
            .collect();
        Self {
            internal,
            allow,
            resolved: HashMap::new(),
        }
    }

    /// Host names of the allowlist, to resolve periodically (exact names only).
    pub fn hosts_to_resolve(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .allow
            .iter()
            .filter_map(|r| match &r.target {
                AllowTarget::Host(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Replaces what `host` resolves to.
    pub fn set_resolved(&mut self, host: &str, addrs: &[IpAddr]) {
        let host = normalize(host);
        let indexes: Vec<usize> = self
            .allow
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(&r.target, AllowTarget::Host(h) if *h == host))
            .map(|(i, _)| i)
            .collect();
        for list in self.resolved.values_mut() {
            list.retain(|i| !indexes.contains(i));
        }
        self.resolved.retain(|_, list| !list.is_empty());
        for addr in addrs {
            let list = self.resolved.entry(canonical(*addr)).or_default();
            list.extend(&indexes);
            list.sort_unstable();
            list.dedup();
        }
    }

    /// What each allowlisted host name resolves to, as last set.
    fn resolved_hosts(&self) -> Vec<(String, Vec<IpAddr>)> {
        self.hosts_to_resolve()
            .into_iter()
            .map(|host| {
                let mut addrs: Vec<IpAddr> = self
                    .resolved
                    .iter()
                    .filter(|(_, rules)| {
                        rules.iter().any(|&i| {
                            matches!(&self.allow[i].target, AllowTarget::Host(h) if *h == host)
                        })
                    })
                    .map(|(addr, _)| *addr)
                    .collect();
                addrs.sort();
                (host, addrs)
            })
            .collect()
    }

    /// Takes over what `previous` resolved for the host names both allowlists have, so that
    /// after a configuration reload an allowlisted host is not unknown until its names are
    /// resolved again.
    pub fn keep_resolved_from(&mut self, previous: &Self) {
        let wanted = self.hosts_to_resolve();
        for (host, addrs) in previous.resolved_hosts() {
            if wanted.contains(&host) {
                self.set_resolved(&host, &addrs);
            }
        }
    }

    pub fn is_internal(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.internal.iter().any(|n| n.contains(&addr))
    }

    /// Whether `addr:port` (with the name the host resolved for it, if any) is allowlisted
    /// for `service`.
    pub fn is_allowlisted(
        &self,
        service: &str,
        addr: IpAddr,
        port: u16,
        name: Option<&str>,
    ) -> bool {
        if self.allow.is_empty() {
            return false;
        }
        let addr = canonical(addr);
        let by_name = |rule: &AllowRule| match (&rule.target, name) {
            (AllowTarget::Host(h), Some(n)) => eq_name(h, n),
            (AllowTarget::Suffix(s), Some(n)) => {
                let n = n.trim_end_matches('.');
                n.len() > s.len() && n[n.len() - s.len()..].eq_ignore_ascii_case(s)
            }
            _ => false,
        };
        let by_address = self.allow.iter().any(|r| {
            matches!(&r.target, AllowTarget::Net(net) if net.contains(&addr))
                && r.applies(service, port)
        });
        by_address
            || self
                .resolved
                .get(&addr)
                .is_some_and(|list| list.iter().any(|&i| self.allow[i].applies(service, port)))
            || self
                .allow
                .iter()
                .any(|r| by_name(r) && r.applies(service, port))
    }

    /// Whether a network an operator wants contained overlaps an internal network or an
    /// allowlisted one of `service` (any port): the rails refuse it. Allowlisted host names
    /// are checked where they resolved in this process (the CLI has not resolved any).
    pub fn protects_any(&self, service: &str, target: &IpNet) -> Option<DestinationClass> {
        let overlaps = |n: &IpNet| n.contains(target) || target.contains(n);
        if self.internal.iter().any(overlaps) {
            return Some(DestinationClass::Internal);
        }
        let allowed = self.allow.iter().any(|r| {
            (r.services.is_empty() || r.services.iter().any(|s| s == service))
                && matches!(&r.target, AllowTarget::Net(n) if overlaps(n))
        }) || self.resolved.keys().any(|a| target.contains(a));
        allowed.then_some(DestinationClass::Allowlisted)
    }

    /// Internal or allowlisted, else `None` (the detector then decides learned/unknown).
    pub fn static_class(
        &self,
        service: &str,
        addr: IpAddr,
        port: u16,
        name: Option<&str>,
    ) -> Option<DestinationClass> {
        if self.is_internal(addr) {
            Some(DestinationClass::Internal)
        } else if self.is_allowlisted(service, addr, port, name) {
            Some(DestinationClass::Allowlisted)
        } else {
            None
        }
    }
}

fn allow_rule(a: &AllowConfig) -> Option<AllowRule> {
    let target = if let Some(cidr) = &a.cidr {
        AllowTarget::Net(parse_net(cidr.get_ref()).ok()?)
    } else {
        let host = normalize(a.host.as_ref()?.get_ref());
        match host.strip_prefix('*') {
            Some(suffix) => AllowTarget::Suffix(suffix.to_owned()),
            None => AllowTarget::Host(host),
        }
    };
    Some(AllowRule {
        target,
        ports: a.ports.clone(),
        services: a.services.clone(),
    })
}

fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn eq_name(normalized: &str, name: &str) -> bool {
    name.trim_end_matches('.').eq_ignore_ascii_case(normalized)
}

/// IPv4-mapped IPv6 addresses are IPv4 for every comparison.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[cfg(test)]
mod tests {
    use toml::Spanned;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn allow(
        cidr: Option<&str>,
        host: Option<&str>,
        ports: &[u16],
        services: &[&str],
    ) -> Spanned<AllowConfig> {
        Spanned::new(
            0..0,
            AllowConfig {
                cidr: cidr.map(|c| Spanned::new(0..0, c.into())),
                host: host.map(|h| Spanned::new(0..0, h.into())),
                ports: ports.to_vec(),
                services: services.iter().map(|s| (*s).to_owned()).collect(),
            },
        )
    }

    fn classifier(allows: Vec<Spanned<AllowConfig>>) -> Classifier {
        Classifier::new(&DestinationsConfig {
            allow: allows,
            ..DestinationsConfig::default()
        })
    }

    #[test]
    fn default_internal_networks() {
        let c = classifier(vec![]);
        for a in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "fe80::1",
            "fd00::5",
            "::ffff:10.0.0.1",
        ] {
            assert!(c.is_internal(ip(a)), "{a}");
        }
        for a in [
            "172.32.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "198.51.100.7",
            "::ffff:203.0.113.1",
        ] {
            assert!(!c.is_internal(ip(a)), "{a}");
        }
    }

    #[test]
    fn allowlist_by_cidr_port_and_service() {
        let c = classifier(vec![
            allow(Some("203.0.113.0/24"), None, &[443], &[]),
            allow(Some("2001:db8::5"), None, &[], &["backup"]),
        ]);
        assert!(c.is_allowlisted("web", ip("203.0.113.9"), 443, None));
        assert!(
            !c.is_allowlisted("web", ip("203.0.113.9"), 80, None),
            "port"
        );
        assert!(c.is_allowlisted("backup", ip("2001:db8::5"), 9, None));
        assert!(
            !c.is_allowlisted("web", ip("2001:db8::5"), 9, None),
            "service"
        );
        assert!(!c.is_allowlisted("backup", ip("2001:db8::6"), 9, None));
        assert_eq!(
            c.static_class("web", ip("10.0.0.1"), 443, None),
            Some(DestinationClass::Internal)
        );
        assert_eq!(c.static_class("web", ip("198.51.100.1"), 443, None), None);
    }

    #[test]
    fn allowlist_by_host_name_resolved_or_seen_in_dns() {
        let mut c = classifier(vec![
            allow(None, Some("Backup.Example.org."), &[], &[]),
            allow(None, Some("*.cdn.example.net"), &[443], &[]),
        ]);
        assert_eq!(c.hosts_to_resolve(), vec!["backup.example.org".to_owned()]);
        let a = ip("198.51.100.20");
        assert!(!c.is_allowlisted("s", a, 1, None));
        assert!(
            c.is_allowlisted("s", a, 1, Some("backup.example.org")),
            "passive DNS name"
        );
        c.set_resolved("backup.example.org", &[a]);
        assert!(c.is_allowlisted("s", a, 1, None), "resolved address");
        c.set_resolved("backup.example.org", &[ip("198.51.100.21")]);
        assert!(!c.is_allowlisted("s", a, 1, None), "re-resolution replaces");
        assert!(c.is_allowlisted("s", a, 443, Some("img.cdn.example.net")));
        assert!(
            !c.is_allowlisted("s", a, 443, Some("cdn.example.net")),
            "suffix needs a label"
        );
        assert!(!c.is_allowlisted("s", a, 443, Some("evilcdn.example.net")));
    }

    #[test]
    fn a_reloaded_allowlist_keeps_the_addresses_of_the_hosts_it_still_names() {
        let mut old = classifier(vec![
            allow(None, Some("backup.example.org"), &[], &[]),
            allow(None, Some("gone.example.org"), &[], &[]),
        ]);
        old.set_resolved(
            "backup.example.org",
            &[ip("198.51.100.20"), ip("2001:db8::20")],
        );
        old.set_resolved("gone.example.org", &[ip("198.51.100.30")]);
        let mut new = classifier(vec![
            allow(Some("203.0.113.0/24"), None, &[], &[]),
            allow(None, Some("Backup.example.org"), &[443], &[]),
        ]);
        new.keep_resolved_from(&old);
        assert!(new.is_allowlisted("s", ip("198.51.100.20"), 443, None));
        assert!(new.is_allowlisted("s", ip("2001:db8::20"), 443, None));
        assert!(
            !new.is_allowlisted("s", ip("198.51.100.20"), 80, None),
            "the new rule's ports apply"
        );
        assert!(
            !new.is_allowlisted("s", ip("198.51.100.30"), 443, None),
            "a host no longer listed is not allowlisted"
        );
    }

    #[test]
    fn parsing_errors_are_clear() {
        assert_eq!(parse_net("10.0.0.1/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(
            parse_net("10.0.0.0/33")
                .unwrap_err()
                .contains("not an address")
        );
        assert!(check_host_pattern("*.example.org").is_ok());
        assert!(check_host_pattern("exa mple.org").is_err());
        assert!(check_host_pattern("*.").is_err());
    }
}
