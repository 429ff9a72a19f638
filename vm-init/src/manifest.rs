//! `/manifest`: what the init does, written by `cargo xtask vm-test` into the initramfs.
//! One directive per line, `#` starts a comment:
//!
//! ```text
//! module /lib/modules/virtio_ring.ko     # finit_module, in this order
//! env EGRESS_MONITOR_BIN=/bin/egress-monitor
//! timeout 300                            # seconds per test before it counts as hung
//! test /t/deps/tcp_attribution           # a libtest binary: each test run on its own
//! run smoke 60 /bin/egress-monitor --help   # a command that must exit 0 (name, timeout, argv)
//! ```

use std::fmt;

/// The default per-test timeout, in seconds: TCG runs tests several times slower than a host.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Kernel modules to insert, dependencies first.
    pub modules: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout_secs: u64,
    /// libtest binaries, in order.
    pub tests: Vec<String>,
    /// Plain commands that pass when they exit 0.
    pub commands: Vec<RunCommand>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCommand {
    pub name: String,
    pub timeout_secs: u64,
    pub argv: Vec<String>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            modules: Vec::new(),
            env: Vec::new(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            tests: Vec::new(),
            commands: Vec::new(),
        }
    }
}

/// A manifest line the init does not understand (line numbers start at 1).
#[derive(Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "manifest line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let mut m = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ManifestError {
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (directive, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            match directive {
                "module" if !rest.is_empty() => m.modules.push(rest.to_owned()),
                "test" if !rest.is_empty() => m.tests.push(rest.to_owned()),
                "env" => {
                    let (k, v) = rest
                        .split_once('=')
                        .ok_or_else(|| err(format!("env needs KEY=VALUE, got {rest:?}")))?;
                    m.env.push((k.to_owned(), v.to_owned()));
                }
                "timeout" => {
                    m.timeout_secs = rest
                        .parse()
                        .map_err(|_| err(format!("timeout needs seconds, got {rest:?}")))?;
                }
                "run" => {
                    let mut words = rest.split_whitespace();
                    let (Some(name), Some(secs)) = (words.next(), words.next()) else {
                        return Err(err("run needs NAME TIMEOUT ARGV...".into()));
                    };
                    let timeout_secs = secs
                        .parse()
                        .map_err(|_| err(format!("run timeout needs seconds, got {secs:?}")))?;
                    let argv: Vec<String> = words.map(str::to_owned).collect();
                    if argv.is_empty() {
                        return Err(err(format!("run {name}: no command")));
                    }
                    m.commands.push(RunCommand {
                        name: name.to_owned(),
                        timeout_secs,
                        argv,
                    });
                }
                other => return Err(err(format!("unknown or empty directive {other:?}"))),
            }
        }
        Ok(m)
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for module in &self.modules {
            writeln!(f, "module {module}")?;
        }
        for (k, v) in &self.env {
            writeln!(f, "env {k}={v}")?;
        }
        writeln!(f, "timeout {}", self.timeout_secs)?;
        for test in &self.tests {
            writeln!(f, "test {test}")?;
        }
        for c in &self.commands {
            writeln!(f, "run {} {} {}", c.name, c.timeout_secs, c.argv.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_manifest_reads_back() {
        let m = Manifest {
            modules: vec![
                "/lib/modules/virtio.ko".into(),
                "/lib/modules/veth.ko".into(),
            ],
            env: vec![("EGRESS_MONITOR_BIN".into(), "/bin/egress-monitor".into())],
            timeout_secs: 120,
            tests: vec!["/t/deps/top".into()],
            commands: vec![RunCommand {
                name: "smoke".into(),
                timeout_secs: 60,
                argv: vec!["/bin/egress-monitor".into(), "--help".into()],
            }],
        };
        assert_eq!(Manifest::parse(&m.to_string()), Ok(m));
    }

    #[test]
    fn comments_blank_lines_and_default_timeout() {
        let m = Manifest::parse("# header\n\ntest /t/a   # first\n").unwrap();
        assert_eq!(m.tests, ["/t/a"]);
        assert_eq!(m.timeout_secs, DEFAULT_TIMEOUT_SECS);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Manifest::parse("test /t/a\ntimeout soon\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("\"soon\""), "{e}");
        assert_eq!(Manifest::parse("frobnicate x").unwrap_err().line, 1);
        assert_eq!(Manifest::parse("run smoke 5").unwrap_err().line, 1);
        assert_eq!(Manifest::parse("env NOEQUALS").unwrap_err().line, 1);
    }
}
