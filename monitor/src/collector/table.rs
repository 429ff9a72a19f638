//! The poll's snapshot of the kernel flow table, held in fixed-size chunks.
//!
//! At 100k flows the snapshot is 14 MB. It is needed whole until every flow's delta, owner
//! and expiry are known, then read once, in order, to make the samples. Held in chunks, it
//! is handed back to the allocator a chunk at a time as the samples are made, so the
//! snapshot and the samples (17 MB at 100k) are never both whole: that overlap was most of
//! the agent's peak memory. Nor does it grow by doubling (which briefly holds the old and
//! the new buffer), and it is not kept between polls.

use crate::kernel::batch::EntrySink;

/// Items in chunks of `chunk_len`, in the order they were pushed.
pub(super) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    chunk_len: usize,
    len: usize,
}

impl<T> Chunked<T> {
    pub(super) fn new(chunk_len: usize) -> Self {
        Self {
            chunks: Vec::new(),
            chunk_len: chunk_len.max(1),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < self.chunk_len => chunk.push(item),
            _ => {
                // Exactly one chunk's worth: a full chunk never reallocates.
                let mut chunk = Vec::with_capacity(self.chunk_len);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> Extend<T> for Chunked<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push(item);
        }
    }
}

impl<T> EntrySink<T> for Chunked<T> {
    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

impl<T> IntoIterator for Chunked<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;

    /// In order; each chunk is freed as soon as its last item has been taken.
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_across_chunks() {
        let mut t = Chunked::new(3);
        t.extend(0..10u32);
        t.push(10);
        assert_eq!(t.len(), 11);
        assert_eq!(t.chunks.len(), 4);
        assert!(t.chunks.iter().all(|c| c.capacity() == 3));
        assert_eq!(
            t.iter().copied().collect::<Vec<_>>(),
            (0..11).collect::<Vec<_>>()
        );
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            (0..11).collect::<Vec<_>>()
        );
    }

    #[test]
    fn clear_starts_over() {
        let mut t = Chunked::new(2);
        t.extend([1, 2, 3]);
        EntrySink::clear(&mut t);
        assert_eq!(t.len(), 0);
        t.push(4);
        assert_eq!(t.iter().copied().collect::<Vec<_>>(), [4]);
    }
}
