//! The checked logical plan: what the front end (`spec` + `check`) produces once a spec
//! has no errors, and what `ir`, `explain` and `codegen` consume.
//!
//! Architecture invariant: every name in a `Plan` has been resolved and every expression
//! type-checked. Code generation never reports a user error; anything it cannot handle
//! is an internal error (a streamc bug).

use std::path::PathBuf;

/// A value type of the spec language (`docs/pipeline-spec.md`, "Values").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Bool,
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
    String,
    /// Epoch milliseconds (i64 at run time).
    Timestamp,
}

impl Type {
    pub fn is_integer(self) -> bool {
        matches!(self, Type::I32 | Type::I64 | Type::U32 | Type::U64)
    }
    pub fn is_float(self) -> bool {
        matches!(self, Type::F32 | Type::F64)
    }
    pub fn is_numeric(self) -> bool {
        self.is_integer() || self.is_float()
    }
    /// The name used in specs and diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            Type::Bool => "bool",
            Type::I32 => "i32",
            Type::I64 => "i64",
            Type::U32 => "u32",
            Type::U64 => "u64",
            Type::F32 => "f32",
            Type::F64 => "f64",
            Type::String => "string",
            Type::Timestamp => "timestamp",
        }
    }
}

/// A named, typed column of a row.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: Type,
    /// `T?` in a schema, or an expression that can be null.
    pub nullable: bool,
}

/// Durations and times are epoch milliseconds.
pub type Millis = i64;

#[derive(Clone, Debug)]
pub struct Plan {
    /// `[a-z][a-z0-9_]*`
    pub name: String,
    /// Absolute path of the spec file.
    pub spec_path: PathBuf,
    pub sources: Vec<SourcePlan>,
    /// In topological order: a flow's input comes before it.
    pub flows: Vec<FlowPlan>,
    pub sinks: Vec<SinkPlan>,
    /// The declared `dead_letter`, or None: then each source uses its default
    /// (see `SourcePlan::default_dead_letter`).
    pub dead_letter: Option<SinkKind>,
    pub checkpoint: Option<CheckpointPlan>,
    pub state: StatePlan,
    /// `serve:`: the binary serves the dashboard of its windowed flows (`--serve`).
    pub serve: Option<ServePlan>,
}

/// The embedded dashboard.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ServePlan {
    /// Where it serves unless `--serve` says; None: only with `--serve`.
    pub listen: Option<String>,
    /// Windows kept in memory per key; None: 60.
    pub keep: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct SourcePlan {
    pub name: String,
    pub kind: SourceKind,
    /// Schema fields in declaration order.
    pub schema: Vec<Field>,
    /// Index into `schema` of the event-time field (type `timestamp`, or an integer
    /// type read as epoch millis).
    pub event_time: usize,
    pub max_out_of_orderness: Millis,
    pub idle_timeout: Option<Millis>,
    /// Events whose time is further than this ahead of the wall clock at arrival go to
    /// the dead letters (`watermark.max_ahead`).
    pub max_ahead: Option<Millis>,
    /// Where invalid events go when the spec declares no `dead_letter`.
    pub default_dead_letter: SinkKind,
}

#[derive(Clone, Debug)]
pub enum SourceKind {
    Kafka {
        topic: String,
        group_id: String,
        start: KafkaStart,
        properties: Vec<(String, String)>,
        /// Schema fields the topic's producers partition by (empty: not declared).
        partitioned_by: Vec<String>,
        /// Join the group with `group.instance.id = <group id>-<instance id>`.
        static_membership: bool,
    },
    /// JSON lines, bounded. Absolute path.
    File {
        path: PathBuf,
    },
    Datagen(DatagenPlan),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaStart {
    Earliest,
    Latest,
}

#[derive(Clone, Debug)]
pub struct DatagenPlan {
    /// Events per second (wall-clock pacing); 0 = as fast as possible.
    pub rate: u64,
    /// Cardinality of key fields.
    pub keys: u64,
    /// Events are out of order by up to this much.
    pub max_delay: Millis,
    /// Fraction of events made too late for every flow that reads the source.
    pub late_fraction: f64,
    pub seed: u64,
    /// Stop after this many events (bounded source); None = unbounded.
    pub count: Option<u64>,
    /// Event time of the first event; None = wall clock at start.
    pub start: Option<Millis>,
    /// How far behind the newest event time a late event is placed (computed by the
    /// compiler from the flows: out-of-orderness + window extent + allowed lateness).
    pub late_delay: Millis,
    /// Schema fields that some flow keys by: drawn from `keys` distinct values.
    pub key_fields: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SinkPlan {
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkKind {
    Kafka {
        topic: String,
        properties: Vec<(String, String)>,
    },
    /// JSON lines. Absolute path.
    File {
        path: PathBuf,
    },
    Stdout,
    /// Window results of one flow into Redis, for dashboards.
    Redis(RedisPlan),
}

/// A Redis sink: the spec's settings, defaults not yet applied (the runtime's are).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RedisPlan {
    /// Key template; its `{field}` placeholders are key fields of the flow.
    pub key: String,
    /// PUBLISH channel; None: `streamc:<pipeline>:<sink>`.
    pub channel: Option<String>,
    /// Windows kept per key; None: the runtime's default (1000).
    pub keep: Option<u64>,
    /// Keys expire this long after their last change; None: never.
    pub ttl: Option<Millis>,
    /// The change log (a Redis Stream); None: `streamc:changes`.
    pub stream: Option<String>,
    /// Its approximate length; None: the runtime's default (100000).
    pub stream_max_len: Option<u64>,
    /// `redis://...`; None: `--redis`, `STREAMC_REDIS` or redis://127.0.0.1:6379.
    pub url: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CheckpointPlan {
    pub interval: Millis,
    /// `file:///abs/dir` or `s3://bucket/prefix`.
    pub storage: String,
    pub exactly_once: bool,
    /// Complete checkpoints kept per instance; None: the runtime's default.
    pub retain: Option<u64>,
    /// `checkpoint.s3` (only with `s3://` storage); what is None comes from the AWS
    /// environment at run time.
    pub s3: S3Plan,
}

/// The options of `s3://` checkpoint storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Plan {
    /// `http(s)://host[:port]`, without a trailing `/`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl CheckpointPlan {
    /// Whether checkpoints go to S3 (the binary links the S3 client).
    pub fn uses_s3(&self) -> bool {
        self.storage.starts_with("s3://")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum StatePlan {
    Memory,
    RocksDb { path: PathBuf },
}

/// Where a flow reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Source(usize),
    Flow(usize),
}

#[derive(Clone, Debug)]
pub struct FlowPlan {
    pub name: String,
    pub input: Input,
    /// The row the flow receives: the source schema, or the parent flow's `output`.
    pub input_schema: Vec<Field>,
    /// Stateless steps in order, before any window.
    pub steps: Vec<RowStep>,
    /// Fields (of the row after `steps`) the flow keys by; empty = global window.
    pub key_by: Vec<Field>,
    pub window: Option<WindowPlan>,
    /// Present exactly when `window` is.
    pub aggregate: Option<AggregatePlan>,
    /// The rows this flow emits: for a windowed flow the key fields, `window_start`,
    /// `window_end` (timestamp), the aggregates, `revision` (u32) and `retracted`
    /// (bool); for a stateless flow the row after `steps`.
    pub output: Vec<Field>,
    /// Indexes into `Plan::sinks`.
    pub to: Vec<usize>,
    /// Index into `Plan::sinks` for too-late events.
    pub late: Option<usize>,
    /// Partition-aligned (`docs/pipeline-spec.md`, "Partitions, restarts and rebalances"):
    /// the flow reads a source that declares `partitioned_by`, keys by all of those
    /// fields, and no step before the key changes them, so every key lives in one
    /// partition. Its windows follow their partition's watermark and its state is kept
    /// per partition. Always false for flows without `key_by` or reading a flow.
    pub aligned: bool,
}

#[derive(Clone, Debug)]
pub enum RowStep {
    Filter(TExpr),
    /// Adds or replaces fields; each expression sees the row as it was before this step.
    Map(Vec<(String, TExpr)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: Millis, offset: Millis },
    Sliding { size: Millis, slide: Millis },
    Session { gap: Millis },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowPlan {
    pub kind: WindowKind,
    pub allowed_lateness: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggFn {
    /// `count()`
    CountAll,
    /// `count(x)`: non-null values.
    Count,
    CountIf,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    CountDistinct,
    ApproxCountDistinct,
    Quantile,
}

/// One accumulator: an aggregate call, deduplicated within its `aggregate` block.
#[derive(Clone, Debug)]
pub struct AccPlan {
    pub func: AggFn,
    /// The argument, typed against the row after the flow's steps; None for `count()`.
    /// For `sum`, `avg` and `quantile` it is already cast to the accumulator's type `ty`
    /// (i64, u64 or f64 for `sum`; f64 for `avg` and `quantile`).
    pub arg: Option<TExpr>,
    /// `quantile`'s q in [0, 1].
    pub q: Option<f64>,
    /// Result type and nullability of the call (`count*` -> u64 not null; `sum` of an
    /// integer -> i64 (u64 for unsigned), of a float -> f64, nullable; `avg` and
    /// `quantile` -> f64 nullable; min/max/first/last -> the argument's type, nullable).
    pub ty: Type,
    pub nullable: bool,
}

#[derive(Clone, Debug)]
pub struct AggregatePlan {
    pub accs: Vec<AccPlan>,
    /// Output columns in declaration order. Their expressions reference accumulators
    /// through `TExprKind::Acc(i)`, never row fields.
    pub outputs: Vec<(String, TExpr)>,
}

/// A type-checked expression.
#[derive(Clone, Debug)]
pub struct TExpr {
    pub kind: TExprKind,
    /// Result type; `None` only for the literal NULL.
    pub ty: Option<Type>,
    pub nullable: bool,
}

#[derive(Clone, Debug)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Integer division on integers (null on division by zero), float division when
    /// either side is a float or both sides are counts ("a ratio of counts is a float").
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Lower,
    Upper,
    Length,
    Contains,
    StartsWith,
    EndsWith,
    Abs,
    Round,
    Floor,
    Ceil,
    Coalesce,
}

#[derive(Clone, Debug)]
pub enum TExprKind {
    Lit(Lit),
    /// A column of the current row, by name (resolved: it exists in the row).
    Field(String),
    /// Inside aggregate outputs: the value of accumulator `i` of the block.
    Acc(usize),
    /// Operands are already converted to a common type `operand_ty` (see `Cast`).
    Binary {
        op: BinOp,
        lhs: Box<TExpr>,
        rhs: Box<TExpr>,
    },
    Unary {
        op: UnOp,
        expr: Box<TExpr>,
    },
    /// Numeric conversion inserted by the type checker (e.g. i32 -> i64, i64 -> f64).
    Cast {
        expr: Box<TExpr>,
        to: Type,
    },
    IsNull {
        expr: Box<TExpr>,
        negated: bool,
    },
    /// `expr [NOT] IN (list)`; list items are converted to the type of `expr`.
    InList {
        expr: Box<TExpr>,
        list: Vec<TExpr>,
        negated: bool,
    },
    /// `CASE WHEN c THEN v ... ELSE e END`; all branches converted to the result type.
    Case {
        branches: Vec<(TExpr, TExpr)>,
        otherwise: Option<Box<TExpr>>,
    },
    /// Arguments converted to the function's parameter types.
    Call {
        func: Func,
        args: Vec<TExpr>,
    },
}
