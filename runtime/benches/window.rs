//! Window operator throughput: 1M events over 100k keys, as the driver feeds them
//! (process an event, then advance the watermark to `max ts - out_of_orderness`; end
//! of input at the end). The accumulator is what generated code makes for
//! `count()`, `sum(x)`, `avg(x)`.
//!
//! `cargo bench -p streamc-runtime --bench window`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamc_runtime::agg::Avg;
use streamc_runtime::window::{Aggregator, WindowKind, WindowOperator, WindowSpec};

const EVENTS: usize = 1_000_000;
const KEYS: u64 = 100_000;
/// The stream spans 5 minutes of event time, out of order by up to 5 s.
const SPAN_MS: i64 = 300_000;
const OOO_MS: i64 = 5_000;

/// A generated key struct for `key_by: [user_id]`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
struct Key {
    user_id: u64,
}

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Acc {
    count: u64,
    sum: Option<f64>,
    avg: Avg,
}

#[derive(Clone, Debug, PartialEq)]
struct Out {
    count: u64,
    sum: Option<f64>,
    avg: Option<f64>,
}

impl Aggregator for Acc {
    type Output = Out;
    fn merge(&mut self, other: Self) {
        self.count += other.count;
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.avg.merge(&other.avg);
    }
    fn output(&self) -> Out {
        Out {
            count: self.count,
            sum: self.sum,
            avg: self.avg.get(),
        }
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// (key, ts, value) over `keys` keys, fixed seed.
fn make_events(keys: u64) -> Vec<(Key, i64, f64)> {
    (0..EVENTS as u64)
        .map(|i| {
            let r = mix(i);
            let key = Key { user_id: r % keys };
            let on_time = 1_700_000_000_000 + i as i64 * SPAN_MS / EVENTS as i64;
            let ts = on_time - ((r >> 20) % OOO_MS as u64) as i64;
            (key, ts, ((r >> 40) % 1000) as f64)
        })
        .collect()
}

/// Runs the whole stream; returns the number of emissions.
fn run(kind: WindowKind, allowed_lateness: i64, events: &[(Key, i64, f64)]) -> usize {
    let mut op = WindowOperator::<Key, Acc>::new(WindowSpec {
        kind,
        allowed_lateness,
    });
    let mut out = Vec::new();
    let mut emitted = 0;
    let mut max_ts = i64::MIN;
    for (key, ts, v) in events {
        let live = op.process(
            key,
            *ts,
            |acc| {
                acc.count += 1;
                acc.sum = Some(acc.sum.unwrap_or(0.0) + v);
                acc.avg.add(*v);
            },
            &mut out,
        );
        black_box(live);
        max_ts = max_ts.max(*ts);
        op.advance(max_ts - OOO_MS, &mut out);
        emitted += out.len();
        black_box(&out);
        out.clear();
    }
    op.advance(i64::MAX, &mut out);
    emitted + out.len()
}

fn bench(c: &mut Criterion) {
    let events = make_events(KEYS);
    let mut g = c.benchmark_group("window");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS as u64));
    let tumbling = WindowKind::Tumbling {
        size: 60_000,
        offset: 0,
    };
    g.bench_function("tumbling_1m_100k_keys_count_sum_avg", |b| {
        b.iter(|| run(tumbling, 0, &events))
    });
    g.bench_function("tumbling_1m_lateness_1m_100k_keys_count_sum_avg", |b| {
        b.iter(|| run(tumbling, 60_000, &events))
    });
    let sliding = WindowKind::Sliding {
        size: 60_000,
        slide: 15_000,
    };
    g.bench_function("sliding_1m_every_15s_100k_keys_count_sum_avg", |b| {
        b.iter(|| run(sliding, 0, &events))
    });
    let session = WindowKind::Session { gap: 30_000 };
    g.bench_function("session_gap_30s_100k_keys_count_sum_avg", |b| {
        b.iter(|| run(session, 0, &events))
    });
    // Long sessions: 100 events per key, 3 s apart on average, so most events extend
    // a session rather than open one.
    let few_keys = make_events(KEYS / 10);
    g.bench_function("session_gap_30s_10k_keys_count_sum_avg", |b| {
        b.iter(|| run(session, 0, &few_keys))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
