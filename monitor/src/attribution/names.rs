//! Passive DNS: the name the host resolved for each destination address, learned from the DNS
//! answers its sockets received (copied by the kernel's `watch_ingress` program).
//!
//! Every A/AAAA address in an answer is mapped to the answer's *question* name, so a CNAME
//! chain (`www.example.com` -> `cdn.example.net` -> 192.0.2.7) names the address after what
//! the application asked for. The table is bounded: past [`MAX_ADDRESSES`] the oldest entry
//! goes first, counted. An address shared by several names (a CDN) carries the latest one.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use monitor_common::DnsCapture;
use serde::Serialize;
use simple_dns::{CLASS, Packet, rdata::RData};
use thiserror::Error;

/// Addresses remembered at most. Measured: about 250 bytes per address when each has a name
/// of its own (16 MiB when full); addresses of one answer share their name.
pub const MAX_ADDRESSES: usize = 65_536;
/// Shortest time an address keeps its name, whatever the record's TTL says. Applications
/// keep connections (and resolvers their cache) long after a short TTL has run out: a
/// connection opened from a 60 s answer still deserves its name an hour later.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// How often expired entries are looked for (a full pass over the table).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

const HEADER_BYTES: usize = 12;
const OPCODE_QUERY: u8 = 0;
const RCODE_NOERROR: u8 = 0;

/// Why a captured payload gave no names.
#[derive(Debug, Error)]
pub enum AnswerError {
    #[error("shorter than a DNS header ({len} bytes)")]
    TooShort { len: usize },
    #[error("a query, not a response (QR=0)")]
    NotResponse,
    #[error("not a standard query (opcode {opcode})")]
    NotQuery { opcode: u8 },
    #[error("response code {rcode}, not NOERROR")]
    ErrorRcode { rcode: u8 },
    #[error("malformed DNS message")]
    Malformed {
        #[source]
        source: simple_dns::SimpleDnsError,
    },
    #[error("no question in the response")]
    NoQuestion,
}

/// What one DNS response says: its question name and the addresses it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Question name, lower case, without the trailing dot; bytes outside printable ASCII
    /// escaped as `\DDD` (so a hostile name cannot inject terminal escapes into text output).
    pub name: String,
    /// Each A/AAAA address of the answer section with its TTL in seconds.
    pub addrs: Vec<(IpAddr, u32)>,
    /// Some answer records could not be read (the capture was cut, or a record was
    /// malformed): only those before them are in `addrs`.
    pub partial: bool,
}

/// Parses one DNS response. Only the header, question and answer sections are read: the
/// authority and additional sections carry no answer for the question, and skipping them
/// lets an answer cut by the capture limit still give its first addresses.
pub fn parse_answer(payload: &[u8]) -> Result<Answer, AnswerError> {
    let header: &[u8; HEADER_BYTES] = payload
        .first_chunk()
        .ok_or(AnswerError::TooShort { len: payload.len() })?;
    if header[2] & 0x80 == 0 {
        return Err(AnswerError::NotResponse);
    }
    let opcode = (header[2] >> 3) & 0x0f;
    if opcode != OPCODE_QUERY {
        return Err(AnswerError::NotQuery { opcode });
    }
    let rcode = header[3] & 0x0f;
    if rcode != RCODE_NOERROR {
        return Err(AnswerError::ErrorRcode { rcode });
    }
    let mut msg = payload.to_vec();
    // NSCOUNT and ARCOUNT = 0: the parser stops after the answer section.
    msg[8..12].fill(0);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let (packet, partial) = if let Ok(p) = Packet::parse(&msg) {
        (p, false)
    } else {
        // Records parse in order, so "the first k answers parse" holds for every k up to
        // some maximum: find it by bisection (16 parses at most, even for a hostile ANCOUNT
        // of 65535). Parsing with k answers reads no byte past the k-th.
        let good = longest_parsable_prefix(&mut msg, answers)?;
        set_answer_count(&mut msg, good);
        let p = Packet::parse(&msg).map_err(|source| AnswerError::Malformed { source })?;
        (p, true)
    };
    let question = packet.questions.first().ok_or(AnswerError::NoQuestion)?;
    let name = display_name(question.qname.as_bytes());
    let addrs = packet
        .answers
        .iter()
        .filter(|rr| rr.class == CLASS::IN)
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some((IpAddr::V4(Ipv4Addr::from(a.address)), rr.ttl)),
            // An IPv4-mapped AAAA (::ffff:a.b.c.d) names the IPv4 address: that is how the
            // collector reports such peers.
            RData::AAAA(a) => Some((IpAddr::V6(Ipv6Addr::from(a.address)).to_canonical(), rr.ttl)),
            _ => None,
        })
        .collect();
    Ok(Answer {
        name,
        addrs,
        partial,
    })
}

fn set_answer_count(msg: &mut [u8], n: u16) {
    msg[6..8].copy_from_slice(&n.to_be_bytes());
}

/// The largest `k <= answers` such that the message parses with ANCOUNT = k (`answers`
/// itself is known not to parse). Fails when even the header and question do not.
fn longest_parsable_prefix(msg: &mut [u8], answers: u16) -> Result<u16, AnswerError> {
    set_answer_count(msg, 0);
    if let Err(source) = Packet::parse(msg) {
        return Err(AnswerError::Malformed { source });
    }
    // Invariant: `good` parses, `bad` does not.
    let (mut good, mut bad) = (0u16, answers);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        set_answer_count(msg, mid);
        if Packet::parse(msg).is_ok() {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good)
}

/// A name from its wire labels: lower case, dot-separated, escaped where not printable.
fn display_name<'a>(labels: impl Iterator<Item = &'a [u8]>) -> String {
    let mut out = String::new();
    for (i, label) in labels.enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(char::from(b.to_ascii_lowercase()));
            } else {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out
}

/// The payload of one `DNS_ANSWERS` ring buffer record, and whether the answer was longer
/// than what the kernel copied. `None` if the record is not a `DnsCapture`.
pub fn decode_capture(record: &[u8]) -> Option<(&[u8], bool)> {
    let len = u16::from_ne_bytes(*record.first_chunk()?);
    let captured = u16::from_ne_bytes(*record.get(2..)?.first_chunk()?);
    let data = record.get(offset_of!(DnsCapture, data)..size_of::<DnsCapture>())?;
    let payload = data.get(..usize::from(captured))?;
    Some((payload, len > captured))
}

/// Counters of the name table, cumulative since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NameStats {
    /// DNS answers read from the kernel.
    pub answers: u64,
    /// Address -> name entries written (new or refreshed).
    pub learned: u64,
    /// Queries, error responses (NXDOMAIN, SERVFAIL...), other opcodes.
    pub ignored: u64,
    /// Unreadable messages (garbage, cut before the question).
    pub malformed: u64,
    /// Answers of which only the first records could be read.
    pub partial: u64,
    /// Answers longer than the kernel's copy (`DNS_CAPTURE_BYTES`).
    pub cut: u64,
    /// Entries dropped, oldest first, to stay within [`MAX_ADDRESSES`].
    pub evicted: u64,
    /// Entries dropped because their retention ran out.
    pub expired: u64,
    /// Addresses named now.
    pub live: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    name: Arc<str>,
    expires: Instant,
    /// Position in `NameTable::order`.
    seq: u64,
}

/// Address -> name, bounded, oldest-first eviction.
#[derive(Debug)]
pub struct NameTable {
    /// `SipHash` (std's default): the keys come from DNS answers, which outsiders can shape.
    entries: HashMap<IpAddr, Entry>,
    /// Entries by when they were last written: the first is the next to evict.
    order: BTreeMap<u64, IpAddr>,
    next_seq: u64,
    capacity: usize,
    last_sweep: Option<Instant>,
    stats: NameStats,
}

impl Default for NameTable {
    fn default() -> Self {
        Self::new(MAX_ADDRESSES)
    }
}

impl NameTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
            last_sweep: None,
            stats: NameStats::default(),
        }
    }

    pub fn stats(&self) -> NameStats {
        NameStats {
            live: self.entries.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Counts a ring buffer record too short to be a capture (never expected from our own
    /// kernel program).
    pub fn count_undecodable(&mut self) {
        self.stats.answers += 1;
        self.stats.malformed += 1;
    }

    /// Learns from one captured answer (`cut`: the kernel copied only its start). Returns
    /// how many addresses were named; every outcome is counted in [`Self::stats`].
    pub fn learn(&mut self, payload: &[u8], cut: bool, now: Instant) -> usize {
        self.stats.answers += 1;
        if cut {
            self.stats.cut += 1;
        }
        let answer = match parse_answer(payload) {
            Ok(a) => a,
            Err(AnswerError::TooShort { .. } | AnswerError::Malformed { .. }) => {
                self.stats.malformed += 1;
                return 0;
            }
            Err(error) => {
                tracing::trace!(%error, "DNS answer ignored");
                self.stats.ignored += 1;
                return 0;
            }
        };
        if answer.partial {
            self.stats.partial += 1;
        }
        if answer.name.is_empty() {
            self.stats.ignored += 1;
            return 0;
        }
        let name: Arc<str> = Arc::from(answer.name);
        for &(addr, ttl) in &answer.addrs {
            let keep = Duration::from_secs(u64::from(ttl)).max(MIN_RETENTION);
            self.insert(addr, &name, now + keep);
        }
        answer.addrs.len()
    }

    fn insert(&mut self, addr: IpAddr, name: &Arc<str>, expires: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.learned += 1;
        if let Some(e) = self.entries.get_mut(&addr) {
            self.order.remove(&e.seq);
            if *e.name == **name {
                // Same name again: it keeps whichever retention ends later.
                e.expires = e.expires.max(expires);
            } else {
                e.name = Arc::clone(name);
                e.expires = expires;
            }
            e.seq = seq;
            self.order.insert(seq, addr);
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evicted += 1;
        }
        self.entries.insert(
            addr,
            Entry {
                name: Arc::clone(name),
                expires,
                seq,
            },
        );
        self.order.insert(seq, addr);
    }

    /// The name of `addr`, if one was learned and its retention has not run out. One hash
    /// lookup; the name is shared, not copied.
    pub fn lookup(&self, addr: &IpAddr, now: Instant) -> Option<Arc<str>> {
        self.entries
            .get(addr)
            .filter(|e| e.expires > now)
            .map(|e| Arc::clone(&e.name))
    }

    /// Drops expired entries, at most once per [`SWEEP_EVERY`] (a pass over the table).
    pub fn expire(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        let order = &mut self.order;
        let mut expired = 0;
        self.entries.retain(|_, e| {
            let keep = e.expires > now;
            if !keep {
                order.remove(&e.seq);
                expired += 1;
            }
            keep
        });
        self.stats.expired += expired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS message built by hand (no DNS library), so the parser is checked against the
    /// wire format itself.
    struct Msg(Vec<u8>);

    impl Msg {
        /// Header with `flags`, one question for `qname` (type `qtype`, class IN).
        fn new(flags: u16, qname: &str, qtype: u16) -> Self {
            let mut m = vec![0x12, 0x34];
            m.extend_from_slice(&flags.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            m.extend_from_slice(&wire_name(qname));
            m.extend_from_slice(&qtype.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            Self(m)
        }

        fn response(qname: &str, qtype: u16) -> Self {
            // QR=1, RD=1, RA=1, NOERROR.
            Self::new(0x8180, qname, qtype)
        }

        fn bump(&mut self, index: usize) {
            let n = u16::from_be_bytes([self.0[index], self.0[index + 1]]) + 1;
            self.0[index..index + 2].copy_from_slice(&n.to_be_bytes());
        }

        /// One answer record; `owner` None = a pointer to the question name (offset 12).
        fn answer(mut self, owner: Option<&str>, rtype: u16, ttl: u32, rdata: &[u8]) -> Self {
            match owner {
                Some(n) => self.0.extend_from_slice(&wire_name(n)),
                None => self.0.extend_from_slice(&[0xc0, 12]),
            }
            self.0.extend_from_slice(&rtype.to_be_bytes());
            self.0.extend_from_slice(&1u16.to_be_bytes());
            self.0.extend_from_slice(&ttl.to_be_bytes());
            self.0
                .extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
            self.0.extend_from_slice(rdata);
            self.bump(6);
            self
        }

        /// A record in the additional section (an EDNS OPT pseudo-record).
        fn additional_opt(mut self) -> Self {
            self.0
                .extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
            self.bump(10);
            self
        }
    }

    fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap());
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    const A: u16 = 1;
    const CNAME: u16 = 5;
    const AAAA: u16 = 28;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_record_names_its_address() {
        let m = Msg::response("Exfil.Example.TEST.", A).answer(None, A, 300, &[192, 0, 2, 7]);
        let a = parse_answer(&m.0).unwrap();
        assert_eq!(a.name, "exfil.example.test");
        assert_eq!(a.addrs, vec![(v4("192.0.2.7"), 300)]);
        assert!(!a.partial);
    }

    #[test]
    fn aaaa_records_name_every_address() {
        let ip1: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let ip2: Ipv6Addr = "2001:db8::8".parse().unwrap();
        let m = Msg::response("v6.example.test", AAAA)
            .answer(None, AAAA, 60, &ip1.octets())
            .answer(None, AAAA, 60, &ip2.octets())
            .additional_opt();
        let a = parse_answer(&m.0).unwrap();
        assert_eq!(a.addrs, vec![(IpAddr::V6(ip1), 60), (IpAddr::V6(ip2), 60)]);
    }

    #[test]
    fn a_v4_mapped_aaaa_names_the_ipv4_address() {
        let mapped: Ipv6Addr = "::ffff:192.0.2.44".parse().unwrap();
        let m = Msg::response("mapped.test", AAAA).answer(None, AAAA, 60, &mapped.octets());
        let a = parse_answer(&m.0).unwrap();
        assert_eq!(a.addrs, vec![(v4("192.0.2.44"), 60)]);
    }

    #[test]
    fn cname_chain_maps_to_the_question_name() {
        let m = Msg::response("www.example.test", A)
            .answer(None, CNAME, 3600, &wire_name("edge.cdn.test"))
            .answer(
                Some("edge.cdn.test"),
                CNAME,
                300,
                &wire_name("node7.cdn.test"),
            )
            .answer(Some("node7.cdn.test"), A, 20, &[198, 51, 100, 1])
            .answer(Some("node7.cdn.test"), A, 20, &[198, 51, 100, 2]);
        let mut t = NameTable::default();
        let now = Instant::now();
        assert_eq!(t.learn(&m.0, false, now), 2);
        for ip in ["198.51.100.1", "198.51.100.2"] {
            assert_eq!(
                t.lookup(&v4(ip), now).as_deref(),
                Some("www.example.test"),
                "{ip}"
            );
        }
        assert_eq!(t.stats().learned, 2);
    }

    #[test]
    fn nxdomain_and_servfail_are_ignored() {
        for (flags, rcode) in [(0x8183u16, 3u8), (0x8182, 2)] {
            let m = Msg::new(flags, "nope.example.test", A).answer(None, A, 60, &[192, 0, 2, 1]);
            assert!(matches!(
                parse_answer(&m.0),
                Err(AnswerError::ErrorRcode { rcode: r }) if r == rcode
            ));
        }
        let mut t = NameTable::default();
        let m = Msg::new(0x8183, "nope.example.test", A).answer(None, A, 60, &[192, 0, 2, 1]);
        assert_eq!(t.learn(&m.0, false, Instant::now()), 0);
        assert_eq!(t.stats().ignored, 1);
        assert_eq!(t.lookup(&v4("192.0.2.1"), Instant::now()), None);
    }

    #[test]
    fn a_query_is_not_an_answer() {
        // QR=0, even with an (invalid) answer record attached.
        let m = Msg::new(0x0100, "q.example.test", A).answer(None, A, 60, &[192, 0, 2, 2]);
        assert!(matches!(parse_answer(&m.0), Err(AnswerError::NotResponse)));
        // A response to another opcode (NOTIFY = 4).
        let m = Msg::new(0x8000 | (4 << 11), "q.example.test", A);
        assert!(matches!(
            parse_answer(&m.0),
            Err(AnswerError::NotQuery { opcode: 4 })
        ));
    }

    #[test]
    fn garbage_and_short_payloads_are_malformed_not_panics() {
        let mut t = NameTable::default();
        let now = Instant::now();
        assert_eq!(t.learn(&[], false, now), 0);
        assert_eq!(t.learn(&[0x81; 5], false, now), 0);
        // A response header claiming 65535 questions and answers, then noise.
        let mut junk = vec![0, 1, 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        junk.extend((0u8..=255).cycle().take(500));
        assert_eq!(t.learn(&junk, true, now), 0);
        // A question name that points at itself (a compression loop).
        let mut looped = vec![
            0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert_eq!(t.learn(&looped, false, now), 0);
        looped.truncate(13);
        assert_eq!(t.learn(&looped, false, now), 0);
        let s = t.stats();
        assert_eq!((s.answers, s.malformed, s.cut), (5, 5, 1));
        assert_eq!(s.live, 0);
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        // A small deterministic generator (xorshift): thousands of odd messages, some with a
        // valid response header so the parser goes past it.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut t = NameTable::new(64);
        let now = Instant::now();
        for i in 0..5000usize {
            let len = i % 600;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if buf.len() >= 4 && i % 2 == 0 {
                buf[2] = 0x81;
                buf[3] = 0x80;
            }
            t.learn(&buf, false, now);
        }
        assert!(t.stats().live <= 64);
    }

    #[test]
    fn an_answer_cut_mid_record_keeps_the_records_before_the_cut() {
        let m = Msg::response("big.example.test", A)
            .answer(None, A, 60, &[192, 0, 2, 1])
            .answer(None, A, 60, &[192, 0, 2, 2])
            .answer(None, A, 60, &[192, 0, 2, 3]);
        let cut = &m.0[..m.0.len() - 3];
        let a = parse_answer(cut).unwrap();
        assert!(a.partial);
        assert_eq!(a.addrs, vec![(v4("192.0.2.1"), 60), (v4("192.0.2.2"), 60)]);
        let mut t = NameTable::default();
        assert_eq!(t.learn(cut, true, Instant::now()), 2);
        let s = t.stats();
        assert_eq!((s.partial, s.cut, s.malformed), (1, 1, 0));
        // Cut inside the question: nothing to name.
        assert!(matches!(
            parse_answer(&m.0[..20]),
            Err(AnswerError::Malformed { .. })
        ));
    }

    #[test]
    fn non_printable_bytes_in_names_are_escaped() {
        let mut m = Msg::response("ab.test", A).answer(None, A, 60, &[192, 0, 2, 9]);
        m.0[13] = 0x1b; // ESC instead of 'a'
        let a = parse_answer(&m.0).unwrap();
        assert_eq!(a.name, "\\027b.test");
    }

    #[test]
    fn retention_is_at_least_an_hour_and_then_names_expire() {
        let mut t = NameTable::default();
        let now = Instant::now();
        let short = Msg::response("short.test", A).answer(None, A, 5, &[192, 0, 2, 1]);
        // A TTL longer than the minimum retention is kept for the TTL.
        let long = Msg::response("long.test", A).answer(None, A, 3630, &[192, 0, 2, 2]);
        t.learn(&short.0, false, now);
        t.learn(&long.0, false, now);
        let later = now + Duration::from_secs(MIN_RETENTION.as_secs() - 1);
        assert_eq!(
            t.lookup(&v4("192.0.2.1"), later).as_deref(),
            Some("short.test")
        );
        let after_hour = now + MIN_RETENTION + Duration::from_secs(1);
        assert_eq!(t.lookup(&v4("192.0.2.1"), after_hour), None);
        assert_eq!(
            t.lookup(&v4("192.0.2.2"), after_hour).as_deref(),
            Some("long.test")
        );
        t.expire(after_hour);
        let s = t.stats();
        assert_eq!((s.expired, s.live), (1, 1));
        // "long" expires 29 s after that sweep: it is not named any more at once, but the
        // next pass over the table comes only a minute after the previous one.
        let past_long = after_hour + Duration::from_secs(30);
        assert_eq!(t.lookup(&v4("192.0.2.2"), past_long), None);
        t.expire(past_long);
        assert_eq!(t.stats().live, 1);
        t.expire(after_hour + SWEEP_EVERY);
        assert_eq!((t.stats().live, t.stats().expired), (0, 2));
        assert!(t.order.is_empty());
    }

    #[test]
    fn the_latest_answer_wins_and_refreshing_keeps_the_longer_retention() {
        let mut t = NameTable::default();
        let now = Instant::now();
        let ip = v4("192.0.2.50");
        t.learn(
            &Msg::response("first.test", A)
                .answer(None, A, 9000, &[192, 0, 2, 50])
                .0,
            false,
            now,
        );
        t.learn(
            &Msg::response("first.test", A)
                .answer(None, A, 10, &[192, 0, 2, 50])
                .0,
            false,
            now,
        );
        let at = now + Duration::from_secs(8000);
        assert_eq!(t.lookup(&ip, at).as_deref(), Some("first.test"));
        t.learn(
            &Msg::response("second.test", A)
                .answer(None, A, 10, &[192, 0, 2, 50])
                .0,
            false,
            now,
        );
        assert_eq!(t.lookup(&ip, now).as_deref(), Some("second.test"));
        assert_eq!(t.stats().live, 1);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest_first() {
        let mut t = NameTable::new(3);
        let now = Instant::now();
        for i in 1..=3u8 {
            let m = Msg::response(&format!("n{i}.test"), A).answer(None, A, 60, &[10, 0, 0, i]);
            t.learn(&m.0, false, now);
        }
        // Refreshing n1 makes n2 the oldest.
        let m = Msg::response("n1.test", A).answer(None, A, 60, &[10, 0, 0, 1]);
        t.learn(&m.0, false, now);
        let m = Msg::response("n4.test", A).answer(None, A, 60, &[10, 0, 0, 4]);
        t.learn(&m.0, false, now);
        assert_eq!(t.lookup(&v4("10.0.0.2"), now), None);
        for (ip, name) in [
            ("10.0.0.1", "n1.test"),
            ("10.0.0.3", "n3.test"),
            ("10.0.0.4", "n4.test"),
        ] {
            assert_eq!(t.lookup(&v4(ip), now).as_deref(), Some(name));
        }
        let s = t.stats();
        assert_eq!((s.live, s.evicted), (3, 1));
        assert_eq!(t.order.len(), 3, "no stale order entries");
    }

    #[test]
    fn capture_records_decode_within_bounds() {
        let mut record = vec![0u8; size_of::<DnsCapture>()];
        record[0..2].copy_from_slice(&700u16.to_ne_bytes());
        record[2..4].copy_from_slice(&5u16.to_ne_bytes());
        record[8..13].copy_from_slice(b"hello");
        assert_eq!(decode_capture(&record), Some((&b"hello"[..], true)));
        // A `captured` past the buffer, or a short record, is refused, never read past.
        record[2..4].copy_from_slice(&9999u16.to_ne_bytes());
        assert_eq!(decode_capture(&record), None);
        assert_eq!(decode_capture(&record[..3]), None);
    }
}
