//! Prefix groups: the clients of one network prefix (an IPv4 /24, an IPv6 /64 or /48 by
//! default) summed, so that a pull rotated over a provider's addresses adds up. A group is
//! made when a second client of the prefix appears (a prefix with one client is that client,
//! judged already); until then the prefix's only client is remembered in a small index.

use std::sync::Arc;

use super::{
    peers::{Busiest, PeerKey, PeerState, VACANT},
    table::PeerTable,
    window::WindowLen,
};
use crate::flow::Owner;

/// The groups of one sample: at most two prefix lengths per family.
#[derive(Clone, Copy, Debug, Default)]
pub struct Groups {
    ids: [u32; 2],
    len: usize,
}

impl Groups {
    pub fn push(&mut self, id: u32) {
        if self.len < self.ids.len() {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids[..self.len].iter().copied()
    }
}

/// Whether slot `id` still holds a client of `prefix` (slots are reused once freed).
pub fn is_member(peers: &PeerTable, prefix: PeerKey, id: u32) -> bool {
    let Some(p) = peers.iter_slot(id) else {
        return false;
    };
    p.flags & VACANT == 0
        && !p.key.is_group()
        && p.key.service == prefix.service
        && PeerKey::network(p.key.service, p.key.ip(), prefix.prefix) == prefix
}

/// The group names the process that last sent to one of its clients.
pub fn refresh_owner(group: &mut PeerState, owner: &Arc<Owner>) {
    if group.owner.as_ref().is_none_or(|o| !Arc::ptr_eq(o, owner)) {
        group.owner = Some(owner.clone());
    }
}

/// The member whose open alert explains `group`'s volume at `t`, if it is still a member.
pub fn explained<'a>(peers: &'a PeerTable, group: &PeerState, t: u64) -> Option<&'a PeerState> {
    peers.iter_slot(explained_id(peers, group, t)?)
}

/// The slot of [`explained`]'s member.
fn explained_id(peers: &PeerTable, group: &PeerState, t: u64) -> Option<u32> {
    let links = group.group()?;
    let id = links.explained_by.checked_sub(1)?;
    (u64::from(links.explained_until) >= t && is_member(peers, group.key, id)).then_some(id)
}

/// The members whose bytes may be left out of `group`'s volume at `t` (Unix seconds): one
/// whose open alert explains them, and the busiest of the last hour and of the last day
/// (see [`Excluded`]); `established` says whether a member has a tolerance of its own (is
/// no newcomer).
pub fn excluded<'a>(
    peers: &'a PeerTable,
    group: &PeerState,
    t: u64,
    established: impl Fn(&PeerState) -> bool,
) -> Excluded<'a> {
    let Some(links) = group.group() else {
        return Excluded::NONE;
    };
    let alerted = explained(peers, group, t);
    let alerted_id = alerted.and(links.explained_by.checked_sub(1));
    let busy = |b: Busiest| {
        let id = b.slot.checked_sub(1)?;
        if Some(id) == alerted_id || !is_member(peers, group.key, id) {
            return None;
        }
        let member = peers.iter_slot(id)?;
        Some(Busy {
            member,
            established: established(member),
            crossed: member
                .client()
                .is_some_and(|c| u64::from(c.crossed_until) > t),
        })
    };
    Excluded {
        alerted,
        busiest: links.busiest.map(busy),
    }
}

/// Members left out of a group's volume.
#[derive(Clone, Copy, Debug, Default)]
pub struct Excluded<'a> {
    /// A member whose own open alert explains its bytes: never counted again.
    pub alerted: Option<&'a PeerState>,
    /// The busiest member of the last hour (`[0]`, for the windows up to an hour) and of
    /// the last day (`[1]`, for the 24-hour window), other than the alerted one: left out of
    /// a window where it is established (its own tolerance covers it: a household's heavy
    /// evening in a /48 of busy neighbours), crossed alone, or received more than half of
    /// the group's volume (a group that is mostly one address is that address). A newcomer
    /// that is less than half counts: a pull rotated over new addresses of one network adds
    /// up whole.
    pub busiest: [Option<Busy<'a>>; 2],
}

/// A group's busiest member, judged alone with its own bar.
#[derive(Clone, Copy, Debug)]
pub struct Busy<'a> {
    pub member: &'a PeerState,
    /// Not a newcomer: it has a tolerance of its own.
    pub established: bool,
    /// It crossed alone (its own alert explains its bytes: never counted again), and another
    /// member's alert explains the group since.
    pub crossed: bool,
}

impl<'a> Excluded<'a> {
    pub const NONE: Self = Self {
        alerted: None,
        busiest: [None; 2],
    };

    /// The busiest member of the horizon that window `len` falls in.
    pub fn busiest(&self, len: WindowLen) -> Option<Busy<'a>> {
        self.busiest[usize::from(len == WindowLen::OneDay)]
    }
}

/// A sample of `member` (a slot) in `group` (a slot) at `millis`: for each horizon (the
/// last hour, the last day), the member becomes the group's busiest when its volume is above
/// the busiest's as last seen, or when that is stale (more than the group's own: the
/// busiest went quiet, or left). The member whose alert explains the group is left out
/// already: the busiest is one of the others (a second sender of the prefix is judged alone
/// too, not hidden behind the first).
pub fn note_member(peers: &mut PeerTable, group: u32, member: u32, millis: u64) {
    if explained_id(peers, peers.slot(group), millis / 1000) == Some(member) {
        return;
    }
    for (i, len) in [WindowLen::OneHour, WindowLen::OneDay]
        .into_iter()
        .enumerate()
    {
        let own = kib(peers.slot(member).volume(len, millis).bytes);
        let g = peers.slot_mut(group);
        let whole = g.volume(len, millis).bytes;
        let Some(links) = g.group_mut() else {
            return;
        };
        let b = &mut links.busiest[i];
        let stale = u64::from(b.kib) * 1024 > whole;
        if b.slot == member + 1 || own > b.kib || stale {
            *b = Busiest {
                slot: member + 1,
                kib: own,
            };
        }
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
}

/// `member` (a slot) explains `group`'s (a slot) volume until `until` (Unix seconds), from
/// `millis`. It is no longer the group's busiest (see [`note_member`]); a member that
/// explained the group until now still explains its own bytes: it is the busiest when it is
/// busier than the busiest (see [`Busy::crossed`]).
pub fn explain(peers: &mut PeerTable, group: u32, member: u32, until: u64, millis: u64) {
    let previous = explained_id(peers, peers.slot(group), millis / 1000)
        .filter(|&p| p != member)
        .map(|p| {
            let m = peers.slot(p);
            let kib_in = |len| kib(m.volume(len, millis).bytes);
            (p, [kib_in(WindowLen::OneHour), kib_in(WindowLen::OneDay)])
        });
    let Some(links) = peers.slot_mut(group).group_mut() else {
        return;
    };
    links.explained_by = member + 1;
    links.explained_until = u32::try_from(until).unwrap_or(u32::MAX);
    for (i, b) in links.busiest.iter_mut().enumerate() {
        if b.slot == member + 1 {
            *b = Busiest::default();
        }
        if let Some((p, own)) = previous
            && own[i] >= b.kib
        {
            *b = Busiest {
                slot: p + 1,
                kib: own[i],
            };
        }
    }
}

/// The slot of the group `key` of `member` (its `i`-th prefix length): the member's hint
/// when that slot still holds the group, else the index's answer (then remembered).
pub fn group_slot(peers: &mut PeerTable, member: u32, i: usize, key: &PeerKey) -> Option<u32> {
    if let Some(&hint) = peers
        .slot(member)
        .client()
        .and_then(|c| c.group_slots.get(i))
        && hint != 0
        && peers.iter_slot(hint - 1).is_some_and(|g| g.key == *key)
    {
        return Some(hint - 1);
    }
    let gid = peers.id(key)?;
    remember_group(peers, member, i, gid);
    Some(gid)
}

/// Remembers in `member` that its `i`-th group is in slot `gid`.
pub fn remember_group(peers: &mut PeerTable, member: u32, i: usize, gid: u32) {
    if let Some(hint) = peers
        .slot_mut(member)
        .client_mut()
        .and_then(|c| c.group_slots.get_mut(i))
    {
        *hint = gid + 1;
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn a_stale_group_hint_is_never_used() {
        let addr: IpAddr = "11.2.3.4".parse().unwrap();
        let mut peers = PeerTable::default();
        let member = peers.insert(PeerState::new(PeerKey::new(0, addr)));
        let key = PeerKey::network(0, addr, 24);
        let group = peers.insert(PeerState::new(key));
        assert_eq!(group_slot(&mut peers, member, 0, &key), Some(group));
        assert_eq!(
            peers.slot(member).client().unwrap().group_slots[0],
            group + 1
        );
        // The group goes; its slot is reused by another group: the hint must not follow it.
        peers.remove(group);
        let other = PeerKey::network(0, "11.9.9.9".parse().unwrap(), 24);
        let reused = peers.insert(PeerState::new(other));
        assert_eq!(reused, group);
        assert_eq!(group_slot(&mut peers, member, 0, &key), None);
        // Made again elsewhere: found through the index and remembered.
        let again = peers.insert(PeerState::new(key));
        assert_eq!(group_slot(&mut peers, member, 0, &key), Some(again));
        assert_eq!(
            peers.slot(member).client().unwrap().group_slots[0],
            again + 1
        );
    }
}
