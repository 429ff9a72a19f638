//! Which service a flow belongs to: the configured `[[services]]` (several processes can form
//! one service, e.g. nginx + synapse), else the owner's own identity.

use globset::{Glob, GlobMatcher};

use super::settings::{MatcherConfig, ServiceConfig};
use crate::flow::Owner;

/// One compiled `[[services.match]]`: all present fields must match.
#[derive(Clone, Debug)]
pub struct Matcher {
    unit: Option<GlobMatcher>,
    cgroup: Option<GlobMatcher>,
    exe: Option<GlobMatcher>,
    comm: Option<GlobMatcher>,
    cmdline: Option<GlobMatcher>,
    uid: Option<u32>,
    user: Option<GlobMatcher>,
    container_id: Option<GlobMatcher>,
}

/// Compiles a matcher; the error names the field.
pub fn compile_matcher(m: &MatcherConfig) -> Result<Matcher, (&'static str, String)> {
    let glob = |field: &'static str, pattern: &Option<String>| {
        pattern
            .as_deref()
            .map(|p| {
                Glob::new(p)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| (field, format!("invalid glob {p:?}: {}", e.kind())))
            })
            .transpose()
    };
    Ok(Matcher {
        unit: glob("unit", &m.unit)?,
        cgroup: glob("cgroup", &m.cgroup)?,
        exe: glob("exe", &m.exe)?,
        comm: glob("comm", &m.comm)?,
        cmdline: glob("cmdline", &m.cmdline)?,
        uid: m.uid,
        user: glob("user", &m.user)?,
        container_id: glob("container_id", &m.container_id)?,
    })
}

impl Matcher {
    pub fn matches(&self, owner: &Owner) -> bool {
        fn field(glob: Option<&GlobMatcher>, value: Option<&str>) -> bool {
            glob.is_none_or(|g| value.is_some_and(|v| g.is_match(v)))
        }
        field(self.unit.as_ref(), owner.unit.as_deref())
            && field(self.cgroup.as_ref(), owner.cgroup.as_deref())
            && field(self.exe.as_ref(), owner.exe.as_deref())
            && field(self.comm.as_ref(), owner.comm.as_deref())
            && self.uid.is_none_or(|u| owner.uid == Some(u))
            && field(self.user.as_ref(), owner.user.as_deref())
            && field(self.container_id.as_ref(), owner.container_id.as_deref())
            && self
                .cmdline
                .as_ref()
                .is_none_or(|g| !owner.cmdline.is_empty() && g.is_match(owner.cmdline.join(" ")))
    }
}

/// The configured services in order; the first match wins.
#[derive(Clone, Debug, Default)]
pub struct ServiceMatcher {
    services: Vec<(String, Vec<Matcher>)>,
    group_unmatched: bool,
}

impl ServiceMatcher {
    /// Builds from validated configuration (invalid globs were refused by validation; here
    /// they would be skipped).
    pub fn new(services: &[ServiceConfig], group_unmatched: bool) -> Self {
        Self {
            services: services
                .iter()
                .map(|s| {
                    let matchers = s
                        .matchers
                        .iter()
                        .filter_map(|m| compile_matcher(m.get_ref()).ok())
                        .collect();
                    (s.name.get_ref().clone(), matchers)
                })
                .collect(),
            group_unmatched,
        }
    }

    /// Whether `name` is one of the configured `[[services]]`.
    pub fn is_configured(&self, name: &str) -> bool {
        self.services.iter().any(|(n, _)| n == name)
    }

    /// The service of `owner`, or `None` when it is not analysed.
    pub fn service_of<'a>(&'a self, owner: &'a Owner) -> Option<&'a str> {
        for (name, matchers) in &self.services {
            if matchers.iter().any(|m| m.matches(owner)) {
                return Some(name);
            }
        }
        self.group_unmatched.then_some(owner.service.as_str())
    }
}

#[cfg(test)]
mod tests {
    use toml::Spanned;

    use super::*;

    fn owner(comm: &str, exe: &str, unit: Option<&str>, cmdline: &[&str]) -> Owner {
        Owner {
            comm: Some(comm.into()),
            exe: Some(exe.into()),
            unit: unit.map(Into::into),
            cmdline: cmdline.iter().map(|s| (*s).to_owned()).collect(),
            uid: Some(998),
            user: Some("matrix-synapse".into()),
            service: unit.unwrap_or(exe).into(),
            ..Owner::default()
        }
    }

    fn service(name: &str, matchers: Vec<MatcherConfig>) -> ServiceConfig {
        ServiceConfig {
            name: Spanned::new(0..0, name.into()),
            matchers: matchers
                .into_iter()
                .map(|m| Spanned::new(0..0, m))
                .collect(),
        }
    }

    #[test]
    fn several_processes_form_one_service() {
        let matcher = ServiceMatcher::new(
            &[service(
                "messaging",
                vec![
                    MatcherConfig {
                        unit: Some("nginx.service".into()),
                        ..MatcherConfig::default()
                    },
                    MatcherConfig {
                        comm: Some("python*".into()),
                        cmdline: Some("*synapse.app.homeserver*".into()),
                        ..MatcherConfig::default()
                    },
                ],
            )],
            true,
        );
        let nginx = owner("nginx", "/usr/sbin/nginx", Some("nginx.service"), &[]);
        let synapse = owner(
            "python",
            "/opt/venv/bin/python3.11",
            None,
            &["python", "-m", "synapse.app.homeserver", "-c", "h.yaml"],
        );
        let other_python = owner("python", "/usr/bin/python3", None, &["python", "x.py"]);
        assert_eq!(matcher.service_of(&nginx), Some("messaging"));
        assert_eq!(matcher.service_of(&synapse), Some("messaging"));
        assert_eq!(
            matcher.service_of(&other_python),
            Some("/usr/bin/python3"),
            "unmatched processes keep their own identity"
        );
        let strict = ServiceMatcher::new(&[], false);
        assert_eq!(strict.service_of(&other_python), None);
    }

    #[test]
    fn all_fields_of_one_matcher_must_match() {
        let m = compile_matcher(&MatcherConfig {
            exe: Some("/usr/bin/curl".into()),
            uid: Some(0),
            ..MatcherConfig::default()
        })
        .unwrap();
        let mut o = owner("curl", "/usr/bin/curl", None, &[]);
        assert!(!m.matches(&o), "uid 998 is not 0");
        o.uid = Some(0);
        assert!(m.matches(&o));
        o.exe = None;
        assert!(!m.matches(&o), "an unknown field never matches a pattern");
    }

    #[test]
    fn bad_globs_name_the_field() {
        let e = compile_matcher(&MatcherConfig {
            exe: Some("/usr/[bin".into()),
            ..MatcherConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.0, "exe");
        assert!(e.1.contains("invalid glob"), "{}", e.1);
    }
}
