//! Class C downlinks (LoRaWAN 1.0.4 §6): a device whose profile has `supportsClassC` listens
//! on its RX2 frequency and data rate whenever it is not sending or in its RX1 window, so its
//! queue items go out at once (`imme`) through the gateway that heard its last uplink best,
//! falling back to the next one on a TX_ACK error, duty-cycle ledger included.
//!
//! Layout: `decide` is the pure decision; this file keeps what the server knows of each Class C
//! device's last uplink (in memory: after a restart a device must send an uplink before it gets
//! Class C downlinks), runs the scheduler that the queue changes and timers wake, and carries
//! the decision out with the Class A frame building and sending of `downlink`.
//!
//! Ordering: a Class C send touches the session (FCntDown, queue), so it runs as a job of the
//! uplink serializer under the device's DevAddr, never at the same time as one of its uplinks.
//!
//! Cluster: the instance that handled a device's last uplink owns its Class C downlinks
//! (`cluster::claims`); a queue change announced to every instance is acted on by the owner,
//! under the device's claim so that an item goes out once. The gateways it uses may be held by
//! other instances (`gateway_router`). If the owner stops, the device's Class C downlinks wait
//! for its next uplink, as after a restart of one process.
//!
//! Cost when idle: none. The scheduler sleeps until a queue changes (`NetworkHandle::
//! queue_changed`, from REST and MQTT) or a timer set for a device that waits (the end of its
//! receive windows, of a frame on air, or of a confirmed item's ACK wait) runs out.

pub mod decide;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use loraflow_packet_forwarder::frame::DownlinkFrame;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cluster::claims::{self, Claimed};
use crate::dedup::DedupedUplink;
use crate::downlink::decide::{session_rx, without_mac, DownlinkDecision, Planned, Why, Window};
use crate::downlink::send::Delivery;
use crate::downlink::{queue_items, settle, transmit, Responding, CLAIM_HOLD, MAX_CONFIRMED_TRANSMISSIONS};
use crate::downlink_attempts::RxWindow;
use crate::region::Modulation as RegionModulation;
use crate::region_config::RegionConfig;
use crate::serializer::KeyedSerializer;
use crate::server::{Context, UplinkKey};
use crate::storage::{DeviceContext, DeviceSession, QueueItem};
use crate::types::Eui64;
use decide::{ClassCDecision, ClassCInput, Next};

/// Label of `loraflow_class_c_downlinks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// No gateway could send it (none reachable, duty cycle, TX_ACK errors): it stays queued
    /// until the device's next uplink or the next change of its queue.
    NotSent,
    /// A confirmed item was never acknowledged and was dropped.
    Expired,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::NotSent => "not_sent",
            Outcome::Expired => "expired",
        }
    }
}

/// What the server knows of a Class C device between its uplinks.
#[derive(Clone)]
struct Heard {
    /// The session the uplink belonged to: a join or a new activation starts over.
    session_created_at: DateTime<Utc>,
    /// The last uplink, with the gateways that heard it, best first.
    uplink: Arc<DedupedUplink>,
    /// The region configuration of those gateways.
    region: Arc<RegionConfig>,
    /// The end of the last uplink's receive windows or of the last Class C frame on air.
    busy_until: DateTime<Utc>,
    /// The pending confirmed item last sent and when its ACK wait ends.
    ack_wait: Option<(Uuid, DateTime<Utc>)>,
}

/// Class C devices heard since the start, and the scheduler's timers.
#[derive(Default)]
pub struct ClassC {
    devices: Mutex<HashMap<Eui64, Heard>>,
    timers: Mutex<BTreeSet<(Instant, Eui64)>>,
}

impl ClassC {
    /// Devices to look at now: those whose queue changed (only the ones heard since the start
    /// can get anything) and those whose timer ran out.
    fn take_due(&self, woken: &Mutex<HashSet<Eui64>>, now: Instant) -> Vec<Eui64> {
        let woken: Vec<Eui64> = woken.lock().expect("lock").drain().collect();
        let mut due: Vec<Eui64> = {
            let devices = self.devices.lock().expect("lock");
            woken.into_iter().filter(|d| devices.contains_key(d)).collect()
        };
        let mut timers = self.timers.lock().expect("lock");
        while let Some(&(at, dev_eui)) = timers.first() {
            if at > now {
                break;
            }
            timers.pop_first();
            if !due.contains(&dev_eui) {
                due.push(dev_eui);
            }
        }
        due
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.lock().expect("lock").first().map(|(at, _)| *at)
    }

    fn get(&self, dev_eui: Eui64) -> Option<Heard> {
        self.devices.lock().expect("lock").get(&dev_eui).cloned()
    }

    fn update(&self, dev_eui: Eui64, f: impl FnOnce(&mut Heard)) {
        if let Some(h) = self.devices.lock().expect("lock").get_mut(&dev_eui) {
            f(h);
        }
    }

    fn forget(&self, dev_eui: Eui64) {
        self.devices.lock().expect("lock").remove(&dev_eui);
    }

    /// Class C devices heard since the start.
    pub fn len(&self) -> usize {
        self.devices.lock().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Looks at the device again at `at` (wall-clock, as the decision works).
fn wake_at(ctx: &Context, dev_eui: Eui64, at: DateTime<Utc>) {
    let after = (at - Utc::now()).to_std().unwrap_or_default();
    ctx.class_c.timers.lock().expect("lock").insert((Instant::now() + after, dev_eui));
    ctx.handle.shared.class_c_wake.notify_one();
}

/// Airtime of `phy_len` bytes at data rate `dr`; zero when the region does not know it.
fn airtime(region: &RegionConfig, dr: u8, phy_len: usize) -> Duration {
    region.region.data_rate(dr).and_then(|d| crate::airtime::downlink_time_on_air(&d.modulation, phy_len)).unwrap_or_default()
}

fn frame_airtime(frame: &DownlinkFrame) -> Duration {
    RegionModulation::from_frame(&frame.modulation)
        .and_then(|m| crate::airtime::downlink_time_on_air(&m, frame.phy_payload.len()))
        .unwrap_or_default()
}

/// Length of an empty data downlink (MHDR, FHDR, MIC).
const EMPTY_DOWNLINK_LEN: usize = 12;

/// A data uplink of a Class C device was handled (`downlink::after_data_uplink`): remember its
/// gateways and when its receive windows end, and look at the queue again then. `sent` is the
/// Class A frame that answered it, if any.
pub(crate) fn heard(
    ctx: &Context,
    region: &RegionConfig,
    up: &DedupedUplink,
    session: &DeviceSession,
    device: &DeviceContext,
    d: &DownlinkDecision,
    sent: Option<&DownlinkFrame>,
) {
    let rx = d.mac.rx;
    let rx2_delay = d.windows.map_or(u64::from(rx.rx1_delay.max(1)) + 1, |w| u64::from(w[1].delay_us) / 1_000_000);
    let busy = sent.map(frame_airtime).unwrap_or_default().max(airtime(region, rx.rx2_dr, EMPTY_DOWNLINK_LEN));
    let busy_until = decide::windows_close(up.first_seen, Duration::from_secs(rx2_delay), busy);
    let now = Utc::now();
    // A confirmed item the Class A answer carried waits `classCTimeout` for its ACK too.
    let sent_confirmed = sent.and(d.send.as_ref()).and_then(|p| p.item.as_ref()).filter(|i| i.confirmed);
    let timeout = chrono::Duration::seconds(i64::from(device.profile.class_c_timeout));
    let dev_eui = session.dev_eui;
    // The uplink's configuration as the server holds it (`region` is a borrow of it).
    let Some(region) = ctx.regions.get(&region.id).cloned() else { return };
    {
        let mut devices = ctx.class_c.devices.lock().expect("lock");
        let previous = devices.remove(&dev_eui).filter(|h| h.session_created_at == session.created_at);
        let ack_wait = match sent_confirmed {
            Some(item) => Some((item.id, now + timeout)),
            None => previous.and_then(|h| h.ack_wait),
        };
        devices
            .insert(dev_eui, Heard { session_created_at: session.created_at, uplink: Arc::new(up.clone()), region, busy_until, ack_wait });
    }
    if let Some(cluster) = &ctx.cluster {
        tokio::spawn({
            let cluster = cluster.clone();
            async move { claims::own_class_c(&cluster, dev_eui).await }
        });
    }
    if ctx.handle.shared.queued.read().expect("lock").contains_key(&dev_eui) {
        wake_at(ctx, dev_eui, busy_until);
    }
}

/// How soon a device whose claim another instance holds is looked at again.
const CLAIM_TAKEN_RETRY: Duration = Duration::from_secs(1);

/// The scheduler: sleeps until a queue changes or a timer runs out, then hands each device
/// concerned to the uplink serializer. Stops at `shutdown`.
pub(crate) async fn run(ctx: Arc<Context>, uplinks: Arc<KeyedSerializer<UplinkKey>>, shutdown: CancellationToken) {
    let shared = ctx.handle.shared.clone();
    loop {
        // Created before looking, so that a wake-up meanwhile is not lost.
        let woken = shared.class_c_wake.notified();
        for dev_eui in ctx.class_c.take_due(&shared.class_c_woken, Instant::now()) {
            let session = match ctx.cache.get(dev_eui).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    ctx.class_c.forget(dev_eui);
                    continue;
                }
                Err(e) => {
                    ctx.storage_error("could not read a Class C device's session", &e);
                    continue;
                }
            };
            let ctx = ctx.clone();
            uplinks.submit(Some(UplinkKey::DevAddr(session.dev_addr)), async move { send_next(&ctx, dev_eui).await }).await;
        }
        let next = ctx.class_c.next_timer();
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One look at a Class C device's queue, in its uplink order: settle, send or wait. In a
/// cluster only by the device's owner, holding its claim.
async fn send_next(ctx: &Context, dev_eui: Eui64) {
    let Some(heard) = ctx.class_c.get(dev_eui) else { return };
    let Some(cluster) = &ctx.cluster else { return look(ctx, dev_eui, heard).await };
    if let Some(owner) = claims::class_c_owner(cluster, dev_eui).await.filter(|o| o != cluster.instance_id()) {
        tracing::debug!(dev_eui = %dev_eui, owner = %owner, "Class C device handled by the instance that heard it last");
        return ctx.class_c.forget(dev_eui);
    }
    match claims::claim(cluster, dev_eui, CLAIM_HOLD).await {
        Claimed::Held(claim) => {
            look(ctx, dev_eui, heard).await;
            claim.release().await;
        }
        Claimed::Taken => wake_at(ctx, dev_eui, Utc::now() + chrono::Duration::from_std(CLAIM_TAKEN_RETRY).expect("small")),
        Claimed::Unavailable => look(ctx, dev_eui, heard).await,
    }
}

async fn look(ctx: &Context, dev_eui: Eui64, heard: Heard) {
    let (session, device) = match (ctx.cache.get(dev_eui).await, ctx.cache.context(dev_eui).await) {
        (Ok(Some(s)), Ok(d)) => (s, d),
        (Ok(None), _) | (_, Err(crate::storage::StorageError::NotFound)) => return ctx.class_c.forget(dev_eui),
        (Err(e), _) | (_, Err(e)) => return ctx.storage_error("could not read a Class C device", &e),
    };
    if heard.session_created_at != session.created_at || !device.profile.supports_class_c || device.device.is_disabled {
        return ctx.class_c.forget(dev_eui);
    }
    let items = queue_items(ctx, dev_eui).await;
    let rx = session_rx(&session);
    let d = decide::decide(&ClassCInput {
        supports_class_c: true,
        windows_close: Some(heard.busy_until),
        queue: &items,
        ack_wait: heard.ack_wait,
        class_c_timeout: Duration::from_secs(u64::from(device.profile.class_c_timeout)),
        max_payload: heard.region.region.max_payload_size(rx.rx2_dr).map_or(0, |m| m.n),
        max_confirmed_transmissions: MAX_CONFIRMED_TRANSMISSIONS,
        now: Utc::now(),
    });
    carry_out(ctx, &heard, &session, &device, d).await;
}

async fn carry_out(ctx: &Context, heard: &Heard, session: &DeviceSession, device: &Arc<DeviceContext>, d: ClassCDecision) {
    let dev_eui = session.dev_eui;
    let rx = session_rx(session);
    if let Some(expired) = &d.expired {
        ctx.metrics.class_c_downlinks.with_label_values(&[Outcome::Expired.as_str()]).inc();
        settle::settled(ctx, device, expired, Uuid::nil()).await;
    }
    settle::drop_too_large(ctx, device, &d.too_large, rx.rx2_dr).await;
    match d.next {
        Next::Idle => {}
        Next::AfterWindows(at) => wake_at(ctx, dev_eui, at),
        Next::AwaitAck { item, until } => {
            ctx.class_c.update(dev_eui, |h| h.ack_wait = Some((item, until)));
            wake_at(ctx, dev_eui, until);
        }
        Next::Send(item) => send(ctx, heard, session, device, item).await,
    }
}

/// Sends one queue item at once on the device's RX2 frequency and data rate, built exactly as
/// a Class A data downlink (FPort, FRMPayload, next FCntDown; no MAC commands).
async fn send(ctx: &Context, heard: &Heard, session: &DeviceSession, device: &Arc<DeviceContext>, item: QueueItem) {
    let rx = session_rx(session);
    let window = Window { name: RxWindow::Rx2, delay_us: 0, frequency: rx.rx2_frequency, dr: rx.rx2_dr };
    let d = DownlinkDecision {
        settled: None,
        too_large: Vec::new(),
        mac: without_mac(session),
        windows: None,
        send: Some(Planned {
            ack: false,
            adr: false,
            f_pending: false,
            item: Some(item.clone()),
            mac: Vec::new(),
            mac_on_f_port_0: false,
            why: vec![Why::QueueItem],
        }),
    };
    let r = Responding { up: &heard.uplink, region: &heard.region, device };
    let dev_eui = session.dev_eui;
    match transmit(ctx, &r, session, &d, &[window], Delivery::Immediately).await {
        Some((f_cnt_down, frame)) => {
            ctx.metrics.class_c_downlinks.with_label_values(&[Outcome::Sent.as_str()]).inc();
            tracing::debug!(dev_eui = %dev_eui, f_cnt_down, gateway_id = %frame.gateway_id, "Class C downlink sent");
            let now = Utc::now();
            let on_air_until = now + chrono::Duration::from_std(frame_airtime(&frame)).unwrap_or_else(|_| chrono::Duration::zero());
            let ack_until = now + chrono::Duration::seconds(i64::from(device.profile.class_c_timeout));
            ctx.class_c.update(dev_eui, |h| {
                h.busy_until = h.busy_until.max(on_air_until);
                if item.confirmed {
                    h.ack_wait = Some((item.id, ack_until));
                }
            });
            wake_at(ctx, dev_eui, if item.confirmed { ack_until } else { on_air_until });
        }
        None => ctx.metrics.class_c_downlinks.with_label_values(&[Outcome::NotSent.as_str()]).inc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard_entry() -> Heard {
        let at: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let uplink = DedupedUplink {
            deduplication_id: Uuid::nil(),
            phy_payload: Vec::new(),
            frames: Vec::new(),
            first_seen: at,
            first_seen_instant: Instant::now(),
            done: None,
        };
        let region = crate::region_config::Regions::single("EU868").first().clone();
        Heard { session_created_at: at, uplink: Arc::new(uplink), region, busy_until: at, ack_wait: None }
    }

    #[tokio::test(start_paused = true)]
    async fn only_heard_devices_are_woken_by_queue_changes_and_timers_fire_once_when_due() {
        let c = ClassC::default();
        let (heard, unknown, timed) = (Eui64([1; 8]), Eui64([2; 8]), Eui64([3; 8]));
        c.devices.lock().unwrap().insert(heard, heard_entry());
        let woken = Mutex::new(HashSet::from([heard, unknown]));
        let now = Instant::now();
        c.timers.lock().unwrap().insert((now + Duration::from_secs(2), timed));
        c.timers.lock().unwrap().insert((now + Duration::from_secs(1), heard));
        // A device never heard since the start cannot get a Class C downlink: not looked at.
        assert_eq!(c.take_due(&woken, now), vec![heard]);
        assert!(woken.lock().unwrap().is_empty());
        assert_eq!(c.next_timer(), Some(now + Duration::from_secs(1)));
        assert_eq!(c.take_due(&woken, now + Duration::from_secs(1)), vec![heard]);
        assert_eq!(c.take_due(&woken, now + Duration::from_secs(5)), vec![timed]);
        assert_eq!((c.take_due(&woken, now + Duration::from_secs(9)), c.next_timer()), (vec![], None));
    }
}
