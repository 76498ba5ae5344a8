//! The spec as written, after structural decoding: every key known, every scalar of the
//! right shape, expressions parsed. Names are not resolved and types not checked yet
//! (that is `check`). Each declaration keeps the spans that diagnostics point at.
//!
//! Where a part of the spec had an error (already reported), the declaration holds what
//! could be read and marks itself incomplete, so that later passes do not report
//! follow-on errors.

use crate::diag::Span;
use crate::plan::{KafkaStart, Millis, Type, WindowKind};

use super::expr::Expr;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Spanned<T> {
        Spanned { value, span }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// None when missing or invalid.
    pub name: Option<Spanned<String>>,
    pub sources: Vec<SourceDecl>,
    pub flows: Vec<FlowDecl>,
    pub sinks: Vec<SinkDecl>,
    pub dead_letter: Option<Spanned<SinkBody>>,
    pub checkpoint: Option<CheckpointDecl>,
    pub state: Option<StateDecl>,
    pub serve: Option<ServeDecl>,
}

/// `serve: {listen, keep}`: the binary serves the dashboard itself (values validated).
#[derive(Clone, Debug, PartialEq)]
pub struct ServeDecl {
    /// The `serve` key.
    pub span: crate::diag::Span,
    pub listen: Option<String>,
    pub keep: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct SourceDecl {
    /// The key under `sources:`.
    pub name: Spanned<String>,
    /// None when the kind could not be read.
    pub kind: Option<SourceKindDecl>,
    pub schema: Vec<FieldDecl>,
    /// False when some schema entry could not be read (then unknown fields are not
    /// reported against it).
    pub schema_complete: bool,
    /// Schema fields whose declaration had an error (reported): they exist, their type
    /// is unknown, and uses of them are not reported again.
    pub poisoned: Vec<String>,
    pub event_time: Option<Spanned<String>>,
    pub max_out_of_orderness: Millis,
    pub idle_timeout: Option<Millis>,
    /// `watermark.max_ahead`: events further ahead of the wall clock are dead letters.
    pub max_ahead: Option<Millis>,
}

#[derive(Clone, Debug)]
pub enum SourceKindDecl {
    Kafka {
        topic: String,
        group_id: Option<String>,
        start: KafkaStart,
        properties: Vec<(String, String)>,
        /// The fields the topic's producers partition by (empty: not declared).
        partitioned_by: Vec<Spanned<String>>,
        /// `static_membership: true`: the consumer joins with a `group.instance.id`.
        static_membership: bool,
    },
    /// As written (relative paths are resolved by `check`).
    File {
        path: Spanned<String>,
    },
    Datagen(DatagenDecl),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatagenDecl {
    pub rate: u64,
    pub keys: u64,
    pub max_delay: Millis,
    pub late_fraction: f64,
    pub seed: u64,
    pub count: Option<u64>,
    pub start: Option<Millis>,
    /// How far behind the newest event a too-late event is placed; default: computed
    /// from the flows reading the source.
    pub late_delay: Option<Millis>,
    /// Schema fields drawn from `keys` values; default: the fields flows key by.
    pub key_fields: Option<Vec<Spanned<String>>>,
}

impl Default for DatagenDecl {
    fn default() -> Self {
        DatagenDecl {
            rate: 1000,
            keys: 1000,
            max_delay: 0,
            late_fraction: 0.0,
            seed: 0,
            count: None,
            start: None,
            late_delay: None,
            key_fields: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldDecl {
    pub name: Spanned<String>,
    pub ty: Type,
    pub nullable: bool,
    /// The type's span (`u64`, `f64?`).
    pub ty_span: Span,
}

#[derive(Clone, Debug)]
pub struct FlowDecl {
    /// The key under `flows:`.
    pub name: Spanned<String>,
    pub from: Option<Spanned<String>>,
    pub steps: Vec<StepDecl>,
    pub to: Vec<Spanned<String>>,
    pub late: Option<Spanned<String>>,
    /// The flow's body could not be read (reported): its missing parts are not reported.
    pub broken: bool,
}

#[derive(Clone, Debug)]
pub struct StepDecl {
    /// The step's key (`filter`, `window`, ...), or the list item when it has none.
    pub span: Span,
    /// None when the step could not be read (reported): the row after it is unknown and
    /// the order of the flow's steps is not checked.
    pub kind: Option<StepKind>,
}

/// An expression as written: parsed, or None after a syntax error (reported).
pub type ExprDecl = Option<Expr>;

#[derive(Clone, Debug)]
pub enum StepKind {
    Filter(ExprDecl),
    /// In declaration order; names are the map's keys.
    Map(Vec<(Spanned<String>, ExprDecl)>),
    KeyBy(Vec<Spanned<String>>),
    /// None when the window could not be read (reported).
    Window(Option<WindowDecl>),
    Aggregate(Vec<(Spanned<String>, ExprDecl)>),
}

impl StepKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            StepKind::Filter(_) => "filter",
            StepKind::Map(_) => "map",
            StepKind::KeyBy(_) => "key_by",
            StepKind::Window(_) => "window",
            StepKind::Aggregate(_) => "aggregate",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowDecl {
    /// Validated: sizes positive, sliding size a multiple of slide, offset in [0, size).
    pub kind: WindowKind,
    pub allowed_lateness: Millis,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SinkDecl {
    pub name: Spanned<String>,
    /// None when the sink could not be read (reported).
    pub body: Option<SinkBody>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkBody {
    Kafka {
        topic: String,
        properties: Vec<(String, String)>,
    },
    File {
        path: Spanned<String>,
    },
    Stdout,
    Redis(RedisDecl),
}

/// `redis: {key, channel, keep, ttl, stream, stream_max_len, url}` as written (values
/// already validated: `keep` and `stream_max_len` at least 1, `ttl` positive, `url` a
/// `redis://` URL).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RedisDecl {
    pub key: Spanned<String>,
    pub channel: Option<String>,
    pub keep: Option<u64>,
    pub ttl: Option<Millis>,
    pub stream: Option<String>,
    pub stream_max_len: Option<u64>,
    pub url: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointDecl {
    /// The `checkpoint` key.
    pub span: Span,
    pub interval: Millis,
    pub storage: Spanned<String>,
    /// `mode:`; None: exactly once.
    pub mode: Option<Spanned<CheckpointMode>>,
    /// `retain:`; None: the runtime's default (3).
    pub retain: Option<u64>,
    /// `s3:`, the options of `s3://` storage.
    pub s3: Option<S3Decl>,
}

/// `checkpoint.s3`: where the S3 server is; what is not given comes from the AWS
/// environment variables.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Decl {
    /// The `s3` key.
    pub span: Span,
    /// `endpoint:` (`http://127.0.0.1:9000`).
    pub endpoint: Option<Spanned<String>>,
    /// `region:`.
    pub region: Option<Spanned<String>>,
}

/// The delivery guarantee of a checkpointed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateBackend {
    Memory,
    RocksDb,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateDecl {
    pub backend: Spanned<StateBackend>,
    pub path: Option<Spanned<String>>,
}
