//! The MQTT transport: a bounded publish queue in front of a rumqttc connection that
//! survives broker outages without losing or reordering what it accepted.
//!
//! Two tasks:
//! - the *link* task owns the rumqttc `EventLoop`: it polls it, reconnects with backoff,
//!   turns incoming command publishes into [`DownlinkCommand`]s, and reports connection
//!   events, packet ids and PUBACKs to the driver;
//! - the *driver* task owns the queue and the [`Tracker`]: it hands messages to rumqttc
//!   while connected (at most `MAX_INFLIGHT` un-acknowledged), counts PUBACKs, and on a
//!   lost connection takes every un-acknowledged message back to send it again first.
//!
//! On a lost connection the link task waits for the driver to take its messages back
//! before it empties rumqttc's own buffers, so a message is never both re-queued by us
//! and re-sent by rumqttc.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::command::{command_subscription, DownlinkCommand};
use super::connect::{client_options, Broker, MAX_INFLIGHT};
use super::embedded::EmbeddedBroker;
use super::gate::{Gate, MqttAuthenticator};
use super::metrics::MqttMetrics;
use super::tracker::{Outbound, Tracked, Tracker};
use super::{MqttConfig, MqttError, MqttQueueFull};
use loraflow_packet_forwarder::log_limit::LogLimiter;

/// How long the transport keeps delivering after `shutdown` is cancelled.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Downlink commands waiting for their consumer.
const COMMAND_QUEUE: usize = 1024;
/// How long `start` waits for its client to reach the embedded broker.
const EMBEDDED_READY_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Connection attempts may fail this long before it is worth a warning.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(1);
/// At most one "broker unreachable" / "queue full" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(30);
/// Larger messages on a command topic are ignored (and counted). A command is a small JSON
/// document (a downlink carries at most 242 bytes); the limit leaves room for `object`.
pub(crate) const MAX_COMMAND_SIZE: usize = 64 * 1024;

/// Starts the MQTT integration (DESIGN.md §2, §4).
pub struct MqttIntegration;

impl MqttIntegration {
    /// Connects to `cfg.url`, or starts the embedded broker on `cfg.embedded_bind` when the
    /// URL is empty and returns its real address (port 0 resolved) as the third element.
    ///
    /// With an external broker this returns at once and connects in the background,
    /// retrying for as long as it takes; with the embedded one it returns once connected
    /// (or fails, naming the address and the key that moves it). When `shutdown` is
    /// cancelled the transport stops accepting, delivers what it can for up to 2 s,
    /// disconnects and then resolves [`MqttHandle::stopped`].
    pub async fn start(
        cfg: &MqttConfig,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<(MqttHandle, mpsc::Receiver<DownlinkCommand>, Option<SocketAddr>), MqttError> {
        let (handle, commands, embedded) = Self::start_with_broker(cfg, registry, shutdown).await?;
        Ok((handle, commands, embedded.map(|b| b.listen)))
    }

    async fn start_with_broker(
        cfg: &MqttConfig,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<(MqttHandle, mpsc::Receiver<DownlinkCommand>, Option<EmbeddedBroker>), MqttError> {
        let metrics = MqttMetrics::register(registry)?;
        // Stopped with the transport (after its flush), not with `shutdown`.
        let broker_stop = CancellationToken::new();
        let gate = Arc::new(Gate {
            allow_anonymous: cfg.allows_anonymous(),
            authenticator: std::sync::OnceLock::new(),
            denied: metrics.embedded_denied.clone(),
        });
        let (options, embedded) = if cfg.url.is_empty() {
            let broker =
                EmbeddedBroker::start(cfg.embedded_bind, cfg.embedded_max_connections, gate.clone(), metrics.clone(), broker_stop.clone())
                    .await?;
            (client_options(cfg, Broker::Embedded(broker.connect_addr()))?, Some(broker))
        } else {
            (client_options(cfg, Broker::External(&cfg.url))?, None)
        };
        let broker_label = match &embedded {
            Some(b) => format!("embedded {}", b.listen),
            None => {
                let (host, port) = options.broker_address();
                format!("{host}:{port}")
            }
        };
        let status = Arc::new(LinkStatus {
            broker: broker_label.clone(),
            since: std::sync::Mutex::new((Instant::now(), Some("not connected yet".to_string()))),
            embedded_healthy: embedded.as_ref().map(|b| b.health_flag()),
        });

        let (client, mut eventloop) = AsyncClient::new(options, MAX_INFLIGHT as usize + 16);
        eventloop.network_options.set_tcp_nodelay(true);
        let (queue_tx, queue_rx) = mpsc::channel(cfg.queue_size.max(1));
        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (link_tx, link_rx) = mpsc::unbounded_channel();

        let shared = Arc::new(Shared {
            queue: queue_tx,
            queue_size: cfg.queue_size.max(1),
            outstanding: AtomicUsize::new(0),
            drained: Notify::new(),
            accepting: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            stopped: CancellationToken::new(),
            full_warning: LogLimiter::new(WARN_INTERVAL),
            invalid_warning: LogLimiter::new(WARN_INTERVAL),
            metrics: metrics.clone(),
            status: status.clone(),
            gate,
        });

        // Cancelled by `shutdown`, or by us when start-up fails after the tasks exist.
        let stop = shutdown.child_token();
        let link_stop = CancellationToken::new();
        let link = tokio::spawn(
            Link {
                eventloop,
                events: link_tx,
                commands: command_tx,
                metrics: metrics.clone(),
                stop: link_stop.clone(),
                broker: broker_label,
                status,
                command_warning: LogLimiter::new(WARN_INTERVAL),
            }
            .run(),
        );
        let driver = Driver {
            queue: queue_rx,
            retry: VecDeque::new(),
            tracker: Tracker::new(MAX_INFLIGHT as usize),
            next_seq: 0,
            client,
            link_events: link_rx,
            shared: shared.clone(),
            connected: false,
            command_filter: command_subscription(cfg.command_share_group.as_deref()),
        };
        tokio::spawn(driver.run(stop.clone(), link, link_stop, broker_stop.clone()));

        let handle = MqttHandle { shared };
        let Some(broker) = embedded else {
            return Ok((handle, command_rx, None));
        };
        let deadline = Instant::now() + EMBEDDED_READY_TIMEOUT;
        while !handle.is_connected() {
            if Instant::now() >= deadline {
                stop.cancel();
                return Err(MqttError::EmbeddedStart { addr: broker.listen, reason: "no MQTT connection to it within 5 s".into() });
            }
            sleep(Duration::from_millis(20)).await;
        }
        info!(listen = %broker.listen, "embedded MQTT broker started");
        Ok((handle, command_rx, Some(broker)))
    }
}

/// Publishes into the transport's queue. Cheap to clone; every clone feeds the same queue.
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

impl MqttHandle {
    /// Lets clients of the embedded broker in with credentials, checked by `authenticator`
    /// (until then only anonymous clients, where allowed). Set once; later calls are ignored.
    pub fn set_authenticator(&self, authenticator: Arc<dyn MqttAuthenticator>) {
        let _ = self.shared.gate.authenticator.set(authenticator);
    }
}

struct Shared {
    /// The embedded broker's access rules (unused with an external broker).
    gate: Arc<Gate>,
    queue: mpsc::Sender<Outbound>,
    queue_size: usize,
    /// Accepted by `publish` and not yet acknowledged by the broker.
    outstanding: AtomicUsize,
    /// Notified when `outstanding` drops to zero.
    drained: Notify,
    accepting: AtomicBool,
    /// Connected and subscribed to downlink commands.
    ready: AtomicBool,
    /// Cancelled when the transport has disconnected for good.
    stopped: CancellationToken,
    full_warning: LogLimiter,
    invalid_warning: LogLimiter,
    metrics: MqttMetrics,
    status: Arc<LinkStatus>,
}

/// What `/health/ready` reports about the broker connection.
struct LinkStatus {
    broker: String,
    /// Since when the connection is up (`None`) or down (`Some(last error)`).
    since: std::sync::Mutex<(Instant, Option<String>)>,
    /// Embedded broker: `false` while the supervisor replaces a broken instance.
    embedded_healthy: Option<Arc<AtomicBool>>,
}

impl LinkStatus {
    fn set(&self, error: Option<String>) {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        if since.1.is_none() != error.is_none() {
            since.0 = Instant::now();
        }
        since.1 = error;
    }
}

/// The state of the broker connection, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttHealth {
    /// `embedded 127.0.0.1:1883` or `host:port`.
    pub broker: String,
    /// Connected and subscribed to downlink commands.
    pub connected: bool,
    /// How long the connection has been in its current state.
    pub for_secs: u64,
    /// Why not connected (the last connection error), when not.
    pub reason: Option<String>,
}

impl MqttHandle {
    /// Queues a message for publishing with QoS 1, not retained. Never waits: when the
    /// queue holds `mqtt.queue_size` messages (or the transport has stopped) the message
    /// is dropped, counted in `loraflow_mqtt_queue_dropped_total` and refused.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), MqttQueueFull> {
        let s = &*self.shared;
        if let Err(reason) = check_message(&topic, &payload) {
            // A broker drops the connection on such a packet; queued, it would do so after
            // every reconnect and block everything behind it.
            s.metrics.publish_failures.inc();
            if let Some(suppressed) = s.invalid_warning.allow() {
                warn!(
                    reason,
                    topic_len = topic.len(),
                    payload_len = payload.len(),
                    refused_since_last_warning = suppressed,
                    "MQTT message refused"
                );
            }
            return Err(MqttQueueFull);
        }
        if !s.accepting.load(Ordering::Acquire) {
            s.metrics.queue_dropped.inc();
            return Err(MqttQueueFull);
        }
        // Counted before it is visible to the driver, so `flush` never sees a false zero.
        s.outstanding.fetch_add(1, Ordering::AcqRel);
        s.metrics.queue_depth.inc();
        match s.queue.try_send(Outbound { topic, payload }) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.complete(1);
                s.metrics.queue_dropped.inc();
                if let Some(suppressed) = s.full_warning.allow() {
                    warn!(
                        queue_size = s.queue_size,
                        dropped_since_last_warning = suppressed,
                        "MQTT publish queue full, dropping message (broker down or too slow? see mqtt.queue_size)"
                    );
                }
                Err(MqttQueueFull)
            }
        }
    }

    /// Messages accepted and not yet acknowledged by the broker (queued, or sent and
    /// waiting for PUBACK).
    pub fn queue_depth(&self) -> usize {
        self.shared.outstanding.load(Ordering::Acquire)
    }

    /// Waits until every accepted message is acknowledged by the broker, or `timeout`.
    /// Returns whether everything was acknowledged.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.queue_depth() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return self.queue_depth() == 0;
            }
        }
    }

    /// Connected to the broker and subscribed to downlink commands.
    pub fn is_connected(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// The broker connection's state, for `/health/ready`.
    pub fn health(&self) -> MqttHealth {
        let status = &self.shared.status;
        let (since, error) = status.since.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let connected = self.is_connected();
        let broker_broken = status.embedded_healthy.as_ref().is_some_and(|h| !h.load(Ordering::Acquire));
        let reason = match (connected, broker_broken, error) {
            (_, true, _) => Some("the embedded broker stopped answering and is being restarted".to_string()),
            (true, false, _) => None,
            (false, false, Some(e)) => Some(e),
            (false, false, None) => Some("connected, waiting for the downlink command subscription".to_string()),
        };
        MqttHealth { broker: status.broker.clone(), connected: connected && !broker_broken, for_secs: since.elapsed().as_secs(), reason }
    }

    /// Resolves once the transport has shut down (after `shutdown` was cancelled, its
    /// flush and its disconnect).
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await
    }

    fn complete(&self, n: usize) {
        self.shared.complete(n)
    }
}

impl Shared {
    fn complete(&self, n: usize) {
        self.metrics.queue_depth.sub(n as i64);
        if self.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            self.drained.notify_waiters();
        }
    }
}

fn check_message(topic: &str, payload: &[u8]) -> Result<(), &'static str> {
    // MQTT 3.1.1 §4.7: a topic name has at least one character, no wildcards, no NUL.
    if topic.is_empty() {
        return Err("empty topic");
    }
    if topic.contains(['+', '#', '\0']) {
        return Err("wildcard or NUL in topic");
    }
    if !super::publish_fits(topic, payload.len()) {
        return Err("message larger than the MQTT packet limit");
    }
    Ok(())
}

/// What the link task tells the driver, in the order it happened on the connection.
#[derive(Debug)]
enum LinkEvent {
    Connected,
    Subscribed {
        granted: bool,
    },
    /// rumqttc wrote the oldest submitted publish with this packet id.
    Sent(u16),
    Acked(u16),
    /// The connection is gone. The link task waits for this to be answered before it
    /// clears rumqttc's buffers and reconnects.
    Disconnected(oneshot::Sender<()>),
}

struct Link {
    eventloop: EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
    commands: mpsc::Sender<DownlinkCommand>,
    metrics: MqttMetrics,
    stop: CancellationToken,
    broker: String,
    status: Arc<LinkStatus>,
    /// At most one warning per interval about refused or dropped commands.
    command_warning: LogLimiter,
}

impl Link {
    async fn run(mut self) {
        let mut connected = false;
        let mut backoff = RECONNECT_MIN;
        let unreachable = LogLimiter::new(WARN_INTERVAL);
        // Failed attempts start counting here; the first second is not worth a warning
        // (the embedded broker may still be binding its port).
        let mut unreachable_since = Instant::now();
        loop {
            let polled = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(event) => {
                    if let Event::Incoming(Incoming::ConnAck(_)) = event {
                        connected = true;
                        backoff = RECONNECT_MIN;
                        unreachable_since = Instant::now();
                        self.metrics.connected.set(1);
                        self.status.set(None);
                        info!(broker = %self.broker, "connected to MQTT broker");
                    }
                    if !self.forward(event) {
                        break;
                    }
                }
                Err(error) => {
                    self.status.set(Some(error.to_string()));
                    // Packets read before the error (PUBACKs) are still buffered in rumqttc's
                    // state: they happened, and must not surface after the next CONNACK.
                    let buffered: Vec<Event> = self.eventloop.state.events.drain(..).collect();
                    for event in buffered {
                        self.forward(event);
                    }
                    if connected {
                        connected = false;
                        self.metrics.connected.set(0);
                        self.metrics.reconnects.inc();
                        warn!(broker = %self.broker, error = %error, "MQTT connection lost, reconnecting");
                        let (taken_tx, taken_rx) = oneshot::channel();
                        if self.events.send(LinkEvent::Disconnected(taken_tx)).is_err() {
                            break;
                        }
                        let _ = taken_rx.await;
                        unreachable_since = Instant::now();
                    } else if unreachable_since.elapsed() < UNREACHABLE_GRACE {
                        debug!(broker = %self.broker, error = %error, "MQTT broker not reachable yet");
                    } else if let Some(suppressed) = unreachable.allow() {
                        warn!(
                            broker = %self.broker,
                            error = %error,
                            failed_attempts_not_logged = suppressed,
                            "MQTT broker unreachable, retrying"
                        );
                    }
                    // The driver owns re-delivery (see tracker.rs): drop rumqttc's copies of
                    // un-acknowledged publishes and unread requests, and a parked collision
                    // that would otherwise block all requests on the next connection.
                    self.eventloop.clean();
                    self.eventloop.pending.clear();
                    self.eventloop.state.collision = None;
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
        self.metrics.connected.set(0);
    }

    /// `false` when the driver is gone.
    fn forward(&self, event: Event) -> bool {
        let link_event = match event {
            Event::Incoming(Incoming::ConnAck(_)) => LinkEvent::Connected,
            Event::Incoming(Incoming::SubAck(ack)) => {
                LinkEvent::Subscribed { granted: ack.return_codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))) }
            }
            Event::Incoming(Incoming::PubAck(ack)) => LinkEvent::Acked(ack.pkid),
            Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Sent(pkid),
            Event::Incoming(Incoming::Publish(publish)) => {
                self.command(&publish.topic, &publish.payload);
                return true;
            }
            _ => return true,
        };
        self.events.send(link_event).is_ok()
    }

    fn command(&self, topic: &str, payload: &[u8]) {
        if payload.len() > MAX_COMMAND_SIZE {
            // Anyone may publish on a command topic: refuse before copying or parsing.
            self.metrics.commands_rejected.inc();
            if let Some(suppressed) = self.command_warning.allow() {
                warn!(
                    payload_len = payload.len(),
                    limit = MAX_COMMAND_SIZE,
                    refused_or_dropped_since_last_warning = suppressed,
                    "MQTT downlink command too large, ignored"
                );
            }
            return;
        }
        let Some(command) = DownlinkCommand::from_publish(topic, payload) else {
            debug!(topic_len = topic.len(), "ignoring MQTT message outside the command topics");
            return;
        };
        self.metrics.commands_received.inc();
        if self.commands.try_send(command).is_err() {
            self.metrics.commands_dropped.inc();
            if let Some(suppressed) = self.command_warning.allow() {
                warn!(refused_or_dropped_since_last_warning = suppressed, "downlink command queue full, dropping command");
            }
        }
    }
}

struct Driver {
    queue: mpsc::Receiver<Outbound>,
    /// Taken back after a lost connection; sent before anything from `queue`.
    retry: VecDeque<Tracked>,
    tracker: Tracker,
    next_seq: u64,
    client: AsyncClient,
    link_events: mpsc::UnboundedReceiver<LinkEvent>,
    shared: Arc<Shared>,
    connected: bool,
    /// Where downlink commands are subscribed (`command::command_subscription`).
    command_filter: String,
}

impl Driver {
    async fn run(
        mut self,
        stop: CancellationToken,
        mut link: JoinHandle<()>,
        link_stop: CancellationToken,
        broker_stop: CancellationToken,
    ) {
        let mut flush_deadline: Option<Instant> = None;
        loop {
            self.pump();
            if flush_deadline.is_some() && self.shared.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            let can_take = self.connected && self.retry.is_empty() && self.tracker.has_room();
            tokio::select! {
                biased;
                event = self.link_events.recv() => match event {
                    Some(event) => self.on_link_event(event),
                    None => break,
                },
                _ = stop.cancelled(), if flush_deadline.is_none() => {
                    self.shared.accepting.store(false, Ordering::Release);
                    flush_deadline = Some(Instant::now() + SHUTDOWN_FLUSH);
                }
                _ = sleep_until_opt(flush_deadline) => break,
                message = self.queue.recv(), if can_take => {
                    if let Some(message) = message {
                        let tracked = self.track(message);
                        self.submit(tracked);
                    }
                }
            }
        }

        self.shared.accepting.store(false, Ordering::Release);
        self.shared.ready.store(false, Ordering::Release);
        let abandoned = self.shared.outstanding.load(Ordering::Acquire);
        if abandoned > 0 {
            self.shared.metrics.publish_failures.inc_by(abandoned as u64);
            warn!(messages = abandoned, "MQTT messages not delivered before shutdown");
        }
        // DISCONNECT lets the link task end by itself once it is written (MQTT 3.1.1 §3.14).
        let mut link_done = false;
        if self.connected && self.client.try_disconnect().is_ok() {
            link_done = tokio::time::timeout(Duration::from_millis(500), &mut link).await.is_ok();
        }
        if !link_done {
            link_stop.cancel();
            let _ = link.await;
        }
        broker_stop.cancel();
        self.shared.stopped.cancel();
        debug!("MQTT transport stopped");
    }

    fn track(&mut self, msg: Outbound) -> Tracked {
        self.next_seq += 1;
        Tracked { seq: self.next_seq, msg }
    }

    /// Hands waiting messages to rumqttc while connected and the in-flight window has room.
    fn pump(&mut self) {
        while self.connected && self.tracker.has_room() {
            let next = match self.retry.pop_front() {
                Some(t) => t,
                None => match self.queue.try_recv() {
                    Ok(m) => self.track(m),
                    Err(_) => return,
                },
            };
            if !self.submit(next) {
                return;
            }
        }
    }

    fn submit(&mut self, t: Tracked) -> bool {
        match self.client.try_publish(t.msg.topic.clone(), QoS::AtLeastOnce, false, t.msg.payload.clone()) {
            Ok(()) => {
                self.tracker.submitted(t);
                true
            }
            Err(e) => {
                // Only if the link task is gone (the channel has room for the whole window).
                debug!(error = %e, "rumqttc refused a request");
                self.retry.push_front(t);
                false
            }
        }
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => {
                self.connected = true;
                // Clean session: the broker forgot our subscription.
                if let Err(e) = self.client.try_subscribe(self.command_filter.clone(), QoS::AtLeastOnce) {
                    warn!(error = %e, "could not subscribe to MQTT downlink commands");
                }
            }
            LinkEvent::Subscribed { granted } => {
                if !granted {
                    warn!(filter = %self.command_filter, "MQTT broker refused the downlink command subscription");
                }
                self.shared.ready.store(self.connected, Ordering::Release);
            }
            LinkEvent::Sent(pkid) => {
                if !self.tracker.sent(pkid) {
                    debug!(pkid, "publish reported without a submitted message");
                }
            }
            LinkEvent::Acked(pkid) => {
                if self.tracker.acked(pkid).is_some() {
                    self.shared.metrics.published.inc();
                    self.shared.complete(1);
                }
            }
            LinkEvent::Disconnected(taken) => {
                self.connected = false;
                self.shared.ready.store(false, Ordering::Release);
                let unacked = self.tracker.take_unacked();
                if !unacked.is_empty() {
                    self.shared.metrics.publish_failures.inc_by(unacked.len() as u64);
                    debug!(messages = unacked.len(), "re-sending un-acknowledged MQTT messages after reconnect");
                }
                // Older than anything still in `retry` (those were never handed over).
                for t in unacked.into_iter().rev() {
                    self.retry.push_front(t);
                }
                let _ = taken.send(());
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_with_wildcards_or_nothing_are_refused() {
        assert!(check_message("application/a/device/b/event/up", b"{}").is_ok());
        assert!(check_message("", b"").is_err());
        assert!(check_message("a/+/b", b"").is_err());
        assert!(check_message("a/#", b"").is_err());
        assert!(check_message("a\0b", b"").is_err());
    }

    #[test]
    fn a_message_over_the_packet_limit_is_refused() {
        assert!(check_message("t", &vec![0; crate::mqtt::MAX_PUBLISH_PACKET - 10]).is_ok());
        assert!(check_message("t", &vec![0; crate::mqtt::MAX_PUBLISH_PACKET]).is_err());
    }

    #[tokio::test]
    async fn with_no_broker_the_queue_fills_up_and_then_refuses() {
        let registry = Registry::new();
        let cfg = MqttConfig { url: "mqtt://127.0.0.1:1".into(), queue_size: 3, ..MqttConfig::default() };
        let (handle, _commands, addr) = MqttIntegration::start(&cfg, &registry, CancellationToken::new()).await.unwrap();
        assert_eq!(addr, None);
        for i in 0..3 {
            handle.publish(format!("t/{i}"), vec![]).unwrap();
        }
        assert_eq!(handle.publish("t/3".into(), vec![]), Err(MqttQueueFull));
        assert_eq!(handle.queue_depth(), 3);
        assert!(!handle.is_connected());
        assert!(!handle.flush(Duration::from_millis(50)).await);
    }

    /// Messages published before, while and after the embedded rumqttd breaks and is
    /// replaced are all acknowledged by a broker, and the subscription is renewed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replaced_embedded_broker_loses_none_of_the_queued_messages() {
        let registry = Registry::new();
        let cfg = MqttConfig { embedded_bind: "127.0.0.1:0".parse().unwrap(), ..MqttConfig::default() };
        let (handle, mut commands, broker) = MqttIntegration::start_with_broker(&cfg, &registry, CancellationToken::new()).await.unwrap();
        let broker = broker.unwrap();
        let total = 600;
        let old_backend = broker.backend_addr();
        let publishing = {
            let handle = handle.clone();
            tokio::spawn(async move {
                for i in 0..total {
                    handle.publish(format!("t/{i}"), vec![0; 64]).unwrap();
                    sleep(Duration::from_millis(5)).await;
                }
            })
        };
        sleep(Duration::from_millis(300)).await;
        super::super::embedded::tests::break_rumqttd(old_backend).await;
        publishing.await.unwrap();
        assert!(handle.flush(Duration::from_secs(15)).await, "every message acknowledged, {} left", handle.queue_depth());
        let metric = |name: &str| {
            let f = registry.gather().into_iter().find(|f| f.name() == name).unwrap();
            let m = &f.get_metric()[0];
            m.get_counter().get_value().max(m.get_gauge().get_value())
        };
        assert_ne!(broker.backend_addr(), old_backend, "rumqttd was replaced");
        assert!(metric("loraflow_mqtt_embedded_restarts_total") >= 1.0);
        assert!(metric("loraflow_mqtt_connection_losses_total") >= 1.0, "the client was moved to the new instance");
        assert_eq!(metric("loraflow_mqtt_published_total"), total as f64);
        assert_eq!(metric("loraflow_mqtt_queue_dropped_total"), 0.0);

        // Subscribed again on the new instance: a command still arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.is_connected() {
            assert!(Instant::now() < deadline, "connected again");
            sleep(Duration::from_millis(20)).await;
        }
        assert!(handle.health().connected);
        let mut options = rumqttc::MqttOptions::new("commander", "127.0.0.1", broker.listen.port());
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let topic = "application/a/device/0102030405060708/command/down";
        client.publish(topic, QoS::AtLeastOnce, false, b"{}".to_vec()).await.unwrap();
        let command = tokio::time::timeout(Duration::from_secs(10), commands.recv()).await.expect("a command").unwrap();
        assert_eq!(command.dev_eui, "0102030405060708");
    }

    #[tokio::test]
    async fn after_shutdown_publish_is_refused_and_stopped_resolves() {
        let registry = Registry::new();
        let cfg = MqttConfig { url: "mqtt://127.0.0.1:1".into(), queue_size: 10, ..MqttConfig::default() };
        let shutdown = CancellationToken::new();
        let (handle, _commands, _) = MqttIntegration::start(&cfg, &registry, shutdown.clone()).await.unwrap();
        handle.publish("t/queued".into(), vec![1]).unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle.stopped()).await.expect("stops within the flush timeout");
        assert_eq!(handle.publish("t/late".into(), vec![]), Err(MqttQueueFull));
        let failures = registry.gather().into_iter().find(|f| f.name() == "loraflow_mqtt_publish_failures_total").unwrap();
        assert_eq!(failures.get_metric()[0].get_counter().get_value(), 1.0, "the abandoned message is counted");
    }
}
