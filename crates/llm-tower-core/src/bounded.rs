//! [`BoundedMap`]: the one store for state keyed by values a client or an
//! upstream controls (tenants, keys, models, headers).
//!
//! Such state must never grow without bound, and evicting it must never free
//! quota or forget spend. The map holds at most `capacity` entries in shards;
//! each shard keeps its entries in least-recently-used order (an intrusive
//! list over a slab: lookups, touches and evictions are O(1)). A new key that
//! finds its shard full takes the place of the least recently used entry that
//! the caller's `evictable` predicate allows to go (a limiter's fully
//! recovered key, a budget with no spend in its period); entries that may not
//! go are moved to the front and the next is tried, a few at most. When none
//! may go, the new key shares the map's single **overflow entry**: a flood of
//! new values shares one small quota instead of escaping it, and
//! [`overflow_hits`](BoundedMap::overflow_hits) says how often that happened.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hashbrown::HashTable;

/// Where an operation of [`BoundedMap::with`] ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the key's own entry (found or inserted).
    Own,
    /// On the shared overflow entry: the map was full of entries that may not
    /// be evicted.
    Overflow,
}

const NIL: u32 = u32::MAX;
/// Entries looked at from the least-recently-used end before a new key is
/// sent to the overflow entry (by default).
const SCAN: usize = 4;

struct Slot<K, V> {
    key: K,
    value: V,
    hash: u64,
    prev: u32,
    next: u32,
}

struct Shard<K, V> {
    /// Slot indexes, by the key's hash.
    table: HashTable<u32>,
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    cap: usize,
}

impl<K, V> Shard<K, V> {
    fn new(cap: usize) -> Self {
        Shard { table: HashTable::new(), slots: Vec::new(), free: Vec::new(), head: NIL, tail: NIL, cap }
    }

    fn slot(&self, i: u32) -> &Slot<K, V> {
        self.slots[i as usize].as_ref().expect("linked slots are live")
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot<K, V> {
        self.slots[i as usize].as_mut().expect("linked slots are live")
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = self.slot(i);
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slot_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slot_mut(n).prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = self.slot_mut(i);
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slot_mut(o).prev = i,
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn find<Q>(&self, hash: u64, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.find_by(hash, |k| k.borrow() == key)
    }

    fn find_by(&self, hash: u64, matches: impl Fn(&K) -> bool) -> Option<u32> {
        self.table.find(hash, |&i| matches(&self.slot(i).key)).copied()
    }

    fn remove_slot(&mut self, i: u32) -> Slot<K, V> {
        self.unlink(i);
        let hash = self.slot(i).hash;
        if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        self.free.push(i);
        self.slots[i as usize].take().expect("live")
    }

    fn insert(&mut self, hash: u64, key: K, value: V) -> u32 {
        let slot = Slot { key, value, hash, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table.insert_unique(hash, i, |&j| slots[j as usize].as_ref().map_or(0, |s| s.hash));
        self.push_front(i);
        i
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

/// A count-bounded, sharded map with O(1) eviction of idle entries and a
/// shared overflow entry. See the [module docs](self).
///
/// ```
/// use llm_tower_core::bounded::{BoundedMap, Placement};
/// // Two entries at most; an entry with a positive balance may not be evicted.
/// let map: BoundedMap<String, u64> = BoundedMap::new(2, 0);
/// let charge = |map: &BoundedMap<String, u64>, who: &str| {
///     map.with(who, || (who.to_owned(), 0), |spent| *spent == 0, |spent| { *spent += 1; *spent }).1
/// };
/// assert_eq!(charge(&map, "a"), Placement::Own);
/// assert_eq!(charge(&map, "b"), Placement::Own);
/// // Full of entries with spend: a third tenant shares the overflow entry.
/// assert_eq!(charge(&map, "c"), Placement::Overflow);
/// assert_eq!(charge(&map, "d"), Placement::Overflow);
/// assert_eq!(map.with_overflow(|v| *v), 2);
/// assert_eq!((map.len(), map.overflow_hits()), (2, 2));
/// ```
pub struct BoundedMap<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: foldhash::fast::RandomState,
    overflow: Mutex<V>,
    overflow_hits: AtomicU64,
    evictions: AtomicU64,
    len: AtomicUsize,
    capacity: usize,
    scan: usize,
}

impl<K, V> std::fmt::Debug for BoundedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedMap")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .field("overflow_hits", &self.overflow_hits.load(Ordering::Relaxed))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Hash + Eq, V> BoundedMap<K, V> {
    /// A map of at most `capacity` entries (at least 1; split evenly over up
    /// to 16 shards, so a shard may refuse a little before the whole map is
    /// full), whose overflow entry starts as `overflow`.
    pub fn new(capacity: usize, overflow: V) -> Self {
        let capacity = capacity.max(1);
        // Up to 16 shards, each with room for at least 64 entries (a small map
        // stays exact about its bound).
        let shards = (capacity / 64).clamp(1, 16);
        let per = capacity / shards;
        BoundedMap {
            shards: (0..shards).map(|_| Mutex::new(Shard::new(per))).collect(),
            hasher: foldhash::fast::RandomState::default(),
            overflow: Mutex::new(overflow),
            overflow_hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            capacity,
            scan: SCAN,
        }
    }

    /// A map whose entries are never evicted (a ledger's lines hold spend):
    /// once full, new keys go to the overflow entry at once, without looking
    /// for one that may go.
    pub fn never_evicting(capacity: usize, overflow: V) -> Self {
        BoundedMap { scan: 0, ..Self::new(capacity, overflow) }
    }

    fn shard_of(&self, hash: u64) -> &Mutex<Shard<K, V>> {
        &self.shards[((hash >> 57) as usize) % self.shards.len()]
    }

    /// Runs `f` on `key`'s entry, inserting `new()` if it is absent (and
    /// marking it most recently used either way). When its shard is full, the
    /// least recently used entry that `evictable` allows to go makes room; if
    /// none of the few looked at may go, `f` runs on the overflow entry.
    /// Everything happens under one short lock of the key's shard.
    pub fn with<Q, T>(
        &self,
        key: &Q,
        new: impl FnOnce() -> (K, V),
        evictable: impl FnMut(&V) -> bool,
        f: impl FnOnce(&mut V) -> T,
    ) -> (T, Placement)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.with_matching(key, |k| k.borrow() == key, new, evictable, f)
    }

    /// [`with`](Self::with) for keys that cannot be borrowed as one value
    /// (a tuple of `Arc<str>` looked up by a tuple of `&str`): `probe` must
    /// hash exactly as the key it stands for, and `matches` say which key it is.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use llm_tower_core::bounded::BoundedMap;
    /// let map: BoundedMap<(Arc<str>, Arc<str>), u32> = BoundedMap::new(100, 0);
    /// for _ in 0..2 {
    ///     let (t, m) = ("acme", "gpt-4o");
    ///     map.with_matching(&(t, m), |k| (&*k.0, &*k.1) == (t, m), || ((t.into(), m.into()), 0), |_| true, |n| *n += 1);
    /// }
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn with_matching<Q, T>(
        &self,
        probe: &Q,
        matches: impl Fn(&K) -> bool,
        new: impl FnOnce() -> (K, V),
        mut evictable: impl FnMut(&V) -> bool,
        f: impl FnOnce(&mut V) -> T,
    ) -> (T, Placement)
    where
        Q: Hash + ?Sized,
    {
        let hash = self.hasher.hash_one(probe);
        let mut shard = lock(self.shard_of(hash));
        if let Some(i) = shard.find_by(hash, &matches) {
            shard.touch(i);
            return (f(&mut shard.slot_mut(i).value), Placement::Own);
        }
        if shard.len() >= shard.cap {
            let mut made_room = false;
            for _ in 0..self.scan.min(shard.len()) {
                let tail = shard.tail;
                if evictable(&shard.slot(tail).value) {
                    shard.remove_slot(tail);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                    made_room = true;
                    break;
                }
                // Still live: give it another turn at the front.
                shard.touch(tail);
            }
            if !made_room {
                drop(shard);
                self.overflow_hits.fetch_add(1, Ordering::Relaxed);
                return (f(&mut lock(&self.overflow)), Placement::Overflow);
            }
        }
        let (k, v) = new();
        let i = shard.insert(hash, k, v);
        self.len.fetch_add(1, Ordering::Relaxed);
        (f(&mut shard.slot_mut(i).value), Placement::Own)
    }

    /// Runs `f` on `key`'s entry if it is held (`None` otherwise), without
    /// inserting it or changing its recency.
    pub fn get<Q, T>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> T) -> T
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let shard = lock(self.shard_of(hash));
        f(shard.find(hash, key).map(|i| &shard.slot(i).value))
    }

    /// [`get`](Self::get) with a probe, as [`with_matching`](Self::with_matching).
    pub fn get_matching<Q, T>(
        &self,
        probe: &Q,
        matches: impl Fn(&K) -> bool,
        f: impl FnOnce(Option<&V>) -> T,
    ) -> T
    where
        Q: Hash + ?Sized,
    {
        let hash = self.hasher.hash_one(probe);
        let shard = lock(self.shard_of(hash));
        f(shard.find_by(hash, matches).map(|i| &shard.slot(i).value))
    }

    /// Runs `f` on the overflow entry.
    pub fn with_overflow<T>(&self, f: impl FnOnce(&mut V) -> T) -> T {
        f(&mut lock(&self.overflow))
    }

    /// Removes `key`'s entry; returns whether it was held.
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let mut shard = lock(self.shard_of(hash));
        match shard.find(hash, key) {
            Some(i) => {
                shard.remove_slot(i);
                self.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Keeps only the entries for which `keep` is true (a shard at a time).
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let live: Vec<u32> =
                (0..shard.slots.len() as u32).filter(|&i| shard.slots[i as usize].is_some()).collect();
            for i in live {
                let slot = shard.slot_mut(i);
                if !keep(&slot.key, &mut slot.value) {
                    shard.remove_slot(i);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Calls `f` on every entry (not the overflow one), a shard at a time.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for s in self.shards.iter() {
            let shard = lock(s);
            for slot in shard.slots.iter().flatten() {
                f(&slot.key, &slot.value);
            }
        }
    }

    /// Entries held (the overflow entry not counted).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Operations that ran on the overflow entry.
    pub fn overflow_hits(&self) -> u64 {
        self.overflow_hits.load(Ordering::Relaxed)
    }

    /// Entries evicted to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(map: &BoundedMap<u64, u64>, k: u64, idle: impl Fn(&u64) -> bool) -> Placement {
        map.with(&k, || (k, 0), idle, |v| *v += 1).1
    }

    #[test]
    fn idle_entries_make_room_in_lru_order() {
        let map = BoundedMap::new(3, 0);
        for k in 0..3 {
            add(&map, k, |_| true);
        }
        add(&map, 0, |_| true); // 0 is now the most recently used
        assert_eq!(add(&map, 3, |_| true), Placement::Own);
        assert_eq!(map.len(), 3);
        assert!(map.get(&1, |v| v.is_none()), "1 was the least recently used");
        assert!(map.get(&0, |v| v == Some(&2)));
        assert_eq!(map.evictions(), 1);
    }

    #[test]
    fn live_entries_are_never_evicted_and_newcomers_share_the_overflow() {
        let map = BoundedMap::new(4, 0);
        for k in 0..4 {
            add(&map, k, |_| false);
        }
        for k in 100..1_000 {
            assert_eq!(add(&map, k, |_| false), Placement::Overflow);
        }
        assert_eq!(map.len(), 4);
        assert_eq!(map.with_overflow(|v| *v), 900);
        for k in 0..4 {
            assert!(map.get(&k, |v| v == Some(&1)), "kept {k}");
        }
    }

    #[test]
    fn a_million_keys_stay_within_the_bound() {
        let map: BoundedMap<u64, u64> = BoundedMap::new(10_000, 0);
        let mut overflowed = 0;
        for k in 0..1_000_000u64 {
            // Entries holding an even key may go, odd ones may not.
            if map.with(&k, || (k, k), |v| v % 2 == 0, |_| ()).1 == Placement::Overflow {
                overflowed += 1;
            }
        }
        assert!(map.len() <= 10_000, "{}", map.len());
        assert_eq!(map.overflow_hits(), overflowed);
        let mut odd = 0;
        map.for_each(|k, _| odd += k % 2);
        assert!(odd > 9_000, "the entries that may not go stayed: {odd}");
        let mut n = 0;
        map.for_each(|_, _| n += 1);
        assert_eq!(n, map.len());
    }

    #[test]
    fn remove_and_retain_keep_the_lists_consistent() {
        let map = BoundedMap::new(64, 0);
        for k in 0..64 {
            add(&map, k, |_| true);
        }
        assert!(map.remove(&10));
        assert!(!map.remove(&10));
        map.retain(|k, _| k % 2 == 0);
        assert_eq!(map.len(), 31);
        for k in 64..200 {
            add(&map, k, |_| true);
        }
        assert_eq!(map.len(), 64);
    }
}
