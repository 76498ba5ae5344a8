//! The window operator against a small, obviously-correct reference model written
//! from `pipeline-spec.md` ("Event time, watermarks, firing"): windows in one flat
//! list, window assignment by brute force, no timers. Random out-of-order streams are
//! fed to both as a driver would (process an event, then advance the watermark to
//! `max ts seen - out_of_orderness`; at the end `i64::MAX`), and every call's result is
//! compared: accepted/too late, the emissions in order, and the number of held windows.
//! With feature `rocksdb`, the same cases run on RocksDB state too, with a write-back
//! cache of three entries per store (nearly every access goes to RocksDB).

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use streamc_runtime::state::{Backend, Decoder, Encoder, Memory, Mode};
use streamc_runtime::window::{Aggregator, Emission, WindowKind, WindowOperator, WindowSpec};

/// The test accumulator: count, sum and the values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Acc {
    vals: Vec<i64>,
}

type Output = (u64, i64, Vec<i64>);

impl Aggregator for Acc {
    type Output = Output;
    fn merge(&mut self, other: Self) {
        self.vals.extend(other.vals);
    }
    fn output(&self) -> Output {
        let mut v = self.vals.clone();
        v.sort_unstable();
        (v.len() as u64, v.iter().sum(), v)
    }
}

type Em = Emission<u8, Output>;

// ---------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Debug)]
struct MWin {
    key: u8,
    start: i64,
    end: i64,
    acc: Acc,
    /// The last revision emitted with these bounds, and its output.
    emitted: Option<u32>,
    last_out: Option<Output>,
    /// The next revision when nothing was emitted with these bounds yet.
    base: u32,
}

impl MWin {
    fn next_rev(&self) -> u32 {
        self.emitted.map_or(self.base, |r| r + 1)
    }

    /// Emits this window's next revision.
    fn fire(&mut self) -> Em {
        let revision = self.next_rev();
        self.emitted = Some(revision);
        self.last_out = Some(self.acc.output());
        Em {
            key: self.key,
            start: self.start,
            end: self.end,
            revision,
            retracted: false,
            out: self.acc.output(),
        }
    }
}

struct Model {
    kind: WindowKind,
    lateness: i64,
    wm: i64,
    wins: Vec<MWin>,
}

impl Model {
    fn new(spec: WindowSpec) -> Model {
        Model {
            kind: spec.kind,
            lateness: spec.allowed_lateness,
            wm: i64::MIN,
            wins: Vec::new(),
        }
    }

    /// Every fixed window holding `ts`, by the spec's definitions, in order of start.
    fn windows_of(&self, ts: i64) -> Vec<(i64, i64)> {
        match self.kind {
            WindowKind::Tumbling { size, offset } => {
                let start = ts - (ts - offset).rem_euclid(size);
                vec![(start, start + size)]
            }
            WindowKind::Sliding { size, slide } => (ts - size + 1..=ts)
                .filter(|s| s.rem_euclid(slide) == 0)
                .map(|s| (s, s + size))
                .collect(),
            WindowKind::Session { .. } => unreachable!(),
        }
    }

    fn process(&mut self, key: u8, ts: i64) -> (bool, Vec<Em>) {
        match self.kind {
            WindowKind::Session { gap } => self.process_session(key, ts, gap),
            _ => self.process_fixed(key, ts),
        }
    }

    fn process_fixed(&mut self, key: u8, ts: i64) -> (bool, Vec<Em>) {
        let (wm, l) = (self.wm, self.lateness);
        let live: Vec<(i64, i64)> = self
            .windows_of(ts)
            .into_iter()
            .filter(|&(_, end)| end + l > wm)
            .collect();
        if live.is_empty() {
            return (false, vec![]);
        }
        let mut out = vec![];
        for (start, end) in live {
            let pos = self
                .wins
                .iter()
                .position(|w| (w.key, w.start, w.end) == (key, start, end));
            let i = pos.unwrap_or_else(|| {
                self.wins.push(MWin {
                    key,
                    start,
                    end,
                    acc: Acc::default(),
                    emitted: None,
                    last_out: None,
                    base: 0,
                });
                self.wins.len() - 1
            });
            let w = &mut self.wins[i];
            w.acc.vals.push(ts);
            if end <= wm {
                out.push(w.fire());
            }
        }
        (true, out)
    }

    fn process_session(&mut self, key: u8, ts: i64, gap: i64) -> (bool, Vec<Em>) {
        let (wm, l) = (self.wm, self.lateness);
        let (mut cs, mut ce) = (ts, ts + gap);
        // Absorb, until none is left, any session of the key touching the cover.
        let mut absorbed: Vec<MWin> = vec![];
        while let Some(i) = self
            .wins
            .iter()
            .position(|w| w.key == key && w.start <= ce && cs <= w.end)
        {
            let w = self.wins.remove(i);
            cs = cs.min(w.start);
            ce = ce.max(w.end);
            absorbed.push(w);
        }
        if absorbed.is_empty() && ts + gap + l <= wm {
            return (false, vec![]);
        }
        absorbed.sort_by_key(|w| w.start);
        if absorbed.len() == 1 && (absorbed[0].start, absorbed[0].end) == (cs, ce) {
            // Updated in place: the same window; re-fires at once if it has fired.
            let mut w = absorbed.remove(0);
            w.acc.vals.push(ts);
            let out = if w.emitted.is_some() {
                vec![w.fire()]
            } else {
                vec![]
            };
            self.wins.push(w);
            return (true, out);
        }
        let mut out = vec![];
        let mut acc = Acc::default();
        let mut base = 0;
        for w in absorbed {
            if let (Some(r), Some(last)) = (w.emitted, &w.last_out)
                && (w.start, w.end) != (cs, ce)
            {
                out.push(Em {
                    key,
                    start: w.start,
                    end: w.end,
                    revision: r,
                    retracted: true,
                    out: last.clone(),
                });
            }
            // 1 + the largest revision emitted by any absorbed window, directly or
            // through the windows those had absorbed (an unfired one carries its base).
            base = base.max(w.next_rev());
            acc.merge(w.acc);
        }
        acc.vals.push(ts);
        let mut w = MWin {
            key,
            start: cs,
            end: ce,
            acc,
            emitted: None,
            last_out: None,
            base,
        };
        if ce <= wm {
            out.push(w.fire());
        }
        self.wins.push(w);
        (true, out)
    }

    fn advance(&mut self, wm: i64) -> Vec<Em> {
        if wm <= self.wm {
            return vec![];
        }
        self.wm = wm;
        let mut due: Vec<&mut MWin> = self
            .wins
            .iter_mut()
            .filter(|w| w.emitted.is_none() && w.end <= wm)
            .collect();
        due.sort_by_key(|w| (w.end, w.key, w.start));
        let out = due.into_iter().map(MWin::fire).collect();
        let l = self.lateness;
        self.wins.retain(|w| w.end.saturating_add(l) > wm);
        out
    }
}

// ---------------------------------------------------------------------------------
// Streams and the comparison.

#[derive(Clone, Debug)]
struct Case {
    spec: WindowSpec,
    ooo: i64,
    /// (key, ts); ts >= 0 and small, so the model's plain arithmetic cannot overflow.
    events: Vec<(u8, i64)>,
    /// Event index after which the operator is replaced by a serde round trip of it.
    snapshot_at: usize,
}

fn stream(max_delay: i64) -> impl Strategy<Value = Vec<(u8, i64)>> {
    prop::collection::vec(
        (0u8..3, 0i64..6, 0..=max_delay, prop::bool::weighted(0.1)),
        0..70,
    )
    .prop_map(move |steps| {
        let mut clock = 100i64;
        steps
            .into_iter()
            .map(|(key, tick, delay, very_late)| {
                clock += tick;
                let delay = if very_late { delay * 3 } else { delay };
                (key, (clock - delay).max(0))
            })
            .collect()
    })
}

fn lateness() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), 0i64..30]
}

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..20, -12i64..12).prop_map(|(size, offset)| WindowKind::Tumbling { size, offset }),
        (1i64..8, 1i64..5).prop_map(|(slide, n)| WindowKind::Sliding {
            size: slide * n,
            slide
        }),
        (1i64..15).prop_map(|gap| WindowKind::Session { gap }),
    ]
}

fn case_with(kind: impl Strategy<Value = WindowKind>) -> impl Strategy<Value = Case> {
    (kind, lateness(), 0i64..20, 0i64..30, 0usize..70).prop_flat_map(
        |(kind, allowed_lateness, ooo, max_delay, snapshot_at)| {
            stream(max_delay).prop_map(move |events| Case {
                spec: WindowSpec {
                    kind,
                    allowed_lateness,
                },
                ooo,
                events,
                snapshot_at,
            })
        },
    )
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    run_on(case, Memory::tracking)
}

/// [`run`] on the backends `backend` makes (one per operator).
fn run_on<B: Backend>(case: &Case, mut backend: impl FnMut() -> B) -> Result<(), TestCaseError> {
    let mut op = WindowOperator::<u8, Acc, B>::with_backend(case.spec, backend());
    // Snapshots every few events (a full one, then deltas); at `snapshot_at` the chain is
    // restored into a fresh operator, which carries on in place of the original.
    let mut chain: Vec<Vec<u8>> = vec![];
    let mut model = Model::new(case.spec);
    let mut max_ts = i64::MIN;
    let mut all: Vec<Em> = vec![];
    let mut accepted: Vec<(u8, i64)> = vec![];
    for (i, &(key, ts)) in case.events.iter().enumerate() {
        let mut out = vec![];
        let ok = op.process(&key, ts, |a| a.vals.push(ts), &mut out);
        let (mok, mout) = model.process(key, ts);
        prop_assert_eq!(ok, mok, "accepted? event #{} ({}, {})", i, key, ts);
        prop_assert_eq!(
            &out,
            &mout,
            "process emissions, event #{} ({}, {})",
            i,
            key,
            ts
        );
        if ok {
            accepted.push((key, ts));
        }
        all.extend(out);
        max_ts = max_ts.max(ts);
        let wm = max_ts - case.ooo;
        let mut out = vec![];
        op.advance(wm, &mut out);
        prop_assert_eq!(&out, &model.advance(wm), "advance to {} after #{}", wm, i);
        all.extend(out);
        prop_assert_eq!(
            op.live_windows(),
            model.wins.len(),
            "held windows after #{}",
            i
        );
        prop_assert_eq!(op.watermark(), model.wm);
        if i % 7 == 3 || i == case.snapshot_at {
            let mode = if chain.is_empty() || chain.len() > 5 {
                chain.clear();
                Mode::Full
            } else {
                Mode::Delta
            };
            let mut e = Encoder::new();
            op.snapshot(mode, &mut e)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            chain.push(e.into_bytes());
        }
        if i == case.snapshot_at {
            op = WindowOperator::with_backend(case.spec, backend());
            for blob in &chain {
                let mut d = Decoder::new(blob);
                op.restore(&mut d)
                    .and_then(|()| d.finish())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
    }
    let mut out = vec![];
    op.advance(i64::MAX, &mut out);
    prop_assert_eq!(&out, &model.advance(i64::MAX), "end of input");
    all.extend(out);
    prop_assert_eq!(op.live_windows(), 0);
    prop_assert_eq!(op.pending_timers(), 0);
    prop_assert!(model.wins.is_empty());

    // Whole-output properties the spec states directly.
    check_upsert_view(case, &all, &accepted)
}

/// Reading the output as an upsert stream keyed by (key, start, end), dropping
/// retracted rows: revisions of a row only grow, and for tumbling windows the final
/// view is exactly the accepted events grouped by window.
fn check_upsert_view(case: &Case, all: &[Em], accepted: &[(u8, i64)]) -> Result<(), TestCaseError> {
    use std::collections::BTreeMap;
    let mut view: BTreeMap<(u8, i64, i64), (u32, Output)> = BTreeMap::new();
    for e in all {
        let row = (e.key, e.start, e.end);
        if e.retracted {
            let prev = view.remove(&row);
            prop_assert_eq!(
                prev.map(|p| p.0),
                Some(e.revision),
                "retraction of {:?}",
                row
            );
        } else {
            if let Some((rev, _)) = view.get(&row) {
                prop_assert!(
                    e.revision > *rev,
                    "revision of {:?} went from {} to {}",
                    row,
                    rev,
                    e.revision
                );
            }
            view.insert(row, (e.revision, e.out.clone()));
        }
    }
    if let WindowKind::Tumbling { size, offset } = case.spec.kind {
        let mut expect: BTreeMap<(u8, i64, i64), Vec<i64>> = BTreeMap::new();
        for &(key, ts) in accepted {
            let start = ts - (ts - offset).rem_euclid(size);
            expect
                .entry((key, start, start + size))
                .or_default()
                .push(ts);
        }
        let got: BTreeMap<(u8, i64, i64), Vec<i64>> =
            view.into_iter().map(|(k, (_, out))| (k, out.2)).collect();
        for v in expect.values_mut() {
            v.sort_unstable();
        }
        prop_assert_eq!(got, expect);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn operator_matches_model(case in case_with(kind())) {
        run(&case)?;
    }

    #[test]
    fn sessions_match_model(case in case_with((1i64..15).prop_map(|gap| WindowKind::Session { gap }))) {
        run(&case)?;
    }

    #[test]
    fn sliding_matches_model(case in case_with((1i64..8, 1i64..5).prop_map(|(slide, n)| WindowKind::Sliding { size: slide * n, slide }))) {
        run(&case)?;
    }
}

/// Fresh RocksDB backends: one database per test, a key group per operator.
#[cfg(feature = "rocksdb")]
struct RocksBackends {
    _dir: tempfile::TempDir,
    db: std::rc::Rc<streamc_runtime::state::RocksDb>,
    next: u32,
}

#[cfg(feature = "rocksdb")]
impl RocksBackends {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = streamc_runtime::state::RocksDb::open_with(&dir.path().join("db"), &["op"], 3)
            .expect("RocksDB opens");
        RocksBackends {
            _dir: dir,
            db,
            next: 0,
        }
    }

    fn next(&mut self) -> streamc_runtime::state::Rocks {
        self.next += 1;
        self.db
            .backend("op", true)
            .expect("the column family")
            .for_group(streamc_runtime::state::KeyGroup::Partition {
                source: 0,
                partition: self.next,
            })
    }
}

#[cfg(feature = "rocksdb")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rocksdb_operator_matches_model(case in case_with(kind())) {
        thread_local!(static B: std::cell::RefCell<RocksBackends> = std::cell::RefCell::new(RocksBackends::new()));
        B.with_borrow_mut(|b| run_on(&case, || b.next()))?;
    }
}

/// A hand-written session scenario with two keys and every kind of merge, through the
/// same comparison (a regression anchor independent of the generators).
#[test]
fn session_scenario_matches_model() {
    let case = Case {
        spec: WindowSpec {
            kind: WindowKind::Session { gap: 5 },
            allowed_lateness: 10,
        },
        ooo: 3,
        events: vec![
            (0, 100),
            (1, 101),
            (0, 110),
            (0, 104),
            (0, 120),
            (1, 103),
            (0, 107),
            (0, 115),
            (1, 90),
            (0, 126),
            (0, 112),
            (0, 130),
        ],
        snapshot_at: 5,
    };
    run(&case).expect("matches the model");
}

/// The operator keeps no scan over keys: firing at a watermark touches only due keys.
/// (A smoke check for leaks over a long stream: held state stays bounded.)
#[test]
fn state_stays_bounded_on_a_long_stream() {
    for kind in [
        WindowKind::Tumbling {
            size: 1000,
            offset: 0,
        },
        WindowKind::Sliding {
            size: 1000,
            slide: 250,
        },
        WindowKind::Session { gap: 500 },
    ] {
        let mut op = WindowOperator::<u32, Acc>::new(WindowSpec {
            kind,
            allowed_lateness: 2000,
        });
        let mut out = vec![];
        let mut peak = 0;
        for i in 0..200_000i64 {
            let key = (i % 1000) as u32;
            let ts = i * 10 + (i * 7919) % 3000;
            op.process(&key, ts, |a| a.vals.clear(), &mut out);
            op.advance(i * 10 - 3000, &mut out);
            out.clear();
            peak = peak.max(op.live_windows());
        }
        // At most (ooo + lateness + window extent) / spacing windows per key.
        assert!(peak <= 1000 * 12, "{kind:?}: peak {peak}");
        op.advance(i64::MAX, &mut out);
        assert_eq!(op.live_windows(), 0);
        assert_eq!(op.pending_timers(), 0);
    }
}
