//! Sinks: `stdout` and `file` (JSON lines), Kafka (`crate::kafka`, with the `kafka`
//! feature), Redis (`crate::redis`, with the `redis` feature).
//!
//! A [`Sink`] receives one serialized row (or one too-late event, or one dead-letter
//! record) per [`Sink::write`]; line-oriented sinks add the newline. Sinks buffer; the
//! driver calls [`Sink::flush`] at least every ~100 ms while rows are being written,
//! [`Sink::wait_delivered`] before it commits source offsets, and [`Sink::close`] at the
//! end. Every write error is returned, never dropped.

use std::fs::File;
use std::io::{self, BufWriter, Stdout, Write};
use std::path::{Path, PathBuf};

/// How a sink is configured in the spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SinkKind {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines, one row per line; the file is truncated when the job starts.
    File {
        /// Absolute, or relative to the working directory.
        path: String,
    },
    /// Messages to a Kafka topic: the row is the value, the message key is the one the
    /// pipeline gives (`Sink::write`'s key; None for late events and dead letters).
    /// Needs the runtime's `kafka` feature. The brokers come from `--brokers`,
    /// `STREAMC_BROKERS`, a `bootstrap.servers` property, or `127.0.0.1:9092`.
    Kafka {
        /// The topic (it must exist: streamc never creates topics).
        topic: String,
        /// librdkafka producer properties, passed through as is; they override the
        /// runtime's defaults (`enable.idempotence=true`, `acks=all`, `linger.ms=5`,
        /// `compression.type=none`).
        properties: Vec<(String, String)>,
    },
    /// Window results into Redis for dashboards (sorted sets, a change-log stream,
    /// notifications). Needs the runtime's `redis` feature.
    Redis(Box<crate::redis::RedisSinkSpec>),
    /// A windowed flow's results into the embedded dashboard (`serve:` in the spec,
    /// `--serve ADDR`). Needs the runtime's `serve` feature.
    Serve(Box<crate::serve::ServeSinkSpec>),
}

impl std::fmt::Display for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkKind::Stdout => f.write_str("stdout"),
            SinkKind::File { path } => write!(f, "file {path}"),
            SinkKind::Kafka { topic, .. } => write!(f, "kafka topic {topic}"),
            SinkKind::Redis(r) => write!(f, "redis key {}, channel {}", r.key, r.channel),
            SinkKind::Serve(s) => match &s.listen {
                Some(l) => write!(f, "dashboard of flow {} on {l}", s.feed.flow),
                None => write!(f, "dashboard of flow {} (off without --serve)", s.feed.flow),
            },
        }
    }
}

/// A named sink of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSpec {
    /// The sink's name in the spec.
    pub name: &'static str,
    /// Where it writes.
    pub kind: SinkKind,
}

/// Why a sink could not take a row.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The reader went away (a broken pipe on stdout, e.g. `| head`): a normal end of the
    /// job, not a failure.
    #[error("the reader closed the output")]
    Closed,
    /// An I/O error (disk full, permission denied, ...).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Errors of sinks that are not plain I/O (Kafka, Redis).
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl SinkError {
    /// An error with this message.
    pub fn msg(msg: impl Into<String>) -> Self {
        SinkError::Other(msg.into().into())
    }
}

/// Where rows go. Object-safe: the driver holds `Box<dyn Sink>`.
pub trait Sink {
    /// Writes one row. `key` is the message key for sinks that have keys (Kafka); it is
    /// only serialized when [`Sink::uses_key`] is true, otherwise None.
    fn write(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError>;
    /// Makes every row written so far visible to readers (Kafka: without waiting;
    /// librdkafka sends within `linger.ms`, and this reports delivery errors so far).
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Returns once every row written so far is delivered (Kafka: acknowledged by the
    /// brokers, bounded by a timeout), or fails. The driver calls it before committing
    /// source offsets: a committed record's outputs are never lost. Default: `flush`.
    fn wait_delivered(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// Flushes and releases the sink. No writes follow.
    fn close(&mut self) -> Result<(), SinkError>;
    /// The most bytes one record may have in this output (a Kafka topic's message
    /// limit), if it has a limit: a dead letter larger than this is written truncated
    /// rather than refused (which would stop the job on that record at every restart).
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }
    /// Checkpoints: makes everything written so far durable and returns the sink's
    /// position (a file's length), which a restore truncates back to
    /// ([`Sink::truncate`]): the file's rows then match the restored state exactly.
    /// None: the sink has no position (Kafka: its transactions; stdout: at-least-once).
    fn durable_position(&mut self) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }
    /// A restore: drops what was written after `position` (of
    /// [`Sink::durable_position`]). Sinks without a position ignore it.
    fn truncate(&mut self, position: u64) -> Result<(), SinkError> {
        let _ = position;
        Ok(())
    }
    /// Whether [`Sink::write`] wants the key (false for line-oriented sinks).
    fn uses_key(&self) -> bool {
        false
    }
    /// Whether the sink wants [`Sink::progress`] calls (dashboards: Redis).
    fn wants_progress(&self) -> bool {
        false
    }
    /// The job's counters (watermarks, lag, records in), a few times a second while it
    /// runs and once at the end, for sinks that report progress to their readers.
    /// Errors show at the next `flush`.
    fn progress(&mut self, metrics: &crate::metrics::Metrics) {
        let _ = metrics;
    }
}

/// Output buffer of line-oriented sinks.
const BUFFER: usize = 64 * 1024;

/// JSON lines on standard output. Buffered; stdout's lock is taken per flushed chunk
/// (not for the whole run) so that other output of the process is not blocked.
pub struct StdoutSink {
    out: BufWriter<Stdout>,
}

impl StdoutSink {
    /// A buffered writer on this process's stdout.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(BUFFER, io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

fn stdout_error(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::Closed
    } else {
        SinkError::Io(e)
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, _key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        self.out.write_all(value).map_err(stdout_error)?;
        self.out.write_all(b"\n").map_err(stdout_error)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(stdout_error)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
}

/// JSON lines in a file, truncated at start (kept, for a restore to truncate, in a
/// checkpointed job: [`FileSink::open_keep`]); parent directories are created.
pub struct FileSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Not created yet: [`FileSink::on_first_write`] defers creating a missing file
    /// (and its directories) to the first line.
    pending: bool,
}

impl FileSink {
    /// Creates (or truncates) the file at `path`, creating its parent directories.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        Ok(FileSink {
            path: path.to_owned(),
            out: Some(BufWriter::with_capacity(BUFFER, file)),
            pending: false,
        })
    }

    /// A file output that may stay empty (dead letters): an existing file is truncated
    /// at once, as by [`FileSink::create`] (no stale lines of an earlier run remain), a
    /// missing one is created with its directories only when the first line is written,
    /// so a run without invalid records leaves no file behind.
    pub fn on_first_write(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            return Self::create(path);
        }
        Ok(FileSink {
            path: path.to_owned(),
            out: None,
            pending: true,
        })
    }

    /// Opens the file at `path` for appending, keeping what it holds (a checkpointed
    /// job: the restore truncates it to the checkpoint's position, or, with no
    /// checkpoint to restore, to nothing).
    pub fn open_keep(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(FileSink {
            path: path.to_owned(),
            out: Some(BufWriter::with_capacity(BUFFER, file)),
            pending: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn out(&mut self) -> Result<&mut BufWriter<File>, SinkError> {
        if self.pending {
            self.pending = false;
            let created = Self::create(&self.path)?;
            self.out = created.out;
        }
        self.out
            .as_mut()
            .ok_or_else(|| SinkError::Io(io::Error::other("write after close")))
    }
}

impl Sink for FileSink {
    fn write(&mut self, _key: Option<&[u8]>, value: &[u8]) -> Result<(), SinkError> {
        let out = self.out()?;
        out.write_all(value)?;
        out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.pending {
            return Ok(());
        }
        Ok(self.out()?.flush()?)
    }

    fn durable_position(&mut self) -> Result<Option<u64>, SinkError> {
        if self.pending {
            return Ok(Some(0));
        }
        let out = self.out()?;
        out.flush()?;
        let file = out.get_ref();
        file.sync_data()?;
        Ok(Some(file.metadata()?.len()))
    }

    fn truncate(&mut self, position: u64) -> Result<(), SinkError> {
        if self.pending {
            return Ok(());
        }
        let out = self.out()?;
        out.flush()?;
        let file = out.get_ref();
        let len = file.metadata()?.len();
        if position > len {
            return Err(SinkError::Io(io::Error::other(format!(
                "{} has {len} bytes, fewer than the checkpoint's position {position}: it was changed since",
                self.path.display()
            ))));
        }
        // Appends go to the end, wherever that is now.
        file.set_len(position)?;
        file.sync_data()?;
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        // Never written: nothing to create.
        self.pending = false;
        if let Some(mut out) = self.out.take() {
            out.flush()?;
            // Dropping closes the file.
            drop(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_writes_lines_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "old content\nmore\n").unwrap();
        let mut s = crate::connectors::open_sink(&SinkKind::File {
            path: path.to_str().unwrap().into(),
        })
        .unwrap();
        assert!(!s.uses_key());
        s.write(Some(b"k"), br#"{"a":1}"#).unwrap();
        s.write(None, br#"{"a":2}"#).unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        s.write(None, b"x").unwrap();
        s.close().unwrap();
        s.close().unwrap();
        assert!(s.write(None, b"y").is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\nx\n"
        );
    }

    #[test]
    fn file_sink_creates_parent_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/z.jsonl");
        let mut s = FileSink::create(&path).unwrap();
        s.write(None, b"1").unwrap();
        s.close().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        assert_eq!(s.path(), path);
    }

    #[test]
    fn disk_full_is_an_error() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let mut s = FileSink::create("/dev/full").unwrap();
        // Buffered: the error shows at the latest on flush.
        let r = s.write(None, &[b'x'; 2 * BUFFER]).and_then(|()| s.flush());
        let e = r.unwrap_err();
        assert!(
            matches!(&e, SinkError::Io(io) if io.raw_os_error() == Some(28)),
            "{e:?}"
        );
    }

    #[test]
    fn unopenable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("f");
        std::fs::write(&blocker, "").unwrap();
        // A parent that is a file.
        assert!(FileSink::create(blocker.join("out.jsonl")).is_err());
    }
}
