//! Exactly-once Kafka output: the job's one transactional producer.
//!
//! # The protocol (docs/design/state.md)
//!
//! Per instance ONE producer with `transactional.id = streamc-<job>-<instance>`
//! ([`transactional_id`]), the same across restarts and never one per checkpoint (every
//! id is state in the brokers' transaction coordinator). Every Kafka output of the
//! binary (results, late events, dead letters) is written inside the current
//! transaction. The driver, per epoch:
//!
//! 1. [`TxnProducer::open`] once at start: `init_transactions`, which fences any
//!    earlier producer with the same id (a crashed or hung previous run of the
//!    instance) and aborts its open transaction at once, so `read_committed` readers
//!    are not stalled until `transaction.timeout.ms`.
//! 2. [`TxnProducer::begin`], then writes through the Kafka sinks (or
//!    [`TxnProducer::send`]).
//! 3. At the checkpoint, once the snapshot is durable: [`TxnProducer::commit_epoch`]
//!    with the consumed positions and their metadata (`streamc1;ck=<instance>/<id>`)
//!    and each source's consumer group metadata: `send_offsets_to_transaction` per
//!    group, then `commit_transaction` (also callable as two steps,
//!    [`TxnProducer::send_offsets`] and [`TxnProducer::commit`]). Then `begin` for the
//!    next epoch.
//! 4. On [`TxnError::Abortable`] (or a revocation): [`TxnProducer::abort`] and roll
//!    back to the last committed checkpoint. On [`TxnError::Fatal`]: tear down and
//!    restart from the last checkpoint (a new `open` fences this producer). On
//!    [`TxnError::Fenced`]: stop; another instance uses this instance's id. On
//!    [`TxnError::Config`]: stop; the configuration cannot work.
//!
//! Retriable errors never reach the caller: each operation retries them (resuming the
//! same call) within [`TxnTimeouts::operation`], and an operation that is still
//! retrying when that budget runs out fails as [`TxnError::Fatal`]: a timeout that
//! cannot be resolved is a restart, never a hang.
//!
//! # Bounding librdkafka's transactional calls
//!
//! Known hangs and timeouts, and what this module does about each (librdkafka 2.12.1,
//! as vendored by rdkafka-sys 4.10):
//!
//! - **librdkafka#3013** (1.5.0, closed): `rd_kafka_send_offsets_to_transaction`
//!   blocked indefinitely although a 500 ms timeout was passed. **librdkafka#5456**
//!   (open, reproduced on 2.14.2, so present in our 2.12.1; fix proposed in #5457): the
//!   coordinator request behind it never checks its timeout (`creq_ts_timeout`), so the
//!   call blocks past its timeout while the group coordinator is unreachable
//!   (#5511: also when the cached coordinator was decommissioned). A timeout passed to
//!   librdkafka is therefore not a bound. Every transactional call here runs on a
//!   short-lived thread, and the caller waits for it for at most twice the call's
//!   timeout plus [`TxnTimeouts::grace`] (a watchdog). A call that overstays is
//!   abandoned: the producer is marked failed (every later call returns the same
//!   [`TxnError::Fatal`]), the thread keeps its reference to the producer until
//!   librdkafka returns, and the driver restarts with a new producer, whose
//!   `init_transactions` fences the stuck one.
//! - **MaterializeInc/materialize#30508**: Materialize first bounded its commit by the
//!   socket timeout (librdkafka then stopped trying after 60 s), then passed "no
//!   timeout" (-1), which librdkafka documents as "the remaining transaction time", and
//!   found that `commit_transaction` (like `abort_transaction`) does not cap -1 by the
//!   transaction timeout: the commit retried forever. Verified in
//!   `rdkafka_txnmgr.c`: `rd_kafka_txn_curr_api_begin(.., "commit_transaction",
//!   rd_false /* no cap */, ..)`; only `send_offsets_to_transaction` is capped and only
//!   `init_transactions` turns -1 into 2 x `transaction.timeout.ms`. So a finite
//!   timeout ([`TxnTimeouts::call`]) is passed to every call, never -1
//!   (rdkafka's `Timeout::Never`).
//! - **A timed-out commit is resumed, never followed by an abort.** `commit_transaction`
//!   and `abort_transaction` return a retriable `_TIMED_OUT` while the operation goes
//!   on in the background; calling the *same* function again resumes it. Calling
//!   another one (an abort after a timed-out commit) fails with `_CONFLICT`
//!   ("Conflicting commit_transaction API call is already in progress"), and the
//!   commit may still succeed on the broker. `commit_epoch` therefore retries
//!   `commit_transaction` itself until it succeeds, needs an abort, or the budget ends
//!   (then Fatal: a restart's `init_transactions` completes or aborts the transaction on
//!   the broker, and the committed offsets' metadata says which checkpoint won).
//!   `send_offsets_to_transaction` is retriable but not resumable (librdkafka's docs);
//!   it is retried with identical offsets and group metadata.
//! - **`init_transactions` after a timed-out one** is resumable too (librdkafka keeps
//!   acquiring the producer id in the background): `open` calls it again on the same
//!   producer until it succeeds or the budget ends.
//! - **Delivery reports during commit and abort.** Both flush the producer, and rdkafka
//!   receives delivery reports through librdkafka's event API, which librdkafka's own
//!   flush does not serve (`rd_kafka_flush` only waits for the message count to drop
//!   in that mode): an abort with messages in flight would wait out its timeout. While
//!   a call runs on its thread, the calling thread polls the producer, which serves
//!   the reports.
//! - **`transaction.timeout.ms` vs the checkpoint interval.** The broker aborts a
//!   transaction that stays open longer than `transaction.timeout.ms` (counted from its
//!   first write) and bumps the producer epoch, so the next call reports the producer
//!   as fenced. An epoch lasts a checkpoint interval plus the checkpoint itself plus
//!   the commit: [`TxnTimeouts::for_checkpoint_interval`] sets the transaction timeout
//!   to at least 2 x interval + the operation budget (60 s at least, the brokers'
//!   default maximum `transaction.max.timeout.ms` of 15 min at most). A "fenced" error
//!   after the transaction has been open that long is reported as Fatal (the
//!   transaction timed out: restart) rather than Fenced (another instance).
//! - **`message.timeout.ms` <= `transaction.timeout.ms`.** A message still undelivered
//!   when the transaction times out cannot be in it; librdkafka refuses a producer
//!   configured otherwise ("`message.timeout.ms` must be set <=
//!   `transaction.timeout.ms`"). `open` checks it first, naming both values, and
//!   otherwise lets librdkafka default `message.timeout.ms` (and `socket.timeout.ms`)
//!   from the transaction timeout. A message that fails (after librdkafka's retries)
//!   makes the transaction abortable.

use std::time::Duration;

/// The transactional id of instance `instance` of job `job`: `streamc-<job>-<instance>`.
pub fn transactional_id(job: &str, instance: &str) -> String {
    format!("streamc-{job}-{instance}")
}

/// A transactional operation, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnOp {
    /// Creating the producer and `init_transactions`.
    Init,
    /// `begin_transaction`.
    Begin,
    /// Handing a message to the producer.
    Produce,
    /// Waiting for deliveries.
    Flush,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

impl std::fmt::Display for TxnOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxnOp::Init => "init_transactions",
            TxnOp::Begin => "begin_transaction",
            TxnOp::Produce => "produce",
            TxnOp::Flush => "flush",
            TxnOp::SendOffsets => "send_offsets_to_transaction",
            TxnOp::Commit => "commit_transaction",
            TxnOp::Abort => "abort_transaction",
        })
    }
}

/// Why a transactional operation failed, by what the driver must do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The transaction cannot commit (a message failed, the offsets were refused: a
    /// consumer of an older group generation, KIP-447, ...): call
    /// [`TxnProducer::abort`] and roll back to the last committed checkpoint. Until the
    /// abort every operation but `abort` returns this error again.
    #[error("the Kafka transaction must be aborted ({op}): {message}")]
    Abortable {
        /// What failed.
        op: TxnOp,
        /// librdkafka's or the broker's reason.
        message: String,
    },
    /// The producer is unusable (a fatal librdkafka error, a call that did not return,
    /// a timeout that retries did not resolve): tear down and restart from the last
    /// checkpoint with a new producer. Every later call returns this error again.
    #[error("the Kafka transactional producer failed ({op}): {message}")]
    Fatal {
        /// What failed.
        op: TxnOp,
        /// What happened.
        message: String,
    },
    /// Another producer with the same transactional id took over: the job must stop
    /// (restarting would fence the other instance in turn).
    #[error(
        "another producer took over Kafka transactional id `{transactional_id}` ({op}: {message}); \
         this instance stops. Every instance of a job needs its own --instance-id \
         (STREAMC_INSTANCE_ID): two instances started with the same id fence each other"
    )]
    Fenced {
        /// What failed.
        op: TxnOp,
        /// The id both producers use.
        transactional_id: String,
        /// librdkafka's reason.
        message: String,
    },
    /// The configuration cannot work (conflicting sink properties, a transaction
    /// timeout the brokers refuse, missing authorization, no Kafka support): stop and
    /// say so; a restart would fail the same way.
    #[error("{message}")]
    Config {
        /// What to change.
        message: String,
    },
}

impl TxnError {
    /// The transaction error inside a sink's error (a Kafka sink in exactly-once mode
    /// returns its write, flush and delivery errors as `SinkError::Other(TxnError)`).
    pub fn of_sink_error(e: &crate::sink::SinkError) -> Option<&TxnError> {
        match e {
            crate::sink::SinkError::Other(inner) => inner.downcast_ref::<TxnError>(),
            crate::sink::SinkError::Closed | crate::sink::SinkError::Io(_) => None,
        }
    }
}

/// How long transactional operations may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnTimeouts {
    /// The timeout passed to each librdkafka call (never "infinite": see the module
    /// documentation). Default 10 s.
    pub call: Duration,
    /// The total time one operation (`open`, `begin`, `commit_epoch`, `abort`) may take
    /// with its retries; still retrying after it is Fatal. Default 60 s.
    pub operation: Duration,
    /// How much longer than twice its own timeout a call may block before the watchdog
    /// abandons it (librdkafka#5456). Default 5 s.
    pub grace: Duration,
    /// `transaction.timeout.ms`: how long the broker lets a transaction stay open
    /// before it aborts it. Default 60 s.
    pub transaction: Duration,
}

impl Default for TxnTimeouts {
    fn default() -> Self {
        TxnTimeouts {
            call: Duration::from_secs(10),
            operation: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            transaction: Duration::from_secs(60),
        }
    }
}

/// The brokers' default `transaction.max.timeout.ms`: a larger transaction timeout is
/// refused by `init_transactions` unless the brokers allow more.
pub const BROKER_MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl TxnTimeouts {
    /// The defaults, with a transaction timeout that outlasts an epoch of a checkpoint
    /// every `interval`: `max(60 s, 2 x interval + operation)`. An interval that needs
    /// more than [`BROKER_MAX_TRANSACTION_TIMEOUT`] is a [`TxnError::Config`].
    pub fn for_checkpoint_interval(interval: Duration) -> Result<Self, TxnError> {
        let d = TxnTimeouts::default();
        let need = interval
            .saturating_mul(2)
            .saturating_add(d.operation)
            .max(d.transaction);
        if need > BROKER_MAX_TRANSACTION_TIMEOUT {
            return Err(TxnError::Config {
                message: format!(
                    "a checkpoint interval of {} s needs a Kafka transaction timeout of {} s, more than the brokers' \
                     default maximum (transaction.max.timeout.ms = {} s): checkpoint more often",
                    interval.as_secs(),
                    need.as_secs(),
                    BROKER_MAX_TRANSACTION_TIMEOUT.as_secs()
                ),
            });
        }
        Ok(TxnTimeouts {
            transaction: need,
            ..d
        })
    }

    /// How long the caller waits for a call made with timeout `call` (the watchdog):
    /// rdkafka's `commit_transaction` flushes with the timeout, then commits with it.
    pub fn watchdog(&self, call: Duration) -> Duration {
        call.saturating_mul(2).saturating_add(self.grace)
    }
}

/// Transactions committed and aborted by a producer since it was opened (metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// `commit_epoch` succeeded.
    pub committed: u64,
    /// `abort` aborted an open transaction.
    pub aborted: u64,
}

/// One partition's offset to commit, with its metadata string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The partition.
    pub partition: u32,
    /// The next offset to read (one past the last processed record).
    pub offset: u64,
    /// Stored with the offset by the group coordinator (`streamc1;ck=<instance>/<id>`);
    /// at most the brokers' `offset.metadata.max.bytes` (4096 by default).
    pub metadata: String,
}

/// Offsets of one topic, consumed in one consumer group, to commit in the epoch's
/// transaction (`super::ConsumerControl::group_offsets` builds one).
#[derive(Clone, Debug)]
pub struct GroupOffsets {
    /// The consumer's group metadata (group, member, generation) when the offsets were
    /// taken: the broker refuses them from an older generation (KIP-447).
    pub group: super::GroupMetadata,
    /// The topic.
    pub topic: String,
    /// The offsets.
    pub offsets: Vec<OffsetAndMetadata>,
}

#[cfg(feature = "kafka")]
pub use imp::TxnProducer;

#[cfg(feature = "kafka")]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::{GroupOffsets, TxnError, TxnOp, TxnStats, TxnTimeouts};
    use crate::kafka::producer::{SendError, SharedProducer, SinkContext, delivery_failed};

    /// The shortest timeout passed to a librdkafka call (a shorter one times out before
    /// any request is answered).
    const MIN_CALL: Duration = Duration::from_millis(200);
    /// Backoff between retries of a retriable error, doubling up to the maximum.
    const BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);

    /// Where the producer is in the protocol.
    #[derive(Clone, Debug)]
    enum State {
        /// Transactions initialized, none open.
        Ready,
        /// A transaction is open, begun at `since`.
        Open { since: Instant },
        /// The open transaction failed: only `abort` is allowed.
        MustAbort(TxnError),
        /// Unusable: every call returns this error.
        Failed(TxnError),
    }

    /// How one librdkafka error is handled.
    enum Class {
        Retriable,
        Abortable(String),
        Fatal(String),
        Fenced(String),
        Config(String),
    }

    /// The job's transactional producer: init, begin, writes, commit with offsets,
    /// abort, each bounded (see the module documentation). Shared by the job's Kafka
    /// sinks (`Arc`); all methods take `&self` and are called from the driver's thread.
    pub struct TxnProducer {
        shared: Arc<SharedProducer>,
        transactional_id: String,
        timeouts: TxnTimeouts,
        /// `transaction.timeout.ms` as configured (the sinks' properties may set it).
        transaction_timeout: Duration,
        state: Mutex<State>,
        committed: AtomicU64,
        aborted: AtomicU64,
    }

    impl std::fmt::Debug for TxnProducer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TxnProducer")
                .field("transactional_id", &self.transactional_id)
                .field("brokers", &self.shared.brokers)
                .field("state", &*self.lock())
                .finish_non_exhaustive()
        }
    }

    fn get<'a>(cfg: &'a [(String, String)], key: &str) -> Option<&'a str> {
        cfg.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn millis(d: Duration) -> String {
        d.as_millis().to_string()
    }

    fn is_fenced(code: RDKafkaErrorCode) -> bool {
        matches!(
            code,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    }

    fn is_config(code: RDKafkaErrorCode) -> bool {
        matches!(
            code,
            RDKafkaErrorCode::InvalidTransactionTimeout
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::NotConfigured
        )
    }

    impl TxnProducer {
        /// Creates the transactional producer from `cfg` (a layered producer
        /// configuration, `super::super::producer_config`) with `transactional.id =
        /// transactional_id` and `transaction.timeout.ms = timeouts.transaction` (unless
        /// `cfg` sets it), and runs `init_transactions`, retried while retriable within
        /// `timeouts.operation`. It fences every earlier producer with the same id and
        /// aborts its open transaction (or completes one whose commit had begun).
        pub fn open(
            mut cfg: Vec<(String, String)>,
            transactional_id: &str,
            timeouts: TxnTimeouts,
        ) -> Result<TxnProducer, TxnError> {
            let config = |message: String| TxnError::Config { message };
            if transactional_id.is_empty() {
                return Err(config("a Kafka transactional id must not be empty".into()));
            }
            if let Some(id) = get(&cfg, "transactional.id")
                && id != transactional_id
            {
                return Err(config(format!(
                    "property `transactional.id` ({id}) cannot be set for a streamc sink: the job uses \
                     `{transactional_id}` (streamc-<job>-<instance>; choose the instance with --instance-id)"
                )));
            }
            if get(&cfg, "enable.idempotence").is_some_and(|v| !v.eq_ignore_ascii_case("true")) {
                return Err(config(
                    "property `enable.idempotence` cannot be false for exactly-once output: Kafka transactions \
                     need the idempotent producer"
                        .into(),
                ));
            }
            super::super::set(&mut cfg, "transactional.id", transactional_id);
            if get(&cfg, "transaction.timeout.ms").is_none() {
                super::super::set(
                    &mut cfg,
                    "transaction.timeout.ms",
                    &millis(timeouts.transaction),
                );
            }
            let transaction_timeout = match get(&cfg, "transaction.timeout.ms")
                .map(|v| v.trim().parse::<u64>())
            {
                Some(Ok(ms)) => Duration::from_millis(ms),
                Some(Err(_)) | None => {
                    return Err(config(
                        "property `transaction.timeout.ms` must be a number of milliseconds".into(),
                    ));
                }
            };
            if let Some(m) = get(&cfg, "message.timeout.ms")
                && m.trim()
                    .parse::<u64>()
                    .is_ok_and(|m| m == 0 || Duration::from_millis(m) > transaction_timeout)
            {
                return Err(config(format!(
                    "property `message.timeout.ms` ({m}) must be at most `transaction.timeout.ms` ({} ms) for \
                     exactly-once output: a message still undelivered when its transaction times out cannot be \
                     part of it",
                    transaction_timeout.as_millis()
                )));
            }
            let shared = SharedProducer::create(&cfg, true).map_err(|e| {
                config(format!(
                    "cannot create the transactional Kafka producer `{transactional_id}`: {e}"
                ))
            })?;
            let producer = TxnProducer {
                shared: Arc::new(shared),
                transactional_id: transactional_id.to_string(),
                timeouts,
                transaction_timeout,
                state: Mutex::new(State::Ready),
                committed: AtomicU64::new(0),
                aborted: AtomicU64::new(0),
            };
            let deadline = Instant::now() + timeouts.operation;
            producer.run(TxnOp::Init, deadline, |p, t| p.init_transactions(t))?;
            tracing::info!(
                transactional_id,
                brokers = %producer.shared.brokers,
                transaction_timeout_ms = transaction_timeout.as_millis() as u64,
                "Kafka transactions initialized (earlier producers with this id are fenced)"
            );
            Ok(producer)
        }

        /// The transactional id.
        pub fn transactional_id(&self) -> &str {
            &self.transactional_id
        }

        /// The brokers it talks to (`bootstrap.servers`).
        pub fn brokers(&self) -> &str {
            &self.shared.brokers
        }

        /// `transaction.timeout.ms`.
        pub fn transaction_timeout(&self) -> Duration {
            self.transaction_timeout
        }

        /// Whether a transaction is open (begun, neither committed nor aborted).
        pub fn in_transaction(&self) -> bool {
            matches!(*self.lock(), State::Open { .. } | State::MustAbort(_))
        }

        /// Transactions committed and aborted so far.
        pub fn stats(&self) -> TxnStats {
            TxnStats {
                committed: self.committed.load(Ordering::Relaxed),
                aborted: self.aborted.load(Ordering::Relaxed),
            }
        }

        pub(crate) fn shared(&self) -> &SharedProducer {
            &self.shared
        }

        /// Begins the next transaction (after `open`, a commit or an abort).
        pub fn begin(&self) -> Result<(), TxnError> {
            match self.state() {
                State::Ready => {}
                State::Open { .. } => {
                    return Err(TxnError::Fatal {
                        op: TxnOp::Begin,
                        message: "a transaction is already open: commit or abort it first".into(),
                    });
                }
                State::MustAbort(e) | State::Failed(e) => return Err(e),
            }
            // Failures recorded before belong to an aborted transaction.
            self.shared.deliveries().clear();
            let deadline = Instant::now() + self.timeouts.operation;
            self.run(TxnOp::Begin, deadline, |p, _| p.begin_transaction())?;
            self.set(State::Open {
                since: Instant::now(),
            });
            Ok(())
        }

        /// Writes one message to `topic` in the open transaction, with the sinks'
        /// backpressure: a full queue is served and the write retried, never dropped.
        pub fn send(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<(), TxnError> {
            match self.shared.send(topic, key, value, None) {
                Ok(()) => Ok(()),
                Err(SendError::Delivery(t, e)) => Err(self.must_abort(TxnError::Abortable {
                    op: TxnOp::Produce,
                    message: delivery_failed(&t, &e),
                })),
                Err(SendError::Stalled(message)) => Err(self.fail(TxnError::Fatal {
                    op: TxnOp::Produce,
                    message,
                })),
                Err(SendError::Produce(e)) => Err(self.produce_error(topic, &e)),
            }
        }

        /// A write librdkafka refused (not a full queue).
        fn produce_error(&self, topic: &str, e: &KafkaError) -> TxnError {
            let op = TxnOp::Produce;
            if let Some((code, reason)) = self.shared.producer.client().fatal_error() {
                return self.fatal_or_fenced(op, code, reason);
            }
            match self.state() {
                State::MustAbort(err) | State::Failed(err) => err,
                State::Ready => TxnError::Fatal {
                    op,
                    message: format!(
                        "a write to Kafka topic `{topic}` outside a transaction (begin was not called): {e}"
                    ),
                },
                State::Open { .. } => match e.rdkafka_error_code() {
                    // librdkafka refuses writes once the transaction has failed.
                    Some(RDKafkaErrorCode::State) => self.must_abort(TxnError::Abortable {
                        op,
                        message: format!(
                            "librdkafka refused a write to topic `{topic}`: the transaction has failed ({e})"
                        ),
                    }),
                    _ => self.fail(TxnError::Fatal {
                        op,
                        message: format!("cannot produce to Kafka topic `{topic}`: {e}"),
                    }),
                },
            }
        }

        /// The error of the transaction so far, without waiting: a delivery failed (the
        /// transaction must be aborted), or the producer failed.
        pub fn check(&self) -> Result<(), TxnError> {
            match self.state() {
                State::Ready => Ok(()),
                State::Open { .. } => match self.shared.failure(None) {
                    Some((t, e)) => Err(self.must_abort(TxnError::Abortable {
                        op: TxnOp::Produce,
                        message: delivery_failed(&t, &e),
                    })),
                    None => Ok(()),
                },
                State::MustAbort(e) | State::Failed(e) => Err(e),
            }
        }

        /// Waits until every message written so far is delivered or failed (at most
        /// `timeout`; longer is Fatal: the brokers are unreachable), then reports a
        /// failure as Abortable. `commit_epoch` does this itself.
        pub fn wait_delivered(&self, timeout: Duration) -> Result<(), TxnError> {
            let deadline = Instant::now() + timeout;
            loop {
                self.check()?;
                if self.shared.producer.in_flight_count() == 0 {
                    // The last reports may have been served just now.
                    return self.check();
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.fail(TxnError::Fatal {
                        op: TxnOp::Flush,
                        message: format!(
                            "{} message(s) to Kafka ({}) not delivered within {} s; are the brokers reachable?",
                            self.shared.producer.in_flight_count(),
                            self.shared.brokers,
                            timeout.as_secs()
                        ),
                    }));
                }
                self.shared
                    .producer
                    .poll(left.min(Duration::from_millis(50)));
            }
        }

        /// Commits the open transaction with `groups`' offsets: [`Self::send_offsets`],
        /// then [`Self::commit`], within one `timeouts.operation`. The messages written
        /// in the transaction and the offsets become visible together.
        pub fn commit_epoch(&self, groups: &[GroupOffsets]) -> Result<(), TxnError> {
            let deadline = Instant::now() + self.timeouts.operation;
            self.send_offsets_until(groups, deadline)?;
            self.commit_until(deadline)
        }

        /// Adds `groups`' offsets to the open transaction: one
        /// `send_offsets_to_transaction` per group (retried with the same offsets and
        /// group metadata while retriable, within `timeouts.operation`). They are
        /// committed with the transaction, or discarded with it. Offsets from a group
        /// generation the consumer has left are refused (KIP-447): Abortable. Groups
        /// with no offsets are skipped.
        pub fn send_offsets(&self, groups: &[GroupOffsets]) -> Result<(), TxnError> {
            self.send_offsets_until(groups, Instant::now() + self.timeouts.operation)
        }

        /// Commits the open transaction: `commit_transaction` (which first waits for
        /// the transaction's messages), resumed while retriable within
        /// `timeouts.operation`: a timed-out commit is never followed by an abort.
        pub fn commit(&self) -> Result<(), TxnError> {
            self.commit_until(Instant::now() + self.timeouts.operation)
        }

        /// The open transaction, or the error to return for `op`.
        fn require_open(&self, op: TxnOp) -> Result<(), TxnError> {
            match self.state() {
                State::Open { .. } => Ok(()),
                State::Ready => Err(TxnError::Fatal {
                    op,
                    message: "no transaction is open (begin was not called)".into(),
                }),
                State::MustAbort(e) | State::Failed(e) => Err(e),
            }
        }

        fn send_offsets_until(
            &self,
            groups: &[GroupOffsets],
            deadline: Instant,
        ) -> Result<(), TxnError> {
            self.require_open(TxnOp::SendOffsets)?;
            for g in groups.iter().filter(|g| !g.offsets.is_empty()) {
                let tpl = Arc::new(offsets_tpl(g).map_err(|e| {
                    self.fail(TxnError::Fatal {
                        op: TxnOp::SendOffsets,
                        message: format!("cannot build the offsets of topic `{}`: {e}", g.topic),
                    })
                })?);
                let cgm = g.group.native();
                self.run(TxnOp::SendOffsets, deadline, move |p, t| {
                    p.send_offsets_to_transaction(&tpl, &cgm, t)
                })?;
            }
            Ok(())
        }

        fn commit_until(&self, deadline: Instant) -> Result<(), TxnError> {
            self.require_open(TxnOp::Commit)?;
            self.run(TxnOp::Commit, deadline, |p, t| p.commit_transaction(t))?;
            self.set(State::Ready);
            self.shared.deliveries().clear();
            self.committed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }

        /// Aborts the open transaction: its messages and offsets are discarded (readers
        /// with `read_committed` skip them). Nothing to do when none is open. Resumed
        /// while retriable, within `timeouts.operation`.
        pub fn abort(&self) -> Result<(), TxnError> {
            match self.state() {
                State::Ready => return Ok(()),
                State::Open { .. } | State::MustAbort(_) => {}
                State::Failed(e) => return Err(e),
            }
            let deadline = Instant::now() + self.timeouts.operation;
            self.run(TxnOp::Abort, deadline, |p, t| p.abort_transaction(t))?;
            self.set(State::Ready);
            // Every message of the aborted transaction has been reported (the abort
            // waits for them, and this thread served the reports meanwhile).
            self.shared.deliveries().clear();
            self.aborted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn state(&self) -> State {
            self.lock().clone()
        }

        fn set(&self, state: State) {
            let mut s = self.lock();
            if !matches!(*s, State::Failed(_)) {
                *s = state;
            }
        }

        /// Marks the producer failed with `e` (kept: the first failure wins).
        fn fail(&self, e: TxnError) -> TxnError {
            let mut s = self.lock();
            match &*s {
                State::Failed(first) => first.clone(),
                State::Ready | State::Open { .. } | State::MustAbort(_) => {
                    tracing::error!(transactional_id = %self.transactional_id, error = %e, "Kafka transactional producer failed");
                    *s = State::Failed(e.clone());
                    e
                }
            }
        }

        /// The open transaction must be aborted because of `e`.
        fn must_abort(&self, e: TxnError) -> TxnError {
            let mut s = self.lock();
            match &*s {
                State::Failed(first) | State::MustAbort(first) => first.clone(),
                State::Ready | State::Open { .. } => {
                    tracing::warn!(transactional_id = %self.transactional_id, error = %e, "Kafka transaction must be aborted");
                    *s = State::MustAbort(e.clone());
                    e
                }
            }
        }

        /// A fatal error (`code`, `reason`): Fenced, unless the transaction has been
        /// open for `transaction.timeout.ms` (then the broker aborted it and bumped the
        /// epoch: Fatal, a restart resumes).
        fn fatal_or_fenced(&self, op: TxnOp, code: RDKafkaErrorCode, reason: String) -> TxnError {
            if !is_fenced(code) {
                return self.fail(TxnError::Fatal {
                    op,
                    message: reason,
                });
            }
            if let State::Open { since } = self.state()
                && since.elapsed() >= self.transaction_timeout
            {
                return self.fail(TxnError::Fatal {
                    op,
                    message: format!(
                        "{reason}: the transaction was open for {} s, longer than transaction.timeout.ms ({} s), \
                         and the broker aborted it",
                        since.elapsed().as_secs(),
                        self.transaction_timeout.as_secs()
                    ),
                });
            }
            self.fail(TxnError::Fenced {
                op,
                transactional_id: self.transactional_id.clone(),
                message: reason,
            })
        }

        fn classify(&self, e: &KafkaError) -> Class {
            match e {
                KafkaError::Transaction(rd) => {
                    let code = rd.code();
                    let text = rd.string();
                    if is_config(code) {
                        Class::Config(text)
                    } else if is_fenced(code) {
                        Class::Fenced(text)
                    } else if rd.is_fatal() {
                        match self.shared.producer.client().fatal_error() {
                            Some((c, reason)) if is_fenced(c) => Class::Fenced(reason),
                            Some((c, reason)) if is_config(c) => Class::Config(reason),
                            Some((_, reason)) => Class::Fatal(reason),
                            None => Class::Fatal(text),
                        }
                    } else if rd.txn_requires_abort() {
                        Class::Abortable(text)
                    } else if rd.is_retriable() {
                        Class::Retriable
                    } else {
                        // librdkafka: errors neither retriable nor abortable are fatal.
                        Class::Fatal(text)
                    }
                }
                // rdkafka's `commit_transaction` flushes first (serving delivery
                // reports); its timeout leaves the commit to be called again.
                KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => Class::Retriable,
                other => Class::Fatal(other.to_string()),
            }
        }

        /// Runs `f(producer, timeout)` until it succeeds, retrying (the same call)
        /// while its error is retriable and `deadline` has not passed; every attempt is
        /// bounded by the watchdog ([`Self::call`]).
        fn run<T, F>(&self, op: TxnOp, deadline: Instant, f: F) -> Result<T, TxnError>
        where
            T: Send + 'static,
            F: Fn(&BaseProducer<SinkContext>, Duration) -> KafkaResult<T> + Send + Sync + 'static,
        {
            let f = Arc::new(f);
            let mut backoff = BACKOFF;
            let mut attempts = 0u32;
            loop {
                if let State::Failed(e) = self.state() {
                    return Err(e);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = self.timeouts.call.min(left).max(MIN_CALL);
                let g = Arc::clone(&f);
                let result =
                    self.call(op, self.timeouts.watchdog(timeout), move |p| g(p, timeout))?;
                attempts += 1;
                let e = match result {
                    Ok(v) => {
                        if attempts > 1 {
                            tracing::info!(transactional_id = %self.transactional_id, %op, attempts, "Kafka transactional call succeeded after retries");
                        }
                        return Ok(v);
                    }
                    Err(e) => e,
                };
                match self.classify(&e) {
                    Class::Retriable => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(self.fail(TxnError::Fatal {
                                op,
                                message: format!(
                                    "still failing after {attempts} attempt(s) in {} s (last: {e}); are the \
                                     brokers ({}) reachable?",
                                    self.timeouts.operation.as_secs(),
                                    self.shared.brokers
                                ),
                            }));
                        }
                        tracing::debug!(transactional_id = %self.transactional_id, %op, error = %e, "retriable Kafka transaction error; retrying");
                        self.pause(backoff.min(left));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    // An abort that needs an abort cannot make progress.
                    Class::Abortable(message) if op == TxnOp::Abort => {
                        return Err(self.fail(TxnError::Fatal { op, message }));
                    }
                    Class::Abortable(message) => {
                        return Err(self.must_abort(TxnError::Abortable { op, message }));
                    }
                    Class::Fatal(message) => {
                        return Err(self.fail(TxnError::Fatal { op, message }));
                    }
                    Class::Fenced(message) => {
                        let code = match &e {
                            KafkaError::Transaction(rd) => rd.code(),
                            _ => RDKafkaErrorCode::Fenced,
                        };
                        let code = if is_fenced(code) {
                            code
                        } else {
                            RDKafkaErrorCode::Fenced
                        };
                        return Err(self.fatal_or_fenced(op, code, message));
                    }
                    Class::Config(message) => {
                        return Err(self.fail(TxnError::Config {
                            message: format!(
                                "Kafka transactional producer `{}` ({op}): {message}",
                                self.transactional_id
                            ),
                        }));
                    }
                }
            }
        }

        /// Waits `d`, serving delivery reports.
        fn pause(&self, d: Duration) {
            let until = Instant::now() + d;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                self.shared
                    .producer
                    .poll(left.min(Duration::from_millis(20)));
            }
        }

        /// Runs `f` on a thread of its own and waits for it at most `limit`, serving the
        /// producer's delivery reports meanwhile. A call that does not return in time is
        /// abandoned (it keeps the producer alive until it returns) and the producer is
        /// marked failed.
        fn call<T, F>(&self, op: TxnOp, limit: Duration, f: F) -> Result<KafkaResult<T>, TxnError>
        where
            T: Send + 'static,
            F: FnOnce(&BaseProducer<SinkContext>) -> KafkaResult<T> + Send + 'static,
        {
            let (tx, rx) = mpsc::sync_channel(1);
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("streamc-txn".into())
                .spawn(move || {
                    let result = f(&shared.producer);
                    // The caller may have given up waiting: nobody to tell then.
                    let _ = tx.send(result);
                });
            if let Err(e) = spawned {
                return Err(self.fail(TxnError::Fatal {
                    op,
                    message: format!("cannot start a thread for the call: {e}"),
                }));
            }
            let deadline = Instant::now() + limit;
            loop {
                self.shared.producer.poll(Duration::ZERO);
                match rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(result) => return Ok(result),
                    Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                    Err(RecvTimeoutError::Timeout) => {
                        return Err(self.fail(TxnError::Fatal {
                            op,
                            message: format!(
                                "librdkafka's {op} did not return within {} ms although its own timeout was shorter \
                                 (a known librdkafka hang: librdkafka#3013, librdkafka#5456); the producer is \
                                 abandoned: restart from the last checkpoint",
                                limit.as_millis()
                            ),
                        }));
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(self.fail(TxnError::Fatal {
                            op,
                            message: "the call's thread ended without an answer".into(),
                        }));
                    }
                }
            }
        }
    }

    /// The offsets of `g` as a partition list with metadata.
    fn offsets_tpl(g: &GroupOffsets) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(g.offsets.len());
        for o in &g.offsets {
            let p = i32::try_from(o.partition).unwrap_or(i32::MAX);
            let offset = i64::try_from(o.offset).unwrap_or(i64::MAX);
            let mut e = tpl.add_partition(&g.topic, p);
            e.set_offset(Offset::Offset(offset))?;
            if !o.metadata.is_empty() {
                e.set_metadata(&o.metadata);
            }
        }
        Ok(tpl)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A producer that never talked to a broker (none is needed to test the
        /// watchdog), in state `state`.
        fn unconnected(state: State) -> TxnProducer {
            let cfg = vec![
                ("bootstrap.servers".to_string(), "127.0.0.1:1".to_string()),
                ("transactional.id".to_string(), "streamc-test-0".to_string()),
            ];
            TxnProducer {
                shared: Arc::new(SharedProducer::create(&cfg, true).unwrap()),
                transactional_id: "streamc-test-0".into(),
                timeouts: TxnTimeouts::default(),
                transaction_timeout: Duration::from_secs(60),
                state: Mutex::new(state),
                committed: AtomicU64::new(0),
                aborted: AtomicU64::new(0),
            }
        }

        #[test]
        fn a_call_that_does_not_return_is_abandoned_and_the_producer_fails() {
            let p = unconnected(State::Open {
                since: Instant::now(),
            });
            let t0 = Instant::now();
            let err = p
                .call(TxnOp::SendOffsets, Duration::from_millis(300), |_| {
                    std::thread::sleep(Duration::from_secs(3));
                    Ok(())
                })
                .unwrap_err();
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            assert!(
                matches!(&err, TxnError::Fatal { op: TxnOp::SendOffsets, message } if message.contains("librdkafka#5456")),
                "{err}"
            );
            // Every later call returns the same error at once, the abort too.
            assert_eq!(p.commit_epoch(&[]).unwrap_err(), err);
            assert_eq!(p.abort().unwrap_err(), err);
            assert_eq!(p.begin().unwrap_err(), err);
            assert_eq!(p.send("t", None, b"x").unwrap_err(), err);
        }

        #[test]
        fn a_call_that_returns_in_time_is_answered() {
            let p = unconnected(State::Ready);
            let got = p
                .call(TxnOp::Begin, Duration::from_secs(5), |_| {
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(7)
                })
                .unwrap();
            assert_eq!(got.unwrap(), 7);
            assert!(matches!(p.state(), State::Ready));
        }

        #[test]
        fn retriable_errors_are_retried_until_the_budget_ends_then_fatal() {
            let p = unconnected(State::Ready);
            let attempts = Arc::new(AtomicU64::new(0));
            let n = Arc::clone(&attempts);
            let t0 = Instant::now();
            let err = p
                .run(
                    TxnOp::Commit,
                    Instant::now() + Duration::from_millis(700),
                    move |_, _| {
                        n.fetch_add(1, Ordering::Relaxed);
                        Err::<(), _>(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    },
                )
                .unwrap_err();
            assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
            assert!(attempts.load(Ordering::Relaxed) >= 2, "retried");
            assert!(
                matches!(&err, TxnError::Fatal { op: TxnOp::Commit, message } if message.contains("reachable")),
                "{err}"
            );
            assert!(matches!(p.state(), State::Failed(_)));
        }
    }
}

/// Without the `kafka` feature there is no transactional producer: `open` fails with
/// [`super::NO_KAFKA`] and no value of this type exists, so the driver compiles the
/// same with and without the feature.
#[cfg(not(feature = "kafka"))]
#[derive(Debug)]
pub struct TxnProducer {
    never: std::convert::Infallible,
}

#[cfg(not(feature = "kafka"))]
#[allow(missing_docs, clippy::missing_errors_doc)]
impl TxnProducer {
    pub fn open(
        _cfg: Vec<(String, String)>,
        _transactional_id: &str,
        _timeouts: TxnTimeouts,
    ) -> Result<TxnProducer, TxnError> {
        Err(TxnError::Config {
            message: super::NO_KAFKA.to_string(),
        })
    }
    pub fn transactional_id(&self) -> &str {
        match self.never {}
    }
    pub fn brokers(&self) -> &str {
        match self.never {}
    }
    pub fn transaction_timeout(&self) -> Duration {
        match self.never {}
    }
    pub fn in_transaction(&self) -> bool {
        match self.never {}
    }
    pub fn stats(&self) -> TxnStats {
        match self.never {}
    }
    pub fn begin(&self) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn send(&self, _topic: &str, _key: Option<&[u8]>, _value: &[u8]) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn check(&self) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn wait_delivered(&self, _timeout: Duration) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn commit_epoch(&self, _groups: &[GroupOffsets]) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn send_offsets(&self, _groups: &[GroupOffsets]) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn commit(&self) -> Result<(), TxnError> {
        match self.never {}
    }
    pub fn abort(&self) -> Result<(), TxnError> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_are_per_job_and_instance() {
        assert_eq!(transactional_id("page_views", "0"), "streamc-page_views-0");
        assert_eq!(transactional_id("j", "east-2"), "streamc-j-east-2");
    }

    #[test]
    fn the_transaction_timeout_outlasts_an_epoch() {
        let t = TxnTimeouts::for_checkpoint_interval(Duration::from_secs(1)).unwrap();
        assert_eq!(t.transaction, Duration::from_secs(62));
        let t = TxnTimeouts::for_checkpoint_interval(Duration::from_secs(30)).unwrap();
        assert_eq!(t.transaction, Duration::from_secs(120));
        let t = TxnTimeouts::for_checkpoint_interval(Duration::from_millis(100)).unwrap();
        assert_eq!(t.transaction, Duration::from_millis(60_200));
        assert!(t.transaction >= TxnTimeouts::default().transaction);
        let err = TxnTimeouts::for_checkpoint_interval(Duration::from_secs(600)).unwrap_err();
        assert!(
            matches!(&err, TxnError::Config { message } if message.contains("transaction.max.timeout.ms")),
            "{err}"
        );
        assert_eq!(
            TxnTimeouts::default().watchdog(Duration::from_secs(10)),
            Duration::from_secs(25)
        );
    }

    #[test]
    fn fenced_errors_tell_the_user_about_instance_ids() {
        let e = TxnError::Fenced {
            op: TxnOp::Commit,
            transactional_id: "streamc-j-0".into(),
            message: "Producer fenced".into(),
        };
        let text = e.to_string();
        assert!(text.contains("streamc-j-0"), "{text}");
        assert!(text.contains("--instance-id"), "{text}");
        assert!(text.contains("commit_transaction"), "{text}");
        let sink = crate::sink::SinkError::Other(Box::new(e.clone()));
        assert_eq!(TxnError::of_sink_error(&sink), Some(&e));
        assert_eq!(
            TxnError::of_sink_error(&crate::sink::SinkError::msg("x")),
            None
        );
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn without_the_feature_there_is_no_transactional_producer() {
        let err = TxnProducer::open(vec![], "streamc-j-0", TxnTimeouts::default()).unwrap_err();
        assert!(
            err.to_string().contains("built without Kafka support"),
            "{err}"
        );
    }
}
