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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

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
            self.deliveries.record(msg.topic(), error.to_string());
        }
    }
}

/// A producer shared by the sinks with the same configuration.
pub(crate) struct SharedProducer {
    producer: BaseProducer<SinkContext>,
    /// For messages: the brokers it talks to.
    brokers: String,
}

impl SharedProducer {
    fn failure(&self, topic: Option<&str>) -> Option<(String, String)> {
        self.producer.context().deliveries.failure(topic)
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

fn delivery_failed(topic: &str, error: &str) -> String {
    format!("delivery to Kafka topic `{topic}` failed (after librdkafka's retries): {error}")
}

/// A producer's configuration (key, value pairs in order).
type Config = Vec<(String, String)>;

/// The job's producers, by configuration (for sharing and for the commit barrier).
#[derive(Default)]
pub(crate) struct Producers {
    list: Mutex<Vec<(Config, Weak<SharedProducer>)>>,
}

impl Producers {
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
        let mut cc = ClientConfig::new();
        for (k, v) in &cfg {
            cc.set(k, v);
        }
        let producer: BaseProducer<SinkContext> = cc.create_with_context(SinkContext {
            deliveries: Deliveries::default(),
        })?;
        let brokers = cc.get("bootstrap.servers").unwrap_or_default().to_string();
        let shared = Arc::new(SharedProducer { producer, brokers });
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
            .try_for_each(|p| p.wait_delivered(None, timeout))
    }
}

/// Rows to one Kafka topic.
pub(crate) struct KafkaSink {
    topic: String,
    shared: Arc<SharedProducer>,
    writes: u32,
}

/// Serve delivery reports every this many writes (besides the driver's flushes).
const POLL_EVERY: u32 = 1024;

impl KafkaSink {
    pub(crate) fn open(
        topic: &str,
        cfg: Vec<(String, String)>,
        env: &KafkaEnv,
    ) -> Result<Self, SinkError> {
        let shared = env.producers.get_or_create(cfg).map_err(|e| {
            SinkError::msg(format!(
                "cannot create the Kafka producer for topic `{topic}`: {e}"
            ))
        })?;
        tracing::info!(topic, brokers = %shared.brokers, "Kafka sink ready");
        Ok(KafkaSink {
            topic: topic.to_string(),
            shared,
            writes: 0,
        })
    }

    fn check(&self) -> Result<(), SinkError> {
        match self.shared.failure(Some(&self.topic)) {
            Some((t, e)) => Err(SinkError::msg(delivery_failed(&t, &e))),
            None => Ok(()),
        }
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        let producer = &self.shared.producer;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut blocked_since: Option<Instant> = None;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: serve delivery reports (which frees the queue) and
                    // try again; never drop. A queue that stays full past the delivery
                    // timeout means the brokers are gone: librdkafka fails the queued
                    // messages by then, which `check` reports.
                    record = r;
                    producer.poll(Duration::from_millis(10));
                    self.check()?;
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > DELIVERY_TIMEOUT {
                        return Err(SinkError::msg(format!(
                            "the Kafka producer queue for topic `{}` stayed full for {} s; are the brokers ({}) reachable?",
                            self.topic,
                            DELIVERY_TIMEOUT.as_secs(),
                            self.shared.brokers
                        )));
                    }
                }
                Err((e, _)) => {
                    return Err(SinkError::msg(format!(
                        "cannot produce to Kafka topic `{}`: {e}",
                        self.topic
                    )));
                }
            }
        }
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(POLL_EVERY) {
            producer.poll(Duration::ZERO);
            self.check()?;
        }
        Ok(())
    }

    /// Does not wait: librdkafka sends within `linger.ms`. Serves delivery reports and
    /// reports a failure of this topic.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.shared.producer.poll(Duration::ZERO);
        self.check()
    }

    fn wait_delivered(&mut self) -> Result<(), SinkError> {
        self.shared
            .wait_delivered(Some(&self.topic), DELIVERY_TIMEOUT)
            .map_err(SinkError::msg)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.wait_delivered()
    }

    fn uses_key(&self) -> bool {
        true
    }
}
