//! The streamc runtime: everything a generated pipeline binary links.
//!
//! Generated code (see `compiler/src/codegen`) supplies the fused per-source loop
//! (`Pipeline`), the event, key, accumulator and output structs; this crate supplies the
//! rest: sources, sinks, watermarks, the window operators, accumulator building blocks,
//! SQL expression helpers, checkpoint storage (`checkpoint`) and the driver loop. Kafka
//! sources and sinks need the `kafka` feature (librdkafka); their spec types are always
//! here, so generated code is the same either way.

pub mod agg;
pub mod checkpoint;
pub mod connectors;
#[cfg(any(feature = "redis", feature = "serve"))]
pub mod dash;
pub mod de;
pub mod driver;
pub mod expr;
pub mod kafka;
pub mod key;
pub mod metrics;
pub mod pipeline;
pub mod redis;
pub mod serve;
pub mod sink;
pub mod source;
pub mod state;
pub mod watermark;
pub mod window;

pub use driver::Context;
pub use pipeline::{Pipeline, Record};

/// Watermark value meaning "no more events": a bounded source at its end.
pub const WATERMARK_MAX: i64 = i64::MAX;
/// Watermark before any event.
pub const WATERMARK_MIN: i64 = i64::MIN;
