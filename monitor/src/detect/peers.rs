//! Per (service, peer) state: four sliding windows and what an alert needs to name the peer.
//! Kept small on purpose (about 200 bytes with its key): a busy homeserver has hundreds of
//! thousands of clients.

use std::{net::IpAddr, sync::Arc};

use super::window::{Window, WindowLen};
use crate::flow::Owner;

/// (service id, peer address as 16 bytes, IPv4 mapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub service: u32,
    pub addr: [u8; 16],
}

impl PeerKey {
    pub fn new(service: u32, addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Self { service, addr }
    }

    pub fn ip(&self) -> IpAddr {
        crate::flow::ip_from_kernel(self.addr)
    }
}

pub const LEARNED: u8 = 1;
/// Changed since the last checkpoint.
pub const DIRTY: u8 = 2;

#[derive(Clone, Debug, Default)]
pub struct PeerState {
    pub windows: [Window; 4],
    /// Unix seconds of the first sample to this peer.
    pub first_seen: u64,
    /// Unix milliseconds of the latest sample.
    pub last_seen_ms: u64,
    /// The process that last sent to the peer.
    pub owner: Option<Arc<Owner>>,
    /// Name the host resolved for the address (passive DNS), when known.
    pub name: Option<Arc<str>>,
    pub port: u16,
    pub flags: u8,
}

impl PeerState {
    pub fn window(&self, len: WindowLen) -> &Window {
        &self.windows[len.index()]
    }

    pub fn learned(&self) -> bool {
        self.flags & LEARNED != 0
    }

    /// Fixed little-endian encoding of the counters, for checkpoints (owner and name are not
    /// kept: they are refreshed by the next sample).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(ENCODING_VERSION);
        out.push(self.flags & LEARNED);
        out.extend_from_slice(&self.port.to_le_bytes());
        out.extend_from_slice(&self.first_seen.to_le_bytes());
        out.extend_from_slice(&self.last_seen_ms.to_le_bytes());
        for w in &self.windows {
            out.extend_from_slice(&w.to_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN || bytes[0] != ENCODING_VERSION {
            return None;
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let mut windows = [Window::default(); 4];
        for (i, w) in windows.iter_mut().enumerate() {
            let at = 20 + i * Window::ENCODED_LEN;
            *w = Window::from_bytes(&bytes[at..at + Window::ENCODED_LEN])?;
        }
        Some(Self {
            windows,
            first_seen: u64_at(4),
            last_seen_ms: u64_at(12),
            owner: None,
            name: None,
            port: u16::from_le_bytes([bytes[2], bytes[3]]),
            flags: bytes[1] & LEARNED,
        })
    }
}

const ENCODING_VERSION: u8 = 1;
const ENCODED_LEN: usize = 20 + 4 * Window::ENCODED_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_ipv4() {
        let a = PeerKey::new(3, "198.51.100.7".parse().unwrap());
        assert_eq!(a.ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        let b = PeerKey::new(3, "::ffff:198.51.100.7".parse().unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn encoding_round_trips() {
        let mut p = PeerState {
            first_seen: 1_790_000_000,
            last_seen_ms: 1_790_000_123_456,
            port: 443,
            flags: LEARNED | DIRTY,
            ..PeerState::default()
        };
        for (i, len) in WindowLen::ALL.into_iter().enumerate() {
            p.windows[i].roll(len, 1_790_000_100);
            p.windows[i].add(1000 * (i as u64 + 1), 7);
        }
        let back = PeerState::decode(&p.encode()).unwrap();
        assert_eq!(back.windows, p.windows);
        assert_eq!(
            (back.first_seen, back.last_seen_ms, back.port),
            (p.first_seen, p.last_seen_ms, 443)
        );
        assert_eq!(back.flags, LEARNED, "dirty is not stored");
        assert!(PeerState::decode(&[9; 3]).is_none());
    }

    #[test]
    fn state_stays_small() {
        // What the 512-bytes-per-pair budget is spent on; the benchmark measures the rest.
        let size = std::mem::size_of::<(PeerKey, PeerState)>();
        assert!(size <= 200, "{size}");
    }
}
