//! One machine-readable line per event on the serial console. Every line starts with
//! [`MARKER`]; fields are separated by single spaces and never contain whitespace (kernel
//! releases, binary names and Rust test paths have none; [`field`] enforces it).
//!
//! ```text
//! EGRESS-VM-START <kernel> <binary> <test>
//! EGRESS-VM-RESULT <kernel> <binary> <test> ok|FAILED|hung|ignored <secs>
//! EGRESS-VM-ERROR <kernel> <message...>
//! EGRESS-VM-DONE <kernel> <passed> <failed>
//! EGRESS-VM-KERNEL <kernel> ok|FAILED <passed> <failed> <secs>
//! ```
//!
//! The init prints all but the last; `cargo xtask vm-test` prints the `KERNEL` verdict on the
//! host, once per kernel, after the VM stopped (a kernel whose init never said `DONE`, or
//! that died, is `FAILED` whatever its tests said).
//!
//! The serial console interleaves kernel messages with the init's output, sometimes in the
//! middle of a line, so [`Line::find`] looks for the marker anywhere in a console line.

use std::{fmt, str::FromStr};

/// The prefix every protocol line starts with.
pub const MARKER: &str = "EGRESS-VM-";

/// How one test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Killed by the init's per-test timeout, or (host side) by the watchdog.
    Hung,
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "FAILED",
            Self::Hung => "hung",
            Self::Ignored => "ignored",
        }
    }

    /// Whether this outcome fails the run.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Hung)
    }
}

/// One protocol line.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    Start {
        kernel: String,
        binary: String,
        test: String,
    },
    Result {
        kernel: String,
        binary: String,
        test: String,
        outcome: Outcome,
        secs: f64,
    },
    /// Something the init could not do (mount, module, a binary that would not start).
    Error { kernel: String, message: String },
    /// The init finished every binary and is about to power off.
    Done {
        kernel: String,
        passed: u32,
        failed: u32,
    },
    /// The host's verdict on one kernel.
    Kernel {
        kernel: String,
        ok: bool,
        passed: u32,
        failed: u32,
        secs: f64,
    },
}

/// Why a line is not a protocol line.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    NoMarker,
    UnknownKind(String),
    /// Too few or too many fields for the kind.
    Fields {
        kind: &'static str,
        found: usize,
    },
    BadOutcome(String),
    BadNumber(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMarker => write!(f, "no {MARKER} marker"),
            Self::UnknownKind(k) => write!(f, "unknown line kind {MARKER}{k}"),
            Self::Fields { kind, found } => {
                write!(f, "{MARKER}{kind} line with {found} fields")
            }
            Self::BadOutcome(o) => write!(f, "unknown outcome {o:?}"),
            Self::BadNumber(n) => write!(f, "not a number: {n:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A field as written on a line: whitespace would split it, so it becomes `_`; an empty field
/// would vanish, so it becomes `-`.
pub fn field(s: &str) -> String {
    if s.is_empty() {
        return "-".to_owned();
    }
    s.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start {
                kernel,
                binary,
                test,
            } => write!(
                f,
                "{MARKER}START {} {} {}",
                field(kernel),
                field(binary),
                field(test)
            ),
            Self::Result {
                kernel,
                binary,
                test,
                outcome,
                secs,
            } => write!(
                f,
                "{MARKER}RESULT {} {} {} {} {secs:.2}",
                field(kernel),
                field(binary),
                field(test),
                outcome.as_str()
            ),
            Self::Error { kernel, message } => {
                // One line: a multi-line message would lose its tail to the parser.
                let message = message.replace(['\n', '\r'], " ");
                write!(f, "{MARKER}ERROR {} {message}", field(kernel))
            }
            Self::Done {
                kernel,
                passed,
                failed,
            } => write!(f, "{MARKER}DONE {} {passed} {failed}", field(kernel)),
            Self::Kernel {
                kernel,
                ok,
                passed,
                failed,
                secs,
            } => write!(
                f,
                "{MARKER}KERNEL {} {} {passed} {failed} {secs:.1}",
                field(kernel),
                if *ok { "ok" } else { "FAILED" }
            ),
        }
    }
}

impl FromStr for Outcome {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "ok" => Ok(Self::Ok),
            "FAILED" => Ok(Self::Failed),
            "hung" => Ok(Self::Hung),
            "ignored" => Ok(Self::Ignored),
            _ => Err(ParseError::BadOutcome(s.to_owned())),
        }
    }
}

fn number<T: FromStr>(s: &str) -> Result<T, ParseError> {
    s.parse().map_err(|_| ParseError::BadNumber(s.to_owned()))
}

impl Line {
    /// The protocol line inside a console line, if any (see the module docs).
    pub fn find(console_line: &str) -> Option<Result<Self, ParseError>> {
        let at = console_line.find(MARKER)?;
        Some(console_line[at..].parse())
    }
}

impl FromStr for Line {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let rest = s
            .trim_end()
            .strip_prefix(MARKER)
            .ok_or(ParseError::NoMarker)?;
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let f: Vec<&str> = rest.split(' ').filter(|w| !w.is_empty()).collect();
        let want = |kind: &'static str, n: usize| {
            if f.len() == n {
                Ok(())
            } else {
                Err(ParseError::Fields {
                    kind,
                    found: f.len(),
                })
            }
        };
        match kind {
            "START" => {
                want("START", 3)?;
                Ok(Self::Start {
                    kernel: f[0].to_owned(),
                    binary: f[1].to_owned(),
                    test: f[2].to_owned(),
                })
            }
            "RESULT" => {
                want("RESULT", 5)?;
                Ok(Self::Result {
                    kernel: f[0].to_owned(),
                    binary: f[1].to_owned(),
                    test: f[2].to_owned(),
                    outcome: f[3].parse()?,
                    secs: number(f[4])?,
                })
            }
            "ERROR" => {
                let Some((kernel, message)) = rest.trim().split_once(' ') else {
                    return Err(ParseError::Fields {
                        kind: "ERROR",
                        found: f.len(),
                    });
                };
                Ok(Self::Error {
                    kernel: kernel.to_owned(),
                    message: message.trim().to_owned(),
                })
            }
            "DONE" => {
                want("DONE", 3)?;
                Ok(Self::Done {
                    kernel: f[0].to_owned(),
                    passed: number(f[1])?,
                    failed: number(f[2])?,
                })
            }
            "KERNEL" => {
                want("KERNEL", 5)?;
                let ok = match f[1] {
                    "ok" => true,
                    "FAILED" => false,
                    other => return Err(ParseError::BadOutcome(other.to_owned())),
                };
                Ok(Self::Kernel {
                    kernel: f[0].to_owned(),
                    ok,
                    passed: number(f[2])?,
                    failed: number(f[3])?,
                    secs: number(f[4])?,
                })
            }
            other => Err(ParseError::UnknownKind(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, secs: f64) -> Line {
        Line::Result {
            kernel: "6.1.0-56-amd64".into(),
            binary: "tcp_attribution".into(),
            test: "accepted::socket_is_attributed".into(),
            outcome,
            secs,
        }
    }

    #[test]
    fn result_line_text_is_the_documented_format() {
        assert_eq!(
            result(Outcome::Failed, 1.5).to_string(),
            "EGRESS-VM-RESULT 6.1.0-56-amd64 tcp_attribution accepted::socket_is_attributed FAILED 1.50"
        );
    }

    #[test]
    fn every_kind_round_trips() {
        let lines = [
            Line::Start {
                kernel: "k".into(),
                binary: "b".into(),
                test: "t".into(),
            },
            result(Outcome::Ok, 0.25),
            result(Outcome::Failed, 3.0),
            result(Outcome::Hung, 300.0),
            result(Outcome::Ignored, 0.0),
            Line::Error {
                kernel: "k".into(),
                message: "mount tracefs on /sys/kernel/tracing: ENODEV".into(),
            },
            Line::Done {
                kernel: "k".into(),
                passed: 12,
                failed: 1,
            },
            Line::Kernel {
                kernel: "6.1.0-56-amd64".into(),
                ok: false,
                passed: 40,
                failed: 1,
                secs: 135.5,
            },
        ];
        for line in lines {
            assert_eq!(line.to_string().parse::<Line>(), Ok(line.clone()));
        }
    }

    #[test]
    fn found_inside_kernel_noise_and_carriage_returns() {
        let console = "[    3.201] random: crng init done\rEGRESS-VM-DONE 6.1.0 3 0\r";
        assert_eq!(
            Line::find(console),
            Some(Ok(Line::Done {
                kernel: "6.1.0".into(),
                passed: 3,
                failed: 0
            }))
        );
        assert_eq!(Line::find("[    3.1] virtio_net virtio0: ok"), None);
    }

    #[test]
    fn whitespace_in_a_field_cannot_shift_the_others() {
        let line = Line::Start {
            kernel: "k".into(),
            binary: "my bin".into(),
            test: String::new(),
        };
        assert_eq!(line.to_string(), "EGRESS-VM-START k my_bin -");
        let multi = Line::Error {
            kernel: "k".into(),
            message: "a\nb".into(),
        };
        assert_eq!(multi.to_string(), "EGRESS-VM-ERROR k a b");
    }

    #[test]
    fn malformed_lines_are_errors_not_results() {
        assert_eq!(
            "EGRESS-VM-RESULT k b t ok".parse::<Line>(),
            Err(ParseError::Fields {
                kind: "RESULT",
                found: 4
            })
        );
        assert_eq!(
            "EGRESS-VM-RESULT k b t passed 1.0".parse::<Line>(),
            Err(ParseError::BadOutcome("passed".into()))
        );
        assert_eq!(
            "EGRESS-VM-DONE k x 0".parse::<Line>(),
            Err(ParseError::BadNumber("x".into()))
        );
        assert_eq!(
            "EGRESS-VM-KERNEL k maybe 1 0 2.0".parse::<Line>(),
            Err(ParseError::BadOutcome("maybe".into()))
        );
        assert_eq!(
            "EGRESS-VM-BOOM".parse::<Line>(),
            Err(ParseError::UnknownKind("BOOM".into()))
        );
        assert_eq!("hello".parse::<Line>(), Err(ParseError::NoMarker));
    }

    #[test]
    fn only_failed_and_hung_fail_the_run() {
        assert!(Outcome::Failed.is_failure() && Outcome::Hung.is_failure());
        assert!(!Outcome::Ok.is_failure() && !Outcome::Ignored.is_failure());
    }
}
