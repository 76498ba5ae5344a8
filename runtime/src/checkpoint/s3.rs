//! [`S3Storage`]: checkpoint storage in an S3 bucket (feature `s3`), through the
//! `object_store` crate.
//!
//! The [`Storage`] trait is synchronous (the driver is one thread, and checkpoints are
//! written between batches), so each call runs on a small current-thread tokio runtime
//! of the store's own; nothing else of the job runs on tokio.
//!
//! - Configuration: the usual AWS environment variables (`AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
//!   `AWS_ENDPOINT` / `AWS_ENDPOINT_URL_S3`, `AWS_ALLOW_HTTP`, ...), then the spec's
//!   `checkpoint.s3` options ([`S3Options`]), which win. An `http://` endpoint allows
//!   plain HTTP (a local S3-compatible server); requests are path-style unless
//!   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
//! - Objects above [`MULTIPART_ABOVE`] are uploaded in parts of [`PART_SIZE`]; an upload
//!   that fails is aborted, so no parts are left behind to be billed.
//! - Requests are retried with backoff (at most [`MAX_RETRIES`] times, for at most
//!   [`RETRY_TIMEOUT`]); after that the call fails, and the driver skips that checkpoint
//!   (see `driver/drive.rs`): the job goes on and the next checkpoint tries again.
//! - [`put_new`](Storage::put_new) is a conditional put (`If-None-Match: *`): the
//!   manifest, the commit point, is never overwritten. A server that does not implement
//!   conditional puts gets a plain put, with a warning logged once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::storage::{S3Options, Storage, invalid_key, parse_s3_url, validate_key};

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_ABOVE: usize = 16 << 20;
/// The size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Most retries of one request.
pub const MAX_RETRIES: usize = 10;
/// How long one call keeps retrying before it fails.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one HTTP request (a part of at most [`PART_SIZE`] bytes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checkpoint storage under `s3://<bucket>/<prefix>`.
pub struct S3Storage {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    bucket: String,
    /// The key prefix, without leading or trailing `/`; may be empty.
    prefix: String,
    /// Set once the server answered a conditional put with "not implemented".
    no_conditional_put: AtomicBool,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Storage {
    /// Storage under `url` (`s3://bucket/prefix`), configured from the environment and
    /// `options`. Nothing is sent to the server yet.
    pub fn open(url: &str, options: &S3Options) -> Result<Self, String> {
        let (bucket, prefix) = parse_s3_url(url)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        let mut client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        if let Some(endpoint) = endpoint {
            if endpoint.starts_with("http://") {
                client = client.with_allow_http(true);
            }
            builder = builder.with_endpoint(endpoint);
        }
        // `with_client_options` below replaces the client options `from_env` read, so
        // AWS_ALLOW_HTTP is applied to ours.
        if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            client = client.with_allow_http(true);
        }
        let store = builder
            .with_client_options(client)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
            })
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 client's runtime: {e}"))?;
        Ok(S3Storage {
            store,
            runtime,
            bucket,
            prefix,
            no_conditional_put: AtomicBool::new(false),
        })
    }

    fn path(&self, key: &str, allow_empty: bool) -> io::Result<Path> {
        validate_key(key, allow_empty).map_err(|reason| invalid_key(key, reason))?;
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        };
        Path::parse(&full).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// The key of an object path: the path without this storage's prefix.
    fn key_of<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    async fn put_with(&self, path: &Path, bytes: &[u8], mode: PutMode) -> object_store::Result<()> {
        if bytes.len() <= MULTIPART_ABOVE || !matches!(mode, PutMode::Overwrite) {
            let payload = PutPayload::from(bytes.to_vec());
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            return self.store.put_opts(path, payload, opts).await.map(|_| ());
        }
        let mut upload = self.store.put_multipart(path).await?;
        let uploaded = async {
            for part in bytes.chunks(PART_SIZE) {
                upload.put_part(PutPayload::from(part.to_vec())).await?;
            }
            upload.complete().await
        }
        .await;
        if let Err(e) = uploaded {
            // Nothing of a failed upload is left behind (parts are billed until aborted).
            if let Err(abort) = upload.abort().await {
                tracing::warn!(%path, error = %abort, "could not abort a failed multipart upload");
            }
            return Err(e);
        }
        Ok(())
    }
}

/// An `object_store` error as an `io::Error` of the matching kind, its message whole.
fn io_error(e: object_store::Error) -> io::Error {
    let kind =
        match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::InvalidPath { .. } => io::ErrorKind::InvalidInput,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    io::Error::new(kind, message)
}

impl Storage for S3Storage {
    fn put(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let p = self.path(path, false)?;
        self.runtime
            .block_on(self.put_with(&p, bytes, PutMode::Overwrite))
            .map_err(io_error)
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let p = self.path(path, false)?;
        if !self.no_conditional_put.load(Ordering::Relaxed) {
            match self
                .runtime
                .block_on(self.put_with(&p, bytes, PutMode::Create))
            {
                Ok(()) => return Ok(()),
                Err(
                    e @ (object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }),
                ) => {
                    tracing::warn!(
                        bucket = %self.bucket,
                        error = %e,
                        "the S3 server does not implement conditional puts (If-None-Match); \
                         manifests are written with plain puts"
                    );
                    self.no_conditional_put.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(io_error(e)),
            }
        }
        self.runtime
            .block_on(self.put_with(&p, bytes, PutMode::Overwrite))
            .map_err(io_error)
    }

    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let p = self.path(path, false)?;
        self.runtime.block_on(async {
            match self.store.get(&p).await {
                Ok(result) => Ok(Some(result.bytes().await.map_err(io_error)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_error(e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let p = self.path(prefix, true)?;
        let root = if p.as_ref().is_empty() {
            None
        } else {
            Some(&p)
        };
        let metas = self
            .runtime
            .block_on(async { self.store.list(root).collect::<Vec<_>>().await });
        let mut keys = Vec::with_capacity(metas.len());
        for meta in metas {
            let meta = meta.map_err(io_error)?;
            let Some(key) = self.key_of(meta.location.as_ref()) else {
                continue;
            };
            // Objects that are not storage keys (written by something else) are not
            // listed, as FileStorage skips such files.
            if validate_key(key, false).is_ok() {
                keys.push(key.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, path: &str) -> io::Result<()> {
        let p = self.path(path, false)?;
        match self.runtime.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        if prefix.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to delete every object of the storage (empty prefix)",
            ));
        }
        for key in self.list(prefix)? {
            self.delete(&key)?;
        }
        Ok(())
    }

    fn location(&self, path: &str) -> String {
        let mut s = format!("s3://{}", self.bucket);
        for part in [self.prefix.as_str(), path] {
            if !part.is_empty() {
                s.push('/');
                s.push_str(part);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_under_the_prefix_and_back() {
        let s = S3Storage::open(
            "s3://bkt/ck/job",
            &S3Options {
                endpoint: Some("http://127.0.0.1:1".into()),
                region: Some("us-east-1".into()),
            },
        )
        .unwrap();
        assert_eq!(s.path("a/b", false).unwrap().as_ref(), "ck/job/a/b");
        assert_eq!(s.path("", true).unwrap().as_ref(), "ck/job");
        assert_eq!(s.key_of("ck/job/a/b"), Some("a/b"));
        assert_eq!(s.key_of("ck/jobx/a"), None);
        assert_eq!(s.location("a/b"), "s3://bkt/ck/job/a/b");
        assert_eq!(s.location(""), "s3://bkt/ck/job");
        assert!(s.path("../x", false).is_err());
        assert!(s.delete_prefix("").is_err());
    }
}
