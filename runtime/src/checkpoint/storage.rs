//! Object storage for checkpoints: the [`Storage`] trait, its local implementation,
//! [`FileStorage`], and [`open_storage_with`], which also opens `s3://` storage
//! ([`S3Storage`](super::s3::S3Storage), feature `s3`).
//!
//! The trait is the smallest thing an object store offers (put, conditional put, get,
//! list by prefix, delete), so the S3 implementation is a thin adapter: no rename, no
//! directories beyond key prefixes, no partial reads.
//!
//! Keys are `/`-separated relative paths (`job/0/chk-00000000000000000007/task.bin`).
//! Every segment is non-empty, is not `.` or `..`, does not start with `.` (names
//! starting with a dot are the storage's own, e.g. temporary files) and contains no
//! `\` or NUL; a key never starts or ends with `/`. So a key never escapes the
//! storage's root.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CheckpointError, Result};

/// A synchronous object store: whole objects, written atomically.
///
/// Architecture Invariant: a reader sees an object whole or not at all, and an object
/// is durable once [`put`](Storage::put) returns. The checkpoint store builds its commit
/// point on this (the manifest is put last).
///
/// `Send + Sync`, so a store can be shared with a thread that writes checkpoints in the
/// background (both `FileStorage` and `object_store` stores are).
pub trait Storage: Send + Sync {
    /// Writes `bytes` as the object `path`, replacing any object of that path.
    /// Atomic (readers see the old object, or none, or the new one whole) and durable
    /// when it returns.
    fn put(&self, path: &str, bytes: &[u8]) -> io::Result<()>;

    /// Writes `bytes` as the object `path` only if there is none: an error of kind
    /// [`io::ErrorKind::AlreadyExists`] otherwise, the existing object untouched. Atomic
    /// and durable as [`put`](Storage::put). (S3: a conditional put, `If-None-Match: *`;
    /// on a server without conditional puts, a plain put.)
    fn put_new(&self, path: &str, bytes: &[u8]) -> io::Result<()>;

    /// The object `path`, or None if there is none.
    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>>;

    /// The keys of every object under `prefix` (a key prefix naming a "directory":
    /// objects `prefix/...` at any depth; `""` lists everything), sorted. A prefix with
    /// nothing under it gives an empty list.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// Deletes the object `path`; an object that does not exist is not an error.
    fn delete(&self, path: &str) -> io::Result<()>;

    /// Deletes every object under `prefix` (as [`list`](Storage::list) names them);
    /// `prefix` must not be empty. Nothing under it is not an error.
    fn delete_prefix(&self, prefix: &str) -> io::Result<()>;

    /// Where `path` is, for messages: a file path, an `s3://` URL. `""` is the root.
    fn location(&self, path: &str) -> String;
}

/// The spec's `checkpoint.s3` options; what is not set comes from the AWS environment
/// variables (see [`S3Storage`](super::s3::S3Storage)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The endpoint URL (`http://127.0.0.1:9000` for a local S3-compatible server).
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
}

/// [`open_storage_with`] without `checkpoint.s3` options.
pub fn open_storage(url: &str) -> Result<Box<dyn Storage>> {
    open_storage_with(url, &S3Options::default())
}

/// Opens the storage a URL names: `file:///abs/dir`, or a plain absolute or relative
/// directory path (relative to the working directory now), or `s3://bucket/prefix`
/// (with `s3`'s options; [`CheckpointError::S3NotBuilt`] in a build without the
/// feature `s3`). A directory need not exist yet; it is created by the first write.
pub fn open_storage_with(url: &str, s3: &S3Options) -> Result<Box<dyn Storage>> {
    let bad = |reason: &str| CheckpointError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if url.is_empty() {
        return Err(bad("empty"));
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(bad(
                "a file URL needs an absolute path and no host: file:///abs/dir",
            ));
        }
        PathBuf::from(rest)
    } else if let Some((scheme, _)) = url.split_once("://") {
        if scheme == "s3" {
            return open_s3(url, s3);
        }
        return Err(bad(&format!(
            "unknown scheme `{scheme}://` (file://, s3:// or a directory path)"
        )));
    } else {
        PathBuf::from(url)
    };
    let root = std::path::absolute(&path).map_err(|e| bad(&e.to_string()))?;
    Ok(Box::new(FileStorage::new(root)))
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without slashes at its
/// ends), checking the bucket name (S3's rules: 3-63 characters of `[a-z0-9.-]`,
/// starting and ending with a letter or digit) and the prefix (storage key rules).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| "an S3 URL starts with `s3://`".to_string())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if bucket.is_empty() {
        return Err("no bucket: write s3://bucket/prefix".into());
    }
    if !(3..=63).contains(&bucket.len())
        || !bucket.chars().all(ok_char)
        || !ends_ok(bucket.chars().next())
        || !ends_ok(bucket.chars().last())
    {
        return Err(format!(
            "`{bucket}` is not an S3 bucket name (3 to 63 characters of lowercase letters, \
             digits, `.` and `-`, starting and ending with a letter or digit)"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    validate_key(prefix, true).map_err(|reason| format!("the prefix `{prefix}`: {reason}"))?;
    Ok((bucket.to_string(), prefix.to_string()))
}

#[cfg(feature = "s3")]
fn open_s3(url: &str, options: &S3Options) -> Result<Box<dyn Storage>> {
    match super::s3::S3Storage::open(url, options) {
        Ok(s) => Ok(Box::new(s)),
        Err(reason) => Err(CheckpointError::BadUrl {
            url: url.to_string(),
            reason,
        }),
    }
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str, _: &S3Options) -> Result<Box<dyn Storage>> {
    Err(CheckpointError::S3NotBuilt {
        url: url.to_string(),
    })
}

/// Checks that `key` is a storage key (see the module docs); `""` is allowed only
/// where `allow_empty` (the root prefix).
pub fn validate_key(key: &str, allow_empty: bool) -> Result<(), &'static str> {
    if key.is_empty() {
        return if allow_empty { Ok(()) } else { Err("empty") };
    }
    if key.contains('\\') || key.contains('\0') {
        return Err("contains `\\` or NUL");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err("a leading, trailing or double `/`");
        }
        if segment == "." || segment == ".." {
            return Err("a `.` or `..` segment (paths must not leave the storage root)");
        }
        if segment.starts_with('.') {
            return Err("a segment starting with `.` (reserved for temporary files)");
        }
    }
    Ok(())
}

pub(super) fn invalid_key(key: &str, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid storage key `{key}`: {reason}"),
    )
}

/// Checkpoint storage in a local directory.
///
/// `put` writes a temporary file (`.<name>.tmp-<pid>-<n>` beside the target), fsyncs
/// it, renames it over the target and fsyncs the directory; directories it creates are
/// made durable too. Temporary files of a crashed `put` are never listed and go with
/// their directory when it is deleted.
#[derive(Debug, Clone)]
pub struct FileStorage {
    root: PathBuf,
}

/// Makes temporary file names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileStorage {
    /// Storage rooted at `root` (created on the first write if missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileStorage { root: root.into() }
    }

    /// The directory all keys are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, key: &str, allow_empty: bool) -> io::Result<PathBuf> {
        validate_key(key, allow_empty).map_err(|reason| invalid_key(key, reason))?;
        let mut path = self.root.clone();
        path.extend(key.split('/').filter(|s| !s.is_empty()));
        Ok(path)
    }

    /// Creates `dir` and its missing ancestors, fsyncing the parent of each directory
    /// created so that it survives a crash.
    fn create_dirs(dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at {
            if d.is_dir() {
                break;
            }
            missing.push(d);
            at = d.parent();
        }
        for d in missing.into_iter().rev() {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            if let Some(parent) = d.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// The directory of `path` (created), its file, and a fresh temporary name beside
    /// it (`.<name>.tmp-<pid>-<n>`).
    fn prepare(&self, path: &str) -> io::Result<(PathBuf, PathBuf, PathBuf)> {
        let target = self.resolve(path, false)?;
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(invalid_key(path, "no file name"));
        };
        Self::create_dirs(dir)?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        Ok((dir.to_path_buf(), target, tmp))
    }

    fn write_temp(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::create_new(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

/// fsync of a directory: makes the entries created, renamed or removed in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for FileStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let (dir, target, tmp) = self.prepare(path)?;
        let result = Self::write_temp(&tmp, bytes).and_then(|()| fs::rename(&tmp, &target));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        sync_dir(&dir)
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let (dir, target, tmp) = self.prepare(path)?;
        // A hard link, unlike a rename, fails if the target exists: the object appears
        // whole, or not at all, and never replaces another.
        let result = Self::write_temp(&tmp, bytes).and_then(|()| fs::hard_link(&tmp, &target));
        let _ = fs::remove_file(&tmp);
        result?;
        sync_dir(&dir)
    }

    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.resolve(path, false)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.resolve(prefix, true)?;
        let mut keys = Vec::new();
        walk(&dir, prefix, &mut keys)?;
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, path: &str) -> io::Result<()> {
        let target = self.resolve(path, false)?;
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        // Durable, so that deletions the checkpoint store orders (a manifest before the
        // blobs it references) stay ordered across a crash.
        match target.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        let dir = self.resolve(prefix, false)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }

    fn location(&self, path: &str) -> String {
        let mut p = self.root.clone();
        p.extend(path.split('/').filter(|s| !s.is_empty()));
        p.display().to_string()
    }
}

/// Appends the keys of the regular files under `dir` (whose key is `prefix`) to `out`,
/// skipping names that are not keys (temporary files) and symbolic links.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_key(&name, false).is_err() {
            continue;
        }
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &key, out)?;
        } else if kind.is_file() {
            out.push(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, FileStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path().join("root"));
        (dir, s)
    }

    #[test]
    fn put_get_replace_and_missing() {
        let (_d, s) = storage();
        assert_eq!(s.get("a/b.bin").unwrap(), None);
        s.put("a/b.bin", b"one").unwrap();
        assert_eq!(s.get("a/b.bin").unwrap().as_deref(), Some(&b"one"[..]));
        s.put("a/b.bin", b"two!").unwrap();
        assert_eq!(s.get("a/b.bin").unwrap().as_deref(), Some(&b"two!"[..]));
        s.put("empty", b"").unwrap();
        assert_eq!(s.get("empty").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_s3_url("s3://my-bucket/a/b/").unwrap(),
            ("my-bucket".into(), "a/b".into())
        );
        assert_eq!(
            parse_s3_url("s3://bkt").unwrap(),
            ("bkt".into(), String::new())
        );
        for bad in [
            "s3://",
            "s3:///p",
            "s3://ab/p",
            "s3://Upper/p",
            "s3://-bkt/p",
            "s3://bkt_x/p",
            "s3://bkt/../p",
            "s3://bkt/a//b",
            "s3://bkt/.tmp",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_new_never_replaces() {
        let (_d, s) = storage();
        s.put_new("m/MANIFEST.json", b"first").unwrap();
        let err = s.put_new("m/MANIFEST.json", b"second").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            s.get("m/MANIFEST.json").unwrap().as_deref(),
            Some(&b"first"[..])
        );
        assert_eq!(
            s.list("m").unwrap(),
            ["m/MANIFEST.json"],
            "no temporary left"
        );
    }

    #[test]
    fn put_leaves_no_temporary_file() {
        let (_d, s) = storage();
        s.put("x/y/z.json", b"{}").unwrap();
        let names: Vec<_> = fs::read_dir(s.root().join("x/y"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["z.json"]);
    }

    #[test]
    fn list_is_recursive_sorted_and_scoped_to_the_prefix() {
        let (_d, s) = storage();
        for k in ["j/1/chk-2/b", "j/1/chk-1/a", "j/10/x", "j/1/chk-2/a", "k/z"] {
            s.put(k, k.as_bytes()).unwrap();
        }
        assert_eq!(
            s.list("j/1").unwrap(),
            ["j/1/chk-1/a", "j/1/chk-2/a", "j/1/chk-2/b"]
        );
        assert_eq!(s.list("").unwrap().len(), 5);
        assert_eq!(s.list("nothing/here").unwrap(), Vec::<String>::new());
        // A prefix naming an object, not a "directory", has nothing under it.
        assert_eq!(s.list("k/z").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn list_skips_temporary_files_of_a_crashed_put() {
        let (_d, s) = storage();
        s.put("a/b", b"1").unwrap();
        fs::write(s.root().join("a/.b.tmp-1-1"), b"half").unwrap();
        assert_eq!(s.list("a").unwrap(), ["a/b"]);
        s.delete_prefix("a").unwrap();
        assert!(!s.root().join("a").exists());
    }

    #[test]
    fn delete_and_delete_prefix_tolerate_missing_objects() {
        let (_d, s) = storage();
        s.delete("no/such").unwrap();
        s.delete_prefix("no/such").unwrap();
        s.put("p/q/1", b"1").unwrap();
        s.put("p/q/2", b"2").unwrap();
        s.put("p/r", b"3").unwrap();
        s.delete("p/q/1").unwrap();
        assert_eq!(s.list("p").unwrap(), ["p/q/2", "p/r"]);
        s.delete_prefix("p/q").unwrap();
        assert_eq!(s.list("").unwrap(), ["p/r"]);
        assert!(s.delete_prefix("").is_err(), "never the whole root");
    }

    #[test]
    fn keys_that_could_escape_the_root_are_rejected() {
        let (d, s) = storage();
        for bad in [
            "../outside",
            "a/../../outside",
            "/etc/passwd",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            ".hidden",
            "a\\..\\b",
            "nul\0",
            "",
        ] {
            let err = s.put(bad, b"x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(s.get(bad).is_err(), "{bad:?}");
            assert!(s.delete(bad).is_err(), "{bad:?}");
        }
        assert!(s.list("..").is_err());
        assert!(s.delete_prefix("..").is_err());
        assert!(!d.path().join("outside").exists());
    }

    #[test]
    fn open_storage_urls() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("file://{}", d.path().display());
        let s = open_storage(&url).unwrap();
        s.put("k", b"v").unwrap();
        assert_eq!(fs::read(d.path().join("k")).unwrap(), b"v");
        assert_eq!(
            s.location("a/b"),
            d.path().join("a/b").display().to_string()
        );

        let plain = open_storage(d.path().to_str().unwrap()).unwrap();
        assert_eq!(plain.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        // Relative paths are made absolute at once.
        let rel = open_storage("some/rel/dir").unwrap();
        assert!(Path::new(&rel.location("")).is_absolute());

        #[cfg(not(feature = "s3"))]
        {
            let s3 = open_storage("s3://bucket/prefix").err().unwrap();
            assert!(matches!(s3, CheckpointError::S3NotBuilt { .. }));
            assert!(s3.to_string().contains("without S3 support"), "{s3}");
        }
        #[cfg(feature = "s3")]
        assert!(open_storage("s3://bucket/prefix").is_ok());
        for bad in ["", "file://host/dir", "file://rel", "gs://b/p", "S3://b/p"] {
            let e = open_storage(bad).err().unwrap();
            assert!(matches!(e, CheckpointError::BadUrl { .. }), "{bad}: {e}");
        }
    }
}
