//! The dashboard server (feature `serve`): the page, REST for current state, and SSE
//! and WebSocket streams of changes, fanned out from one writer to every client.
//!
//! - `hub.rs`: the fan-out core (mirror of the newest windows, ring of recent changes,
//!   one broadcast channel; each change serialized once for all clients).
//! - `http.rs`: the routes (axum), the per-client streams with resume, resync,
//!   keep-alives and batching, CORS, graceful shutdown.
//! - `sse.rs`: SSE streams served straight on their sockets (no HTTP framework in the
//!   path of a delivery: one write of the shared frame's bytes).
//! - `embedded.rs`: `--serve ADDR` of a generated binary: the job feeds the hub in
//!   process through one sink per windowed flow ([`ServeSinkSpec`]); no Redis.
//! - `redis.rs` (with feature `redis`): `streamc serve`: the hub fed by one Redis
//!   subscription per server, gaps filled and clients resumed from the change log.
//! - `page/`: the page (HTML, JS, CSS) and the vendored charting library (uPlot).
//!
//! The spec types are always compiled, so generated code is the same with and without
//! the feature; without it, opening a dashboard sink fails with [`NO_SERVE`].

#[cfg(feature = "serve")]
pub mod embedded;
#[cfg(feature = "serve")]
pub mod http;
#[cfg(feature = "serve")]
pub mod hub;
#[cfg(all(feature = "serve", feature = "redis"))]
pub mod redis;
#[cfg(feature = "serve")]
mod sse;

use crate::redis::FeedSpec;

/// The error of opening a dashboard sink in a binary built without the feature.
pub const NO_SERVE: &str = "this binary was built without the dashboard (the `serve` feature of streamc-runtime); \
     rebuild it with `streamc build`, which enables the feature for specs with `serve:`";

/// Where the page is served unless `--serve` or the spec say otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The embedded dashboard's sink for one windowed flow: every result row of the flow
/// goes to the in-process hub.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServeSinkSpec {
    /// Where to serve (`--serve` overrides it); None: the dashboard is off unless
    /// `--serve` is given.
    pub listen: Option<String>,
    /// Windows kept in memory per key.
    pub keep: u64,
    /// The flow (`sink` is empty: no spec sink).
    pub feed: FeedSpec,
}

/// Opens the dashboard sink of a flow (starting the embedded server on first use).
#[cfg(feature = "serve")]
pub fn open_sink(
    spec: &ServeSinkSpec,
) -> Result<Box<dyn crate::sink::Sink>, crate::sink::SinkError> {
    embedded::open_sink(spec)
}

/// Without the `serve` feature, opening fails with [`NO_SERVE`].
#[cfg(not(feature = "serve"))]
pub fn open_sink(
    _spec: &ServeSinkSpec,
) -> Result<Box<dyn crate::sink::Sink>, crate::sink::SinkError> {
    Err(crate::sink::SinkError::msg(NO_SERVE))
}
