//! Sources and sinks by kind: the one place that maps a spec's kind to the
//! implementation (embedded `file`, `datagen`, `stdout`; Kafka behind the `kafka`
//! feature; Redis and the embedded dashboard behind `redis` and `serve`). `source.rs` and `sink.rs` define the traits and the embedded kinds,
//! `kafka/` implements them on librdkafka; only this module knows all of them, so none
//! of them imports another.

use crate::kafka::{self, KafkaEnv};
use crate::sink::{FileSink, Sink, SinkError, SinkKind, StdoutSink};
use crate::source::{DatagenSource, FileSource, Source, SourceError, SourceKind, SourceSpec};

/// Opens the source described by `spec`; Kafka sources connect as `env` says.
pub fn open_source_with(spec: &SourceSpec, env: &KafkaEnv) -> Result<Box<dyn Source>, SourceError> {
    Ok(match &spec.kind {
        SourceKind::File { path } => Box::new(FileSource::open(path)?),
        SourceKind::Datagen(d) => Box::new(DatagenSource::new(d.clone())),
        SourceKind::Kafka(k) => kafka::open_source(spec.name, k, env)?,
    })
}

/// Opens the source described by `spec` (Kafka with the default environment: brokers
/// from `STREAMC_BROKERS`, a `bootstrap.servers` property or `127.0.0.1:9092`).
pub fn open_source(spec: &SourceSpec) -> Result<Box<dyn Source>, SourceError> {
    open_source_with(spec, &KafkaEnv::from_env("streamc"))
}

/// Opens a sink of kind `kind`; Kafka sinks connect as `env` says (and share one
/// producer per distinct set of properties).
pub fn open_sink_with(kind: &SinkKind, env: &KafkaEnv) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match kind {
        SinkKind::Stdout => Box::new(StdoutSink::new()),
        SinkKind::File { path } => Box::new(FileSink::create(path)?),
        SinkKind::Kafka { topic, properties } => kafka::open_sink(topic, properties, env)?,
        SinkKind::Redis(spec) => crate::redis::open_sink(spec)?,
        SinkKind::Serve(spec) => crate::serve::open_sink(spec)?,
    })
}

/// [`open_sink_with`] for a checkpointed job: a file sink keeps what the file holds
/// (the restore truncates it to the checkpoint's position) instead of truncating it.
pub fn open_sink_kept(kind: &SinkKind, env: &KafkaEnv) -> Result<Box<dyn Sink>, SinkError> {
    match kind {
        SinkKind::File { path } => Ok(Box::new(FileSink::open_keep(path)?)),
        SinkKind::Stdout | SinkKind::Kafka { .. } | SinkKind::Redis(_) | SinkKind::Serve(_) => {
            open_sink_with(kind, env)
        }
    }
}

/// Opens the dead-letter output of kind `kind`: as [`open_sink_with`], except that a
/// file is created only when the first invalid record arrives
/// ([`FileSink::on_first_write`]).
pub fn open_dead_letter_with(kind: &SinkKind, env: &KafkaEnv) -> Result<Box<dyn Sink>, SinkError> {
    match kind {
        SinkKind::File { path } => Ok(Box::new(FileSink::on_first_write(path)?)),
        _ => open_sink_with(kind, env),
    }
}

/// Opens a sink of kind `kind` (Kafka with the default environment).
pub fn open_sink(kind: &SinkKind) -> Result<Box<dyn Sink>, SinkError> {
    open_sink_with(kind, &KafkaEnv::from_env("streamc"))
}
