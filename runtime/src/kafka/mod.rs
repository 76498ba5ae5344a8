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
//! - Exactly-once (`txn.rs`, [`KafkaEnv::transactional_id`] set): every Kafka sink
//!   writes through the job's one transactional producer ([`TxnProducer`]), which the
//!   driver begins and commits with the consumed offsets per checkpoint epoch; the
//!   sources then never commit on their own, and [`ConsumerControl`] (through
//!   `Source::kafka`) reads the group's committed offsets with their metadata, gives the
//!   consumer group metadata for the commit, and seeks for a rollback.

mod offsets;
mod txn;

#[cfg(feature = "kafka")]
mod consumer;
#[cfg(feature = "kafka")]
mod producer;

pub use offsets::OffsetTracker;
pub use txn::{
    BROKER_MAX_TRANSACTION_TIMEOUT, GroupOffsets, OffsetAndMetadata, TxnError, TxnOp, TxnProducer,
    TxnStats, TxnTimeouts, transactional_id,
};

use std::sync::Arc;
use std::time::Duration;

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
    /// `--instance-id`: this instance of the job (static membership names the consumer
    /// `<group id>-<instance>`).
    pub instance: String,
    /// `--bounded`: every Kafka source reads its partitions up to the end offsets they
    /// had when the job started, then ends (its watermark goes to +infinity, every
    /// window fires, offsets are committed and the job exits 0).
    pub bounded: bool,
    /// Exactly-once output: the transactional id of this instance
    /// ([`transactional_id`]: `streamc-<job>-<instance>`). Every Kafka sink then writes
    /// through one transactional producer ([`KafkaEnv::transaction`]), every Kafka
    /// client must talk to one cluster, and sources leave committing to the
    /// transactions. None: at-least-once, as before.
    pub transactional_id: Option<String>,
    /// Exactly-once output: the bounds of the transactional calls and
    /// `transaction.timeout.ms` ([`TxnTimeouts::for_checkpoint_interval`]).
    pub txn_timeouts: TxnTimeouts,
    #[cfg(feature = "kafka")]
    pub(crate) producers: std::sync::Arc<producer::Producers>,
}

impl std::fmt::Debug for KafkaEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEnv")
            .field("brokers", &self.brokers)
            .field("job", &self.job)
            .field("bounded", &self.bounded)
            .field("transactional_id", &self.transactional_id)
            .field("txn_timeouts", &self.txn_timeouts)
            .finish_non_exhaustive()
    }
}

impl KafkaEnv {
    /// An environment for job `job` with a brokers override (None: none).
    pub fn new(job: &str, brokers: Option<String>) -> Self {
        KafkaEnv {
            brokers: brokers.filter(|b| !b.trim().is_empty()),
            job: job.to_string(),
            instance: "0".to_string(),
            bounded: false,
            transactional_id: None,
            txn_timeouts: TxnTimeouts::default(),
            #[cfg(feature = "kafka")]
            producers: std::sync::Arc::default(),
        }
    }

    /// Whether outputs are written exactly once (a transactional id is set).
    pub fn exactly_once(&self) -> bool {
        self.transactional_id.is_some()
    }

    /// Exactly-once mode: the job's transactional producer, the one the Kafka sinks
    /// opened (call it after opening them), or, with no Kafka sink, one opened now with
    /// the default producer configuration (so that the consumed offsets are still
    /// committed in transactions). [`TxnError::Config`] when not in exactly-once mode,
    /// or without the `kafka` feature.
    pub fn transaction(&self) -> Result<Arc<TxnProducer>, TxnError> {
        #[cfg(feature = "kafka")]
        {
            if let Some(t) = self.producers.opened_transactional() {
                return Ok(t);
            }
            self.producers
                .transactional(producer_config(&[], self), "the driver", self)
        }
        #[cfg(not(feature = "kafka"))]
        {
            Err(TxnError::Config {
                message: NO_KAFKA.to_string(),
            })
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

/// A consumer group member's identity at one moment (group, member, generation), as
/// `send_offsets_to_transaction` needs it: the broker refuses offsets from a member of
/// an older generation (KIP-447), so a consumer that lost partitions in a rebalance
/// cannot commit them. Taken fresh at every commit ([`ConsumerControl::group_metadata`]).
#[derive(Clone)]
pub struct GroupMetadata {
    #[cfg(feature = "kafka")]
    native: Arc<rdkafka::consumer::ConsumerGroupMetadata>,
    group_id: String,
    member_id: String,
    generation: i32,
}

impl GroupMetadata {
    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The member id the coordinator gave the consumer.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The group generation the consumer was in.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    #[cfg(feature = "kafka")]
    pub(crate) fn native(&self) -> Arc<rdkafka::consumer::ConsumerGroupMetadata> {
        Arc::clone(&self.native)
    }
}

impl std::fmt::Debug for GroupMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMetadata")
            .field("group_id", &self.group_id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .finish()
    }
}

/// A partition's committed offset in the group, read back with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The partition.
    pub partition: u32,
    /// The committed offset (the next one to read); None when the group has none.
    pub offset: Option<u64>,
    /// The metadata committed with it (`streamc1;ck=..` or `streamc1;wm=..;pos=..`);
    /// empty when none (bytes that are not UTF-8 are replaced).
    pub metadata: String,
}

/// Why a consumer operation of the exactly-once protocol failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// The brokers did not answer in time.
    #[error(
        "{what} of Kafka topic `{topic}` (group `{group}`) did not complete within {} ms; are the brokers reachable?",
        timeout.as_millis()
    )]
    TimedOut {
        /// What was asked.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The bound.
        timeout: Duration,
    },
    /// The brokers or librdkafka refused.
    #[error("{what} of Kafka topic `{topic}` (group `{group}`) failed: {message}")]
    Failed {
        /// What was asked.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The reason.
        message: String,
    },
    /// The consumer has not joined its group yet (no assignment has arrived): it has
    /// no generation to commit offsets with.
    #[error(
        "the Kafka consumer of topic `{topic}` has not joined group `{group}` yet (no partition assignment): \
         it has no group generation to commit offsets with"
    )]
    NotInGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// A partition that is not assigned to this consumer.
    #[error("partition {partition} of Kafka topic `{topic}` is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
}

/// What the exactly-once protocol needs of a Kafka source's consumer, beyond
/// `Source` (`Source::kafka` gives it; every call is bounded). On start and on every
/// assignment the driver reads the committed offsets with their metadata to know which
/// checkpoint to restore; at every commit it takes the group metadata and the
/// positions; on a rollback it seeks the partitions it keeps to the checkpoint's offsets.
pub trait ConsumerControl {
    /// The topic read.
    fn topic(&self) -> &str;

    /// The consumer group.
    fn group_id(&self) -> &str;

    /// The consumer's group metadata now, for `send_offsets_to_transaction`.
    /// [`ConsumerError::NotInGroup`] before the first assignment.
    fn group_metadata(&self) -> Result<GroupMetadata, ConsumerError>;

    /// The group's committed offsets of `partitions` with their metadata, asked of the
    /// group coordinator (at most `timeout`). Offsets of a transaction still in
    /// progress are waited for (the consumer reads committed offsets with
    /// `require_stable`), so they come out as committed or not at all.
    fn committed(
        &self,
        partitions: &[u32],
        timeout: Duration,
    ) -> Result<Vec<Committed>, ConsumerError>;

    /// Moves assigned partitions to `offsets` (partition, next offset to read), at most
    /// `timeout`: a rollback to a checkpoint. Records of those partitions fetched but
    /// not yet polled are discarded, and their offset tracking starts afresh.
    fn seek(&mut self, offsets: &[(u32, u64)], timeout: Duration) -> Result<(), ConsumerError>;

    /// Per assigned partition, one past the last record reported processed
    /// (`Source::processed`) since its assignment or last seek.
    fn positions(&self) -> Vec<(u32, u64)>;

    /// Commits `offsets` (partition, next offset, metadata) synchronously, at most
    /// `timeout`: at-least-once checkpoints commit the checkpoint's offsets this way
    /// once it is durable.
    fn commit_offsets(
        &mut self,
        offsets: &[(u32, u64, String)],
        timeout: Duration,
    ) -> Result<(), ConsumerError>;

    /// How many partitions the topic has (asked of the brokers, at most `timeout`).
    fn partition_count(&self, timeout: Duration) -> Result<u32, ConsumerError>;

    /// Without checkpoints: partition `p` was restored with watermark `watermark` from
    /// committed metadata that said records below `position` had been processed; the
    /// source's own commits carry both on (`streamc1;wm=..;pos=..`) until records move
    /// them.
    fn note_restored(&mut self, p: u32, watermark: i64, position: u64);

    /// `offsets` of this source's topic with the group metadata now, ready for
    /// `TxnProducer::commit_epoch`.
    fn group_offsets(
        &self,
        offsets: Vec<OffsetAndMetadata>,
    ) -> Result<GroupOffsets, ConsumerError> {
        Ok(GroupOffsets {
            group: self.group_metadata()?,
            topic: self.topic().to_string(),
            offsets,
        })
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
    let instance_id = format!("{}-{}", spec.group_id, env.instance);
    let mut cfg = layered(
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
    if spec.static_membership && get(&cfg, "group.instance.id").is_none() {
        set(&mut cfg, "group.instance.id", &instance_id);
    }
    if env.exactly_once()
        && get(&cfg, "isolation.level").is_some_and(|v| !v.eq_ignore_ascii_case("read_committed"))
    {
        return Err(
            "property `isolation.level` must be `read_committed` for a source of an exactly-once job: records of \
             aborted transactions must not reach its results"
                .to_string(),
        );
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
        if env.exactly_once() {
            let brokers = get(&cfg, "bootstrap.servers").unwrap_or_default();
            env.producers
                .same_cluster(brokers, &format!("Kafka source `{name}`"))
                .map_err(SourceError::msg)?;
        }
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
            static_membership: false,
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
    fn exactly_once_sources_read_committed_data_only() {
        let mut eos = env(None);
        eos.transactional_id = Some(transactional_id("job", "0"));
        assert!(eos.exactly_once() && !env(None).exactly_once());
        let uncommitted = [("isolation.level", "read_uncommitted")];
        let err = consumer_config(&spec(&uncommitted), &eos).unwrap_err();
        assert!(err.contains("`isolation.level`"), "{err}");
        // At-least-once jobs may read what they like; the default is fine for both.
        consumer_config(&spec(&uncommitted), &env(None)).unwrap();
        consumer_config(&spec(&[("isolation.level", "READ_COMMITTED")]), &eos).unwrap();
        consumer_config(&spec(&[]), &eos).unwrap();
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
