//! The keyed store that window kinds keep their state in, and its memory implementation.
//!
//! A [`KeyedStore`] maps keys to values within one operator and key group. It knows what
//! changed since its last snapshot, so a checkpoint writes only that (`Mode::Delta`).
//! A [`Backend`] makes stores; a window kind is generic over the backend, so RocksDB
//! (`rocks.rs`, feature `rocksdb`) is another `Backend` whose stores live on disk. A
//! store is named by a tag, unique within its operator and key group (RocksDB keeps
//! each store in a contiguous key range named by it; memory ignores it).
//!
//! The memory store is a hashbrown map looked up by `&K` (one hash per lookup; the key is
//! cloned only when an entry is created). With change tracking on, each entry carries a
//! `changed` flag (set by every mutable access) and removed keys are listed until the
//! next snapshot; without it (jobs without checkpoints) nothing is recorded.

use std::hash::Hash;

use hashbrown::HashMap;
use hashbrown::hash_map::RawEntryMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Decoder, Encoder, Mode, StateError};

/// What a state key must be: hashed and ordered (timers and emission order), cloned when
/// state is created for it, and encodable.
pub trait StateKey: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + 'static {}
impl<T: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + 'static> StateKey for T {}

/// What a state value must be: encodable.
pub trait StateValue: Serialize + DeserializeOwned + 'static {}
impl<T: Serialize + DeserializeOwned + 'static> StateValue for T {}

/// A map of keyed state. Every mutable access counts as a change for the next delta.
pub trait KeyedStore<K, V> {
    /// Number of entries.
    fn len(&self) -> usize;
    /// No entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The entry of `key`.
    fn get_mut(&mut self, key: &K) -> Option<&mut V>;
    /// The entry of `key`, created with `make` when missing (then the flag is true).
    fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> (&mut V, bool);
    /// Removes the entry of `key`; whether there was one.
    fn remove(&mut self, key: &K) -> bool;
    /// Every entry in order of key, mutably (firing a window of every key).
    fn for_each_sorted_mut(&mut self, f: impl FnMut(&K, &mut V));
    /// Every entry, read only (rebuilding indexes after a restore).
    fn for_each(&self, f: impl FnMut(&K, &V));
    /// Lets memory follow live state after many entries were removed.
    fn shrink_if_sparse(&mut self);
    /// Writes the entries (`Mode::Delta`: those changed and removed since the last
    /// snapshot) and starts tracking afresh.
    fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError>;
    /// Applies a snapshot written by [`Self::snapshot`].
    fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError>;
}

/// Makes the stores of operators.
pub trait Backend: Clone + std::fmt::Debug + 'static {
    /// The store type for keys `K` and values `V`.
    type Store<K: StateKey, V: StateValue>: KeyedStore<K, V>;
    /// A new, empty store named `tag` (unique among the stores of one operator
    /// instance alive at a time) with room for `capacity` entries.
    fn store<K: StateKey, V: StateValue>(&self, tag: &[u8], capacity: usize) -> Self::Store<K, V>;
}

/// State in memory (the default backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Track changes for incremental snapshots (jobs with checkpoints).
    pub tracking: bool,
}

impl Memory {
    /// Memory state with change tracking (for incremental checkpoints).
    pub fn tracking() -> Self {
        Memory { tracking: true }
    }
}

impl Backend for Memory {
    type Store<K: StateKey, V: StateValue> = MemStore<K, V>;

    fn store<K: StateKey, V: StateValue>(&self, _tag: &[u8], capacity: usize) -> MemStore<K, V> {
        MemStore {
            map: HashMap::with_capacity(capacity),
            removed: Vec::new(),
            tracking: self.tracking,
        }
    }
}

struct Entry<V> {
    value: V,
    changed: bool,
}

/// The memory store.
pub struct MemStore<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Keys removed since the last snapshot (tracking only).
    removed: Vec<K>,
    tracking: bool,
}

impl<K, V> std::fmt::Debug for MemStore<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("len", &self.map.len())
            .field("tracking", &self.tracking)
            .finish_non_exhaustive()
    }
}

const FULL: u8 = 0;
const DELTA: u8 = 1;

impl<K: StateKey, V: StateValue> KeyedStore<K, V> for MemStore<K, V> {
    fn len(&self) -> usize {
        self.map.len()
    }

    #[inline]
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|e| {
            e.changed = true;
            &mut e.value
        })
    }

    #[inline]
    fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        match self.map.raw_entry_mut().from_key(key) {
            RawEntryMut::Occupied(o) => {
                let e = o.into_mut();
                e.changed = true;
                (&mut e.value, false)
            }
            RawEntryMut::Vacant(v) => {
                let e = v
                    .insert(
                        key.clone(),
                        Entry {
                            value: make(),
                            changed: true,
                        },
                    )
                    .1;
                (&mut e.value, true)
            }
        }
    }

    fn remove(&mut self, key: &K) -> bool {
        let Some((k, _)) = self.map.remove_entry(key) else {
            return false;
        };
        if self.tracking {
            self.removed.push(k);
        }
        true
    }

    fn for_each_sorted_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        let mut entries: Vec<(&K, &mut Entry<V>)> = self.map.iter_mut().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, e) in entries {
            e.changed = true;
            f(k, &mut e.value);
        }
    }

    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for (k, e) in &self.map {
            f(k, &e.value);
        }
    }

    fn shrink_if_sparse(&mut self) {
        if self.map.capacity() > 64 && self.map.len() * 8 < self.map.capacity() {
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        match mode {
            Mode::Full => {
                out.put(&FULL)?;
                out.put_len(self.map.len())?;
                for (k, e) in &mut self.map {
                    out.put(k)?;
                    out.put(&e.value)?;
                    e.changed = false;
                }
            }
            Mode::Delta => {
                if !self.tracking {
                    return Err(StateError::new(
                        "an incremental snapshot of a store without change tracking",
                    ));
                }
                out.put(&DELTA)?;
                out.put_len(self.removed.len())?;
                for k in &self.removed {
                    out.put(k)?;
                }
                let changed = self.map.values().filter(|e| e.changed).count();
                out.put_len(changed)?;
                for (k, e) in &mut self.map {
                    if e.changed {
                        out.put(k)?;
                        out.put(&e.value)?;
                        e.changed = false;
                    }
                }
            }
        }
        self.removed.clear();
        Ok(())
    }

    fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        let tag: u8 = input.take()?;
        match tag {
            FULL => {
                self.map.clear();
            }
            DELTA => {
                let n = input.take_len()?;
                for _ in 0..n {
                    let k: K = input.take()?;
                    self.map.remove(&k);
                }
            }
            other => return Err(StateError::new(format!("unknown store record {other}"))),
        }
        let n = input.take_len()?;
        self.map.reserve(n);
        for _ in 0..n {
            let k: K = input.take()?;
            let v: V = input.take()?;
            self.map.insert(
                k,
                Entry {
                    value: v,
                    changed: false,
                },
            );
        }
        self.removed.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn contents(s: &MemStore<u32, String>) -> BTreeMap<u32, String> {
        let mut m = BTreeMap::new();
        s.for_each(|k, v| {
            m.insert(*k, v.clone());
        });
        m
    }

    #[test]
    fn deltas_on_a_full_snapshot_reproduce_the_store() {
        let b = Memory::tracking();
        let mut s: MemStore<u32, String> = b.store(b"t", 0);
        let mut chain = Vec::new();
        let mut r: u64 = 7;
        for round in 0..30 {
            for _ in 0..50 {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = ((r >> 33) % 40) as u32;
                match (r >> 20) % 3 {
                    0 => {
                        s.remove(&k);
                    }
                    1 => {
                        s.get_or_insert_with(&k, String::new).0.push('x');
                    }
                    _ => {
                        if let Some(v) = s.get_mut(&k) {
                            v.push('y');
                        }
                    }
                }
            }
            let mode = if round % 10 == 0 {
                Mode::Full
            } else {
                Mode::Delta
            };
            let mut e = Encoder::new();
            s.snapshot(mode, &mut e).unwrap();
            if mode == Mode::Full {
                chain.clear();
            }
            chain.push(e.into_bytes());
            // Restoring the chain into a fresh store gives the same contents.
            let mut t: MemStore<u32, String> = b.store(b"t", 0);
            for blob in &chain {
                let mut d = Decoder::new(blob);
                t.restore(&mut d).unwrap();
                d.finish().unwrap();
            }
            assert_eq!(contents(&t), contents(&s), "round {round}");
        }
        // A delta holds only what changed: nothing changed, nearly nothing written.
        let mut e = Encoder::new();
        s.snapshot(Mode::Delta, &mut e).unwrap();
        assert!(e.len() <= 3, "{}", e.len());
    }

    #[test]
    fn without_tracking_only_full_snapshots() {
        let mut s: MemStore<u32, u32> = Memory::default().store(b"t", 0);
        s.get_or_insert_with(&1, || 5);
        s.remove(&1);
        assert!(s.removed.is_empty());
        assert!(s.snapshot(Mode::Delta, &mut Encoder::new()).is_err());
        s.snapshot(Mode::Full, &mut Encoder::new()).unwrap();
    }
}
