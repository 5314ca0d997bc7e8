//! The Semtech UDP server (PROTOCOL.TXT v2 §3-§5, DESIGN.md §5): one socket, one receive loop
//! that answers every PUSH_DATA/PULL_DATA at once, and a [`Handle`] for downlinks.
//!
//! The receive loop never waits on its consumers: events go out with `try_send` on a bounded
//! channel and are dropped (counted as `channel_full`) when it is full. Blocking there would
//! stop PUSH_ACK/PULL_ACK for every gateway and the kernel would drop datagrams anyway, with no
//! trace; a counted drop is the lesser evil and shows up in metrics.

use std::collections::HashMap;
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, GatewayConfig};
use crate::datagram_log::{untrusted, DatagramLog, Notice, LOG_INTERVAL};
use crate::frame::{DownlinkFrame, GatewayEvent, GatewayId, TxAckStatus};
use crate::known::{Admission, KnownGateways};
use crate::metrics::{DropReason, Metrics};
use crate::pull_address::{PullAddress, PullOutcome};
use crate::rate_limit::PushDataLimits;
use crate::semtech::{
    Header, HeaderError, Identifier, PullAck, PullResp, PushAck, RawPushDataPayload, Rxpk, Stat, TxAck, TxAckPayload, Txpk,
};

/// At most one `Seen` event per gateway in this interval.
const SEEN_EVENT_INTERVAL: Duration = Duration::from_secs(5);
/// How often the `loraflow_gateway_online` gauge is recomputed.
const ONLINE_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for Semtech UDP on {addr}: {source}; set gateway.bind (LORAFLOW_GATEWAY__BIND) to another address")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("invalid gateway configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot register the gateway metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the server knows about one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayState {
    /// Where PULL_RESP goes: the source of the gateway's PULL_DATA, moved to a new source
    /// only once that has sent PULL_DATA twice in a row (`pull_address`).
    pub pull_addr: Option<SocketAddr>,
    /// Last PULL_DATA from the downlink address.
    pub last_pull_at: Option<DateTime<Utc>>,
    /// Last PUSH_DATA, or PULL_DATA from the downlink address.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// A PULL_DATA came from the downlink address within `gateway.offline_after_secs`.
    pub online: bool,
}

#[derive(Default)]
struct GatewayEntry {
    pull: PullAddress,
    last_pull_at: Option<DateTime<Utc>>,
    last_pull: Option<Instant>,
    last_seen_at: Option<DateTime<Utc>>,
    last_seen_event: Option<Instant>,
}

impl GatewayEntry {
    fn online(&self, offline_after: Duration) -> bool {
        self.last_pull.is_some_and(|t| t.elapsed() < offline_after)
    }

    /// Records a sign of life; `true` when a `Seen` event is due.
    fn touch(&mut self, now: DateTime<Utc>) -> bool {
        self.last_seen_at = Some(now);
        let due = self.last_seen_event.is_none_or(|t| t.elapsed() >= SEEN_EVENT_INTERVAL);
        if due {
            self.last_seen_event = Some(Instant::now());
        }
        due
    }
}

type PendingKey = (GatewayId, u16);

/// A downlink waiting for its TX_ACK: who waits, and where its PULL_RESP went (the only
/// address whose TX_ACK counts).
struct Pending {
    waiter: oneshot::Sender<TxAckStatus>,
    sent_to: SocketAddr,
}

struct Shared {
    socket: Arc<UdpSocket>,
    config: GatewayConfig,
    known: KnownGateways,
    metrics: Metrics,
    /// Only gateways that are allowed get an entry, so that spoofed EUIs cannot grow it.
    gateways: RwLock<HashMap<GatewayId, GatewayEntry>>,
    /// Downlinks waiting for their TX_ACK.
    pending: Mutex<HashMap<PendingKey, Pending>>,
    push_limits: PushDataLimits,
}

impl Shared {
    // The maps hold plain data that a panic cannot leave inconsistent, so a poisoned lock is
    // used as is instead of taking the UDP loop down with it.
    fn gateways_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<GatewayId, GatewayEntry>> {
        self.gateways.read().unwrap_or_else(|e| e.into_inner())
    }

    fn gateways_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<GatewayId, GatewayEntry>> {
        self.gateways.write().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<PendingKey, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offline_after(&self) -> Duration {
        Duration::from_secs(self.config.offline_after_secs)
    }

    fn online_count(&self) -> usize {
        let offline_after = self.offline_after();
        self.gateways_read().values().filter(|g| g.online(offline_after)).count()
    }

    /// Recomputes the online gauge, forgets gateways that were removed from the allow-list
    /// and downlink addresses outside a gateway's (changed) allowed networks.
    fn refresh(&self) {
        let offline_after = self.offline_after();
        let mut gateways = self.gateways_write();
        gateways.retain(|id, _| self.known.is_allowed(*id));
        for (id, g) in gateways.iter_mut() {
            if g.pull.current().is_some_and(|a| self.known.admission(*id, a.ip()) != Admission::Allowed) {
                g.pull.forget();
                g.last_pull = None;
            }
        }
        let online = gateways.values().filter(|g| g.online(offline_after)).count();
        drop(gateways);
        self.metrics.online.set(online as i64);
        self.push_limits.forget_idle();
    }

    async fn send(&self, frame: DownlinkFrame) -> TxAckStatus {
        let gateway_id = frame.gateway_id;
        let addr = self.gateways_read().get(&gateway_id).and_then(|g| g.pull.current());
        let Some(addr) = addr else {
            tracing::debug!(gateway_id = %gateway_id, downlink_id = frame.downlink_id, "no PULL_DATA address for gateway");
            return TxAckStatus::GatewayNotConnected;
        };
        let txpk = match Txpk::from_downlink(&frame) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(gateway_id = %gateway_id, downlink_id = frame.downlink_id, error = %e, "downlink refused");
                return TxAckStatus::Unknown;
            }
        };
        let (tx, rx) = oneshot::channel();
        let Some(token) = self.register_pending(gateway_id, Pending { waiter: tx, sent_to: addr }) else {
            tracing::warn!(gateway_id = %gateway_id, "every PULL_RESP token is in use for this gateway");
            return TxAckStatus::Unknown;
        };
        // Removes the entry however this function ends, including when the caller drops it.
        let _pending = PendingGuard { shared: self, key: (gateway_id, token) };
        let datagram = PullResp { token, txpk }.encode();
        tracing::debug!(gateway_id = %gateway_id, downlink_id = frame.downlink_id, token, %addr, "sending PULL_RESP");
        if let Err(e) = self.socket.send_to(&datagram, addr).await {
            tracing::warn!(gateway_id = %gateway_id, %addr, error = %e, "cannot send PULL_RESP");
            return TxAckStatus::GatewayNotConnected;
        }
        match tokio::time::timeout(Duration::from_millis(self.config.tx_ack_timeout_ms), rx).await {
            Ok(Ok(status)) => status,
            _ => TxAckStatus::Timeout,
        }
    }

    /// Picks a random token not already waiting for a TX_ACK from this gateway.
    fn register_pending(&self, gateway_id: GatewayId, entry: Pending) -> Option<u16> {
        let mut pending = self.pending();
        let start: u16 = rand::random();
        let token = (0..=u16::MAX).map(|i| start.wrapping_add(i)).find(|t| !pending.contains_key(&(gateway_id, *t)))?;
        pending.insert((gateway_id, token), entry);
        Some(token)
    }
}

struct PendingGuard<'a> {
    shared: &'a Shared,
    key: PendingKey,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending().remove(&self.key);
    }
}

/// The UDP server. Bind it, take [`handle`](Self::handle)s, then [`run`](Self::run) it.
pub struct PacketForwarder {
    shared: Arc<Shared>,
    events: mpsc::Sender<GatewayEvent>,
    local_addr: SocketAddr,
}

/// Binds with a large receive buffer: many gateways forwarding at once arrive in bursts,
/// and the kernel's default (about 200 KiB, some hundred datagrams) overflows silently.
/// Linux caps the size at `net.core.rmem_max`; the effective size is logged.
fn bind_udp(config: &GatewayConfig) -> std::io::Result<UdpSocket> {
    let std_socket = std::net::UdpSocket::bind(config.bind)?;
    let sock = socket2::SockRef::from(&std_socket);
    if let Err(e) = sock.set_recv_buffer_size(config.receive_buffer_bytes) {
        tracing::warn!(error = %e, "could not set the UDP receive buffer size");
    }
    let effective = sock.recv_buffer_size().unwrap_or(0);
    if effective < config.receive_buffer_bytes {
        tracing::info!(
            requested = config.receive_buffer_bytes,
            effective,
            "UDP receive buffer capped by the kernel (raise net.core.rmem_max to allow more)"
        );
    }
    std_socket.set_nonblocking(true)?;
    UdpSocket::from_std(std_socket)
}

impl PacketForwarder {
    /// Binds the UDP socket of `config.bind` and registers the metrics into `registry`.
    /// Returns the server and the receiving end of its event channel; the channel closes
    /// when [`run`](Self::run) returns.
    pub async fn bind(
        config: &GatewayConfig,
        registry: &prometheus::Registry,
        known: KnownGateways,
    ) -> Result<(PacketForwarder, mpsc::Receiver<GatewayEvent>), Error> {
        config.validate()?;
        let metrics = Metrics::register(registry)?;
        let bind_error = |source| Error::Bind { addr: config.bind, source };
        let socket = bind_udp(config).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let (events, rx) = mpsc::channel(config.uplink_queue);
        let shared = Arc::new(Shared {
            socket: Arc::new(socket),
            config: config.clone(),
            known,
            metrics,
            gateways: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            push_limits: PushDataLimits::new(config),
        });
        tracing::info!(%local_addr, "Semtech UDP packet-forwarder listening");
        Ok((PacketForwarder { shared, events, local_addr }, rx))
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Serves until `shutdown` is cancelled. Downlinks sent through a [`Handle`] afterwards
    /// end in `Timeout` since nobody reads TX_ACKs any more.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; self.shared.config.max_datagram_bytes + 1];
        let mut drops = DatagramLog::default();
        let mut refresh = tokio::time::interval(ONLINE_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_recv_error: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = refresh.tick() => self.shared.refresh(),
                received = self.shared.socket.recv_from(&mut buf) => match received {
                    Ok((len, src)) => self.on_datagram(&buf[..len], src, &mut drops).await,
                    // ICMP port-unreachable from an earlier send surfaces here on Linux;
                    // it concerns that send, not this socket.
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {
                        if let Some(count) = drops.notice(Notice::PeerUnreachable) {
                            tracing::debug!(error = %e, count, "UDP peer unreachable");
                        }
                    }
                    Err(e) => {
                        if last_recv_error.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
                            tracing::warn!(error = %e, "UDP receive failed");
                            last_recv_error = Some(Instant::now());
                        }
                        // Avoid spinning on a persistent error while staying cancellable.
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                        }
                    }
                },
            }
        }
        // `Seen` events are throttled; hand on every gateway's latest time so that a clean
        // stop stores exact `lastSeenAt` values.
        let latest: Vec<GatewayEvent> = self
            .shared
            .gateways_read()
            .iter()
            .filter_map(|(id, g)| g.last_seen_at.map(|at| GatewayEvent::Seen { gateway_id: *id, at }))
            .collect();
        for event in latest {
            let _ = self.events.try_send(event);
        }
        tracing::info!(local_addr = %self.local_addr, "Semtech UDP packet-forwarder stopped");
    }

    async fn on_datagram(&self, datagram: &[u8], src: SocketAddr, drops: &mut DatagramLog) {
        let metrics = &self.shared.metrics;
        // The buffer is one byte larger than the limit, so a longer datagram shows up as
        // limit + 1 bytes (the kernel truncates the rest).
        if datagram.len() > self.shared.config.max_datagram_bytes {
            let header = Header::decode(datagram).ok();
            metrics.received(header.map_or("invalid", |(h, _)| h.identifier.as_str()));
            self.drop_input(DropReason::Oversized, src, &"datagram larger than gateway.max_datagram_bytes", drops);
            // The header is valid, so the gateway still gets its ACK (DESIGN.md §5).
            if let Some((h, _)) = header.filter(|(h, _)| h.identifier == Identifier::PushData) {
                self.reply(&PushAck { token: h.token }.encode(), src, drops).await;
            }
            return;
        }
        let (header, body) = match Header::decode(datagram) {
            Ok(ok) => ok,
            Err(e) => {
                metrics.received("invalid");
                let reason = match e {
                    HeaderError::TooShort { .. } => DropReason::TooShort,
                    HeaderError::WrongVersion(_) => DropReason::WrongVersion,
                    HeaderError::UnknownType(_) => DropReason::UnknownType,
                };
                self.drop_input(reason, src, &e, drops);
                return;
            }
        };
        metrics.received(header.identifier.as_str());
        let gateway_id = header.gateway_id.unwrap_or_default();
        match header.identifier {
            Identifier::PushData => self.on_push_data(header.token, gateway_id, body, src, drops).await,
            Identifier::PullData => self.on_pull_data(header.token, gateway_id, src, drops).await,
            Identifier::TxAck => self.on_tx_ack(header.token, gateway_id, body, src, drops),
            other => {
                self.drop_input(DropReason::UnknownType, src, &format_args!("{other:?} is not sent by gateways"), drops);
            }
        }
    }

    /// PROTOCOL.TXT §3.2/§3.3: ACK first, then look at the content. From a new address a
    /// PUSH_DATA is taken like any other (within the allowed networks) but never moves the
    /// downlink path: only PULL_DATA does.
    async fn on_push_data(&self, token: u16, gateway_id: GatewayId, body: &[u8], src: SocketAddr, drops: &mut DatagramLog) {
        self.reply(&PushAck { token }.encode(), src, drops).await;
        match self.shared.known.admission(gateway_id, src.ip()) {
            Admission::Allowed => {}
            Admission::UnknownGateway => {
                self.drop_input(DropReason::UnknownGateway, src, &format_args!("gateway {gateway_id} is not registered"), drops);
                return;
            }
            Admission::SourceNotAllowed => return self.drop_source_not_allowed(gateway_id, src, drops),
        }
        // Before any parsing: the limits are there to keep floods cheap.
        if let Some(reason) = self.shared.push_limits.check(gateway_id) {
            self.drop_input(reason, src, &format_args!("PUSH_DATA from {gateway_id} over the rate limit"), drops);
            return;
        }
        let now = Utc::now();
        self.seen(gateway_id, now, drops);
        let payload = match RawPushDataPayload::parse(body) {
            Ok(p) => p,
            Err(e) => {
                self.drop_input(DropReason::BadJson, src, &format_args!("PUSH_DATA from {gateway_id}: {e}"), drops);
                return;
            }
        };
        for value in payload.rxpk {
            match Rxpk::from_value(value).and_then(|r| r.to_uplink_frames(gateway_id, now)) {
                Ok(frames) => {
                    for frame in frames {
                        let modulation = frame.tx_info.modulation.clone();
                        if self.emit(GatewayEvent::Uplink(frame), src, drops) {
                            self.shared.metrics.uplink(&modulation);
                        }
                    }
                }
                Err(e) => self.drop_input(e.drop_reason(), src, &format_args!("rxpk from {gateway_id}: {e}"), drops),
            }
        }
        if let Some(value) = payload.stat {
            self.on_stat(gateway_id, value, now, src, drops);
        }
    }

    /// PROTOCOL.TXT §4. A stat is only believed when its values are plausible and, once the
    /// gateway has a downlink address, when it comes from that address's host (a forwarder
    /// sends PUSH_DATA and PULL_DATA from two sockets: same IP, different ports), so that a
    /// forger elsewhere cannot inflate the gateway's counters.
    fn on_stat(&self, gateway_id: GatewayId, value: serde_json::Value, now: DateTime<Utc>, src: SocketAddr, drops: &mut DatagramLog) {
        let stat = match Stat::from_value(value) {
            Ok(stat) => stat,
            Err(e) => return self.drop_input(DropReason::BadStat, src, &format_args!("stat from {gateway_id}: {e}"), drops),
        };
        if let Err(e) = stat.check() {
            return self.drop_input(DropReason::BadStat, src, &format_args!("stat from {gateway_id}: {e}"), drops);
        }
        let pull_ip = self.shared.gateways_read().get(&gateway_id).and_then(|g| g.pull.current()).map(|a| a.ip().to_canonical());
        if pull_ip.is_some_and(|ip| ip != src.ip().to_canonical()) {
            let detail = format_args!("stat from {gateway_id} not from the host of its PULL_DATA");
            return self.drop_input(DropReason::StatSourceMismatch, src, &detail, drops);
        }
        let stats = stat.to_gateway_stats();
        self.shared.metrics.stats(&stats);
        self.emit(GatewayEvent::Stats { gateway_id, stats, at: now }, src, drops);
    }

    /// PROTOCOL.TXT §5.2/§5.3: the source address of PULL_DATA is where downlinks go, once
    /// it has proven itself (`pull_address`).
    async fn on_pull_data(&self, token: u16, gateway_id: GatewayId, src: SocketAddr, drops: &mut DatagramLog) {
        self.reply(&PullAck { token }.encode(), src, drops).await;
        match self.shared.known.admission(gateway_id, src.ip()) {
            Admission::Allowed => self.pulled(gateway_id, Utc::now(), src, drops),
            Admission::UnknownGateway => {
                if let Some(count) = drops.notice(Notice::PullDataFromUnknownGateway) {
                    tracing::debug!(gateway_id = %gateway_id, %src, count, "PULL_DATA from an unregistered gateway");
                }
            }
            Admission::SourceNotAllowed => self.drop_source_not_allowed(gateway_id, src, drops),
        }
    }

    fn drop_source_not_allowed(&self, gateway_id: GatewayId, src: SocketAddr, drops: &mut DatagramLog) {
        let detail = format_args!("gateway {gateway_id} is not allowed to send from {}", src.ip());
        self.drop_input(DropReason::SourceNotAllowed, src, &detail, drops);
    }

    /// PROTOCOL.TXT §5.5: hands the verdict to the `Handle::send` waiting on this token. Only
    /// the address the PULL_RESP went to can give it: anyone else could spray all 65,536
    /// tokens and mark real downlinks as failed.
    fn on_tx_ack(&self, token: u16, gateway_id: GatewayId, body: &[u8], src: SocketAddr, drops: &mut DatagramLog) {
        if self.shared.known.admission(gateway_id, src.ip()) == Admission::SourceNotAllowed {
            return self.drop_source_not_allowed(gateway_id, src, drops);
        }
        let sent_to = self.shared.pending().get(&(gateway_id, token)).map(|p| p.sent_to);
        if sent_to.is_some_and(|to| to != src) {
            let detail = format_args!("TX_ACK for {gateway_id} token {token} not from the address of its PULL_RESP");
            return self.drop_input(DropReason::TxAckWrongAddress, src, &detail, drops);
        }
        let status = match TxAckPayload::parse(body) {
            Ok(payload) => {
                let ack = TxAck { token, gateway_id, payload };
                let status = ack.status();
                if status == TxAckStatus::Unknown {
                    if let Some(count) = drops.notice(Notice::TxAckUnknownError) {
                        let name = ack.payload.and_then(|p| p.txpk_ack).and_then(|a| a.error).unwrap_or_default();
                        tracing::warn!(gateway_id = %gateway_id, token, error = ?untrusted(&name), count, "TX_ACK with an unknown error name");
                    }
                }
                status
            }
            Err(e) => {
                self.drop_input(DropReason::BadJson, src, &format_args!("TX_ACK from {gateway_id}: {e}"), drops);
                TxAckStatus::Unknown
            }
        };
        let waiting = self.shared.pending().remove(&(gateway_id, token));
        match waiting {
            Some(p) => {
                let _ = p.waiter.send(status);
            }
            None => {
                if let Some(count) = drops.notice(Notice::TxAckNotPending) {
                    tracing::debug!(gateway_id = %gateway_id, token, count, "TX_ACK for no pending downlink (late or duplicate)")
                }
            }
        }
    }

    /// A PUSH_DATA was taken: updates `lastSeenAt` (throttled `Seen` event).
    fn seen(&self, gateway_id: GatewayId, now: DateTime<Utc>, drops: &mut DatagramLog) {
        let emit_seen = {
            let mut gateways = self.shared.gateways_write();
            gateways.entry(gateway_id).or_default().touch(now)
        };
        if emit_seen {
            self.emit(GatewayEvent::Seen { gateway_id, at: now }, SocketAddr::from(([0, 0, 0, 0], 0)), drops);
        }
    }

    /// A PULL_DATA from an allowed source: runs the downlink-address state machine. Only a
    /// PULL_DATA from (what is now) the downlink address counts as a sign of life; one from
    /// elsewhere is logged and counted. A PULL_DATA that brings a gateway back online updates
    /// the online gauge at once rather than at the next refresh.
    fn pulled(&self, gateway_id: GatewayId, now: DateTime<Utc>, src: SocketAddr, drops: &mut DatagramLog) {
        let offline_after = self.shared.offline_after();
        let (outcome, emit_seen, came_online) = {
            let mut gateways = self.shared.gateways_write();
            let entry = gateways.entry(gateway_id).or_default();
            let was_online = entry.online(offline_after);
            let outcome = entry.pull.on_pull_data(src, Instant::now(), offline_after);
            let mut emit_seen = false;
            if outcome.came_from_downlink_address() {
                entry.last_pull_at = Some(now);
                entry.last_pull = Some(Instant::now());
                emit_seen = entry.touch(now);
            }
            (outcome, emit_seen, !was_online && entry.online(offline_after))
        };
        match outcome {
            PullOutcome::Current => {}
            PullOutcome::Established => {
                if let Some(count) = drops.notice(Notice::PullAddressSet) {
                    tracing::info!(gateway_id = %gateway_id, addr = %src, count, "gateway downlink address");
                }
            }
            PullOutcome::Pending { current, seen } => {
                self.shared.metrics.address_change(false);
                if let Some(count) = drops.notice(Notice::PullAddressPending) {
                    tracing::warn!(
                        gateway_id = %gateway_id, old_addr = %current, new_addr = %src, seen, count,
                        "PULL_DATA from another address than the gateway's downlink address (NAT rebinding or spoofing); downlinks stay until it is confirmed"
                    );
                }
            }
            PullOutcome::Moved { from } => {
                self.shared.metrics.address_change(true);
                if let Some(count) = drops.notice(Notice::PullAddressMoved) {
                    tracing::warn!(
                        gateway_id = %gateway_id, old_addr = %from, new_addr = %src, count,
                        "gateway downlink address moved after consecutive PULL_DATA from the new address"
                    );
                }
            }
        }
        if came_online {
            self.shared.refresh();
        }
        if emit_seen {
            self.emit(GatewayEvent::Seen { gateway_id, at: now }, src, drops);
        }
    }

    /// Hands an event upward without waiting; `false` when it was dropped.
    fn emit(&self, event: GatewayEvent, src: SocketAddr, drops: &mut DatagramLog) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drop_input(DropReason::ChannelFull, src, &"event channel full (gateway.uplink_queue)", drops);
                false
            }
            // The consumer is gone, i.e. the program is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn drop_input(&self, reason: DropReason, src: SocketAddr, detail: &dyn Display, drops: &mut DatagramLog) {
        self.shared.metrics.dropped(reason);
        let _logged = drops.dropped(reason, src, detail);
    }

    async fn reply(&self, datagram: &[u8], to: SocketAddr, drops: &mut DatagramLog) {
        if let Err(e) = self.shared.socket.send_to(datagram, to).await {
            if let Some(count) = drops.notice(Notice::ReplyFailed) {
                tracing::debug!(%to, error = %e, count, "cannot send ACK");
            }
        }
    }
}

/// Cheap, cloneable access to a running [`PacketForwarder`]: downlinks and gateway state.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Sends `frame` in a PULL_RESP to the address of the gateway's last PULL_DATA and waits
    /// for the matching TX_ACK (same gateway and token) up to `gateway.tx_ack_timeout_ms`.
    ///
    /// `GatewayNotConnected` when the gateway never sent PULL_DATA (or the datagram could not
    /// be sent), `Timeout` without TX_ACK in time, `Unknown` when the frame cannot be expressed
    /// as a txpk (LR-FHSS, payload over 255 bytes). Never leaves a pending entry behind.
    pub async fn send(&self, frame: DownlinkFrame) -> TxAckStatus {
        let status = self.shared.send(frame).await;
        self.shared.metrics.tx_ack(status);
        status
    }

    /// `None` for a gateway never heard since it was allowed.
    pub fn gateway_state(&self, id: GatewayId) -> Option<GatewayState> {
        let offline_after = self.shared.offline_after();
        self.shared.gateways_read().get(&id).map(|g| GatewayState {
            pull_addr: g.pull.current(),
            last_pull_at: g.last_pull_at,
            last_seen_at: g.last_seen_at,
            online: g.online(offline_after),
        })
    }

    /// Gateways whose last PULL_DATA from their downlink address came after `since`, with its
    /// time: what this server holds now. Used to record gateway routes in a cluster without
    /// a write per datagram.
    pub fn pulled_since(&self, since: Instant) -> Vec<(GatewayId, Instant)> {
        self.shared.gateways_read().iter().filter_map(|(id, g)| g.last_pull.filter(|t| *t > since).map(|t| (*id, t))).collect()
    }

    /// How long [`send`](Self::send) waits for a TX_ACK (`gateway.tx_ack_timeout_ms`).
    pub fn tx_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.config.tx_ack_timeout_ms)
    }

    /// Gateways with a PULL_DATA within `gateway.offline_after_secs`.
    pub fn online_count(&self) -> usize {
        self.shared.online_count()
    }

    /// Downlinks currently waiting for a TX_ACK.
    pub fn pending_tx_acks(&self) -> usize {
        self.shared.pending().len()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("local_addr", &self.shared.socket.local_addr().ok()).finish()
    }
}
