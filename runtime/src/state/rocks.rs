//! The RocksDB state backend (feature `rocksdb`, `state: {backend: rocksdb}`).
//!
//! One RocksDB instance per job instance, in `<path>/<job>/<instance>/db`, wiped when
//! the job starts: checkpoints are the durability (the write-ahead log is off), and a
//! restart restores from the checkpoint the committed offsets name, as with memory.
//!
//! Layout: one column family per windowed flow (`op:<flow>`). A key is the key group
//! (`0` for the task, `1` and the partition big-endian), the store's tag (which store of
//! the operator: `s` sliding, `w` sessions, `f` and the window bounds for a tumbling
//! window's slot), then the key in the order-preserving encoding of `memcmp.rs`. So a
//! store, and a key group, is one contiguous range: dropping one is a range delete, and
//! a scan yields keys in order. A value is the entry as a checkpoint holds it (postcard
//! of the key, then of the value), so a full snapshot of a store copies values as they
//! are.
//!
//! In front of each store a bounded write-back cache of decoded entries
//! (`STREAMC_ROCKSDB_CACHE_ENTRIES` per store, CLOCK eviction): hot keys cost no RocksDB
//! get or put per event; a dirty entry is written when it is evicted, and all of them
//! (one `WriteBatch`) before a scan. A store that has never written to RocksDB
//! answers misses without a get (its whole content is in the cache).
//!
//! Change tracking for incremental snapshots (`Mode::Delta`) keeps, in memory, the keys
//! removed and the changed keys evicted since the last snapshot (the cached entries
//! carry a flag), so a delta is the same blob as the memory store writes.
//!
//! A RocksDB error (I/O, a value that does not decode) cannot be returned through the
//! `KeyedStore` calls of the hot path: the first is recorded ([`RocksDb::error`]), the
//! store carries on as if the entry were missing, and the driver ends the job with it at
//! the end of the batch (`Error::State`), before the next checkpoint or commit.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use hashbrown::{HashMap, HashSet};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use super::memcmp;
use super::{
    Backend, Decoder, Encoder, KeyGroup, KeyedStore, Mode, StateError, StateKey, StateValue,
};

/// The environment variable with the write-back cache's size, in entries per store.
pub const CACHE_ENTRIES_ENV: &str = "STREAMC_ROCKSDB_CACHE_ENTRIES";
/// Entries per store's write-back cache when [`CACHE_ENTRIES_ENV`] is not set.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;
/// RocksDB's block cache (shared by every column family).
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// Entries written per `WriteBatch` when a scan writes back what it changed.
const BATCH: usize = 4096;

const FULL: u8 = 0;
const DELTA: u8 = 1;

/// RocksDB's own figures and the write-back caches', for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RocksFigures {
    /// `rocksdb.total-sst-files-size` over the column families: state on disk.
    pub sst_bytes: u64,
    /// `rocksdb.estimate-live-data-size` over the column families.
    pub live_bytes: u64,
    /// `rocksdb.cur-size-all-mem-tables` over the column families.
    pub memtable_bytes: u64,
    /// Bytes in the block cache.
    pub block_cache_bytes: u64,
    /// Compactions done (RocksDB statistics: `rocksdb.compaction.times.micros` count).
    pub compactions: u64,
    /// Bytes read by compactions.
    pub compaction_read_bytes: u64,
    /// Bytes written by compactions.
    pub compaction_write_bytes: u64,
    /// Lookups answered by a write-back cache.
    pub cache_hits: u64,
    /// Lookups a write-back cache did not answer (a RocksDB get, unless the store has
    /// never written to RocksDB).
    pub cache_misses: u64,
}

/// The instance's RocksDB: the database, its options and the first error.
pub struct RocksDb {
    db: DB,
    opts: Options,
    write: WriteOptions,
    cache: Cache,
    dir: PathBuf,
    column_families: Vec<String>,
    cache_entries: usize,
    error: RefCell<Option<String>>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl std::fmt::Debug for RocksDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDb")
            .field("dir", &self.dir)
            .field("column_families", &self.column_families)
            .field("cache_entries", &self.cache_entries)
            .finish_non_exhaustive()
    }
}

fn column_family(operator: &str) -> String {
    format!("op:{operator}")
}

fn db_error(what: &str, dir: &Path, e: rocksdb::Error) -> StateError {
    StateError::new(format!("RocksDB state in {}: {what}: {e}", dir.display()))
}

impl RocksDb {
    /// Wipes and opens the database in `dir` with one column family per operator; the
    /// cache size comes from [`CACHE_ENTRIES_ENV`]. Fails when the directory is in use
    /// by another process (RocksDB's lock) or cannot be created.
    pub fn open(dir: &Path, operators: &[&str]) -> Result<Rc<RocksDb>, StateError> {
        let cache_entries = match std::env::var(CACHE_ENTRIES_ENV) {
            Err(_) => DEFAULT_CACHE_ENTRIES,
            Ok(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    StateError::new(format!(
                        "{CACHE_ENTRIES_ENV}={v:?}: expected a number of entries, at least 1"
                    ))
                })?,
        };
        Self::open_with(dir, operators, cache_entries)
    }

    /// [`Self::open`] with the cache size given.
    pub fn open_with(
        dir: &Path,
        operators: &[&str],
        cache_entries: usize,
    ) -> Result<Rc<RocksDb>, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError::new(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES)
            .map_err(|e| db_error("cannot make the block cache", dir, e))?;
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Point lookups of keys that are not there (a key's first event) mostly stop
        // at the filter.
        table.set_bloom_filter(10.0, false);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::None);
        opts.set_block_based_table_factory(&table);
        opts.enable_statistics();
        // Start from nothing: what a previous run left is not state (a restore rebuilds
        // it from the checkpoint). DestroyDB takes the database's lock, so a directory
        // in use by a running instance is refused, not wiped.
        DB::destroy(&opts, dir).map_err(|e| db_error("cannot wipe", dir, e))?;
        let column_families: Vec<String> = operators.iter().map(|o| column_family(o)).collect();
        let descriptors = column_families.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(DBCompressionType::None);
            cf.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, dir, descriptors)
            .map_err(|e| db_error("cannot open", dir, e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(Rc::new(RocksDb {
            db,
            opts,
            write,
            cache,
            dir: dir.to_path_buf(),
            column_families,
            cache_entries,
            error: RefCell::new(None),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }))
    }

    /// The backend for the stores of `operator` (tracking: for incremental snapshots).
    pub fn backend(self: &Rc<Self>, operator: &str, tracking: bool) -> Result<Rocks, StateError> {
        let cf = column_family(operator);
        if self.db.cf_handle(&cf).is_none() {
            return Err(StateError::new(format!(
                "RocksDB state in {}: no column family for operator `{operator}`",
                self.dir.display()
            )));
        }
        Ok(Rocks {
            db: Rc::clone(self),
            cf: Rc::from(cf.as_str()),
            group: Vec::new(),
            tracking,
        })
    }

    /// Where the database is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first error a store met, if any (the driver ends the job with it).
    pub fn error(&self) -> Option<String> {
        self.error.borrow().clone()
    }

    fn fail(&self, msg: String) {
        let mut e = self.error.borrow_mut();
        if e.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %msg, "RocksDB state failed");
            *e = Some(msg);
        }
    }

    fn cf(&self, name: &str) -> Option<&ColumnFamily> {
        let cf = self.db.cf_handle(name);
        if cf.is_none() {
            self.fail(format!("column family {name} is gone"));
        }
        cf
    }

    /// The figures of `/metrics`.
    pub fn figures(&self) -> RocksFigures {
        let mut f = RocksFigures {
            block_cache_bytes: self.cache.get_usage() as u64,
            cache_hits: self.hits.get(),
            cache_misses: self.misses.get(),
            ..RocksFigures::default()
        };
        for name in &self.column_families {
            let Some(cf) = self.db.cf_handle(name) else {
                continue;
            };
            let prop = |p: &str| {
                self.db
                    .property_int_value_cf(cf, p)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            f.sst_bytes += prop("rocksdb.total-sst-files-size");
            f.live_bytes += prop("rocksdb.estimate-live-data-size");
            f.memtable_bytes += prop("rocksdb.cur-size-all-mem-tables");
        }
        if let Some(stats) = self.opts.get_statistics() {
            for line in stats.lines() {
                let mut words = line.split_whitespace();
                let Some(name) = words.next() else { continue };
                let count = || {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    w.iter()
                        .position(|&x| x == "COUNT")
                        .and_then(|i| w.get(i + 2))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                match name {
                    "rocksdb.compaction.times.micros" => f.compactions = count(),
                    "rocksdb.compact.read.bytes" => f.compaction_read_bytes = count(),
                    "rocksdb.compact.write.bytes" => f.compaction_write_bytes = count(),
                    _ => {}
                }
            }
        }
        f
    }

    /// Flushes the memtables and compacts every column family (tests: so that state
    /// is in SST files, and compaction figures move).
    pub fn compact(&self) -> Result<(), StateError> {
        for name in &self.column_families {
            let Some(cf) = self.db.cf_handle(name) else {
                continue;
            };
            self.db
                .flush_cf(cf)
                .map_err(|e| db_error("cannot flush", &self.dir, e))?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}

/// State in RocksDB: the backend of one operator's instance for one key group.
#[derive(Clone)]
pub struct Rocks {
    db: Rc<RocksDb>,
    cf: Rc<str>,
    /// The key group's key prefix.
    group: Vec<u8>,
    tracking: bool,
}

impl std::fmt::Debug for Rocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rocks")
            .field("cf", &self.cf)
            .field("group", &self.group)
            .field("tracking", &self.tracking)
            .finish_non_exhaustive()
    }
}

impl Rocks {
    /// The same operator's backend for key group `group`.
    pub fn for_group(&self, group: KeyGroup) -> Rocks {
        let prefix = match group {
            KeyGroup::Task => vec![0],
            KeyGroup::Partition { partition, .. } => {
                let mut v = vec![1];
                v.extend_from_slice(&partition.to_be_bytes());
                v
            }
        };
        Rocks {
            group: prefix,
            ..self.clone()
        }
    }

    /// The database.
    pub fn db(&self) -> &Rc<RocksDb> {
        &self.db
    }
}

impl Backend for Rocks {
    type Store<K: StateKey, V: StateValue> = RocksStore<K, V>;

    fn store<K: StateKey, V: StateValue>(&self, tag: &[u8], capacity: usize) -> RocksStore<K, V> {
        let mut prefix = self.group.clone();
        prefix.extend_from_slice(tag);
        let end = successor(&prefix);
        let cap = self.db.cache_entries;
        RocksStore {
            b: self.clone(),
            prefix,
            end,
            map: HashMap::with_capacity(capacity.min(cap)),
            slots: Vec::with_capacity(capacity.min(cap)),
            hand: 0,
            cap,
            len: 0,
            on_disk: false,
            removed: Vec::new(),
            evicted_changed: HashSet::new(),
            all_changed: false,
            key_buf: Vec::new(),
        }
    }
}

/// The least byte string greater than every string starting with `prefix`.
fn successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // (Never: a prefix starts with a key group byte, 0 or 1.)
    vec![0xFF; prefix.len() + 1]
}

struct Slot<K, V> {
    key: K,
    value: V,
    /// Differs from what RocksDB holds (written back when evicted).
    dirty: bool,
    /// Changed since the last snapshot (tracking).
    changed: bool,
    /// CLOCK's reference bit.
    referenced: bool,
}

/// A RocksDB store with its write-back cache.
pub struct RocksStore<K, V> {
    b: Rocks,
    /// Key group ++ tag: every key of the store starts with it.
    prefix: Vec<u8>,
    /// `successor(prefix)`: the store is `prefix..end`.
    end: Vec<u8>,
    /// Cached keys → index in `slots`.
    map: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    /// CLOCK's hand.
    hand: usize,
    cap: usize,
    /// Entries in the store (cached or not).
    len: usize,
    /// Whether RocksDB may hold entries of the store (else the cache holds them all).
    on_disk: bool,
    /// Tracking: keys removed since the last snapshot.
    removed: Vec<K>,
    /// Tracking: changed keys evicted from the cache since the last snapshot.
    evicted_changed: HashSet<K>,
    /// Tracking: every entry changed since the last snapshot (a scan rewrote them).
    all_changed: bool,
    key_buf: Vec<u8>,
}

impl<K, V> std::fmt::Debug for RocksStore<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("backend", &self.b)
            .field("len", &self.len)
            .field("cached", &self.slots.len())
            .field("on_disk", &self.on_disk)
            .finish_non_exhaustive()
    }
}

fn encode_entry<K: StateKey, V: StateValue>(k: &K, v: &V) -> Result<Vec<u8>, StateError> {
    let mut e = Encoder::new();
    e.put(k)?;
    e.put(v)?;
    Ok(e.into_bytes())
}

fn decode_entry<K: StateKey, V: StateValue>(bytes: &[u8]) -> Result<(K, V), StateError> {
    let mut d = Decoder::new(bytes);
    let k = d.take()?;
    let v = d.take()?;
    d.finish()?;
    Ok((k, v))
}

impl<K: StateKey, V: StateValue> RocksStore<K, V> {
    fn db(&self) -> &RocksDb {
        &self.b.db
    }

    /// The RocksDB key of `key` (in `key_buf`).
    fn db_key(&mut self, key: &K) -> Option<Vec<u8>> {
        let mut k = std::mem::take(&mut self.key_buf);
        k.clear();
        k.extend_from_slice(&self.prefix);
        match memcmp::encode_into(key, &mut k) {
            Ok(()) => Some(k),
            Err(e) => {
                self.db().fail(e.to_string());
                None
            }
        }
    }

    fn give_back(&mut self, k: Vec<u8>) {
        self.key_buf = k;
    }

    /// The entry of `key` in RocksDB.
    fn load(&mut self, key: &K) -> Option<V> {
        if !self.on_disk {
            return None;
        }
        let k = self.db_key(key)?;
        let db = &self.b.db;
        let got = match db.cf(&self.b.cf) {
            Some(cf) => match db.db.get_pinned_cf(cf, &k) {
                Ok(Some(bytes)) => match decode_entry::<K, V>(&bytes) {
                    Ok((_, v)) => Some(v),
                    Err(e) => {
                        db.fail(format!("a stored entry does not decode: {e}"));
                        None
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    db.fail(format!("get: {e}"));
                    None
                }
            },
            None => None,
        };
        self.give_back(k);
        got
    }

    /// Whether RocksDB holds `key`.
    fn exists(&mut self, key: &K) -> bool {
        if !self.on_disk {
            return false;
        }
        let Some(k) = self.db_key(key) else {
            return false;
        };
        let db = &self.b.db;
        let got = match db.cf(&self.b.cf) {
            Some(cf) => db.db.get_pinned_cf(cf, &k).map(|v| v.is_some()),
            None => Ok(false),
        };
        self.give_back(k);
        got.unwrap_or_else(|e| {
            self.db().fail(format!("get: {e}"));
            false
        })
    }

    fn put(&mut self, key: &K, value: &V) {
        let Some(k) = self.db_key(key) else { return };
        match encode_entry(key, value) {
            Ok(v) => {
                let db = &self.b.db;
                if let Some(cf) = db.cf(&self.b.cf)
                    && let Err(e) = db.db.put_cf_opt(cf, &k, v, &db.write)
                {
                    db.fail(format!("put: {e}"));
                }
            }
            Err(e) => self.db().fail(e.to_string()),
        }
        self.give_back(k);
        self.on_disk = true;
    }

    fn delete(&mut self, key: &K) {
        if !self.on_disk {
            return;
        }
        let Some(k) = self.db_key(key) else { return };
        let db = &self.b.db;
        if let Some(cf) = db.cf(&self.b.cf)
            && let Err(e) = db.db.delete_cf_opt(cf, &k, &db.write)
        {
            db.fail(format!("delete: {e}"));
        }
        self.give_back(k);
    }

    /// Caches an entry, evicting one when the cache is full; its index.
    fn cache(&mut self, key: K, value: V) -> usize {
        let slot = Slot {
            key,
            value,
            dirty: true,
            changed: true,
            referenced: true,
        };
        if self.slots.len() < self.cap {
            self.map.insert(slot.key.clone(), self.slots.len());
            self.slots.push(slot);
            return self.slots.len() - 1;
        }
        // CLOCK: the first entry from the hand on that was not used since the hand
        // last passed it.
        loop {
            let s = &mut self.slots[self.hand];
            if !s.referenced {
                break;
            }
            s.referenced = false;
            self.hand = (self.hand + 1) % self.slots.len();
        }
        let i = self.hand;
        self.hand = (self.hand + 1) % self.slots.len();
        self.map.insert(slot.key.clone(), i);
        let old = std::mem::replace(&mut self.slots[i], slot);
        self.map.remove(&old.key);
        if old.dirty {
            self.put(&old.key, &old.value);
        }
        if old.changed && self.b.tracking {
            self.evicted_changed.insert(old.key);
        }
        i
    }

    /// Writes every dirty cached entry (one batch).
    fn flush(&mut self) {
        let db = &self.b.db;
        let Some(cf) = db.cf(&self.b.cf) else { return };
        let mut batch = WriteBatch::default();
        let mut k = Vec::new();
        for s in self.slots.iter_mut().filter(|s| s.dirty) {
            k.clear();
            k.extend_from_slice(&self.prefix);
            if let Err(e) = memcmp::encode_into(&s.key, &mut k) {
                db.fail(e.to_string());
                continue;
            }
            match encode_entry(&s.key, &s.value) {
                Ok(v) => batch.put_cf(cf, &k, v),
                Err(e) => db.fail(e.to_string()),
            }
            s.dirty = false;
        }
        if !batch.is_empty() {
            self.on_disk = true;
            if let Err(e) = db.db.write_opt(batch, &db.write) {
                db.fail(format!("write: {e}"));
            }
        }
    }

    /// Flushes, then empties the cache (its changed flags move to `evicted_changed`).
    fn flush_and_clear(&mut self) {
        self.flush();
        for s in self.slots.drain(..) {
            if s.changed && self.b.tracking && !self.all_changed {
                self.evicted_changed.insert(s.key);
            }
        }
        self.map.clear();
        self.hand = 0;
    }

    /// Every (key, raw entry) of the store in RocksDB, in key order.
    fn scan(&self, mut f: impl FnMut(&[u8], &[u8])) {
        if !self.on_disk {
            return;
        }
        let db = &self.b.db;
        let Some(cf) = db.cf(&self.b.cf) else { return };
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(self.end.clone());
        ro.fill_cache(false);
        let mut it = db.db.raw_iterator_cf_opt(cf, ro);
        it.seek(&self.prefix);
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                f(k, v);
            }
            it.next();
        }
        if let Err(e) = it.status() {
            db.fail(format!("scan: {e}"));
        }
    }

    fn reset_tracking(&mut self) {
        self.removed.clear();
        self.evicted_changed.clear();
        self.all_changed = false;
        for s in &mut self.slots {
            s.changed = false;
        }
    }

    fn delete_all(&mut self) {
        if self.on_disk {
            let db = &self.b.db;
            if let Some(cf) = db.cf(&self.b.cf)
                && let Err(e) = db
                    .db
                    .delete_range_cf_opt(cf, &self.prefix, &self.end, &db.write)
            {
                db.fail(format!("delete range: {e}"));
            }
        }
        self.on_disk = false;
    }
}

impl<K: StateKey, V: StateValue> KeyedStore<K, V> for RocksStore<K, V> {
    fn len(&self) -> usize {
        self.len
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if let Some(&i) = self.map.get(key) {
            let db = self.db();
            db.hits.set(db.hits.get() + 1);
            let s = &mut self.slots[i];
            s.referenced = true;
            s.dirty = true;
            s.changed = true;
            return Some(&mut s.value);
        }
        let db = self.db();
        db.misses.set(db.misses.get() + 1);
        let v = self.load(key)?;
        let i = self.cache(key.clone(), v);
        Some(&mut self.slots[i].value)
    }

    fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        if let Some(&i) = self.map.get(key) {
            let db = self.db();
            db.hits.set(db.hits.get() + 1);
            let s = &mut self.slots[i];
            s.referenced = true;
            s.dirty = true;
            s.changed = true;
            return (&mut s.value, false);
        }
        let db = self.db();
        db.misses.set(db.misses.get() + 1);
        let (v, new) = match self.load(key) {
            Some(v) => (v, false),
            None => (make(), true),
        };
        if new {
            self.len += 1;
        }
        let i = self.cache(key.clone(), v);
        (&mut self.slots[i].value, new)
    }

    fn remove(&mut self, key: &K) -> bool {
        let existed = if let Some(i) = self.map.remove(key) {
            self.slots.swap_remove(i);
            if let Some(moved) = self.slots.get(i)
                && let Some(j) = self.map.get_mut(&moved.key)
            {
                *j = i;
            }
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            self.delete(key);
            true
        } else if self.exists(key) {
            self.delete(key);
            true
        } else {
            false
        };
        if existed {
            self.len -= 1;
            if self.b.tracking {
                self.evicted_changed.remove(key);
                self.removed.push(key.clone());
            }
        }
        existed
    }

    fn for_each_sorted_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        if !self.on_disk {
            // Everything is cached: sort the cache.
            let mut order: Vec<usize> = (0..self.slots.len()).collect();
            order.sort_unstable_by(|&a, &b| self.slots[a].key.cmp(&self.slots[b].key));
            for i in order {
                let s = &mut self.slots[i];
                s.dirty = true;
                s.changed = true;
                f(&s.key, &mut s.value);
            }
            return;
        }
        self.flush_and_clear();
        if self.b.tracking {
            self.all_changed = true;
            self.evicted_changed.clear();
        }
        let db = Rc::clone(&self.b.db);
        let Some(cf) = db.cf(&self.b.cf) else { return };
        let mut batch = WriteBatch::default();
        let mut failed: Option<String> = None;
        self.scan(|k, raw| match decode_entry::<K, V>(raw) {
            Ok((key, mut value)) => {
                f(&key, &mut value);
                match encode_entry(&key, &value) {
                    Ok(v) => batch.put_cf(cf, k, v),
                    Err(e) => failed = Some(e.to_string()),
                }
                if batch.len() >= BATCH
                    && let Err(e) = db.db.write_opt(std::mem::take(&mut batch), &db.write)
                {
                    failed = Some(format!("write: {e}"));
                }
            }
            Err(e) => failed = Some(format!("a stored entry does not decode: {e}")),
        });
        if !batch.is_empty()
            && let Err(e) = db.db.write_opt(batch, &db.write)
        {
            failed = Some(format!("write: {e}"));
        }
        if let Some(e) = failed {
            db.fail(e);
        }
    }

    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for s in &self.slots {
            f(&s.key, &s.value);
        }
        self.scan(|_, raw| match decode_entry::<K, V>(raw) {
            Ok((k, v)) => {
                if !self.map.contains_key(&k) {
                    f(&k, &v);
                }
            }
            Err(e) => self
                .db()
                .fail(format!("a stored entry does not decode: {e}")),
        });
    }

    fn shrink_if_sparse(&mut self) {
        if self.map.capacity() > 64 && self.map.len() * 8 < self.map.capacity() {
            self.map.shrink_to(self.map.len() * 2);
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }

    fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        let whole = match mode {
            Mode::Full => {
                out.put(&FULL)?;
                true
            }
            Mode::Delta => {
                if !self.b.tracking {
                    return Err(StateError::new(
                        "an incremental snapshot of a store without change tracking",
                    ));
                }
                out.put(&DELTA)?;
                out.put_len(self.removed.len())?;
                for k in &self.removed {
                    out.put(k)?;
                }
                self.all_changed
            }
        };
        if whole {
            out.put_len(self.len)?;
            let mut n = 0usize;
            if self.on_disk {
                self.flush();
                self.scan(|_, raw| {
                    out.put_raw(raw);
                    n += 1;
                });
            } else {
                for s in &self.slots {
                    out.put(&s.key)?;
                    out.put(&s.value)?;
                    n += 1;
                }
            }
            if n != self.len {
                return Err(StateError::new(format!(
                    "RocksDB store holds {n} entries where {} were counted",
                    self.len
                )));
            }
        } else {
            let mut body = Encoder::new();
            let mut n = 0usize;
            for s in self.slots.iter().filter(|s| s.changed) {
                body.put(&s.key)?;
                body.put(&s.value)?;
                n += 1;
            }
            let evicted = std::mem::take(&mut self.evicted_changed);
            for key in &evicted {
                if self.map.contains_key(key) {
                    continue; // written above if changed again, else unchanged since
                }
                let Some(k) = self.db_key(key) else { continue };
                let db = &self.b.db;
                if let Some(cf) = db.cf(&self.b.cf) {
                    match db.db.get_pinned_cf(cf, &k) {
                        Ok(Some(raw)) => {
                            body.put_raw(&raw);
                            n += 1;
                        }
                        // Removed since: listed in `removed`.
                        Ok(None) => {}
                        Err(e) => db.fail(format!("get: {e}")),
                    }
                }
                self.give_back(k);
            }
            out.put_len(n)?;
            out.put_raw(body.as_bytes());
        }
        self.reset_tracking();
        match self.db().error() {
            Some(e) => Err(StateError::new(e)),
            None => Ok(()),
        }
    }

    fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        let tag: u8 = input.take()?;
        let full = match tag {
            FULL => {
                self.map.clear();
                self.slots.clear();
                self.hand = 0;
                self.delete_all();
                self.len = 0;
                true
            }
            DELTA => {
                self.flush_and_clear();
                let n = input.take_len()?;
                for _ in 0..n {
                    let k: K = input.take()?;
                    if self.exists(&k) {
                        self.delete(&k);
                        self.len -= 1;
                    }
                }
                false
            }
            other => return Err(StateError::new(format!("unknown store record {other}"))),
        };
        let n = input.take_len()?;
        let db = Rc::clone(&self.b.db);
        let cf = db
            .cf(&self.b.cf)
            .ok_or_else(|| StateError::new("RocksDB column family is gone"))?;
        let mut batch = WriteBatch::default();
        for _ in 0..n {
            let before = input.remaining();
            let k: K = input.take()?;
            let _: V = input.take()?;
            let raw = &before[..before.len() - input.remaining().len()];
            if full || !self.exists(&k) {
                self.len += 1;
            }
            let Some(dk) = self.db_key(&k) else { continue };
            batch.put_cf(cf, &dk, raw);
            self.give_back(dk);
            if batch.len() >= BATCH {
                db.db
                    .write_opt(std::mem::take(&mut batch), &db.write)
                    .map_err(|e| db_error("write", &db.dir, e))?;
            }
            self.on_disk = true;
        }
        if !batch.is_empty() {
            db.db
                .write_opt(batch, &db.write)
                .map_err(|e| db_error("write", &db.dir, e))?;
        }
        self.reset_tracking();
        match db.error() {
            Some(e) => Err(StateError::new(e)),
            None => Ok(()),
        }
    }
}

impl<K, V> Drop for RocksStore<K, V> {
    /// A store that goes (a purged window, a dropped key group) takes its range along.
    fn drop(&mut self) {
        if self.on_disk {
            let db = &self.b.db;
            if let Some(cf) = db.db.cf_handle(&self.b.cf)
                && let Err(e) = db
                    .db
                    .delete_range_cf_opt(cf, &self.prefix, &self.end, &db.write)
            {
                db.fail(format!("delete range: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn db(cache: usize) -> (tempfile::TempDir, Rc<RocksDb>) {
        let dir = tempfile::tempdir().unwrap();
        let db = RocksDb::open_with(&dir.path().join("db"), &["op"], cache).unwrap();
        (dir, db)
    }

    fn contents(s: &RocksStore<u32, String>) -> BTreeMap<u32, String> {
        let mut m = BTreeMap::new();
        s.for_each(|k, v| {
            assert!(m.insert(*k, v.clone()).is_none(), "key {k} twice");
        });
        m
    }

    /// The memory store's test, against a model, with a cache small enough that most
    /// entries live in RocksDB.
    #[test]
    fn deltas_on_a_full_snapshot_reproduce_the_store() {
        for cache in [1, 7, 1000] {
            let (_dir, db) = db(cache);
            let b = db.backend("op", true).unwrap().for_group(KeyGroup::Task);
            let mut s: RocksStore<u32, String> = b.store(b"t", 0);
            let mut model: BTreeMap<u32, String> = BTreeMap::new();
            let mut chain = Vec::new();
            let mut r: u64 = 7;
            for round in 0..30 {
                for _ in 0..50 {
                    r = r
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = ((r >> 33) % 40) as u32;
                    match (r >> 20) % 4 {
                        0 => {
                            assert_eq!(s.remove(&k), model.remove(&k).is_some());
                        }
                        1 => {
                            let (v, new) = s.get_or_insert_with(&k, String::new);
                            v.push('x');
                            let m = model.entry(k).or_default();
                            assert_eq!(new, m.is_empty());
                            m.push('x');
                        }
                        2 => {
                            let got = s.get_mut(&k).map(|v| {
                                v.push('y');
                                v.clone()
                            });
                            let want = model.get_mut(&k).map(|v| {
                                v.push('y');
                                v.clone()
                            });
                            assert_eq!(got, want);
                        }
                        _ => {
                            let mut seen = Vec::new();
                            s.for_each_sorted_mut(|k, v| {
                                v.push('z');
                                seen.push(*k);
                            });
                            for v in model.values_mut() {
                                v.push('z');
                            }
                            assert_eq!(seen, model.keys().copied().collect::<Vec<_>>());
                        }
                    }
                    assert_eq!(s.len(), model.len());
                }
                assert_eq!(contents(&s), model, "round {round}");
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
                // Restoring the chain into a fresh store (another key group) gives the
                // same contents, and so does a memory store.
                let mut t: RocksStore<u32, String> = db
                    .backend("op", true)
                    .unwrap()
                    .for_group(KeyGroup::Partition {
                        source: 0,
                        partition: 3,
                    })
                    .store(b"t", 0);
                let mut m: super::super::MemStore<u32, String> =
                    super::super::Memory::tracking().store(b"t", 0);
                for blob in &chain {
                    let mut d = Decoder::new(blob);
                    t.restore(&mut d).unwrap();
                    d.finish().unwrap();
                    let mut d = Decoder::new(blob);
                    m.restore(&mut d).unwrap();
                    d.finish().unwrap();
                }
                assert_eq!(contents(&t), model, "round {round}, cache {cache}");
                assert_eq!(t.len(), model.len());
                let mut mm = BTreeMap::new();
                m.for_each(|k, v| {
                    mm.insert(*k, v.clone());
                });
                assert_eq!(mm, model);
            }
            assert!(db.error().is_none());
        }
    }

    #[test]
    fn a_dropped_store_takes_its_range_and_no_other() {
        let (_dir, db) = db(2);
        let b = db.backend("op", false).unwrap();
        let g0 = b.for_group(KeyGroup::Partition {
            source: 0,
            partition: 0,
        });
        let g1 = b.for_group(KeyGroup::Partition {
            source: 0,
            partition: 1,
        });
        let mut a: RocksStore<u32, u32> = g0.store(b"s", 0);
        let mut c: RocksStore<u32, u32> = g1.store(b"s", 0);
        for k in 0..100 {
            *a.get_or_insert_with(&k, || 0).0 += k;
            *c.get_or_insert_with(&k, || 0).0 += 2 * k;
        }
        assert!(a.on_disk && c.on_disk);
        drop(a);
        let mut a: RocksStore<u32, u32> = g0.store(b"s", 0);
        a.on_disk = true; // look at the range
        let mut n = 0;
        a.scan(|_, _| n += 1);
        assert_eq!(n, 0, "the dropped group's range is empty");
        let mut sum = 0;
        c.for_each(|_, v| sum += v);
        assert_eq!(sum, 2 * (0..100).sum::<u32>());
        assert!(c.snapshot(Mode::Delta, &mut Encoder::new()).is_err());
    }

    #[test]
    fn figures_count_state_on_disk_and_cache_misses() {
        let (_dir, db) = db(4);
        let b = db.backend("op", false).unwrap().for_group(KeyGroup::Task);
        let mut s: RocksStore<u64, Vec<u8>> = b.store(b"s", 0);
        for k in 0..10_000u64 {
            s.get_or_insert_with(&k, || vec![7; 100]);
        }
        for k in 0..10_000u64 {
            s.get_mut(&k).unwrap().push(1);
        }
        db.compact().unwrap();
        let f = db.figures();
        assert!(f.sst_bytes > 100 * 10_000 / 2, "{f:?}");
        assert!(f.cache_misses >= 10_000, "{f:?}");
        assert!(db.backend("nope", false).is_err());
    }

    #[test]
    fn a_directory_in_use_is_refused_not_wiped() {
        let (dir, db) = db(4);
        let b = db.backend("op", false).unwrap().for_group(KeyGroup::Task);
        let mut s: RocksStore<u64, u64> = b.store(b"s", 0);
        s.get_or_insert_with(&1, || 5);
        s.flush();
        let again = RocksDb::open_with(&dir.path().join("db"), &["op"], 4);
        assert!(again.is_err());
        assert_eq!(s.load(&1), Some(5));
    }
}
