//! Class A downlinks (LoRaWAN 1.0.4 §3.3, RP002-1.0.3 §2.4): what to send after a data
//! uplink, then the frame in RX1 (uplink tmst + RX1 delay, RX1 frequency and data rate) with
//! a fall back to RX2 (one second later, RX2 frequency and data rate), then to the next-best
//! gateway that heard the uplink, skipping windows that would break a gateway's duty cycle.
//! Also owns the downlink queue rules.
//!
//! Layout: `decide` is the pure decision (queue, MAC commands, ACK, FPending, ADR bit);
//! `send` plans the attempts (gateways x windows, duty-cycle ledger) and tries them until a
//! gateway accepts the frame; `settle` carries out the queue side.
//! This file runs the steps: read the queue, decide, report, settle, build, send, store the
//! MAC state (only when it changed).
//!
//! Confirmed downlinks: after the gateway accepted one, the queue item is pending. The
//! device's next uplink either acknowledges it (`ack` event, item removed) or not; without an
//! ACK the item is sent again with a new FCntDown, at most `MAX_CONFIRMED_TRANSMISSIONS` times
//! in all and never after `network.confirmed_downlink_timeout_secs`; then it is dropped with an
//! `ack` event `acknowledged: false` and an `EXPIRED` log event.

use std::sync::Arc;

use chrono::Utc;
use loraflow_packet_forwarder::frame::{DownlinkFrame, GatewayId, TxAckStatus};

use crate::dedup::DedupedUplink;
use crate::downlink_attempts::NoAttempt;
use crate::events::{AppEvent, LogCode, LogInfo, LogLevel, StatusInfo};
use crate::frame_feed::DownlinkFor;
use crate::lorawan::{self, DataDownlink};
use crate::mac::engine::{MacOutput, MacSettings, Outcome, UplinkFacts};
use crate::mac::state::{MacState, RxParams};
use crate::region::Modulation as RegionModulation;
use crate::region_config::RegionConfig;
use crate::server::Context;
use crate::storage::{DeviceContext, DeviceSession, QueueItem};
use crate::types::DevAddr;

pub mod decide;
pub mod send;
pub mod settle;

pub use decide::{class_a_windows, DownlinkDecision, DownlinkInput, Window};

pub const MAX_CONFIRMED_TRANSMISSIONS: u32 = 3;

/// The longest a device's claim (`cluster::claims`) can outlive an instance that stopped while
/// reading or sending its queue; released as soon as the send is done otherwise.
pub const CLAIM_HOLD: std::time::Duration = std::time::Duration::from_secs(15);

/// What a data uplink asks of its receive windows.
pub struct DataDownlinkPlan {
    pub session: DeviceSession,
    pub device: Arc<DeviceContext>,
    pub uplink: UplinkFacts,
    /// Only acknowledge (a repeated confirmed uplink): queue and MAC state are left alone.
    pub ack_only: bool,
    /// What ADR made of the uplink (`decide::adr_step`, already applied to the session's
    /// history).
    pub adr: Option<decide::AdrOutcome>,
}

/// The uplink being answered, the region configuration it is handled with and its device.
pub struct Responding<'a> {
    pub up: &'a DedupedUplink,
    pub region: &'a RegionConfig,
    pub device: &'a Arc<DeviceContext>,
}

pub async fn send_join_accept(
    ctx: &Context,
    region: &RegionConfig,
    up: &DedupedUplink,
    device: &Arc<DeviceContext>,
    dev_addr: DevAddr,
    phy: Vec<u8>,
) {
    let r = Responding { up, region, device };
    let reg = region.region.as_ref();
    let Some(uplink) = up.frames.first().map(|f| &f.tx_info) else { return };
    let Some(dr) = RegionModulation::from_frame(&uplink.modulation).and_then(|m| reg.dr_for(&m)) else {
        return;
    };
    // Before the join the device uses the region's defaults, with the join-accept delay.
    let rx = RxParams { rx1_delay: reg.join_accept_delay1().as_secs() as u8, ..RxParams::region_defaults(reg) };
    let Some(windows) = class_a_windows(reg, rx, uplink.frequency, dr) else {
        return;
    };
    let len = phy.len().saturating_sub(13);
    let Some(attempts) =
        plan_or_report(ctx, &r, &windows, send::Delivery::AfterUplink, (phy.len(), len), "join-accept", Awaited::ByDevice).await
    else {
        return;
    };
    let to = DownlinkFor { dev_eui: device.device.dev_eui, dev_addr: Some(dev_addr), f_cnt_down: None };
    if let send::Sent::Refused(last) = send::send_attempts(ctx, &attempts, phy, &to).await {
        report_refused(ctx, &r, "join-accept", last, None).await;
    }
}

/// Who is waiting for a downlink, which decides whether a duty-cycle refusal is worth a
/// `log` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// A join-accept, a queue item, an ACK, an answer to ADRACKReq or to a device's own MAC
    /// request: the application or the device waits for it.
    ByDevice,
    /// Only the server's own MAC commands (device status, channels, RX settings…): they stay
    /// pending and go out with a later downlink. When gateways run out of airtime this would
    /// be one `log` event per uplink of every device (measured: one per uplink at 5,000/s
    /// after a cold start), so such refusals are only counted in the metric.
    ByServer,
}

/// The attempts for a downlink, or `None` after reporting why there are none. A duty-cycle
/// refusal is counted, and for downlinks [`Awaited::ByDevice`] a WARNING `DOWNLINK_GATEWAY`
/// log event with `context.reason = "DUTY_CYCLE"`: ChirpStack's log codes (which consumers
/// validate against) have no duty-cycle code.
async fn plan_or_report<'a>(
    ctx: &Context,
    r: &Responding<'a>,
    windows: &[Window],
    delivery: send::Delivery,
    (phy_len, payload_len): (usize, usize),
    what: &str,
    awaited: Awaited,
) -> Option<Vec<send::Planned<'a>>> {
    let err = match send::plan(ctx, r.region, r.up, windows, delivery, phy_len, payload_len).await {
        Ok(attempts) => return Some(attempts),
        Err(e) => e,
    };
    match &err {
        NoAttempt::DutyCycle { refused } => {
            let band = err.blocking_sub_band().map_or("none", |b| b.as_str());
            ctx.metrics.downlinks_duty_cycle_refused.with_label_values(&[band]).inc();
            if awaited == Awaited::ByServer {
                tracing::debug!(sub_band = band, "MAC-only downlink deferred: duty cycle");
                return None;
            }
            let first = refused.first()?;
            let x = &first.exceeded;
            ctx.log(
                r.device,
                LogLevel::Warning,
                LogCode::DownlinkGateway,
                &format!("duty cycle: {what} not sent, {err}"),
                [
                    ("reason", "DUTY_CYCLE".to_string()),
                    ("gateway_id", x.gateway.to_string()),
                    ("window", first.window.to_string()),
                    ("sub_band", x.sub_band.as_str().to_string()),
                    ("used_ms", x.used.as_millis().to_string()),
                    ("limit_ms", x.limit.as_millis().to_string()),
                ],
            )
            .await;
        }
        NoAttempt::NoGateway => {
            ctx.log(
                r.device,
                LogLevel::Warning,
                LogCode::DownlinkGateway,
                &format!("{what} not sent: no gateway that heard the uplink can be reached (no PULL_DATA seen)"),
                [],
            )
            .await
        }
        NoAttempt::NoWindow => {
            ctx.log(
                r.device,
                LogLevel::Error,
                LogCode::DownlinkGateway,
                &format!("{what} not sent: no receive window's data rate can carry {payload_len} bytes"),
                [],
            )
            .await
        }
    }
    None
}

/// Every gateway refused the frame (TX_ACK errors), or other downlinks took the airtime.
async fn report_refused(ctx: &Context, r: &Responding<'_>, what: &str, last: Option<(GatewayId, TxAckStatus)>, f_cnt_down: Option<u32>) {
    let (level, description, mut context) = match last {
        Some((gateway, status)) => {
            (LogLevel::Error, format!("{what} not sent: {}", status.as_str()), vec![("gateway_id", gateway.to_string())])
        }
        None => (
            LogLevel::Warning,
            format!("duty cycle: {what} not sent, other downlinks used the planned airtime meanwhile"),
            vec![("reason", "DUTY_CYCLE".to_string())],
        ),
    };
    context.extend(f_cnt_down.map(|f| ("f_cnt_down", f.to_string())));
    ctx.emit(AppEvent::Log(LogInfo {
        time: Utc::now(),
        device: r.device.clone(),
        level,
        code: LogCode::DownlinkGateway,
        description,
        context: context.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }))
    .await;
}

/// Queue items of a device, reading the database only when the device may have some.
pub(crate) async fn queue_items(ctx: &Context, dev_eui: crate::types::Eui64) -> Vec<QueueItem> {
    let queued = &ctx.handle.shared.queued;
    let Some(version) = queued.read().expect("lock").get(&dev_eui).copied() else {
        return Vec::new();
    };
    match ctx.storage.queue.list(dev_eui).await {
        Ok(items) => {
            if items.is_empty() {
                let mut q = queued.write().expect("lock");
                if q.get(&dev_eui) == Some(&version) {
                    q.remove(&dev_eui);
                }
            }
            items
        }
        Err(e) => {
            ctx.storage_error("could not read the downlink queue", &e);
            Vec::new()
        }
    }
}

fn mac_settings(ctx: &Context, region: &RegionConfig, device: &DeviceContext) -> MacSettings {
    MacSettings {
        desired_rx: region.desired_rx,
        extra_channels: region.extra_channels.clone(),
        confined_channels: region.confined_channels().map(<[u8]>::to_vec),
        max_attempts: ctx.config.mac_command_max_attempts,
        max_duty_cycle: ctx.config.max_duty_cycle,
        dev_status_req_freq: device.profile.dev_status_req_freq,
        adr_enabled: device.profile.adr_enabled,
    }
}

/// In a cluster, a device's queue is read and sent under its claim, so that a Class C send on
/// another instance cannot send the same item. Without the claim (another instance is sending
/// right now) this answer carries no queue item. `None`: read freely.
async fn claim_queue(ctx: &Context, dev_eui: crate::types::Eui64) -> Option<crate::cluster::claims::Claimed> {
    let cluster = ctx.cluster.as_ref()?;
    if !ctx.handle.shared.queued.read().expect("lock").contains_key(&dev_eui) {
        return None;
    }
    Some(crate::cluster::claims::claim(cluster, dev_eui, CLAIM_HOLD).await)
}

pub async fn after_data_uplink(ctx: &Context, region: &RegionConfig, up: &DedupedUplink, plan: DataDownlinkPlan) {
    use crate::cluster::claims::Claimed;
    let claim = if plan.ack_only { None } else { claim_queue(ctx, plan.session.dev_eui).await };
    let items = match claim {
        _ if plan.ack_only => Vec::new(),
        Some(Claimed::Taken) => {
            tracing::debug!(dev_eui = %plan.session.dev_eui, "queue being sent by another instance; answering without it");
            Vec::new()
        }
        _ => queue_items(ctx, plan.session.dev_eui).await,
    };
    let settings = mac_settings(ctx, region, &plan.device);
    let now = Utc::now();
    let d = decide::decide(&DownlinkInput {
        region: region.region.as_ref(),
        session: &plan.session,
        queue: &items,
        uplink: &plan.uplink,
        ack_only: plan.ack_only,
        adr_enabled: plan.device.profile.adr_enabled,
        adr_target: plan.adr.and_then(|o| o.target()),
        settings: &settings,
        max_confirmed_transmissions: MAX_CONFIRMED_TRANSMISSIONS,
        now,
    });
    let r = Responding { up, region, device: &plan.device };
    report_mac(ctx, &r, &d.mac).await;
    settle::before_send(ctx, &r, &d).await;
    let windows = d.windows.map(Vec::from).unwrap_or_default();
    let sent = transmit(ctx, &r, &plan.session, &d, &windows, send::Delivery::AfterUplink).await;
    if plan.device.profile.supports_class_c {
        crate::class_c::heard(ctx, region, up, &plan.session, &plan.device, &d, sent.as_ref().map(|(_, frame)| frame));
    }
    let state = match sent {
        Some((f_cnt_down, _)) => {
            for c in d.mac_commands() {
                ctx.metrics.mac_commands.with_label_values(&[c.name().as_str(), Outcome::Sent.as_str()]).inc();
            }
            d.state_after_send(f_cnt_down, plan.uplink.f_cnt, now)
        }
        None => d.mac.state.clone(),
    };
    store_mac_state(ctx, &plan.session, state, d.mac.rx).await;
    if let Some(Claimed::Held(claim)) = claim {
        claim.release().await;
    }
}

/// MAC answers and refusals: `log` events, metrics, the `status` event of a DevStatusAns.
async fn report_mac(ctx: &Context, r: &Responding<'_>, mac: &MacOutput) {
    for note in &mac.notes {
        tracing::debug!(note = %note, "MAC command");
    }
    for (name, outcome) in &mac.counts {
        ctx.metrics.mac_commands.with_label_values(&[name.as_str(), outcome.as_str()]).inc();
    }
    for l in &mac.logs {
        ctx.log(r.device, l.level, LogCode::Unknown, &l.description, [("command", l.command.as_str().to_string())]).await;
    }
    if let Some(status) = mac.dev_status {
        ctx.emit(AppEvent::Status(StatusInfo {
            deduplication_id: r.up.deduplication_id,
            time: Utc::now(),
            device: r.device.clone(),
            margin: i32::from(status.margin),
            external_power_source: status.external_power_source(),
            battery_level_unavailable: status.battery_level_unavailable(),
            battery_level: status.battery_level_percent().unwrap_or(0.0),
        }))
        .await;
    }
}

/// Builds and sends the planned frame in `windows` (Class A: RX1 and RX2 after the uplink;
/// Class C: RX2 at once). Returns the FCntDown it went out with and the frame, if a gateway
/// accepted it. When every gateway is at its duty-cycle limit nothing is consumed: no
/// FCntDown, the queue item stays queued and the MAC commands stay unsent.
pub(crate) async fn transmit(
    ctx: &Context,
    r: &Responding<'_>,
    s: &DeviceSession,
    d: &DownlinkDecision,
    windows: &[Window],
    delivery: send::Delivery,
) -> Option<(u32, DownlinkFrame)> {
    let plan = d.send.as_ref()?;
    let (f_opts, f_port, frm_payload) = d.frame_parts();
    let payload_len = f_opts.len() + frm_payload.len();
    let phy_len = send::data_phy_len(f_opts.len(), f_port, frm_payload.len());
    let what = if plan.item.is_some() { "downlink (kept in the queue)" } else { "downlink" };
    let awaited = if d.awaited_by_device() { Awaited::ByDevice } else { Awaited::ByServer };
    let attempts = plan_or_report(ctx, r, windows, delivery, (phy_len, payload_len), what, awaited).await?;
    let f_cnt_down = match ctx.storage.sessions.next_f_cnt_down(s.dev_eui).await {
        Ok(f) => f,
        Err(e) => {
            ctx.storage_error("could not allocate a downlink frame counter", &e);
            return None;
        }
    };
    ctx.cache.set_n_f_cnt_down(s.dev_eui, f_cnt_down.wrapping_add(1));
    let built = lorawan::build_data_downlink(
        &DataDownlink {
            confirmed: plan.item.as_ref().is_some_and(|i| i.confirmed),
            dev_addr: s.dev_addr,
            f_cnt_down,
            ack: plan.ack,
            f_pending: plan.f_pending,
            adr: plan.adr,
            f_opts,
            f_port,
            frm_payload,
        },
        &s.nwk_s_enc_key,
        &s.app_s_key,
    );
    let phy = match built {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not build the downlink");
            return None;
        }
    };
    let to = DownlinkFor { dev_eui: s.dev_eui, dev_addr: Some(s.dev_addr), f_cnt_down: Some(f_cnt_down) };
    match send::send_attempts(ctx, &attempts, phy, &to).await {
        send::Sent::Accepted(frame) => {
            settle::after_send(ctx, r, d, f_cnt_down, frame.clone()).await;
            Some((f_cnt_down, frame))
        }
        send::Sent::Refused(last) => {
            report_refused(ctx, r, "downlink", last, Some(f_cnt_down)).await;
            None
        }
    }
}

/// Writes the MAC state and RX settings with the session, only when they changed: most
/// uplinks change nothing and cost no write. The ADR history alone is kept in the cached
/// session and written with the next change, or once it has gone unsaved for
/// `ADR_HISTORY_SAVE_EVERY` uplinks (`MacState::needs_saving`).
async fn store_mac_state(ctx: &Context, s: &DeviceSession, mut state: MacState, rx: RxParams) {
    if !state.needs_saving(&s.mac_state) && rx == decide::session_rx(s) {
        if state.adr_history_unsaved > 0 {
            ctx.cache.set_mac_state(s.dev_eui, state, rx);
        }
        return;
    }
    state.adr_history_unsaved = 0;
    match ctx.storage.sessions.save_mac_state(s.dev_eui, &state, rx).await {
        Ok(()) => ctx.cache.set_mac_state(s.dev_eui, state, rx),
        Err(e) => ctx.storage_error("could not store the MAC state", &e),
    }
}
