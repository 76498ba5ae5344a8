//! A blocking Redis connection (std `TcpStream`) with pipelining: the sink queues many
//! commands, sends them in one write and reads the replies in order.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::RedisError;
use super::resp::{self, RedisUrl, Value};

/// How long a connect, a write or a read may take before the connection is given up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Start of the unparsed bytes in `rbuf`.
    rpos: usize,
}

impl Conn {
    /// Connects, authenticates and selects the database of `url`.
    pub fn connect(url: &RedisUrl) -> Result<Self, RedisError> {
        let addr = url.addr();
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| RedisError::Io(io::Error::new(e.kind(), format!("{url}: {e}"))))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{url}: no address"));
        for a in addrs {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(IO_TIMEOUT))?;
                    stream.set_write_timeout(Some(IO_TIMEOUT))?;
                    let mut c = Conn {
                        stream,
                        rbuf: Vec::with_capacity(16 * 1024),
                        rpos: 0,
                    };
                    let (hello, n) = url.handshake();
                    if n > 0 {
                        c.send(&hello)?;
                        for _ in 0..n {
                            if let Value::Error(e) = c.read()? {
                                return Err(RedisError::Server(format!("{url}: {e}")));
                            }
                        }
                    }
                    return Ok(c);
                }
                Err(e) => last = io::Error::new(e.kind(), format!("{url}: {e}")),
            }
        }
        Err(RedisError::Io(last))
    }

    /// Writes encoded commands.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), RedisError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads the next reply.
    pub fn read(&mut self) -> Result<Value, RedisError> {
        loop {
            if let Some((v, n)) = resp::parse(&self.rbuf[self.rpos..])? {
                self.rpos += n;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                }
                return Ok(v);
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + 16 * 1024, 0);
            let n = match self.stream.read(&mut self.rbuf[len..]) {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.truncate(len);
                    return Err(e.into());
                }
            };
            self.rbuf.truncate(len + n);
            if n == 0 {
                return Err(RedisError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                )));
            }
        }
    }

    /// Sends one command and returns its reply (an error reply is `Ok(Value::Error)`).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, RedisError> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.send(&out)?;
        self.read()
    }
}
