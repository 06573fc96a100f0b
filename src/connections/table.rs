//! The bounded connection table: least recently active connections go first, whether to make
//! room or because they went idle. A per-process count lets a process exit find its
//! connections without scanning the table when it has none.

use std::{collections::HashMap, num::NonZeroUsize};

use lru::LruCache;

/// A connection of a traced process: its fd and the kernel socket behind it (an fd number is
/// reused after close; the pair is not, while the socket lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
    pub sock: u64,
}

pub struct Table<V> {
    entries: LruCache<ConnKey, V>,
    per_process: HashMap<u32, usize>,
}

impl<V> Table<V> {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Table {
            entries: LruCache::new(capacity),
            per_process: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether there is an entry for `key` (its place in the order is left alone).
    pub fn contains(&self, key: &ConnKey) -> bool {
        self.entries.contains(key)
    }

    /// The entry, marked as most recently active.
    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    /// Inserts `value`; returns the entry evicted to make room, if any.
    pub fn insert(&mut self, key: ConnKey, value: V) -> Option<(ConnKey, V)> {
        if self.entries.contains(&key) {
            self.entries.put(key, value);
            return None;
        }
        let evicted = if self.entries.len() == self.entries.cap().get() {
            self.entries.pop_lru()
        } else {
            None
        };
        if let Some((k, _)) = &evicted {
            self.uncount(k.tgid);
        }
        self.entries.put(key, value);
        *self.per_process.entry(key.tgid).or_default() += 1;
        evicted
    }

    pub fn remove(&mut self, key: &ConnKey) -> Option<V> {
        let value = self.entries.pop(key)?;
        self.uncount(key.tgid);
        Some(value)
    }

    /// Keys of every connection of process `tgid`.
    pub fn keys_of(&self, tgid: u32) -> Vec<ConnKey> {
        if !self.per_process.contains_key(&tgid) {
            return Vec::new();
        }
        self.entries
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.tgid == tgid)
            .collect()
    }

    /// Removes least recently active entries while `idle` says they are idle.
    pub fn pop_idle(&mut self, mut idle: impl FnMut(&V) -> bool) -> Vec<(ConnKey, V)> {
        let mut out = Vec::new();
        while let Some((_, v)) = self.entries.peek_lru() {
            if !idle(v) {
                break;
            }
            let (k, v) = self.entries.pop_lru().expect("peeked");
            self.uncount(k.tgid);
            out.push((k, v));
        }
        out
    }

    /// Removes everything.
    pub fn drain(&mut self) -> Vec<(ConnKey, V)> {
        self.per_process.clear();
        let mut out = Vec::with_capacity(self.entries.len());
        while let Some(e) = self.entries.pop_lru() {
            out.push(e);
        }
        out
    }

    fn uncount(&mut self, tgid: u32) {
        if let Some(n) = self.per_process.get_mut(&tgid) {
            *n -= 1;
            if *n == 0 {
                self.per_process.remove(&tgid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, fd: i32) -> ConnKey {
        ConnKey {
            tgid,
            fd,
            sock: 0x1000 + fd as u64,
        }
    }

    #[test]
    fn evicts_the_least_recently_active_and_says_so() {
        let mut t = Table::new(2);
        assert!(t.insert(key(1, 3), "a").is_none());
        assert!(t.insert(key(1, 4), "b").is_none());
        t.get_mut(&key(1, 3));
        let evicted = t.insert(key(2, 5), "c");
        assert_eq!(evicted, Some((key(1, 4), "b")));
        assert_eq!(t.len(), 2);
        assert_eq!(t.keys_of(1), [key(1, 3)]);
        assert_eq!(t.keys_of(2), [key(2, 5)]);
        assert!(t.keys_of(7).is_empty());
    }

    #[test]
    fn pops_idle_entries_in_order() {
        let mut t = Table::new(10);
        for fd in 0..5 {
            t.insert(key(1, fd), fd);
        }
        t.get_mut(&key(1, 0));
        let idle: Vec<i32> = t.pop_idle(|&v| v < 3).into_iter().map(|(_, v)| v).collect();
        assert_eq!(idle, [1, 2], "stops at the first active one");
        assert_eq!(t.len(), 3);
        t.remove(&key(1, 3));
        t.remove(&key(1, 4));
        t.remove(&key(1, 0));
        assert!(t.is_empty() && t.keys_of(1).is_empty());
    }
}
