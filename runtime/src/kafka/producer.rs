//! The Kafka sink: rows as messages, through an idempotent `BaseProducer`.
//!
//! One producer per distinct configuration, shared by the job's Kafka sinks (outputs,
//! late and dead-letter topics usually share one: one set of broker connections and one
//! flush for the commit barrier). Delivery reports are served whenever the producer is
//! polled (every write that finds the queue full, every driver flush, every wait); the
//! first failure per topic is kept and reported by that topic's sink, so the job ends
//! with exit code 1 naming the topic. librdkafka retries on its own (idempotent, so
//! without duplicates or reordering) until `message.timeout.ms`; what fails after that
//! is an error, never dropped.
//!
//! Exactly-once mode (`KafkaEnv::transactional_id` set): every Kafka sink of the job
//! writes through the job's ONE transactional producer ([`super::txn::TxnProducer`]),
//! whose transaction the driver begins and commits per checkpoint epoch. A sink whose
//! layered configuration differs from the one that opened it (other brokers, other
//! properties) cannot be in that transaction and fails to open, naming the difference.
//! At-least-once mode is unchanged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::txn::{TxnError, TxnProducer};
use super::{DELIVERY_TIMEOUT, KafkaEnv};
use crate::sink::{Sink, SinkError};

/// Delivery outcomes of one producer.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Any failure recorded (fast path of `failure`).
    failed: AtomicBool,
    /// The first failure per topic: (topic, error).
    failures: Mutex<Vec<(String, String)>>,
}

impl Deliveries {
    fn record(&self, topic: &str, error: String) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !f.iter().any(|(t, _)| t == topic) {
            tracing::error!(topic, %error, "Kafka delivery failed");
            f.push((topic.to_string(), error));
        }
        self.failed.store(true, Ordering::Release);
    }

    /// Forgets the failures recorded so far (a new transaction starts: the failures of
    /// the aborted one are not its own).
    pub(crate) fn clear(&self) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.clear();
        self.failed.store(false, Ordering::Release);
    }

    /// The failure of `topic` (any topic: None), if one was recorded.
    fn failure(&self, topic: Option<&str>) -> Option<(String, String)> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.iter()
            .find(|(t, _)| topic.is_none_or(|want| t == want))
            .cloned()
    }
}

/// Records failed deliveries; logs librdkafka's messages through `tracing` (the default).
pub(crate) struct SinkContext {
    deliveries: Deliveries,
    /// A transactional producer: messages purged by an abort are not failures.
    transactional: bool,
}

impl ClientContext for SinkContext {
    /// Client-level errors (a broker unreachable, ...): librdkafka retries them; failed
    /// deliveries are reported per message. A warning, not an error of the job.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka producer");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, msg)) = result {
            let purged = matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
            );
            // An abort purges what the aborted transaction still had queued: those
            // messages were meant to be dropped.
            if !(self.transactional && purged) {
                self.deliveries.record(msg.topic(), error.to_string());
            }
        }
    }
}

/// A producer shared by the sinks with the same configuration.
pub(crate) struct SharedProducer {
    pub(crate) producer: BaseProducer<SinkContext>,
    /// For messages: the brokers it talks to.
    pub(crate) brokers: String,
}

impl SharedProducer {
    /// A producer with configuration `cfg` (`transactional`: it has a
    /// `transactional.id`).
    pub(crate) fn create(
        cfg: &[(String, String)],
        transactional: bool,
    ) -> Result<Self, KafkaError> {
        let mut cc = ClientConfig::new();
        for (k, v) in cfg {
            cc.set(k, v);
        }
        let producer: BaseProducer<SinkContext> = cc.create_with_context(SinkContext {
            deliveries: Deliveries::default(),
            transactional,
        })?;
        let brokers = cc.get("bootstrap.servers").unwrap_or_default().to_string();
        Ok(SharedProducer { producer, brokers })
    }

    pub(crate) fn failure(&self, topic: Option<&str>) -> Option<(String, String)> {
        self.producer.context().deliveries.failure(topic)
    }

    /// Asks the brokers whether `topic` exists, so a sink on a missing topic fails at
    /// start naming it (rather than after a delivery timeout, with a hint about
    /// unreachable brokers).
    pub(crate) fn check_topic(&self, topic: &str) -> Result<(), String> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), TOPIC_CHECK_TIMEOUT)
            .map_err(|e| {
                format!(
                    "cannot ask the Kafka brokers ({}) whether the topic exists (are they reachable?): {e}",
                    self.brokers
                )
            })?;
        let missing = || {
            format!(
                "Kafka topic `{topic}` does not exist on the brokers ({}); create it \
                 (`scripts/kafka topics --create --topic {topic} --partitions N`) or fix the \
                 topic name in the spec",
                self.brokers
            )
        };
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(missing());
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None => Ok(()),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                Err(missing())
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Err(format!(
                "not authorized to write to Kafka topic `{topic}` (brokers {})",
                self.brokers
            )),
            Some(e) => Err(format!(
                "the Kafka brokers ({}) answered for topic `{topic}`: {e}",
                self.brokers
            )),
        }
    }

    pub(crate) fn deliveries(&self) -> &Deliveries {
        &self.producer.context().deliveries
    }

    /// Hands one message to librdkafka. A full queue is backpressure: delivery reports
    /// are served (which frees the queue) and the send is tried again; never a drop. A
    /// delivery failure recorded meanwhile (of `topic`; any topic: None) ends the wait,
    /// and so does a queue that stays full for [`DELIVERY_TIMEOUT`].
    pub(crate) fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        failures_of: Option<&str>,
    ) -> Result<(), SendError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut blocked_since: Option<Instant> = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // A queue that stays full past the delivery timeout means the
                    // brokers are gone: librdkafka fails the queued messages by then.
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                    if let Some((t, e)) = self.failure(failures_of) {
                        return Err(SendError::Delivery(t, e));
                    }
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > DELIVERY_TIMEOUT {
                        return Err(SendError::Stalled(format!(
                            "the Kafka producer queue for topic `{topic}` stayed full for {} s; are the brokers ({}) reachable?",
                            DELIVERY_TIMEOUT.as_secs(),
                            self.brokers
                        )));
                    }
                }
                Err((e, _)) => return Err(SendError::Produce(e)),
            }
        }
    }

    /// Waits for every outstanding delivery (at most `timeout`), then reports a
    /// failure of `topic` (any topic: None).
    fn wait_delivered(&self, topic: Option<&str>, timeout: Duration) -> Result<(), String> {
        if let Err(e) = self.producer.flush(timeout) {
            // A recorded failure explains more than the timeout.
            if let Some((t, err)) = self.failure(topic) {
                return Err(delivery_failed(&t, &err));
            }
            return Err(format!(
                "{} message(s) to Kafka ({}) not delivered within {} s ({e}); are the brokers reachable?",
                self.producer.in_flight_count(),
                self.brokers,
                timeout.as_secs()
            ));
        }
        match self.failure(topic) {
            Some((t, err)) => Err(delivery_failed(&t, &err)),
            None => Ok(()),
        }
    }
}

/// Why [`SharedProducer::send`] could not hand a message to librdkafka.
pub(crate) enum SendError {
    /// A delivery failed (topic, error) while the queue was full.
    Delivery(String, String),
    /// The queue stayed full (the message says how long).
    Stalled(String),
    /// librdkafka refused the message (not a full queue).
    Produce(KafkaError),
}

pub(crate) fn delivery_failed(topic: &str, error: &str) -> String {
    format!("delivery to Kafka topic `{topic}` failed (after librdkafka's retries): {error}")
}

/// A producer's configuration (key, value pairs in order).
type Config = Vec<(String, String)>;

/// The job's transactional producer and the sink that opened it.
struct Transactional {
    /// Its layered configuration (before `transactional.id` and the timeouts).
    cfg: Config,
    /// Who opened it: `topic `x``, or `the driver`.
    opened_by: String,
    producer: Arc<TxnProducer>,
}

/// The job's producers, by configuration (for sharing and for the commit barrier).
#[derive(Default)]
pub(crate) struct Producers {
    list: Mutex<Vec<(Config, Weak<SharedProducer>)>>,
    /// Exactly-once mode: the one transactional producer, once opened.
    txn: Mutex<Option<Transactional>>,
    /// Exactly-once mode: the brokers every Kafka client of the job talks to, and who
    /// named them first.
    cluster: Mutex<Option<(String, String)>>,
}

impl Producers {
    /// Exactly-once mode: `who` (a source or a sink) talks to `brokers`, which must be
    /// the cluster of every other Kafka client of the job (the consumed offsets are
    /// committed by the transactional producer, to the group coordinator of its own
    /// cluster).
    pub(crate) fn same_cluster(&self, brokers: &str, who: &str) -> Result<(), String> {
        let mut c = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
        match &*c {
            None => {
                *c = Some((brokers.to_string(), who.to_string()));
                Ok(())
            }
            Some((b, _)) if b == brokers => Ok(()),
            Some((b, first)) => Err(format!(
                "{who} talks to Kafka brokers `{brokers}` but {first} to `{b}`: with exactly-once output every \
                 Kafka source and sink of a job must use one cluster (one Kafka transaction commits the outputs \
                 and the consumed offsets together)"
            )),
        }
    }

    /// Exactly-once mode: the job's transactional producer, opened with `cfg` (the
    /// layered producer configuration) by the first caller; later callers must come with
    /// the same configuration. `who` names the caller for messages (`topic `x``).
    pub(crate) fn transactional(
        &self,
        cfg: Config,
        who: &str,
        env: &KafkaEnv,
    ) -> Result<Arc<TxnProducer>, TxnError> {
        let Some(id) = env.transactional_id.as_deref() else {
            return Err(TxnError::Config {
                message: "this job does not write exactly once (no transactional id)".into(),
            });
        };
        let mut txn = self.txn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &*txn {
            return match config_difference(&t.cfg, &cfg) {
                None => Ok(Arc::clone(&t.producer)),
                Some(diff) => Err(TxnError::Config {
                    message: format!(
                        "{who} cannot be written in the job's Kafka transaction: its producer would differ from \
                         the one {} opened ({diff}); exactly-once output writes every Kafka sink (results, late \
                         events, dead letters) through one transactional producer, so they all need the same \
                         brokers and producer properties",
                        t.opened_by
                    ),
                }),
            };
        }
        let brokers = super::get(&cfg, "bootstrap.servers").unwrap_or_default();
        self.same_cluster(brokers, who)
            .map_err(|message| TxnError::Config { message })?;
        let producer = Arc::new(TxnProducer::open(cfg.clone(), id, env.txn_timeouts)?);
        *txn = Some(Transactional {
            cfg,
            opened_by: who.to_string(),
            producer: Arc::clone(&producer),
        });
        Ok(producer)
    }

    /// Exactly-once mode: the transactional producer, if opened.
    pub(crate) fn opened_transactional(&self) -> Option<Arc<TxnProducer>> {
        let txn = self.txn.lock().unwrap_or_else(|e| e.into_inner());
        txn.as_ref().map(|t| Arc::clone(&t.producer))
    }

    fn get_or_create(&self, cfg: Vec<(String, String)>) -> Result<Arc<SharedProducer>, KafkaError> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(_, w)| w.strong_count() > 0);
        if let Some(p) = list
            .iter()
            .find(|(c, _)| *c == cfg)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(p);
        }
        let shared = Arc::new(SharedProducer::create(&cfg, false)?);
        list.push((cfg, Arc::downgrade(&shared)));
        Ok(shared)
    }

    /// Every live producer has delivered everything and recorded no failure.
    pub(crate) fn wait_delivered(&self, timeout: Duration) -> Result<(), String> {
        let live: Vec<Arc<SharedProducer>> = {
            let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            list.iter().filter_map(|(_, w)| w.upgrade()).collect()
        };
        live.iter()
            .try_for_each(|p| p.wait_delivered(None, timeout))?;
        match self.opened_transactional() {
            Some(t) => t.wait_delivered(timeout).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// How configuration `b` differs from `a` (None: the same settings, in any order).
fn config_difference(a: &[(String, String)], b: &[(String, String)]) -> Option<String> {
    let a: BTreeMap<&str, &str> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let b: BTreeMap<&str, &str> = b.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let keys: std::collections::BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|k| {
            let show = |v: Option<&&str>| v.map_or("unset".to_string(), |v| format!("`{v}`"));
            format!("`{k}`: {} there, {} here", show(a.get(k)), show(b.get(k)))
        })
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// Where a Kafka sink's messages go.
enum Output {
    /// At-least-once: an idempotent producer shared by sinks of the same configuration.
    Plain(Arc<SharedProducer>),
    /// Exactly-once: the job's transactional producer.
    Transactional(Arc<TxnProducer>),
}

/// Rows to one Kafka topic.
pub(crate) struct KafkaSink {
    topic: String,
    output: Output,
    writes: u32,
    /// The producer's `message.max.bytes` (librdkafka's default 1000000).
    max_bytes: usize,
}

/// How long a sink waits at start for the brokers to say whether its topic exists.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Serve delivery reports every this many writes (besides the driver's flushes).
const POLL_EVERY: u32 = 1024;

impl KafkaSink {
    pub(crate) fn open(
        topic: &str,
        cfg: Vec<(String, String)>,
        env: &KafkaEnv,
    ) -> Result<Self, SinkError> {
        let max_bytes = super::get(&cfg, "message.max.bytes")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1_000_000);
        let output = if env.transactional_id.is_some() {
            let who = format!("Kafka sink topic `{topic}`");
            let txn = env
                .producers
                .transactional(cfg, &who, env)
                .map_err(|e| SinkError::Other(Box::new(e)))?;
            tracing::info!(topic, brokers = %txn.brokers(), transactional_id = txn.transactional_id(), "Kafka sink ready (exactly once)");
            Output::Transactional(txn)
        } else {
            let shared = env.producers.get_or_create(cfg).map_err(|e| {
                SinkError::msg(format!(
                    "cannot create the Kafka producer for topic `{topic}`: {e}"
                ))
            })?;
            tracing::info!(topic, brokers = %shared.brokers, "Kafka sink ready");
            Output::Plain(shared)
        };
        let sink = KafkaSink {
            topic: topic.to_string(),
            output,
            writes: 0,
            max_bytes,
        };
        sink.shared().check_topic(topic).map_err(SinkError::msg)?;
        Ok(sink)
    }

    fn shared(&self) -> &SharedProducer {
        match &self.output {
            Output::Plain(p) => p,
            Output::Transactional(t) => t.shared(),
        }
    }

    fn check(&self) -> Result<(), SinkError> {
        match &self.output {
            Output::Plain(p) => match p.failure(Some(&self.topic)) {
                Some((t, e)) => Err(SinkError::msg(delivery_failed(&t, &e))),
                None => Ok(()),
            },
            Output::Transactional(t) => t.check().map_err(|e| SinkError::Other(Box::new(e))),
        }
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        match &self.output {
            Output::Plain(p) => {
                p.send(&self.topic, key, value, Some(&self.topic))
                    .map_err(|e| match e {
                        SendError::Delivery(t, e) => SinkError::msg(delivery_failed(&t, &e)),
                        SendError::Stalled(msg) => SinkError::msg(msg),
                        SendError::Produce(e) => SinkError::msg(format!(
                            "cannot produce to Kafka topic `{}`: {e}",
                            self.topic
                        )),
                    })?
            }
            Output::Transactional(t) => t
                .send(&self.topic, key, value)
                .map_err(|e| SinkError::Other(Box::new(e)))?,
        }
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(POLL_EVERY) {
            self.shared().producer.poll(Duration::ZERO);
            self.check()?;
        }
        Ok(())
    }

    /// Does not wait: librdkafka sends within `linger.ms`. Serves delivery reports and
    /// reports a failure of this topic (exactly-once: of the transaction).
    fn flush(&mut self) -> Result<(), SinkError> {
        self.shared().producer.poll(Duration::ZERO);
        self.check()
    }

    /// Exactly-once: waits for every message of the producer (the transaction's
    /// outputs, not only this topic's); the commit of the epoch waits for them anyway.
    fn wait_delivered(&mut self) -> Result<(), SinkError> {
        match &self.output {
            Output::Plain(p) => p
                .wait_delivered(Some(&self.topic), DELIVERY_TIMEOUT)
                .map_err(SinkError::msg),
            Output::Transactional(t) => t
                .wait_delivered(DELIVERY_TIMEOUT)
                .map_err(|e| SinkError::Other(Box::new(e))),
        }
    }

    /// Exactly-once: waits for deliveries only; committing (or aborting) the open
    /// transaction is the driver's (`TxnProducer::commit_epoch`), before the close.
    fn close(&mut self) -> Result<(), SinkError> {
        self.wait_delivered()
    }

    fn uses_key(&self) -> bool {
        true
    }

    /// A record's value within the producer's message limit, less room for the
    /// record's framing (key, headers, batch overhead).
    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.max_bytes.saturating_sub(1024).max(1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn configurations_differ_by_setting_not_by_order() {
        let a = cfg(&[("bootstrap.servers", "b:1"), ("linger.ms", "5")]);
        let b = cfg(&[("linger.ms", "5"), ("bootstrap.servers", "b:1")]);
        assert_eq!(config_difference(&a, &b), None);
        let c = cfg(&[("bootstrap.servers", "c:1"), ("acks", "1")]);
        assert_eq!(
            config_difference(&a, &c).unwrap(),
            "`acks`: unset there, `1` here, `bootstrap.servers`: `b:1` there, `c:1` here, \
             `linger.ms`: `5` there, unset here"
        );
    }

    #[test]
    fn one_cluster_per_exactly_once_job() {
        let p = Producers::default();
        p.same_cluster("b:1", "Kafka source `clicks`").unwrap();
        p.same_cluster("b:1", "Kafka sink topic `out`").unwrap();
        let err = p.same_cluster("c:1", "Kafka sink topic `dlq`").unwrap_err();
        assert!(
            err.starts_with("Kafka sink topic `dlq` talks to Kafka brokers `c:1` but Kafka source `clicks` to `b:1`"),
            "{err}"
        );
    }
}
