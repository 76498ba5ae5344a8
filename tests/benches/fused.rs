//! The fused pipeline in process: `pipelines/bench_tumbling.yaml` compiled by the real
//! code generator (see `build.rs`), fed JSON events of about 150 bytes from memory,
//! 100k keys, tumbling 1 minute with count / sum / avg, watermarks advanced per event as
//! the driver does. Reports events per second on one core. `json_decode_only` is the
//! floor: decoding the same bytes into the same generated struct, nothing else.

#![allow(dead_code, unused, clippy::all)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Instant;
use streamc_runtime::driver::Context;
use streamc_runtime::sink::{Sink, SinkError, SinkSpec};
use streamc_runtime::watermark::WatermarkTracker;
use streamc_runtime::{Pipeline, Record, WATERMARK_MAX};

include!(concat!(env!("OUT_DIR"), "/bench_tumbling.rs"));

const EVENTS: usize = 1_000_000;
const KEYS: u64 = 100_000;

/// Keeps the bytes' length only, so the emitted rows are really serialized.
struct Discard(usize);
impl Sink for Discard {
    fn write(&mut self, _key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        self.0 += value.len();
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// ~150-byte JSON events, 1000 per second of event time, 5% out of order by up to 5 s.
fn events() -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = 1_767_225_600_000i64;
    (0..EVENTS)
        .map(|i| {
            let r = next();
            let delay = if r % 20 == 0 { (r >> 8) % 5000 } else { 0 } as i64;
            let ts = base + i as i64 - delay;
            let user = next() % KEYS;
            format!(
                r#"{{"user_id":{user},"url":"/products/item-{}","status":{},"latency_ms":{}.{},"amount":{}.99,"agent":"Mozilla/5.0 (X11; Linux x86_64)","ts":{ts}}}"#,
                r % 5000,
                [200, 200, 200, 404, 500][(r % 5) as usize],
                r % 900,
                r % 100,
                r % 300
            )
            .into_bytes()
        })
        .collect()
}

fn run_job(events: &[Vec<u8>]) -> usize {
    let spec = job_spec();
    let mut job = Job::new();
    let mut ctx = Context::with_sinks(&spec, |_: &SinkSpec| Box::new(Discard(0)));
    let now = Instant::now();
    let mut wm = WatermarkTracker::new(1, spec.sources[0].max_out_of_orderness, None, now);
    for (i, e) in events.iter().enumerate() {
        let rec = Record::new(0, i as u64, e);
        if let Some(ts) = job.on_record(0, &rec, &mut ctx)
            && let Some(w) = wm.on_event(0, ts, now)
        {
            job.on_watermark(0, w, &mut ctx);
        }
    }
    job.on_watermark(0, WATERMARK_MAX, &mut ctx);
    ctx.metrics().rows_out() as usize
}

fn bench(c: &mut Criterion) {
    let events = events();
    let bytes: usize = events.iter().map(Vec::len).sum();
    eprintln!(
        "{} events, {:.0} bytes each on average",
        events.len(),
        bytes as f64 / events.len() as f64
    );
    let mut g = c.benchmark_group("fused");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("tumbling_1m_count_sum_avg_100k_keys", |b| {
        b.iter(|| run_job(&events))
    });
    g.bench_function("json_decode_only", |b| {
        b.iter(|| {
            let mut n = 0i64;
            for e in &events {
                if let Ok(ev) = serde_json::from_slice::<Ev0<'_>>(e) {
                    n = n.wrapping_add(ev.f6);
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
