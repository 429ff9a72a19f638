//! The SOC's receiver: a real rsyslogd (Debian's, installed by bootstrap) with its own
//! configuration, imtcp on a free 127.0.0.1 port, writing every message it receives raw
//! (`%rawmsg%`, one a line: the agent's messages have no line breaks) to a file; and the
//! parsing of those RFC 5424 lines back into the agent's structured data and OCSF payload.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::daemon::{self, Daemon};

/// Where Debian installs it (bootstrap's `rsyslog` package).
const CANDIDATES: [&str; 3] = [
    "/usr/sbin/rsyslogd",
    "/sbin/rsyslogd",
    "/usr/local/sbin/rsyslogd",
];

pub fn binary() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// rsyslogd's whole configuration: the received messages to `received`, its own to
/// `internal` (never mixed, so every line of `received` is one message from the agent).
pub fn config(work: &Path, port: u16, received: &Path, internal: &Path) -> String {
    format!(
        "# Written by `cargo xtask e2e`.\n\
         global(workDirectory=\"{work}\" maxMessageSize=\"64k\")\n\
         module(load=\"imtcp\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
         ruleset(name=\"alerts\") {{\n\
         \x20 action(type=\"omfile\" file=\"{received}\" template=\"raw\")\n\
         }}\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"alerts\")\n\
         *.* action(type=\"omfile\" file=\"{internal}\")\n",
        work = work.display(),
        received = received.display(),
        internal = internal.display(),
    )
}

/// A running rsyslogd of the scenario (stopped by its pid on drop).
pub struct Receiver {
    pub daemon: Daemon,
    pub port: u16,
    pub received: PathBuf,
}

impl Receiver {
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The complete lines written so far.
    pub fn lines(&self) -> Vec<String> {
        complete_lines(&fs::read_to_string(&self.received).unwrap_or_default())
    }
}

/// Starts rsyslogd in the foreground (`-n`) with its configuration in a fresh `dir`, and
/// waits until it listens.
pub fn start(bin: &Path, dir: &Path) -> Result<Receiver> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("work"))?;
    let port = daemon::free_port()?;
    let received = dir.join("received.log");
    let conf = dir.join("rsyslog.conf");
    fs::write(
        &conf,
        config(
            &dir.join("work"),
            port,
            &received,
            &dir.join("internal.log"),
        ),
    )?;
    let mut d = Daemon::spawn(
        "rsyslogd",
        Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid")),
        &dir.join("rsyslogd.stdout.log"),
    )?;
    // Polled in /proc/net/tcp, not by connecting: a probe connection would be a session
    // rsyslogd logs as aborted.
    d.wait_until(Duration::from_secs(30), || listening(port))
        .context("rsyslogd does not listen")?;
    Ok(Receiver {
        daemon: d,
        port,
        received,
    })
}

/// Whether something listens on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    fs::read_to_string("/proc/net/tcp").is_ok_and(|t| tcp_table_listens(&t, port))
}

fn tcp_table_listens(table: &str, port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == wanted && f[3] == "0A"
    })
}

/// Lines ended by a newline (a last line being written is left for the next read).
fn complete_lines(text: &str) -> Vec<String> {
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end].lines().map(str::to_owned).collect()
}

/// One RFC 5424 message as the agent sends it.
#[derive(Debug)]
pub struct Message {
    pub msgid: String,
    /// The `egress@32473` parameters.
    pub params: BTreeMap<String, String>,
    /// The message part as JSON (the OCSF event), if it is JSON.
    pub payload: Option<Value>,
}

/// Parses `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`: header fields are single
/// tokens, structured data values are quoted with `"`, `\` and `]` escaped.
pub fn parse(line: &str) -> Result<Message> {
    let mut fields = line.splitn(7, ' ');
    let pri = fields.next().unwrap_or_default();
    if !(pri.starts_with('<') && pri.ends_with(">1")) {
        bail!("not an RFC 5424 message: {}", head(line));
    }
    let msgid = fields.nth(4).context("no MSGID")?.to_owned();
    let rest = fields.next().context("no structured data")?;
    let (params, msg) = structured_data(rest).with_context(|| head(line))?;
    let payload = serde_json::from_str(msg.trim()).ok();
    Ok(Message {
        msgid,
        params,
        payload,
    })
}

fn head(line: &str) -> String {
    line.chars().take(120).collect()
}

/// `[id k="v" ...]` (one element, as the agent writes) and what follows it.
fn structured_data(s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let body = s.strip_prefix('[').context("no structured data element")?;
    let mut params = BTreeMap::new();
    let mut chars = body.char_indices().peekable();
    // The SD-ID.
    while chars.peek().is_some_and(|(_, c)| !matches!(c, ' ' | ']')) {
        chars.next();
    }
    loop {
        match chars.next() {
            Some((i, ']')) => return Ok((params, body[i + 1..].trim_start_matches(' '))),
            Some((_, ' ')) => {}
            Some((start, _)) => {
                let eq = body[start..].find("=\"").context("parameter without =\"")? + start;
                while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => bail!("unterminated parameter value"),
                    }
                }
                params.insert(body[start..eq].to_owned(), value);
            }
            None => bail!("unterminated structured data"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As `monitor/src/export/syslog.rs` writes it (header, escaped values, OCSF after).
    const LINE: &str = r#"<107>1 2026-11-02T10:00:01.123456Z vm egress-monitor 4242 opened [egress@32473 eventId="e-1" alertId="a-1" rule="unknown_volume" service="messaging" bytes="40000000" peer="127.0.0.66" title="a \"quoted\" \] x\\y"] {"class_uid":2004,"metadata":{"event_code":"unknown_volume"}}"#;

    #[test]
    fn an_agent_message_parses_into_parameters_and_payload() {
        let m = parse(LINE).unwrap();
        assert_eq!(m.msgid, "opened");
        assert_eq!(m.params["rule"], "unknown_volume");
        assert_eq!(m.params["peer"], "127.0.0.66");
        assert_eq!(m.params["bytes"], "40000000");
        assert_eq!(m.params["title"], r#"a "quoted" ] x\y"#);
        assert_eq!(m.params.len(), 7);
        let p = m.payload.unwrap();
        assert_eq!(p["class_uid"], 2004);
        assert_eq!(p["metadata"]["event_code"], "unknown_volume");
    }

    #[test]
    fn text_payloads_and_garbage() {
        let m = parse(r#"<1>1 t h a 1 resolved [egress@32473 rule="x"] some text"#).unwrap();
        assert_eq!(m.params["rule"], "x");
        assert!(m.payload.is_none());
        assert!(parse("hello world").is_err());
        assert!(parse(r#"<1>1 t h a 1 m [egress@32473 rule="x"#).is_err());
        assert!(parse("<1>1 t h a 1 m no-sd").is_err());
    }

    #[test]
    fn only_complete_lines_are_read() {
        assert_eq!(complete_lines("a\nb\nhalf"), vec!["a", "b"]);
        assert_eq!(complete_lines("half"), Vec::<String>::new());
        assert_eq!(complete_lines("a\n"), vec!["a"]);
    }

    #[test]
    fn listening_sockets_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue\n\
                     \x20  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
                     \x20  1: 0100007F:0050 0200007F:C350 01 00000000:00000000\n";
        assert!(tcp_table_listens(table, 8080));
        assert!(!tcp_table_listens(table, 80), "established, not listening");
        assert!(!tcp_table_listens(table, 81));
    }

    #[test]
    fn config_listens_on_loopback_and_writes_raw_messages() {
        let c = config(
            Path::new("/w"),
            5514,
            Path::new("/r.log"),
            Path::new("/i.log"),
        );
        assert!(
            c.contains(r#"input(type="imtcp" address="127.0.0.1" port="5514" ruleset="alerts")"#)
        );
        assert!(c.contains(r#"string="%rawmsg%\n""#));
        assert!(c.contains(r#"file="/r.log" template="raw""#));
        assert!(c.contains(r#"workDirectory="/w""#));
    }
}
