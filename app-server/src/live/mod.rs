//! Live views for the console (issue 13): each device's events and each gateway's raw frames
//! as server-sent events, bounded per client.
//!
//! # Layout
//! - [`device_feed`]: every event the application side publishes on MQTT also goes, in
//!   publication order, to the watchers of its device ([`LivePublisher`] wraps the MQTT
//!   publisher; nothing is copied for devices nobody watches).
//! - [`sse`]: turns a watch into a `text/event-stream` answer: `ready` first, one event per
//!   item, `lagged` with the number missed by a slow client, a keepalive comment every 15 s,
//!   and the end of the stream at server shutdown.
//!
//! The gateways' frames come from the network server
//! (`loraflow_network_server::frame_feed`, through `NetworkHandle::frames`).

pub mod device_feed;
pub mod sse;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use device_feed::{DeviceEvent, DeviceFeed, LivePublisher};

/// What the stream endpoints share. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    pub devices: DeviceFeed,
    /// Ends every open stream (server shutdown), so that connections can close.
    pub shutdown: CancellationToken,
    /// Open streams at most (`api.max_streams`): a stream holds its connection for as long
    /// as the client wants, so streams must leave connections for everything else.
    streams: Arc<Semaphore>,
}

impl Live {
    pub fn new(devices: DeviceFeed, max_streams: usize, shutdown: CancellationToken) -> Live {
        Live { devices, shutdown, streams: Arc::new(Semaphore::new(max_streams)) }
    }

    /// A slot for one more stream, held until the stream ends; `None` at the limit.
    pub fn stream_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }
}
