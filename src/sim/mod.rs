//! Virtual LoRaWAN devices and Semtech UDP gateways, shared by `loraflow simulate` and
//! `loraflow bench`. They talk to a server only over its real interfaces: UDP and REST.
//!
//! # Layout
//! - `device`: an end device (join, uplinks, downlinks), pure.
//! - `mac`: the device side of the MAC commands, ADR backoff and receive windows, pure.
//! - `plan`: the region and channel plan of a `--region` id (`us915_1` = sub-band 2), pure.
//! - `eu868`: a hand-written copy of the EU868 numbers, a test cross-check of the server's.
//! - `gateway`: a gateway with its own UDP socket (PUSH_DATA, PULL_DATA, TX_ACK).
//! - `router`: gives each received downlink to the device it is for.
//! - `provision`: REST calls that register gateways and devices.
//! - `payload`: counter and Cayenne LPP payloads.
//! - `board`: per-device state for the progress line, the `--verbose` table and `--json`.

pub mod board;
pub mod device;
#[cfg(test)]
mod eu868;
pub mod gateway;
pub mod mac;
pub mod payload;
pub mod plan;
#[cfg(test)]
mod proptests;
pub mod provision;
pub mod router;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use device::{Session, VirtualDevice};
use gateway::{Gateways, DEFAULT_SNR};
use mac::TxParams;
use router::{Downlink, DownlinkSender, Router};

/// How long a device waits for its join-accept before it tries again with a new DevNonce.
/// The server answers within its dedup window plus processing; RX1 for a join-accept is 5 s
/// after the uplink (RP002-1.0.3 §2.1 JOIN_ACCEPT_DELAY1) and RX2 one second later.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(7);

/// Counters shared by every virtual gateway and device.
#[derive(Debug, Default)]
pub struct Stats {
    /// Data uplinks sent (one per frame, however many gateways relayed it).
    pub uplinks_sent: AtomicU64,
    pub join_requests: AtomicU64,
    pub joined: AtomicU64,
    /// Join-requests that got no join-accept in time and were sent again.
    pub join_retries: AtomicU64,
    /// PULL_RESPs received by all gateways.
    pub downlinks: AtomicU64,
    /// Data downlinks a device accepted (MIC right).
    pub device_downlinks: AtomicU64,
    /// Downlinks no device waited for.
    pub unclaimed_downlinks: AtomicU64,
    /// Downlinks for a device sent on a frequency or data rate it was not listening to.
    pub refused_downlinks: AtomicU64,
    pub push_acks: AtomicU64,
    pub errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub uplinks_sent: u64,
    pub join_requests: u64,
    pub joined: u64,
    pub join_retries: u64,
    pub downlinks: u64,
    pub device_downlinks: u64,
    pub unclaimed_downlinks: u64,
    pub refused_downlinks: u64,
    pub push_acks: u64,
    pub errors: u64,
}

impl Stats {
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            uplinks_sent: l(&self.uplinks_sent),
            join_requests: l(&self.join_requests),
            joined: l(&self.joined),
            join_retries: l(&self.join_retries),
            downlinks: l(&self.downlinks),
            device_downlinks: l(&self.device_downlinks),
            unclaimed_downlinks: l(&self.unclaimed_downlinks),
            refused_downlinks: l(&self.refused_downlinks),
            push_acks: l(&self.push_acks),
            errors: l(&self.errors),
        }
    }
}

/// The simulated radio network: gateways in range of every device, and the router that gives
/// each downlink to its device.
#[derive(Clone)]
pub struct Radio {
    pub gateways: Gateways,
    pub router: Arc<Router>,
    pub stats: Arc<Stats>,
}

impl Radio {
    /// Sends a frame through every gateway with the device's radio parameters, heard at
    /// [`DEFAULT_SNR`]. Returns whether at least one copy left.
    pub async fn transmit(&self, phy: &[u8], tx: &TxParams) -> bool {
        self.transmit_as(phy, tx, DEFAULT_SNR).await.is_some()
    }

    /// Sends a frame through every gateway with the device's radio parameters, for a device
    /// whose SNR at the nearest gateway is `link_snr` at maximum power; an I/O error counts as
    /// an error. Returns the best SNR reported if at least one copy left.
    pub async fn transmit_as(&self, phy: &[u8], tx: &TxParams, link_snr: f32) -> Option<f32> {
        let heard = self.gateways.transmit(phy, tx, link_snr).await;
        if let Some(e) = heard.error {
            self.stats.error();
            tracing::warn!(error = %e, "uplink copy not sent");
        }
        heard.best_snr
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("no join-accept after {0} join-requests")]
    GaveUp(u32),
    #[error("stopped")]
    Stopped,
}

/// OTAA join over `radio`: a join-request heard by every gateway, then up to [`JOIN_TIMEOUT`]
/// for a join-accept with a valid MIC, again with a new DevNonce if none came. `max_attempts`
/// 0 tries until `shutdown`. Downlinks for the new session go to `tx` afterwards.
pub async fn join(
    dev: &mut VirtualDevice,
    radio: &Radio,
    tx: &DownlinkSender,
    rx: &mut mpsc::UnboundedReceiver<Downlink>,
    max_attempts: u32,
    shutdown: &CancellationToken,
) -> Result<Session, JoinError> {
    join_at(dev, radio, DEFAULT_SNR, tx, rx, max_attempts, shutdown).await
}

/// [`join`] for a device heard at `link_snr` (dB at the nearest gateway, maximum power).
pub async fn join_at(
    dev: &mut VirtualDevice,
    radio: &Radio,
    link_snr: f32,
    tx: &DownlinkSender,
    rx: &mut mpsc::UnboundedReceiver<Downlink>,
    max_attempts: u32,
    shutdown: &CancellationToken,
) -> Result<Session, JoinError> {
    let mut attempts = 0u32;
    loop {
        if max_attempts > 0 && attempts >= max_attempts {
            return Err(JoinError::GaveUp(attempts));
        }
        attempts += 1;
        let request = dev.join_request();
        let join_tx = dev.join_tx(&mut rand::thread_rng());
        radio.router.expect_join(dev.dev_eui, dev.app_key, tx.clone());
        radio.stats.join_requests.fetch_add(1, Ordering::Relaxed);
        radio.transmit_as(&request, &join_tx, link_snr).await;
        let deadline = tokio::time::sleep(JOIN_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    radio.router.cancel_join(dev.dev_eui);
                    return Err(JoinError::Stopped);
                }
                _ = &mut deadline => {
                    radio.router.cancel_join(dev.dev_eui);
                    radio.stats.join_retries.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                msg = rx.recv() => {
                    let Some(down) = msg else { return Err(JoinError::Stopped) };
                    // The device hears only its join-accept windows (LoRaWAN 1.0.4 §6.2.5).
                    if let Err(e) = dev.hears(&down.radio, true) {
                        radio.stats.error();
                        radio.stats.refused_downlinks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(dev_eui = %dev.dev_eui, error = %e, "join-accept outside the receive windows");
                        continue;
                    }
                    match dev.accept(&down.phy) {
                        Ok(session) => {
                            radio.router.activate(session.dev_addr, tx.clone());
                            radio.stats.joined.fetch_add(1, Ordering::Relaxed);
                            return Ok(session);
                        }
                        // A late data downlink of an earlier session, or a bad join-accept.
                        Err(e) => {
                            radio.stats.error();
                            tracing::debug!(dev_eui = %dev.dev_eui, error = %e, "downlink ignored while joining");
                        }
                    }
                }
            }
        }
    }
}
