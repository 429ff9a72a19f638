//! CEF (Common Event Format): `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|extension`.
//! The byte count goes in `cn1` (a long); `out` (bytes from source to destination, the
//! host's egress) is only written when it fits the 32-bit integer common parsers use.

use std::fmt::Write as _;

use super::{Reporter, event_id, severity_score};
use crate::detect::alerts::AlertEvent;

/// Escapes a header field: `\` and `|`.
pub(super) fn header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

/// Escapes an extension value: `\`, `=`, and line breaks.
pub(super) fn value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// The CEF line for `e`.
pub fn line(e: &AlertEvent, reporter: &Reporter) -> String {
    let a = &e.alert;
    let mut s = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        header(reporter.product),
        header(reporter.product),
        header(reporter.version),
        header(a.rule.id()),
        header(&a.title),
        (u32::from(severity_score(a.severity)) + 5) / 10
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", e.at.as_millisecond().to_string()),
        ("start", a.first_seen.as_millisecond().to_string()),
        ("end", a.last_seen.as_millisecond().to_string()),
        ("act", e.event.name().to_owned()),
        (
            "cat",
            format!("{}/{}", a.attack.tactic_id, a.attack.technique_id),
        ),
        ("shost", reporter.hostname.clone()),
        ("externalId", event_id(e).to_string()),
        ("cn1", a.bytes.to_string()),
        ("cn1Label", "bytesInWindow".into()),
        ("cn2", a.threshold.bytes.to_string()),
        ("cn2Label", "thresholdBytes".into()),
        ("cn3", a.total_bytes.to_string()),
        ("cn3Label", "totalBytes".into()),
        ("cs1", a.service.clone()),
        ("cs1Label", "service".into()),
        ("cs2", a.id.to_string()),
        ("cs2Label", "alertId".into()),
        ("cs3", a.window.name().to_owned()),
        ("cs3Label", "window".into()),
    ];
    if let Ok(out) = i32::try_from(a.bytes) {
        ext.push(("out", out.to_string()));
    }
    if let Some(p) = &a.peer {
        ext.push(("dst", p.addr.to_string()));
        ext.push(("dpt", p.port.to_string()));
        if let Some(name) = &p.name {
            ext.push(("dhost", name.clone()));
        }
        ext.push(("cs4", p.class.name().to_owned()));
        ext.push(("cs4Label", "peerClass".into()));
        if p.prefix_len.is_some() {
            ext.push(("cs6", p.addr_text()));
            ext.push(("cs6Label", "destinationPrefix".into()));
        }
    }
    if let Some(r) = a.threshold.reference {
        ext.push(("cs5", r.name().to_owned()));
        ext.push(("cs5Label", "judgedAgainst".into()));
    }
    if let Some(o) = &a.process {
        if let Some(pid) = o.pid {
            ext.push(("spid", pid.to_string()));
        }
        if let Some(comm) = &o.comm {
            ext.push(("sproc", comm.clone()));
        }
        if let Some(user) = &o.user {
            ext.push(("suser", user.clone()));
        }
    }
    ext.push(("msg", crate::alert_output::summary(a)));
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{k}={}", value(v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixtures::{self, reporter};

    /// Splits an extension the way a CEF parser does: a key is a word followed by `=` that
    /// is not escaped; the value runs to the next key.
    fn parse_extension(ext: &str) -> Vec<(String, String)> {
        let bytes = ext.as_bytes();
        let mut keys = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && (i == 0 || bytes[i - 1] != b'\\') {
                let start = ext[..i].rfind(' ').map_or(0, |p| p + 1);
                keys.push((start, i));
            }
            i += 1;
        }
        keys.iter()
            .enumerate()
            .map(|(n, &(ks, eq))| {
                let end = keys.get(n + 1).map_or(ext.len(), |&(next, _)| next - 1);
                let raw = &ext[eq + 1..end];
                let v = raw
                    .replace("\\=", "=")
                    .replace("\\n", "\n")
                    .replace("\\r", "\r")
                    .replace("\\\\", "\\");
                (ext[ks..eq].to_owned(), v)
            })
            .collect()
    }

    /// The seven header fields (unescaped) and the extension, honouring `\|` escapes.
    fn split_header(line: &str) -> (Vec<String>, &str) {
        let mut fields = Vec::new();
        let mut current = String::new();
        let mut chars = line.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        current.push(next);
                    }
                }
                '|' => {
                    fields.push(std::mem::take(&mut current));
                    if fields.len() == 7 {
                        return (fields, &line[i + 1..]);
                    }
                }
                c => current.push(c),
            }
        }
        (fields, "")
    }

    #[test]
    fn header_and_extension_parse_back() {
        let e = fixtures::opened();
        let line = line(&e, &reporter());
        let (header, ext) = split_header(&line);
        assert_eq!(header[0], "CEF:0");
        assert_eq!(header[4], "peer_outlier");
        assert_eq!(header[6], "7", "high = 73/100");
        let ext = parse_extension(ext);
        let get = |k: &str| ext.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("cn1").as_deref(), Some("100000000"));
        assert_eq!(get("out").as_deref(), Some("100000000"));
        assert_eq!(get("dst").as_deref(), Some("2001:db8::8a"));
        assert_eq!(get("spid").as_deref(), Some("1202"));
        assert_eq!(get("cs2").unwrap(), e.alert.id.to_string());
        assert!(get("msg").unwrap().contains("peer_outlier"));
    }

    #[test]
    fn escapes_and_large_counts() {
        let mut e = fixtures::opened();
        e.alert.title = "a|b\\c".into();
        e.alert.service = "x=y\nz".into();
        e.alert.bytes = 5_000_000_000;
        let line = line(&e, &reporter());
        assert!(line.contains("|a\\|b\\\\c|"), "{line}");
        assert!(line.contains("cs1=x\\=y\\nz "), "{line}");
        assert!(line.contains("cn1=5000000000"), "{line}");
        assert!(!line.contains(" out="), "over 2^31: only in cn1");
        let (header, ext) = split_header(&line);
        assert_eq!(header[5], "a|b\\c");
        let ext = parse_extension(ext);
        assert!(
            ext.iter().any(|(k, v)| k == "cs1" && v == "x=y\nz"),
            "{ext:?}"
        );
    }
}
