//! IP and transport header parsing shared by the egress program and the agent's tests.
//!
//! The kernel reads bytes with `bpf_skb_load_bytes`; unit tests read them from a slice. Both go
//! through [`PacketBytes`], so the code that runs in the kernel is the code that is tested on
//! crafted packets. Every loop is bounded and every read is length-checked by the reader.
#![expect(
    clippy::inline_always,
    reason = "BPF has no calls into generic code: everything must inline into the program"
)]

/// Source of packet bytes, starting at the IP header.
pub trait PacketBytes {
    /// Returns the `N` bytes at `offset`, or `None` when they are not all inside the packet.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// Returns the `W` 32-bit words at `offset`, each read in memory order (native endian),
    /// or `None` when they are not all inside the packet. Headers and addresses are read this
    /// way: BPF has no unaligned loads, so a byte array is loaded, spilled and copied one byte
    /// at a time (measured: most of the egress program's TCP fast path was that).
    #[inline(always)]
    fn read_words<const W: usize>(&self, offset: usize) -> Option<[u32; W]> {
        let mut out = [0u32; W];
        let mut i = 0;
        while i < W {
            out[i] = u32::from_ne_bytes(self.read::<4>(offset + 4 * i)?);
            i += 1;
        }
        Some(out)
    }
}

impl PacketBytes for [u8] {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;

/// An IPv6 address (IPv4 v4-mapped) as four 32-bit words holding its bytes in network order
/// (each word read from memory as is): what the kernel programs move around. The maps' keys
/// hold `[u8; 16]`; [`addr_bytes`] converts for free (the same 16 bytes).
pub type AddrWords = [u32; 4];

/// The third word of a v4-mapped address (`::ffff:0:0/96`): bytes `00 00 ff ff`.
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// `ip4` (its 4 bytes in network order, read as one word) as a v4-mapped address.
#[inline(always)]
pub const fn v4_mapped_words(ip4: u32) -> AddrWords {
    [0, 0, V4_MAPPED_WORD, ip4]
}

/// Whether `addr` is v4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn is_v4_mapped_words(addr: &AddrWords) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED_WORD
}

/// The 16 bytes of `addr`, in network order.
#[inline(always)]
pub const fn addr_bytes(addr: AddrWords) -> [u8; 16] {
    // SAFETY: both are 16 bytes of plain data; the words hold the bytes in memory order.
    unsafe { core::mem::transmute::<AddrWords, [u8; 16]>(addr) }
}

/// What the egress program needs to know of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// 4 or 6.
    pub ip_version: u8,
    /// IANA protocol number of the transport (after IPv6 extension headers).
    pub protocol: u8,
    /// Source address, v4-mapped for IPv4.
    pub src_addr: AddrWords,
    /// Destination address, v4-mapped for IPv4.
    pub dst_addr: AddrWords,
    /// Ports in host byte order; 0 for protocols without ports and non-first fragments.
    pub src_port: u16,
    pub dst_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The L3 protocol is neither IPv4 nor IPv6.
    NotIp,
    /// The packet is shorter than its headers claim.
    Truncated,
    /// A header field has an impossible value (version, header length).
    Malformed,
}

/// Maximum IPv6 extension headers walked before giving up on finding ports.
const MAX_IPV6_EXT_HEADERS: usize = 6;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Returns `addr` as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Parses the IP header (and the ports of TCP, UDP, UDP-Lite and SCTP) of a packet whose L3
/// protocol is `ethertype` (host byte order).
#[inline(always)]
pub fn parse<P: PacketBytes + ?Sized>(pkt: &P, ethertype: u16) -> Result<Endpoints, ParseError> {
    parse_with_transport_offset(pkt, ethertype).map(|(ends, _)| ends)
}

/// Like [`parse`], also returning the offset of the transport header (after IPv4 options and
/// IPv6 extension headers), where a UDP payload starts 8 bytes later.
#[inline(always)]
pub fn parse_with_transport_offset<P: PacketBytes + ?Sized>(
    pkt: &P,
    ethertype: u16,
) -> Result<(Endpoints, usize), ParseError> {
    match ethertype {
        ETH_P_IP => parse_ipv4(pkt),
        ETH_P_IPV6 => parse_ipv6(pkt),
        _ => Err(ParseError::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(pkt: &P) -> Result<(Endpoints, usize), ParseError> {
    // Words: [version/IHL, TOS, length], [id, flags/fragment offset], [TTL, protocol,
    // checksum], source, destination.
    let hdr: [u32; 5] = pkt.read_words(0).ok_or(ParseError::Truncated)?;
    let [version_ihl, ..] = hdr[0].to_ne_bytes();
    if version_ihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    let [_, protocol, ..] = hdr[2].to_ne_bytes();
    let [_, _, frag_hi, frag_lo] = hdr[1].to_ne_bytes();
    // Only the first fragment carries the transport header.
    let frag_offset = u16::from_be_bytes([frag_hi, frag_lo]) & 0x1fff;
    let (src_port, dst_port) = if frag_offset == 0 {
        ports(pkt, protocol, ihl)?
    } else {
        (0, 0)
    };
    let ends = Endpoints {
        ip_version: 4,
        protocol,
        src_addr: v4_mapped_words(hdr[3]),
        dst_addr: v4_mapped_words(hdr[4]),
        src_port,
        dst_port,
    };
    Ok((ends, ihl))
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(pkt: &P) -> Result<(Endpoints, usize), ParseError> {
    // Words: [version, traffic class, flow label], [payload length, next header, hop
    // limit], four of source, four of destination.
    let hdr: [u32; 10] = pkt.read_words(0).ok_or(ParseError::Truncated)?;
    let [version, ..] = hdr[0].to_ne_bytes();
    if version >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let src_addr = [hdr[2], hdr[3], hdr[4], hdr[5]];
    let dst_addr = [hdr[6], hdr[7], hdr[8], hdr[9]];

    let [_, _, mut next, _] = hdr[1].to_ne_bytes();
    let mut offset = 40usize;
    let mut first_fragment = true;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext: [u8; 2] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next = ext[0];
                (usize::from(ext[1]) + 1) * 8
            }
            IPPROTO_FRAGMENT => {
                let ext: [u8; 4] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next = ext[0];
                first_fragment = u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 == 0;
                8
            }
            IPPROTO_AH => {
                let ext: [u8; 2] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next = ext[0];
                (usize::from(ext[1]) + 2) * 4
            }
            _ => break,
        };
        offset += len;
        walked += 1;
    }
    let (src_port, dst_port) = if first_fragment {
        ports(pkt, next, offset)?
    } else {
        (0, 0)
    };
    let ends = Endpoints {
        ip_version: 6,
        protocol: next,
        src_addr,
        dst_addr,
        src_port,
        dst_port,
    };
    Ok((ends, offset))
}

#[inline(always)]
fn ports<P: PacketBytes + ?Sized>(
    pkt: &P,
    protocol: u8,
    offset: usize,
) -> Result<(u16, u16), ParseError> {
    match protocol {
        crate::IPPROTO_TCP | crate::IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP => {
            let [ports] = pkt.read_words::<1>(offset).ok_or(ParseError::Truncated)?;
            let p = ports.to_ne_bytes();
            Ok((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ))
        }
        _ => Ok((0, 0)),
    }
}

/// TCP header flags (`th_flags`: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10...) of a
/// packet whose bytes start at the IP header, for the first packet of a flow only (the egress
/// program's slow path). IPv4 with options is handled; an IPv6 packet must carry TCP right
/// after its fixed header (handshake segments carry no extension headers), else `None`, as
/// for anything that is not TCP or is too short.
#[inline(always)]
pub fn tcp_flags<P: PacketBytes + ?Sized>(pkt: &P) -> Option<u8> {
    let first: [u8; 10] = pkt.read(0)?;
    let offset = match first[0] >> 4 {
        4 if first[9] == crate::IPPROTO_TCP => usize::from(first[0] & 0x0f) * 4,
        6 if first[6] == crate::IPPROTO_TCP => 40,
        _ => return None,
    };
    if offset < 20 {
        return None;
    }
    // Two bytes (data offset, flags): a one-byte read's bounds check compiles to a
    // `start < end` the verifier does not take as a bound on `start + 1`.
    let [_, flags]: [u8; 2] = pkt.read(offset + TCP_FLAGS_OFFSET - 1)?;
    Some(flags)
}

/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn ipv4(protocol: u8, ihl_words: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut p = std::vec![0u8; usize::from(ihl_words) * 4];
        p[0] = 0x40 | ihl_words;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = protocol;
        p[12..16].copy_from_slice(&[10, 1, 2, 3]);
        p[16..20].copy_from_slice(&[192, 0, 2, 7]);
        p.extend_from_slice(l4);
        p
    }

    fn ipv6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut p = std::vec![0u8; 40];
        p[0] = 0x60;
        p[6] = next;
        p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(ext);
        p.extend_from_slice(l4);
        p
    }

    const PORTS: [u8; 4] = [0xc3, 0x50, 0x01, 0xbb]; // 50000 -> 443

    #[test]
    fn ipv4_tcp_ports_and_mapped_addresses() {
        let e = parse(ipv4(6, 5, 0, &PORTS).as_slice(), ETH_P_IP).unwrap();
        assert_eq!(e.ip_version, 4);
        assert_eq!(e.protocol, 6);
        assert_eq!(addr_bytes(e.src_addr), v4_mapped([10, 1, 2, 3]));
        assert_eq!(addr_bytes(e.dst_addr), v4_mapped([192, 0, 2, 7]));
        assert!(is_v4_mapped_words(&e.dst_addr));
        assert_eq!((e.src_port, e.dst_port), (50000, 443));
    }

    #[test]
    fn ipv4_options_shift_the_transport_header() {
        let mut l4 = std::vec![0u8; 0];
        l4.extend_from_slice(&[0x00, 0x35, 0x00, 0x35]); // 53 -> 53
        let e = parse(ipv4(17, 7, 0, &l4).as_slice(), ETH_P_IP).unwrap();
        assert_eq!((e.src_port, e.dst_port), (53, 53));
    }

    #[test]
    fn ipv4_non_first_fragment_has_no_ports() {
        let e = parse(ipv4(17, 5, 185, &PORTS).as_slice(), ETH_P_IP).unwrap();
        assert_eq!((e.src_port, e.dst_port), (0, 0));
        // More-fragments flag alone (offset 0) is the first fragment: ports are there.
        let e = parse(ipv4(17, 5, 0x2000, &PORTS).as_slice(), ETH_P_IP).unwrap();
        assert_eq!(e.dst_port, 443);
    }

    #[test]
    fn ipv4_errors() {
        assert_eq!(
            parse(&[0x45u8; 10][..], ETH_P_IP),
            Err(ParseError::Truncated)
        );
        let mut bad_version = ipv4(6, 5, 0, &PORTS);
        bad_version[0] = 0x55;
        assert_eq!(
            parse(bad_version.as_slice(), ETH_P_IP),
            Err(ParseError::Malformed)
        );
        let mut bad_ihl = ipv4(6, 5, 0, &PORTS);
        bad_ihl[0] = 0x44;
        assert_eq!(
            parse(bad_ihl.as_slice(), ETH_P_IP),
            Err(ParseError::Malformed)
        );
        // TCP header cut before the ports.
        assert_eq!(
            parse(ipv4(6, 5, 0, &[0x01]).as_slice(), ETH_P_IP),
            Err(ParseError::Truncated)
        );
        assert_eq!(parse(&[0u8; 64][..], 0x0806), Err(ParseError::NotIp));
    }

    #[test]
    fn ipv4_icmp_has_no_ports() {
        let e = parse(ipv4(1, 5, 0, &[8, 0, 0, 0]).as_slice(), ETH_P_IP).unwrap();
        assert_eq!(e.protocol, 1);
        assert_eq!((e.src_port, e.dst_port), (0, 0));
    }

    #[test]
    fn ipv6_udp() {
        let e = parse(ipv6(17, &[], &PORTS).as_slice(), ETH_P_IPV6).unwrap();
        assert_eq!(e.ip_version, 6);
        assert_eq!(e.protocol, 17);
        assert_eq!(
            addr_bytes(e.dst_addr),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(
            addr_bytes(e.src_addr),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert!(!is_v4_mapped_words(&e.dst_addr));
        assert_eq!(e.dst_port, 443);
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
        let mut ext = std::vec![IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1]);
        ext.extend_from_slice(&[0u8; 14]);
        let e = parse(ipv6(IPPROTO_HOPOPTS, &ext, &PORTS).as_slice(), ETH_P_IPV6).unwrap();
        assert_eq!(e.protocol, 6);
        assert_eq!((e.src_port, e.dst_port), (50000, 443));
    }

    #[test]
    fn ipv6_fragments() {
        let first = [17, 0, 0x00, 0x01, 0, 0, 0, 1]; // offset 0, M=1
        let e = parse(
            ipv6(IPPROTO_FRAGMENT, &first, &PORTS).as_slice(),
            ETH_P_IPV6,
        )
        .unwrap();
        assert_eq!((e.protocol, e.dst_port), (17, 443));
        let later = [17, 0, 0x05, 0x00, 0, 0, 0, 1]; // offset 160
        let e = parse(
            ipv6(IPPROTO_FRAGMENT, &later, &PORTS).as_slice(),
            ETH_P_IPV6,
        )
        .unwrap();
        assert_eq!((e.protocol, e.dst_port), (17, 0));
    }

    #[test]
    fn transport_offset_follows_options_and_extension_headers() {
        let (_, off) =
            parse_with_transport_offset(ipv4(17, 7, 0, &PORTS).as_slice(), ETH_P_IP).unwrap();
        assert_eq!(off, 28, "IPv4 with 8 bytes of options");
        let mut ext = std::vec![IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[17, 1]);
        ext.extend_from_slice(&[0u8; 14]);
        let (e, off) =
            parse_with_transport_offset(ipv6(IPPROTO_HOPOPTS, &ext, &PORTS).as_slice(), ETH_P_IPV6)
                .unwrap();
        assert_eq!((e.protocol, off), (17, 40 + 8 + 16));
    }

    /// A TCP header whose flags byte (offset 13) is `flags`.
    fn tcp(flags: u8) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&PORTS);
        h[12] = 5 << 4;
        h[13] = flags;
        h
    }

    #[test]
    fn tcp_flags_behind_ipv4_options_and_in_ipv6() {
        assert_eq!(tcp_flags(ipv4(6, 5, 0, &tcp(0x02)).as_slice()), Some(0x02));
        assert_eq!(tcp_flags(ipv4(6, 7, 0, &tcp(0x12)).as_slice()), Some(0x12));
        assert_eq!(tcp_flags(ipv6(6, &[], &tcp(0x10)).as_slice()), Some(0x10));
    }

    #[test]
    fn tcp_flags_of_anything_else_are_unknown() {
        // UDP, a header cut before the flags, a bad IHL, IPv6 extension headers, not IP.
        assert_eq!(tcp_flags(ipv4(17, 5, 0, &tcp(0x02)).as_slice()), None);
        assert_eq!(tcp_flags(ipv4(6, 5, 0, &tcp(0x02)[..13]).as_slice()), None);
        let mut bad_ihl = ipv4(6, 5, 0, &tcp(0x02));
        bad_ihl[0] = 0x43;
        assert_eq!(tcp_flags(bad_ihl.as_slice()), None);
        let ext = [6, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            tcp_flags(ipv6(IPPROTO_HOPOPTS, &ext, &tcp(0x02)).as_slice()),
            None
        );
        assert_eq!(tcp_flags(&[0u8; 64][..]), None);
    }

    #[test]
    fn ipv6_truncated_extension_header() {
        assert_eq!(
            parse(ipv6(IPPROTO_ROUTING, &[6], &[]).as_slice(), ETH_P_IPV6),
            Err(ParseError::Truncated)
        );
    }
}
