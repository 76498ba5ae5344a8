//! Operator-level unit tests (`cases.rs`), run on every backend: memory, and RocksDB
//! with a cache that holds the test's state and with one of two entries per store (so
//! that nearly every access goes to RocksDB).

mod memory {
    type B = crate::state::Memory;

    fn backend(tracking: bool) -> B {
        crate::state::Memory { tracking }
    }

    include!("cases.rs");
}

/// A RocksDB backend of its own for each operator: one database per test thread, one
/// key group per operator.
#[cfg(feature = "rocksdb")]
fn rocks(cache: usize, tracking: bool) -> crate::state::Rocks {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    thread_local! {
        static DBS: RefCell<Vec<(usize, tempfile::TempDir, Rc<crate::state::RocksDb>)>> =
            const { RefCell::new(Vec::new()) };
        static NEXT: Cell<u32> = const { Cell::new(0) };
    }
    let db = DBS.with_borrow_mut(|dbs| {
        if let Some((_, _, db)) = dbs.iter().find(|(c, _, _)| *c == cache) {
            return Rc::clone(db);
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = crate::state::RocksDb::open_with(&dir.path().join("db"), &["op"], cache)
            .expect("RocksDB opens");
        dbs.push((cache, dir, Rc::clone(&db)));
        db
    });
    let partition = NEXT.get();
    NEXT.set(partition + 1);
    db.backend("op", tracking)
        .expect("the column family")
        .for_group(crate::state::KeyGroup::Partition {
            source: 0,
            partition,
        })
}

#[cfg(feature = "rocksdb")]
mod rocksdb_cached {
    type B = crate::state::Rocks;

    fn backend(tracking: bool) -> B {
        super::rocks(100_000, tracking)
    }

    include!("cases.rs");
}

#[cfg(feature = "rocksdb")]
mod rocksdb_spilling {
    type B = crate::state::Rocks;

    fn backend(tracking: bool) -> B {
        super::rocks(2, tracking)
    }

    include!("cases.rs");
}
