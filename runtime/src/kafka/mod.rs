//! Kafka sources and sinks (librdkafka through `rdkafka`, behind the `kafka` feature).
//!
//! The spec types (`source::KafkaSourceSpec`, `sink::SinkKind::Kafka`), the client
//! configuration and the offset bookkeeping ([`OffsetTracker`]) are always compiled, so
//! generated code is the same with and without the feature; only the clients need it.
//! Without it, opening a Kafka source or sink fails with [`NO_KAFKA`].
//!
//! - Source (`consumer.rs`): a `BaseConsumer` in the consumer group of the spec, polled
//!   by the driver without blocking. Offsets are the runtime's: no auto-commit; the
//!   driver reports processed records and commits only what is safe (`offsets.rs`,
//!   `Pipeline::held_from`), every `--commit-interval`, at shutdown, and before a
//!   revocation completes. Rebalances reach the driver as partition assignments and
//!   revocations in the batch (`source::PartitionChange`). Idleness: a partition is
//!   caught up when librdkafka reports its end (partition EOF: the fetch position
//!   reached the high watermark) and no newer high watermark has been seen since.
//! - Sink (`producer.rs`): one idempotent `BaseProducer` per distinct set of properties,
//!   shared by the job's Kafka sinks; delivery errors are recorded per topic and end the
//!   job; a full queue is backpressure (poll and retry), never a drop.

mod offsets;

#[cfg(feature = "kafka")]
mod consumer;
#[cfg(feature = "kafka")]
mod producer;

pub use offsets::OffsetTracker;

use crate::sink::{Sink, SinkError};
use crate::source::{KafkaSourceSpec, KafkaStart, Source, SourceError};

/// Brokers used when neither `--brokers`, `STREAMC_BROKERS` nor a `bootstrap.servers`
/// property names any.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The environment variable naming the brokers (`--brokers` overrides it).
pub const BROKERS_ENV: &str = "STREAMC_BROKERS";

/// The error of opening a Kafka source or sink in a binary built without the feature.
pub const NO_KAFKA: &str = "this binary was built without Kafka support (the `kafka` feature of streamc-runtime); \
     rebuild it with `streamc build`, which enables the feature for specs that use Kafka";

/// How long [`Sink::wait_delivered`] (and so a commit or the close) waits for Kafka
/// deliveries before it fails.
pub const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How the job's Kafka clients connect, shared by its sources and sinks.
#[derive(Clone)]
pub struct KafkaEnv {
    /// `--brokers` or `STREAMC_BROKERS`: overrides `bootstrap.servers` of every client.
    /// None: a `bootstrap.servers` property, else [`DEFAULT_BROKERS`].
    pub brokers: Option<String>,
    /// The job's name (`client.id` is `streamc-<job>`).
    pub job: String,
    /// `--bounded`: every Kafka source reads its partitions up to the end offsets they
    /// had when the job started, then ends (its watermark goes to +infinity, every
    /// window fires, offsets are committed and the job exits 0).
    pub bounded: bool,
    #[cfg(feature = "kafka")]
    pub(crate) producers: std::sync::Arc<producer::Producers>,
}

impl std::fmt::Debug for KafkaEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEnv")
            .field("brokers", &self.brokers)
            .field("job", &self.job)
            .field("bounded", &self.bounded)
            .finish_non_exhaustive()
    }
}

impl KafkaEnv {
    /// An environment for job `job` with a brokers override (None: none).
    pub fn new(job: &str, brokers: Option<String>) -> Self {
        KafkaEnv {
            brokers: brokers.filter(|b| !b.trim().is_empty()),
            job: job.to_string(),
            bounded: false,
            #[cfg(feature = "kafka")]
            producers: std::sync::Arc::default(),
        }
    }

    /// An environment for job `job` with the brokers of `STREAMC_BROKERS`, if set.
    pub fn from_env(job: &str) -> Self {
        Self::new(job, std::env::var(BROKERS_ENV).ok())
    }

    /// Waits until every message the job's Kafka producers have taken is delivered and
    /// none has failed (bounded by `timeout`). The consumer calls it before it commits
    /// offsets in a rebalance, where the driver cannot wait for the sinks itself.
    #[cfg(feature = "kafka")]
    pub(crate) fn wait_delivered(&self, timeout: std::time::Duration) -> Result<(), String> {
        self.producers.wait_delivered(timeout)
    }
}

/// Sets `key` to `value`, replacing an earlier value.
fn set(cfg: &mut Vec<(String, String)>, key: &str, value: &str) {
    match cfg.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => cfg.push((key.to_string(), value.to_string())),
    }
}

fn get<'a>(cfg: &'a [(String, String)], key: &str) -> Option<&'a str> {
    cfg.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Defaults, then `properties`, then the brokers override.
fn layered(
    defaults: &[(&str, &str)],
    properties: &[(String, String)],
    env: &KafkaEnv,
) -> Vec<(String, String)> {
    let mut cfg = Vec::new();
    set(&mut cfg, "bootstrap.servers", DEFAULT_BROKERS);
    set(&mut cfg, "client.id", &format!("streamc-{}", env.job));
    for (k, v) in defaults {
        set(&mut cfg, k, v);
    }
    for (k, v) in properties {
        set(&mut cfg, k.trim(), v.trim());
    }
    if let Some(brokers) = &env.brokers {
        set(&mut cfg, "bootstrap.servers", brokers);
    }
    cfg
}

/// The librdkafka configuration of a Kafka source's consumer, in order of precedence
/// (later wins): `bootstrap.servers=127.0.0.1:9092`, `client.id=streamc-<job>`,
/// `group.id` from the spec, `auto.offset.reset` from `start`, `enable.auto.commit=false`,
/// `enable.auto.offset.store=false`, `enable.partition.eof=true`,
/// `fetch.queue.backoff.ms=20`, `queued.min.messages=10000`,
/// `queued.max.messages.kbytes=8192`; then the spec's
/// properties; then the brokers override. Properties that would take offsets away from
/// the runtime (`enable.auto.commit=true`) or blind its idleness
/// (`enable.partition.eof=false`) are refused.
pub fn consumer_config(
    spec: &KafkaSourceSpec,
    env: &KafkaEnv,
) -> Result<Vec<(String, String)>, String> {
    let reset = match spec.start {
        KafkaStart::Earliest => "earliest",
        KafkaStart::Latest => "latest",
    };
    let cfg = layered(
        &[
            ("group.id", &spec.group_id),
            ("auto.offset.reset", reset),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            // librdkafka stops fetching for `fetch.queue.backoff.ms` (1 s by default)
            // once `queued.min.messages` are waiting locally; a job that drains them
            // faster then idles. Measured here: 1M small records in 2.7 s with the
            // default, 0.9 s with 20 ms.
            ("fetch.queue.backoff.ms", "20"),
            // librdkafka prefetches up to 100k records per partition and 64 MB by
            // default: most of a job's memory. Measured on bench J1 (1M records, 2
            // partitions): peak RSS 110 MB with the defaults, 51 MB with these, at the
            // same throughput (the 20 ms backoff above keeps the queue fed).
            ("queued.min.messages", "10000"),
            ("queued.max.messages.kbytes", "8192"),
        ],
        &spec.properties,
        env,
    );
    for (key, want, why) in [
        (
            "enable.auto.commit",
            "false",
            "streamc commits offsets itself, only once the records' results are safe",
        ),
        (
            "enable.partition.eof",
            "true",
            "streamc needs partition-end events to know when an idle partition is caught up",
        ),
    ] {
        if get(&cfg, key).is_some_and(|v| !v.eq_ignore_ascii_case(want)) {
            return Err(format!(
                "property `{key}` cannot be changed for a streamc source: {why}"
            ));
        }
    }
    if get(&cfg, "group.id").is_none_or(str::is_empty) {
        return Err("a Kafka source needs a non-empty group id".to_string());
    }
    Ok(cfg)
}

/// The librdkafka configuration of a Kafka sink's producer, in order of precedence
/// (later wins): `bootstrap.servers=127.0.0.1:9092`, `client.id=streamc-<job>`,
/// `enable.idempotence=true`, `acks=all`, `linger.ms=5`, `compression.type=none`; then
/// the sink's properties; then the brokers override.
pub fn producer_config(properties: &[(String, String)], env: &KafkaEnv) -> Vec<(String, String)> {
    layered(
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("compression.type", "none"),
        ],
        properties,
        env,
    )
}

/// Opens a Kafka source (`source::open_with`).
pub(crate) fn open_source(
    name: &'static str,
    spec: &KafkaSourceSpec,
    env: &KafkaEnv,
) -> Result<Box<dyn Source>, SourceError> {
    let cfg = consumer_config(spec, env).map_err(SourceError::msg)?;
    #[cfg(feature = "kafka")]
    {
        Ok(Box::new(consumer::KafkaSource::open(name, spec, cfg, env)?))
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (name, cfg);
        Err(SourceError::msg(NO_KAFKA))
    }
}

/// Opens a Kafka sink (`sink::open_with`).
pub(crate) fn open_sink(
    topic: &str,
    properties: &[(String, String)],
    env: &KafkaEnv,
) -> Result<Box<dyn Sink>, SinkError> {
    if topic.is_empty() {
        return Err(SinkError::msg("a Kafka sink needs a topic"));
    }
    let cfg = producer_config(properties, env);
    #[cfg(feature = "kafka")]
    {
        Ok(Box::new(producer::KafkaSink::open(topic, cfg, env)?))
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = cfg;
        Err(SinkError::msg(NO_KAFKA))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(properties: &[(&str, &str)]) -> KafkaSourceSpec {
        KafkaSourceSpec {
            topic: "clicks".into(),
            group_id: "page-views".into(),
            start: KafkaStart::Latest,
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn env(brokers: Option<&str>) -> KafkaEnv {
        KafkaEnv::new("job", brokers.map(str::to_string))
    }

    #[test]
    fn consumer_defaults_properties_and_overrides() {
        let cfg = consumer_config(&spec(&[]), &env(None)).unwrap();
        for (k, v) in [
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("client.id", "streamc-job"),
            ("group.id", "page-views"),
            ("auto.offset.reset", "latest"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("fetch.queue.backoff.ms", "20"),
        ] {
            assert_eq!(get(&cfg, k), Some(v), "{k}");
        }
        // Properties override defaults (the group id too); --brokers overrides them.
        let props = [
            ("bootstrap.servers", "kafka:9092"),
            ("group.id", "other"),
            ("fetch.wait.max.ms", "100"),
            ("enable.auto.commit", "FALSE"),
        ];
        let cfg = consumer_config(&spec(&props), &env(None)).unwrap();
        assert_eq!(get(&cfg, "bootstrap.servers"), Some("kafka:9092"));
        assert_eq!(get(&cfg, "group.id"), Some("other"));
        assert_eq!(get(&cfg, "fetch.wait.max.ms"), Some("100"));
        let cfg = consumer_config(&spec(&props), &env(Some("b1:1,b2:2"))).unwrap();
        assert_eq!(get(&cfg, "bootstrap.servers"), Some("b1:1,b2:2"));
        assert_eq!(
            cfg.iter().filter(|(k, _)| k == "bootstrap.servers").count(),
            1
        );
        // A blank override is no override.
        assert_eq!(KafkaEnv::new("j", Some(" ".into())).brokers, None);
    }

    #[test]
    fn consumer_refuses_to_give_up_offset_management() {
        let err =
            consumer_config(&spec(&[("enable.auto.commit", "true")]), &env(None)).unwrap_err();
        assert!(err.contains("`enable.auto.commit`"), "{err}");
        let err =
            consumer_config(&spec(&[("enable.partition.eof", "false")]), &env(None)).unwrap_err();
        assert!(err.contains("`enable.partition.eof`"), "{err}");
        let err = consumer_config(&spec(&[("group.id", "")]), &env(None)).unwrap_err();
        assert!(err.contains("group id"), "{err}");
    }

    #[test]
    fn producer_defaults_and_overrides() {
        let props = vec![("linger.ms".to_string(), "50".to_string())];
        let cfg = producer_config(&props, &env(Some("x:1")));
        for (k, v) in [
            ("bootstrap.servers", "x:1"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "50"),
            ("compression.type", "none"),
        ] {
            assert_eq!(get(&cfg, k), Some(v), "{k}");
        }
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn without_the_feature_kafka_is_a_clear_error() {
        let err = open_source("clicks", &spec(&[]), &env(None)).err().unwrap();
        assert!(
            err.to_string().contains("built without Kafka support"),
            "{err}"
        );
        let err = open_sink("out", &[], &env(None)).err().unwrap();
        assert!(
            err.to_string().contains("built without Kafka support"),
            "{err}"
        );
    }
}
