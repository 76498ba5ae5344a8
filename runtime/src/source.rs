//! Sources: the embedded `file` (JSON lines, bounded) and `datagen`; Kafka later.

/// A schema field type, as the datagen needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Bool,
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
    String,
    Timestamp,
}

#[derive(Clone, Debug)]
pub struct FieldSpec {
    pub name: &'static str,
    pub ty: FieldType,
    pub nullable: bool,
    /// Some flow keys by this field: draw it from `DatagenSpec::keys` values.
    pub key: bool,
}

#[derive(Clone, Debug)]
pub struct DatagenSpec {
    pub rate: u64,
    pub keys: u64,
    pub max_delay: i64,
    pub late_fraction: f64,
    pub seed: u64,
    pub count: Option<u64>,
    pub start: Option<i64>,
    pub late_delay: i64,
    pub schema: Vec<FieldSpec>,
    /// Index into `schema` of the event-time field.
    pub event_time: usize,
}

#[derive(Clone, Debug)]
pub enum SourceKind {
    /// JSON lines; bounded. `offset` of a record is its 0-based line number.
    File { path: String },
    Datagen(DatagenSpec),
}

#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: &'static str,
    pub kind: SourceKind,
    pub max_out_of_orderness: i64,
    pub idle_timeout: Option<i64>,
    /// Index into `JobSpec::dead_letters`.
    pub dead_letter: usize,
}
