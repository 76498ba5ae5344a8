//! Sinks: `stdout` and `file` (JSON lines); Kafka and Redis later.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    Stdout,
    /// JSON lines, one row per line; the file is truncated when the job starts.
    File { path: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSpec {
    pub name: &'static str,
    pub kind: SinkKind,
}
