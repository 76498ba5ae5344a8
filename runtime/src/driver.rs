//! The driver: reads the sources, hands each record to the generated `Pipeline`,
//! tracks watermarks, and owns the sinks. Single-threaded: one task per binary (the
//! Kafka issue adds partition-parallel tasks).

use crate::sink::SinkSpec;
use crate::source::SourceSpec;

/// One input record as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub partition: u32,
    pub offset: u64,
    pub payload: &'a [u8],
}

/// The generated part of a job: one fused loop per source.
pub trait Pipeline {
    /// Parses, validates and processes one record of source `src` through every flow
    /// fed by it (filter, map, key, window assignment, accumulation, emission).
    /// Returns the record's event time, or None when it was invalid (and already sent
    /// to the dead letter output through `ctx`).
    fn on_record(&mut self, src: usize, rec: &Record<'_>, ctx: &mut Context) -> Option<i64>;

    /// Source `src`'s task watermark advanced to `wm` (WATERMARK_MAX at the end of a
    /// bounded source): fire and purge windows of every flow fed by it, transitively.
    fn on_watermark(&mut self, src: usize, wm: i64, ctx: &mut Context);
}

/// What the generated `main` tells the driver about the job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub name: &'static str,
    pub sources: Vec<SourceSpec>,
    /// Output sinks, indexed as in the plan.
    pub sinks: Vec<SinkSpec>,
    /// Dead-letter sinks; `SourceSpec::dead_letter` indexes this.
    pub dead_letters: Vec<SinkSpec>,
    /// Flow names, indexed as in the plan (for metrics and logs).
    pub flows: Vec<&'static str>,
}

/// Handed to the pipeline with every call: where results, late and invalid events go.
pub struct Context {
    _private: (),
}

impl Context {
    /// Serializes `row` as JSON once (and `key`, the Kafka message key, if any) and
    /// writes it to each sink index in `sinks`.
    pub fn emit<R: serde::Serialize, K: serde::Serialize>(
        &mut self,
        sinks: &[usize],
        key: Option<&K>,
        row: &R,
    ) {
        let _ = (sinks, key, row);
        todo!()
    }

    /// A too-late event of flow `flow`: `payload` written unchanged to sink `sink`, or
    /// only counted when the flow names no late sink.
    pub fn late(&mut self, flow: usize, sink: Option<usize>, payload: &[u8]) {
        let _ = (flow, sink, payload);
        todo!()
    }

    /// An invalid record of source `src`: written to its dead-letter sink as
    /// `{"error", "source", "partition", "offset", "raw"}`.
    pub fn dead_letter(&mut self, src: usize, rec: &Record<'_>, error: &str) {
        let _ = (src, rec, error);
        todo!()
    }
}

/// Runs the job to completion: parses flags (`--help`, `--input SOURCE=PATH`,
/// `--output SINK=PATH`, `--dead-letter SOURCE=PATH`), opens sinks and sources, loops
/// until every source is finished (bounded: exit 0 once every window has fired) or
/// SIGTERM/SIGINT (flush sinks, exit 0). Errors are printed and give exit code 1.
pub fn main<P: Pipeline>(spec: JobSpec, pipeline: P) -> std::process::ExitCode {
    let _ = (spec, pipeline);
    todo!()
}
