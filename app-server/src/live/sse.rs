//! A watch as a `text/event-stream` answer (the browser reads it with `fetch`, which can
//! send the bearer token, unlike `EventSource`).
//!
//! Bounded per client: the stream takes the next item from its watch only when hyper asks
//! for more, i.e. when the client has read what was sent. A client that stalls leaves its
//! items in the watch's bounded channel, where the newest push out the oldest: the uplink
//! path never waits for it, and when it reads again it first gets `lagged` with the number
//! it missed.

use std::convert::Infallible;
use std::hash::Hash;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use loraflow_network_server::feed::{Next, Watch};

use crate::api::connections::LongLived;

/// A comment line this often keeps proxies and browsers from closing a quiet stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The `lagged` event: `{"missed": n}`.
pub fn lagged(missed: u64) -> Event {
    Event::default().event("lagged").data(serde_json::json!({ "missed": missed }).to_string())
}

/// The streaming answer: `ready` (with `ready_data`) once the watch is active, then
/// `to_event` of each item in order, `lagged` when items were missed. Ends at `shutdown`.
/// `slot` (the stream limit) is held until the stream ends.
pub fn answer<K, T>(
    ready_data: serde_json::Value,
    watch: Watch<K, T>,
    to_event: fn(T) -> Event,
    shutdown: CancellationToken,
    slot: OwnedSemaphorePermit,
) -> Response
where
    K: Hash + Eq + Copy + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    struct Open<K: Hash + Eq + Copy, T: Clone> {
        watch: Watch<K, T>,
        shutdown: CancellationToken,
        to_event: fn(T) -> Event,
        _slot: OwnedSemaphorePermit,
    }
    let ready = stream::once(async move { Ok::<_, Infallible>(Event::default().event("ready").data(ready_data.to_string())) });
    let open = Open { watch, shutdown, to_event, _slot: slot };
    let items = stream::unfold(open, |mut open| async move {
        let next = tokio::select! {
            biased;
            _ = open.shutdown.cancelled() => return None,
            next = open.watch.next() => next?,
        };
        let event = match next {
            Next::Item(item) => (open.to_event)(item),
            Next::Lagged(missed) => lagged(missed),
        };
        Some((Ok(event), open))
    });
    let mut response = Sse::new(ready.chain(items)).keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive")).into_response();
    // Not cut by the connection's request deadline (api.request_timeout_secs).
    response.extensions_mut().insert(LongLived);
    // Proxies (nginx) would otherwise hold events back in their buffers.
    response.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    response
}
