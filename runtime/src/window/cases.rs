// Operator-level unit tests: one scenario per rule of the spec. Included by `tests.rs`
// once per backend, with `B` the backend type and `backend(tracking)` a fresh one.

use crate::window::*;
use serde::{Deserialize, Serialize};

/// Count and the sorted values of the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Vals(Vec<i64>);

impl Aggregator for Vals {
    type Output = Vec<i64>;
    fn merge(&mut self, other: Self) {
        self.0.extend(other.0);
    }
    fn output(&self) -> Vec<i64> {
        let mut v = self.0.clone();
        v.sort_unstable();
        v
    }
}

type Op<K = u32> = WindowOperator<K, Vals, B>;
type Out<K = u32> = Vec<Emission<K, Vec<i64>>>;
/// An emission as a tuple: (key, start, end, revision, retracted, values).
type Row = (u32, i64, i64, u32, bool, Vec<i64>);

fn op(kind: WindowKind, allowed_lateness: i64) -> Op {
    WindowOperator::with_backend(
        WindowSpec {
            kind,
            allowed_lateness,
        },
        backend(false),
    )
}

fn tumbling(size: i64, offset: i64, l: i64) -> Op {
    op(WindowKind::Tumbling { size, offset }, l)
}

fn session(gap: i64, l: i64) -> Op {
    op(WindowKind::Session { gap }, l)
}

/// Processes event `ts` of key `k` (its value is `ts`); returns (accepted, emissions).
fn ev(o: &mut Op, k: u32, ts: i64) -> (bool, Vec<Row>) {
    let mut out = Out::new();
    let ok = o.process(&k, ts, |a| a.0.push(ts), &mut out);
    (ok, flat(out))
}

fn adv(o: &mut Op, wm: i64) -> Vec<Row> {
    let mut out = Out::new();
    o.advance(wm, &mut out);
    flat(out)
}

fn flat(out: Out) -> Vec<Row> {
    out.into_iter()
        .map(|e| (e.key, e.start, e.end, e.revision, e.retracted, e.out))
        .collect()
}

fn assert_empty(o: &Op) {
    assert_eq!(o.live_windows(), 0);
    assert_eq!(o.pending_timers(), 0);
}

#[test]
fn tumbling_fires_in_order_and_purges() {
    let mut o = tumbling(10, 0, 0);
    assert_eq!(o.watermark(), i64::MIN);
    assert_eq!(ev(&mut o, 1, 1), (true, vec![]));
    assert_eq!(ev(&mut o, 2, 12), (true, vec![]));
    assert_eq!(ev(&mut o, 1, 5), (true, vec![]));
    assert_eq!(ev(&mut o, 2, 3), (true, vec![]));
    assert_eq!(o.live_windows(), 3);
    assert_eq!(adv(&mut o, 9), vec![]);
    assert_eq!(
        adv(&mut o, 10),
        vec![
            (1, 0, 10, 0, false, vec![1, 5]),
            (2, 0, 10, 0, false, vec![3])
        ]
    );
    assert_eq!(o.live_windows(), 1);
    // [0, 10) is gone: too late, nothing touched.
    assert_eq!(ev(&mut o, 1, 9), (false, vec![]));
    assert_eq!(adv(&mut o, 5), vec![]); // not greater: ignored
    assert_eq!(o.watermark(), 10);
    assert_eq!(adv(&mut o, i64::MAX), vec![(2, 10, 20, 0, false, vec![12])]);
    assert_empty(&o);
    assert_eq!(ev(&mut o, 1, 1000), (false, vec![]));
}

#[test]
fn tumbling_with_offset() {
    let mut o = tumbling(10, 3, 0);
    ev(&mut o, 1, 2);
    ev(&mut o, 1, 4);
    ev(&mut o, 1, -8);
    assert_eq!(
        adv(&mut o, i64::MAX),
        vec![
            (1, -17, -7, 0, false, vec![-8]),
            (1, -7, 3, 0, false, vec![2]),
            (1, 3, 13, 0, false, vec![4]),
        ]
    );
}

#[test]
fn allowed_lateness_refires_with_next_revision() {
    let mut o = tumbling(10, 0, 5);
    ev(&mut o, 1, 3);
    assert_eq!(adv(&mut o, 10), vec![(1, 0, 10, 0, false, vec![3])]);
    assert_eq!(o.live_windows(), 1); // kept until W >= 15
    assert_eq!(
        ev(&mut o, 1, 7),
        (true, vec![(1, 0, 10, 1, false, vec![3, 7])])
    );
    assert_eq!(
        ev(&mut o, 1, 0),
        (true, vec![(1, 0, 10, 2, false, vec![0, 3, 7])])
    );
    assert_eq!(adv(&mut o, 14), vec![]);
    assert_eq!(o.live_windows(), 1);
    assert_eq!(adv(&mut o, 15), vec![]);
    assert_empty(&o);
    assert_eq!(ev(&mut o, 1, 9), (false, vec![]));
}

#[test]
fn late_event_creating_a_kept_window_fires_it_at_once() {
    let mut o = tumbling(10, 0, 10);
    adv(&mut o, 15);
    // [0, 10) never had state, but is within lateness: it fires at once, revision 0.
    assert_eq!(
        ev(&mut o, 7, 4),
        (true, vec![(7, 0, 10, 0, false, vec![4])])
    );
    assert_eq!(
        ev(&mut o, 7, 5),
        (true, vec![(7, 0, 10, 1, false, vec![4, 5])])
    );
    assert_eq!(adv(&mut o, 19), vec![]);
    assert_eq!(o.live_windows(), 1);
    assert_eq!(adv(&mut o, 20), vec![]);
    assert_empty(&o);
}

#[test]
fn sliding_updates_only_live_windows() {
    let mut o = op(
        WindowKind::Sliding {
            size: 20,
            slide: 10,
        },
        0,
    );
    ev(&mut o, 1, 15); // [0,20) and [10,30)
    assert_eq!(o.live_windows(), 2);
    assert_eq!(adv(&mut o, 20), vec![(1, 0, 20, 0, false, vec![15])]);
    // [0,20) is dead, [10,30) is live: accepted, nothing re-fires.
    assert_eq!(ev(&mut o, 1, 12), (true, vec![]));
    assert_eq!(ev(&mut o, 1, 25), (true, vec![]));
    assert_eq!(
        adv(&mut o, i64::MAX),
        vec![
            (1, 10, 30, 0, false, vec![12, 15, 25]),
            (1, 20, 40, 0, false, vec![25]),
        ]
    );
    assert_empty(&o);
}

#[test]
fn sliding_late_event_refires_every_kept_window_in_order() {
    let mut o = op(
        WindowKind::Sliding {
            size: 30,
            slide: 10,
        },
        100,
    );
    ev(&mut o, 1, 25);
    adv(&mut o, 60);
    assert_eq!(
        ev(&mut o, 1, 21),
        (
            true,
            vec![
                (1, 0, 30, 1, false, vec![21, 25]),
                (1, 10, 40, 1, false, vec![21, 25]),
                (1, 20, 50, 1, false, vec![21, 25]),
            ]
        )
    );
    adv(&mut o, i64::MAX);
    assert_empty(&o);
}

#[test]
fn session_touching_windows_merge() {
    let mut o = session(10, 0);
    ev(&mut o, 1, 0); // [0,10)
    ev(&mut o, 1, 10); // [10,20) touches [0,10)
    assert_eq!(o.live_windows(), 1);
    ev(&mut o, 1, 31); // [31,41): apart
    ev(&mut o, 2, 5); // other key: never merges with key 1
    assert_eq!(o.live_windows(), 3);
    assert_eq!(
        adv(&mut o, i64::MAX),
        vec![
            (2, 5, 15, 0, false, vec![5]),
            (1, 0, 20, 0, false, vec![0, 10]),
            (1, 31, 41, 0, false, vec![31]),
        ]
    );
    assert_empty(&o);
}

#[test]
fn session_transitive_merge() {
    let mut o = session(10, 0);
    ev(&mut o, 1, 0); // [0,10)
    ev(&mut o, 1, 20); // [20,30)
    ev(&mut o, 1, 40); // [40,50)
    assert_eq!(o.live_windows(), 3);
    ev(&mut o, 1, 10); // [10,20) touches [0,10) and [20,30)
    assert_eq!(o.live_windows(), 2);
    ev(&mut o, 1, 30); // [30,40) touches [0,30) and [40,50)
    assert_eq!(o.live_windows(), 1);
    assert_eq!(
        adv(&mut o, i64::MAX),
        vec![(1, 0, 50, 0, false, vec![0, 10, 20, 30, 40])]
    );
}

#[test]
fn session_event_inside_a_session_is_never_too_late_while_it_lives() {
    let mut o = session(10, 0);
    ev(&mut o, 1, 0);
    ev(&mut o, 1, 10); // [0,20)
    adv(&mut o, 15);
    // [2,12) alone would be dead (12 <= 15) but it touches the live [0,20).
    assert_eq!(ev(&mut o, 1, 2), (true, vec![]));
    // [1,5) with gap 10 = [1,11): same.
    assert_eq!(ev(&mut o, 1, 1), (true, vec![]));
    // Another key, same time: nothing to touch, too late.
    assert_eq!(ev(&mut o, 2, 2), (false, vec![]));
    assert_eq!(o.live_windows(), 1);
    assert_eq!(
        adv(&mut o, 20),
        vec![(1, 0, 20, 0, false, vec![0, 1, 2, 10])]
    );
    assert_empty(&o);
}

#[test]
fn session_merge_after_firing_retracts() {
    let mut o = session(10, 10);
    ev(&mut o, 1, 0);
    assert_eq!(adv(&mut o, 10), vec![(1, 0, 10, 0, false, vec![0])]);
    // In place: [3,13) is not inside [0,10), so this is a merge into [0,13).
    // The absorbed, fired [0,10) is retracted; [0,13) is not due yet.
    assert_eq!(ev(&mut o, 1, 3), (true, vec![(1, 0, 10, 0, true, vec![0])]));
    assert_eq!(adv(&mut o, 12), vec![]);
    assert_eq!(adv(&mut o, 13), vec![(1, 0, 13, 1, false, vec![0, 3])]);
    // Inside [0,13): updated in place, re-fires at once.
    assert_eq!(
        ev(&mut o, 1, 1),
        (true, vec![(1, 0, 13, 2, false, vec![0, 1, 3])])
    );
    assert_eq!(adv(&mut o, 22), vec![]);
    assert_eq!(o.live_windows(), 1);
    assert_eq!(adv(&mut o, 23), vec![]);
    assert_empty(&o);
}

#[test]
fn session_merge_of_fired_windows_fires_at_once() {
    let mut o = session(10, 100);
    ev(&mut o, 1, 0); // [0,10)
    ev(&mut o, 1, 20); // [20,30)
    assert_eq!(
        adv(&mut o, 30),
        vec![
            (1, 0, 10, 0, false, vec![0]),
            (1, 20, 30, 0, false, vec![20])
        ]
    );
    ev(&mut o, 1, 20); // in place: [20,30) revision 1
    // [10,20) bridges both: retract both (last revisions 0 and 1), fire [0,30) at
    // once with revision 1 + max(0, 1) = 2.
    assert_eq!(
        ev(&mut o, 1, 10),
        (
            true,
            vec![
                (1, 0, 10, 0, true, vec![0]),
                (1, 20, 30, 1, true, vec![20, 20]),
                (1, 0, 30, 2, false, vec![0, 10, 20, 20]),
            ]
        )
    );
    assert_eq!(o.live_windows(), 1);
    adv(&mut o, i64::MAX);
    assert_empty(&o);
}

#[test]
fn session_new_late_session_within_lateness_fires_at_once() {
    let mut o = session(10, 10);
    adv(&mut o, 100);
    assert_eq!(ev(&mut o, 1, 80), (false, vec![])); // 80 + 10 + 10 <= 100
    assert_eq!(
        ev(&mut o, 1, 81),
        (true, vec![(1, 81, 91, 0, false, vec![81])])
    );
    assert_eq!(o.pending_timers(), 1);
    assert_eq!(adv(&mut o, 100), vec![]);
    assert_eq!(o.live_windows(), 1);
    assert_eq!(adv(&mut o, 101), vec![]);
    assert_empty(&o);
}

#[test]
fn global_window_with_unit_key() {
    let mut o: Op<()> = WindowOperator::with_backend(
        WindowSpec {
            kind: WindowKind::Tumbling {
                size: 10,
                offset: 0,
            },
            allowed_lateness: 0,
        },
        backend(false),
    );
    let mut out = Vec::new();
    for ts in [1, 2, 11] {
        assert!(o.process(&(), ts, |a| a.0.push(ts), &mut out));
    }
    o.advance(i64::MAX, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].out, vec![1, 2]);
    assert_eq!(o.live_windows(), 0);
}

#[test]
fn extreme_times_and_sizes_do_not_panic() {
    let kinds = [
        WindowKind::Tumbling {
            size: 60_000,
            offset: 0,
        },
        WindowKind::Tumbling {
            size: i64::MAX,
            offset: i64::MIN,
        },
        WindowKind::Tumbling { size: 0, offset: 5 },
        WindowKind::Sliding {
            size: 30,
            slide: 10,
        },
        WindowKind::Sliding { size: -3, slide: 0 },
        WindowKind::Session { gap: 10 },
        WindowKind::Session { gap: i64::MAX },
        WindowKind::Session { gap: -1 },
    ];
    let times = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    for kind in kinds {
        for l in [0, 7, i64::MAX, -5] {
            let mut o = op(kind, l);
            let mut out = Out::new();
            for &ts in &times {
                o.process(&1, ts, |a| a.0.push(0), &mut out);
                o.process(&2, ts, |a| a.0.push(0), &mut out);
                o.advance(ts.saturating_sub(1), &mut out);
                o.process(&1, ts, |a| a.0.push(0), &mut out);
            }
            o.advance(i64::MAX - 1, &mut out);
            o.advance(i64::MAX, &mut out);
            assert_empty(&o);
            for e in &out {
                assert!(e.start <= e.end, "{kind:?} {e:?}");
            }
        }
    }
}

/// A full snapshot, then deltas, restored into a fresh operator, gives an operator that
/// behaves exactly like the original from then on: for every window kind, at every cut.
#[test]
fn snapshots_and_deltas_restore_the_same_behaviour() {
    use crate::state::{Decoder, Encoder, Mode};
    let kinds = [
        WindowKind::Tumbling {
            size: 10,
            offset: 3,
        },
        WindowKind::Sliding {
            size: 30,
            slide: 10,
        },
        WindowKind::Session { gap: 10 },
    ];
    let mut r: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r
    };
    for kind in kinds {
        let spec = WindowSpec {
            kind,
            allowed_lateness: 15,
        };
        // (key, ts, advance to) steps: out of order by up to 20, late now and then.
        let script: Vec<(u32, i64, i64)> = (0..400i64)
            .map(|i| {
                let k = (next() % 7) as u32;
                let ts = i * 2 - (next() % 20) as i64 - if next() % 17 == 0 { 60 } else { 0 };
                (k, ts, i * 2 - 12)
            })
            .collect();
        for cut in [0, 1, 37, 150, 399] {
            let mut a = WindowOperator::<u32, Vals, B>::with_backend(spec, backend(true));
            let mut chain: Vec<Vec<u8>> = Vec::new();
            let step = |o: &mut WindowOperator<u32, Vals, B>, (k, ts, wm): (u32, i64, i64)| {
                let mut out = Vec::new();
                let ok = o.process(&k, ts, |acc| acc.0.push(ts), &mut out);
                o.advance(wm, &mut out);
                (ok, out)
            };
            for (i, &st) in script[..cut].iter().enumerate() {
                step(&mut a, st);
                if i % 13 == 5 {
                    let mode = if chain.len().is_multiple_of(4) {
                        Mode::Full
                    } else {
                        Mode::Delta
                    };
                    if mode == Mode::Full {
                        chain.clear();
                    }
                    let mut e = Encoder::new();
                    a.snapshot(mode, &mut e).unwrap();
                    chain.push(e.into_bytes());
                }
            }
            let mut e = Encoder::new();
            a.snapshot(
                if chain.is_empty() {
                    Mode::Full
                } else {
                    Mode::Delta
                },
                &mut e,
            )
            .unwrap();
            chain.push(e.into_bytes());
            let mut b = WindowOperator::<u32, Vals, B>::with_backend(spec, backend(true));
            for blob in &chain {
                let mut d = Decoder::new(blob);
                b.restore(&mut d).unwrap();
                d.finish().unwrap();
            }
            assert_eq!(b.live_windows(), a.live_windows(), "{kind:?} cut {cut}");
            assert_eq!(b.pending_timers(), a.pending_timers(), "{kind:?} cut {cut}");
            assert_eq!(
                b.oldest_held_start(),
                a.oldest_held_start(),
                "{kind:?} cut {cut}"
            );
            for &st in &script[cut..] {
                assert_eq!(step(&mut a, st), step(&mut b, st), "{kind:?} cut {cut}");
            }
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.advance(i64::MAX, &mut x);
            b.advance(i64::MAX, &mut y);
            assert_eq!(x, y, "{kind:?} cut {cut}");
            assert_empty(&b);
        }
    }
}

#[test]
fn merged_window_inherits_revisions_through_unfired_merges() {
    let mut o = session(10, 100);
    ev(&mut o, 1, 0);
    adv(&mut o, 10); // [0,10) fires revision 0
    // [5,15) merges: retract [0,10); [0,15) is due at 15, next revision 1.
    assert_eq!(ev(&mut o, 1, 5), (true, vec![(1, 0, 10, 0, true, vec![0])]));
    // [14,24) merges [0,15) (never emitted) into [0,24): nothing to retract, but [0,15)
    // had absorbed [0,10), which emitted revision 0: [0,24) carries on at revision 1
    // (pipeline-spec.md: along a chain of merges a revision never goes backwards).
    assert_eq!(ev(&mut o, 1, 14), (true, vec![]));
    assert_eq!(adv(&mut o, 24), vec![(1, 0, 24, 1, false, vec![0, 5, 14])]);
}

/// The scenario of `pipelines/sessions.yaml` (tests/tests/windows.rs), at the operator:
/// gap 5 s, lateness 30 s, watermark = max event time.
#[test]
fn sessions_fixture_scenario() {
    let mut o = session(5000, 30_000);
    let mut all = vec![];
    let mut late = vec![];
    let mut max = i64::MIN;
    for (k, ts) in [
        (0, 1000),
        (0, 3000),
        (1, 4000),
        (0, 20000),
        (0, 9000),
        (0, 8000),
        (2, 100_000),
        (0, 2000),
    ] {
        let (ok, out) = ev(&mut o, k, ts);
        if !ok {
            late.push((k, ts));
        }
        all.extend(out);
        max = max.max(ts);
        all.extend(adv(&mut o, max));
    }
    all.extend(adv(&mut o, i64::MAX));
    assert_eq!(late, vec![(0, 2000)]);
    assert_eq!(
        all,
        vec![
            (0, 1000, 8000, 0, false, vec![1000, 3000]),
            (1, 4000, 9000, 0, false, vec![4000]),
            (0, 9000, 14000, 0, false, vec![9000]),
            (0, 1000, 8000, 0, true, vec![1000, 3000]),
            (0, 9000, 14000, 0, true, vec![9000]),
            (0, 1000, 14000, 1, false, vec![1000, 3000, 8000, 9000]),
            (0, 20000, 25000, 0, false, vec![20000]),
            (2, 100_000, 105_000, 0, false, vec![100_000]),
        ]
    );
    assert_empty(&o);
}

fn oldest_by_scan<K: crate::state::StateKey>(o: &WindowOperator<K, Vals, B>) -> Option<i64> {
    match &o.state {
        State::Fixed(f) => f.oldest_held_start_by_scan(),
        State::Sliding(s) => s.oldest_held_start_by_scan(),
        State::Session(s) => s.oldest_held_start_by_scan(),
    }
}

#[test]
fn oldest_held_start_tumbling_and_sliding() {
    let mut t = tumbling(10, 0, 5);
    assert_eq!(t.oldest_held_start(), None);
    ev(&mut t, 1, 25);
    ev(&mut t, 2, 13);
    assert_eq!(t.oldest_held_start(), Some(10));
    // [10,20) fires at 20 but is held until 25 (lateness 5).
    adv(&mut t, 20);
    assert_eq!(t.oldest_held_start(), Some(10));
    adv(&mut t, 25);
    assert_eq!(t.oldest_held_start(), Some(20));
    // A late event within lateness of [20,30) does not move it; a new key either.
    ev(&mut t, 3, 21);
    assert_eq!(t.oldest_held_start(), Some(20));
    adv(&mut t, i64::MAX);
    assert_eq!(t.oldest_held_start(), None);

    let mut s = op(
        WindowKind::Sliding {
            size: 30,
            slide: 10,
        },
        0,
    );
    ev(&mut s, 1, 25); // [0,30) [10,40) [20,50)
    assert_eq!(s.oldest_held_start(), Some(0));
    adv(&mut s, 30);
    assert_eq!(s.oldest_held_start(), Some(10));
    adv(&mut s, 50);
    assert_eq!(s.oldest_held_start(), None);
}

#[test]
fn oldest_held_start_sessions() {
    // Times in units of 1024 ms (the granularity of session starts).
    const U: i64 = 1024;
    let mut o = session(10 * U, 0);
    ev(&mut o, 1, 100 * U);
    ev(&mut o, 2, 50 * U);
    assert_eq!(o.oldest_held_start(), Some(50 * U));
    // Extending a session's end keeps its start.
    ev(&mut o, 2, 58 * U);
    assert_eq!(o.oldest_held_start(), Some(50 * U));
    // An earlier event merges into [45, 68).
    ev(&mut o, 2, 45 * U);
    assert_eq!(o.oldest_held_start(), Some(45 * U));
    // Key 2's session fires and is purged at 68.
    adv(&mut o, 68 * U);
    assert_eq!(o.oldest_held_start(), Some(100 * U));
    // Two sessions with the same start (a multiset): one purged leaves the other.
    ev(&mut o, 3, 100 * U);
    adv(&mut o, 105 * U);
    ev(&mut o, 3, 109 * U); // key 3's session grows to [100, 119)
    adv(&mut o, 110 * U); // key 1's [100, 110) is purged
    assert_eq!(o.oldest_held_start(), Some(100 * U));
    adv(&mut o, 119 * U);
    assert_eq!(o.oldest_held_start(), None);
    // Within a bucket: a lower bound, less than 1024 ms below the true start.
    ev(&mut o, 4, 200 * U + 700);
    assert_eq!(o.oldest_held_start(), Some(200 * U));
    let mut p = session(10, 0);
    ev(&mut p, 5, -3);
    assert_eq!(p.oldest_held_start(), Some(-U));
}

#[test]
fn oldest_held_start_agrees_with_a_scan() {
    // Pseudo-random out-of-order streams over every kind, with lateness: after every
    // call the fast answer equals a scan over all held state.
    let kinds = [
        WindowKind::Tumbling {
            size: 10,
            offset: 3,
        },
        WindowKind::Sliding {
            size: 30,
            slide: 10,
        },
        WindowKind::Session { gap: 7 },
    ];
    for kind in kinds {
        for lateness in [0, 15] {
            let mut o = op(kind, lateness);
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut max = i64::MIN;
            for i in 0..3000i64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = (x % 5) as u32;
                let ts = i / 2 - ((x >> 8) % 40) as i64;
                ev(&mut o, k, ts);
                assert_eq!(o.oldest_held_start(), oldest_by_scan(&o), "{kind:?}");
                max = max.max(ts);
                if (x >> 20).is_multiple_of(3) {
                    adv(&mut o, max - 10);
                    assert_eq!(o.oldest_held_start(), oldest_by_scan(&o), "{kind:?}");
                }
            }
            adv(&mut o, i64::MAX);
            assert_eq!(o.oldest_held_start(), None);
        }
    }
}

#[test]
fn unfired_events_count_each_event_once_until_its_window_fires() {
    // Tumbling: events wait in [0, 10) and [10, 20); a firing takes them out, and a
    // late update of a fired window is not unfired (it fired again at once).
    let mut o = tumbling(10, 0, 10);
    for (k, ts) in [(1, 1), (2, 2), (1, 12)] {
        ev(&mut o, k, ts);
    }
    assert_eq!(o.unfired_events(), 3);
    adv(&mut o, 10);
    assert_eq!(o.unfired_events(), 1);
    assert_eq!(ev(&mut o, 1, 5).1.len(), 1);
    assert_eq!(o.unfired_events(), 1);
    adv(&mut o, i64::MAX);
    assert_eq!(o.unfired_events(), 0);

    // Sliding (size 10, slide 5): an event in two windows counts once, until the last
    // of its windows fires.
    let mut o = op(WindowKind::Sliding { size: 10, slide: 5 }, 0);
    ev(&mut o, 1, 7); // [0, 10) and [5, 15)
    ev(&mut o, 1, 3); // [-5, 5) and [0, 10)
    assert_eq!(o.unfired_events(), 2);
    adv(&mut o, 5); // [-5, 5) fired: the event at 3 is still in [0, 10)
    assert_eq!(o.unfired_events(), 2);
    adv(&mut o, 10);
    assert_eq!(o.unfired_events(), 1);
    adv(&mut o, 15);
    assert_eq!(o.unfired_events(), 0);

    // Sessions: a merge carries the events of the sessions it absorbs; a fired
    // session's events are out.
    let mut o = session(10, 100);
    ev(&mut o, 1, 0);
    ev(&mut o, 1, 30);
    ev(&mut o, 2, 0);
    assert_eq!(o.unfired_events(), 3);
    adv(&mut o, 10); // [0, 10) of keys 1 and 2 fire
    assert_eq!(o.unfired_events(), 1);
    ev(&mut o, 1, 10); // [10, 20) absorbs the fired [0, 10): [0, 20) has not fired
    assert_eq!(o.unfired_events(), 3);
    ev(&mut o, 1, 20); // [20, 30) joins [0, 20) and [30, 40)
    assert_eq!(o.unfired_events(), 4);
    adv(&mut o, 40);
    assert_eq!(o.unfired_events(), 0);
}
