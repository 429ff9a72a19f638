//! The address plan of the homeserver's peers. Every range is outside what the default
//! configuration calls internal (`destinations.internal`: loopback, RFC 1918, link-local,
//! ULA) and outside the CGNAT-internal 100.64/10: IPv4 from blocks that are not routed on the
//! public Internet in practice (11/8, 21/8, 26/8 to 30/8, 33/8), IPv6 from the documentation
//! /32 (`2001:db8::/32`, large enough for a realistic plan). Nothing is ever sent: these are
//! numbers in samples.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Home ISPs, IPv4 /24s per ISP, carriers, CGNAT /24s and IPv6 /48s per carrier.
pub const ISPS: u8 = 4;
pub const ISP_SUBNETS: u8 = 40;
pub const ISP_REGIONS: u16 = 4;
pub const CARRIERS: u8 = 4;
pub const CARRIER_V4_SUBNETS: u8 = 5;
pub const CARRIER_V6_SUBNETS: u16 = 2;
/// Host numbers of carrier CGNAT addresses used by ordinary phones (the rest is kept for the
/// scenarios' attackers, so that an attacker's address is never also an innocent phone's).
pub const CGNAT_HOSTS: u64 = 200;
/// /64 numbers of carrier IPv6 used by ordinary phones (the rest: attackers).
pub const CARRIER_V6_SUBNETS_USED: u64 = 0xa000;

/// The server's own addresses (the local end of every flow).
pub const SERVER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(11, 200, 0, 1));
pub const SERVER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x5e, 0, 0, 0, 0, 0x443));

/// Ministry NAT gateway `i`: one stable address, each in its own /24.
pub fn nat(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(11, 1, 10 + i as u8, 10))
}

/// A home IPv4 address of ISP `isp`, in its /24 number `subnet`.
pub fn home_v4(isp: u8, subnet: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(21, isp, subnet, host))
}

/// A home IPv6 address: ISP `isp`'s regional /48 `region`, household /64 `house`.
pub fn home_v6(isp: u8, region: u16, house: u16, iid: u64) -> IpAddr {
    let s48 = 0x1000 + u16::from(isp) * 16 + region;
    v6(s48, house, iid)
}

/// A carrier's CGNAT address: carrier `c`, /24 number `k`, host `h`.
pub fn cgnat(c: u8, k: u8, h: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(30, c, k, h))
}

/// A phone's IPv6 address: carrier `c`'s /48 number `k`, its /64 `subnet` of the day.
pub fn carrier_v6(c: u8, k: u16, subnet: u16, iid: u64) -> IpAddr {
    v6(0xc000 + u16::from(c) * 16 + k, subnet, iid)
}

fn v6(s48: u16, s64: u16, iid: u64) -> IpAddr {
    let b = iid.to_be_bytes();
    let seg = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        s48,
        s64,
        seg(0),
        seg(2),
        seg(4),
        seg(6),
    ))
}

/// Federation server `i` (other homeservers): every other one on IPv6, each in its own /48.
pub fn federation(i: usize) -> IpAddr {
    if i.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::new(26, (i / 250) as u8, (i % 250) as u8 + 1, 10))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xf000 + i as u16,
            0,
            0,
            0,
            0,
            0x10,
        ))
    }
}

/// The push gateway (Sygnal) the server sends notifications to.
pub const PUSH_GATEWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(26, 200, 0, 5));
/// The off-site backup host.
pub const BACKUP_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(28, 0, 0, 50));
/// The administrator's workstation (ssh).
pub const ADMIN: IpAddr = IpAddr::V4(Ipv4Addr::new(21, 3, 39, 250));

/// Popular web site `i` (URL previews of news sites, video platforms).
pub fn popular_site(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(33, 1, i as u8, 80))
}

/// Any web site (a URL preview of a page never fetched before).
pub fn web_site(r: u64) -> IpAddr {
    if r.is_multiple_of(4) {
        v6(
            0xe000 + (r >> 8) as u16 % 0x1000,
            (r >> 20) as u16,
            r >> 32 | 1,
        )
    } else {
        let b = r.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(33, 128 | b[1], b[2], b[3].max(1)))
    }
}

/// The scenarios' attackers' hosting provider (a VPS range no client ever used).
pub fn vps(subnet: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(27, 10, subnet, host))
}
