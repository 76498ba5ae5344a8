//! SSE streams straight on their sockets. An SSE client holds its connection for hours
//! and receives every change: going through an HTTP framework for each delivery (body
//! stream, chunked framing, its buffers) costs CPU per message and tens of kilobytes per
//! connection. So the listener looks at each new connection's request line: a
//! `GET /api/events` is answered here (response head, then the shared frames' bytes
//! written as they are, the body delimited by the connection's end), everything else is
//! handed to axum unchanged.
//!
//! The stream itself is the same [`Client`] as axum's `/api/events` route and the
//! WebSocket use (snapshot or resume, resync, keep-alives, `bye`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::http::{App, BATCH, Client, Params, Step, Streams, sse_of, start_of};
use super::hub::Outgoing;

/// Connections that are not SSE requests, handed to axum.
pub(super) struct SseListener {
    inner: TcpListener,
    tx: mpsc::Sender<(TcpStream, SocketAddr)>,
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    app: Arc<App>,
}

impl SseListener {
    pub(super) fn new(inner: TcpListener, app: Arc<App>) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        SseListener { inner, tx, rx, app }
    }
}

impl axum::serve::Listener for SseListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            tokio::select! {
                r = self.inner.accept() => match r {
                    Ok((s, addr)) => {
                        let _ = s.set_nodelay(true);
                        // Classified on a task of its own: a client slow to send its
                        // request never holds up the others.
                        tokio::spawn(classify(s, addr, self.tx.clone(), Arc::clone(&self.app)));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait, as axum does.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(c) = self.rx.recv() => return c,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The request head of an SSE request (at most this long).
const MAX_HEAD: usize = 16 * 1024;

async fn classify(
    s: TcpStream,
    addr: SocketAddr,
    tx: mpsc::Sender<(TcpStream, SocketAddr)>,
    app: Arc<App>,
) {
    let mut buf = [0u8; 64];
    // The request line's start; a client that sends nothing for 10 s is closed.
    let n = match tokio::time::timeout(Duration::from_secs(10), s.peek(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    if !buf[..n].starts_with(b"GET /api/events") || n < b"GET /api/events ".len() {
        let _ = tx.send((s, addr)).await;
        return;
    }
    let next = buf[b"GET /api/events".len()];
    if next != b' ' && next != b'?' {
        let _ = tx.send((s, addr)).await;
        return;
    }
    let _open = Streams::open(&app);
    if let Err(e) = stream(s, app).await {
        tracing::trace!(error = %e, %addr, "SSE stream ended");
    }
}

/// Reads the request head (consumed), answers with the event stream.
async fn stream(mut s: TcpStream, app: Arc<App>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if head.len() > MAX_HEAD {
            s.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let target = request.split(' ').nth(1).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q.to_string());
    let mut headers = HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("last-event-id")
            && let Ok(v) = HeaderValue::from_str(v.trim())
        {
            headers.insert("last-event-id", v);
        }
    }
    let origin = &app.cfg.cors_origin;
    let p = Params::parse(query);
    let limit = match p.number("limit", app.cfg.default_limit, app.hub.config().keep) {
        Ok(n) => n,
        Err(e) => {
            let mut body = String::from("{\"error\":");
            super::hub::push_json_str(&mut body, &e);
            body.push('}');
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\naccess-control-allow-origin: {origin}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
    };
    let start = start_of(&headers, &p);
    let mut c = Client::new(Arc::clone(&app), p.filter(), start, limit);
    // No content-length and no chunked encoding: the body is delimited by the end of
    // the connection (HTTP/1.1, RFC 9112 6.3), which an event stream is anyway.
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\naccess-control-allow-origin: {origin}\r\nconnection: close\r\n\r\nretry: 1000\n: streamc\n\n"
    );
    s.write_all(resp.as_bytes()).await?;
    let mut out = Vec::new();
    loop {
        match c.next().await {
            Step::Send(o) => match c.try_next() {
                None => match &o {
                    // One message: the frame's own bytes, no copy.
                    Outgoing::Frame(f) => s.write_all(&f.sse).await?,
                    own => {
                        out.clear();
                        sse_of(own, &mut out);
                        s.write_all(&out).await?;
                    }
                },
                Some(second) => {
                    out.clear();
                    sse_of(&o, &mut out);
                    sse_of(&second, &mut out);
                    for _ in 2..BATCH {
                        match c.try_next() {
                            Some(o) => sse_of(&o, &mut out),
                            None => break,
                        }
                    }
                    s.write_all(&out).await?;
                }
            },
            Step::KeepAlive(Some(id)) => {
                s.write_all(format!(": keep-alive\nid: {id}\n\n").as_bytes())
                    .await?
            }
            Step::KeepAlive(None) => s.write_all(b": keep-alive\n\n").await?,
            Step::End(reason) => {
                let bye = super::hub::sse_bytes(
                    "bye",
                    None,
                    &format!("{{\"type\":\"bye\",\"reason\":\"{reason}\"}}"),
                );
                s.write_all(&bye).await?;
                s.shutdown().await?;
                return Ok(());
            }
        }
        if out.capacity() > 256 * 1024 {
            out = Vec::new();
        }
    }
}
