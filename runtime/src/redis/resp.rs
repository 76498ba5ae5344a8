//! The Redis wire protocol (RESP2): commands encoded as arrays of bulk strings, replies
//! parsed incrementally from a byte buffer. Shared by the blocking connection of the
//! sink (`conn.rs`) and the asynchronous one of `streamc serve` (`serve/redis.rs`).

use std::fmt;

/// A reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// A null bulk string or null array.
    Nil,
    /// `+OK` and other status replies.
    Status(String),
    /// `-ERR ...`: the command failed (the connection is fine).
    Error(String),
    /// `:42`.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array (pub/sub messages, XRANGE entries, EXEC results, ...).
    Array(Vec<Value>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Status(s) => write!(f, "+{s}"),
            Value::Error(s) => write!(f, "-{s}"),
            Value::Int(i) => write!(f, ":{i}"),
            Value::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::Array(a) => f.debug_list().entries(a).finish(),
        }
    }
}

impl Value {
    /// The bytes of a bulk or status reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The text of a bulk or status reply (None if not UTF-8).
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer reply, or a bulk string holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            v => v.as_str().and_then(|s| s.parse().ok()),
        }
    }

    /// The items of an array reply (a nil array is empty).
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            Value::Nil => Some(&[]),
            _ => None,
        }
    }

    /// Turns an error reply into `Err`.
    pub fn into_result(self) -> Result<Value, String> {
        match self {
            Value::Error(e) => Err(e),
            v => Ok(v),
        }
    }
}

/// Appends one command (`args[0]` is its name) to `out`.
pub fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.push(b'*');
    push_int(out, args.len());
    for a in args {
        let a = a.as_ref();
        out.push(b'$');
        push_int(out, a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_int(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A reply that is not RESP: the connection cannot be used any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Nesting deeper than this is refused (no reply of ours nests more than a few levels).
const MAX_DEPTH: usize = 16;
/// Bulk strings and arrays larger than this are refused.
const MAX_LEN: i64 = 512 * 1024 * 1024;

/// Parses one reply from the front of `buf`: `Ok(Some((value, bytes used)))`, or
/// `Ok(None)` when `buf` does not hold a whole reply yet.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..i], at + i + 2))
}

fn int(s: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(s))))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("reply nested too deeply".into()));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some((body, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(body).into_owned();
    match tag {
        b'+' => Ok(Some((Value::Status(text()), next))),
        b'-' => Ok(Some((Value::Error(text()), next))),
        b':' => Ok(Some((Value::Int(int(body)?), next))),
        b'$' => {
            let n = int(body)?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if n > MAX_LEN {
                return Err(ProtocolError(format!("bulk string of {n} bytes")));
            }
            let n = n as usize;
            let end = next + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated".into()));
            }
            Ok(Some((Value::Bulk(buf[next..end].to_vec()), end + 2)))
        }
        b'*' => {
            let n = int(body)?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if n > MAX_LEN {
                return Err(ProtocolError(format!("array of {n} items")));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((v, p)) => {
                        items.push(v);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), pos)))
        }
        other => Err(ProtocolError(format!(
            "unexpected reply type {:?}",
            other as char
        ))),
    }
}

/// A Redis address: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address.
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// `AUTH` user (None: the default user).
    pub user: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// `SELECT` database (default 0).
    pub db: u32,
}

/// The Redis of `scripts/redis` (and of a default Redis install).
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

impl RedisUrl {
    /// Parses `redis://...`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{url}`: expected redis://host:port[/db]"))?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (
                h,
                d.parse()
                    .map_err(|_| format!("`{url}`: the database `{d}` is not a number"))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [::1]:6379
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed `[` in the host"))?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        let port = if port.is_empty() {
            6379
        } else {
            port.parse()
                .map_err(|_| format!("`{url}`: the port `{port}` is not a number"))?
        };
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(RedisUrl {
            host,
            port,
            user,
            password,
            db,
        })
    }

    /// `host:port`, for connecting.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The commands to send after connecting (AUTH, SELECT), encoded; and how many.
    pub fn handshake(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut n = 0;
        if let Some(p) = &self.password {
            match &self.user {
                Some(u) => encode(&mut out, &["AUTH", u, p]),
                None => encode(&mut out, &["AUTH", p]),
            }
            n += 1;
        }
        if self.db != 0 {
            encode(&mut out, &["SELECT", &self.db.to_string()]);
            n += 1;
        }
        (out, n)
    }
}

impl fmt::Display for RedisUrl {
    /// The URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://")?;
        if self.password.is_some() {
            write!(f, "{}:***@", self.user.as_deref().unwrap_or(""))?;
        }
        write!(f, "{}", self.addr())?;
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&mut out, &["SET", "k", "v\r\n"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }

    #[test]
    fn parses_every_reply_type_incrementally() {
        let wire: &[u8] =
            b"+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n*1\r\n:1\r\n*-1\r\n";
        let expected = vec![
            Value::Status("OK".into()),
            Value::Error("ERR no".into()),
            Value::Int(-7),
            Value::Bulk(b"a\r\n".to_vec()),
            Value::Nil,
            Value::Array(vec![
                Value::Bulk(b"x".to_vec()),
                Value::Array(vec![Value::Int(1)]),
            ]),
            Value::Nil,
        ];
        // Whole buffer.
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((v, n)) = parse(&wire[at..]).unwrap() {
            got.push(v);
            at += n;
        }
        assert_eq!(got, expected);
        assert_eq!(at, wire.len());
        // Every prefix is either a whole number of replies or "need more".
        for cut in 0..wire.len() {
            let mut at = 0;
            let mut n = 0;
            while let Some((_, used)) = parse(&wire[at..cut]).unwrap() {
                at += used;
                n += 1;
            }
            assert!(n <= expected.len());
        }
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$2\r\nabcd\r\n",
            b"$99999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
        assert_eq!(u.addr(), "127.0.0.1:6380");
        let u = RedisUrl::parse("redis://:secret@h").unwrap();
        assert_eq!(
            (u.port, u.user.as_deref(), u.password.as_deref()),
            (6379, None, Some("secret"))
        );
        assert_eq!(u.to_string(), "redis://:***@h:6379");
        let u = RedisUrl::parse("redis://me:pw@[::1]:7000").unwrap();
        assert_eq!(u.addr(), "[::1]:7000");
        assert_eq!(u.handshake().1, 1);
        for bad in ["http://x", "redis://", "redis://h:port", "redis://h/x"] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
