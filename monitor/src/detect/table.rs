//! The peer table: an index from key to slot, and the states in fixed-size chunks.
//!
//! Why not one hash map of states: a hash table sized by doubling holds between 1.14 and
//! 2.3 buckets per entry, so at a million peers a map of 230-byte states costs up to 530
//! bytes a pair, over the 512-byte budget, depending only on where the count falls between
//! two powers of two. Here the map holds 28-byte entries (the doubling costs at most 36
//! bytes more a pair) and the states sit in 4,096-slot chunks that never move or double;
//! freed slots are reused.

use rustc_hash::FxHashMap;

use super::peers::{PeerKey, PeerState, VACANT};

const CHUNK: usize = 4096;

#[derive(Debug, Default)]
pub struct PeerTable {
    index: FxHashMap<PeerKey, u32>,
    chunks: Vec<Vec<PeerState>>,
    free: Vec<u32>,
}

impl PeerTable {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn id(&self, key: &PeerKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn slot(&self, id: u32) -> &PeerState {
        &self.chunks[id as usize / CHUNK][id as usize % CHUNK]
    }

    /// Asks the CPU to load every cache line of slot `id` (a hint: no effect on results).
    pub fn prefetch(&self, id: u32) {
        let slot: *const PeerState = self.slot(id);
        #[cfg(target_arch = "x86_64")]
        for offset in (0..size_of::<PeerState>()).step_by(64) {
            // SAFETY: SSE is part of every x86_64 CPU, and a prefetch never dereferences
            // (nor faults on) its address, even past the slot's end.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    slot.cast::<i8>().wrapping_add(offset),
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        std::hint::black_box(slot);
    }

    /// The slot `id`, if the table has that many (occupied or free).
    pub fn iter_slot(&self, id: u32) -> Option<&PeerState> {
        self.chunks
            .get(id as usize / CHUNK)
            .and_then(|c| c.get(id as usize % CHUNK))
    }

    pub fn slot_mut(&mut self, id: u32) -> &mut PeerState {
        &mut self.chunks[id as usize / CHUNK][id as usize % CHUNK]
    }

    pub fn get(&self, key: &PeerKey) -> Option<&PeerState> {
        self.id(key).map(|id| self.slot(id))
    }

    pub fn get_mut(&mut self, key: &PeerKey) -> Option<&mut PeerState> {
        self.id(key).map(|id| self.slot_mut(id))
    }

    /// The slot of `key`, created empty if new; and whether it was created.
    pub fn get_or_insert(&mut self, key: PeerKey) -> (u32, bool) {
        if let Some(id) = self.id(&key) {
            return (id, false);
        }
        (self.insert(PeerState::new(key)), true)
    }

    /// Stores `state` under its key (replacing any state of that key); returns its slot.
    pub fn insert(&mut self, state: PeerState) -> u32 {
        let key = state.key;
        if let Some(id) = self.id(&key) {
            *self.slot_mut(id) = state;
            return id;
        }
        let id = if let Some(id) = self.free.pop() {
            *self.slot_mut(id) = state;
            id
        } else {
            if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            let n = self.chunks.len() - 1;
            let chunk = &mut self.chunks[n];
            chunk.push(state);
            u32::try_from(n * CHUNK + chunk.len() - 1).unwrap_or(u32::MAX)
        };
        self.index.insert(key, id);
        id
    }

    /// Frees `id`'s slot (its owner, name and curve are dropped at once).
    pub fn remove(&mut self, id: u32) {
        let slot = self.slot_mut(id);
        if slot.flags & VACANT != 0 {
            return;
        }
        let key = slot.key;
        *slot = PeerState {
            flags: VACANT,
            ..PeerState::default()
        };
        self.index.remove(&key);
        self.free.push(id);
    }

    /// Occupied slots, with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &PeerState)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, s)| s.flags & VACANT == 0)
            .map(|(i, s)| (u32::try_from(i).unwrap_or(u32::MAX), s))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut PeerState)> {
        self.chunks
            .iter_mut()
            .flatten()
            .enumerate()
            .filter(|(_, s)| s.flags & VACANT == 0)
            .map(|(i, s)| (u32::try_from(i).unwrap_or(u32::MAX), s))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(i: u32) -> PeerKey {
        PeerKey::new(0, IpAddr::from([198, 51, 100, (i % 250) as u8 + 1]))
    }

    #[test]
    fn insert_find_remove_and_reuse() {
        let mut t = PeerTable::default();
        let (a, new) = t.get_or_insert(key(1));
        assert!(new);
        assert_eq!(t.get_or_insert(key(1)), (a, false));
        t.slot_mut(a).port = 443;
        let (b, _) = t.get_or_insert(key(2));
        assert_eq!(t.get(&key(1)).unwrap().port, 443);
        assert_eq!(t.len(), 2);
        t.remove(a);
        t.remove(a);
        assert_eq!(t.len(), 1);
        assert!(t.get(&key(1)).is_none());
        let (c, new) = t.get_or_insert(key(3));
        assert!(new);
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(t.slot(c).port, 0, "and starts empty");
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![a, b]);
    }

    #[test]
    fn chunks_fill_without_moving() {
        let mut t = PeerTable::default();
        let ids: Vec<u32> = (0..(CHUNK as u32 + 10))
            .map(|i| {
                let mut k = key(i);
                k.service = i;
                t.get_or_insert(k).0
            })
            .collect();
        assert_eq!(t.chunks.len(), 2);
        assert!(t.chunks.iter().all(|c| c.capacity() == CHUNK));
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(t.slot(id).key.service, i as u32, "slot {id} kept its peer");
        }
    }
}
