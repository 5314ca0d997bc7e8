//! Class A downlinks (LoRaWAN 1.0.4 §3.3, RP002-1.0.3 §2.4): pick the gateway, place the
//! frame in RX1 (uplink tmst + RX1 delay, RX1 frequency and data rate) and fall back to RX2
//! (one second later, RX2 frequency and data rate) when the gateway refuses RX1. Also owns
//! the downlink queue rules.
//!
//! Confirmed downlinks: after the gateway accepted one, the queue item is pending. The
//! device's next uplink either acknowledges it (`ack` event, item removed) or not; without an
//! ACK the item is sent again with a new FCntDown, at most `MAX_CONFIRMED_TRANSMISSIONS` times
//! in all and never after `network.confirmed_downlink_timeout_secs`; then it is dropped with an
//! `ack` event `acknowledged: false` and an `EXPIRED` log event.

use std::sync::Arc;

use chrono::Utc;
use loraflow_packet_forwarder::frame::{DownlinkFrame, Modulation, Timing, TxAckStatus, UplinkFrame};
use rand::Rng;

use crate::dedup::DedupedUplink;
use crate::events::{AckInfo, AppEvent, LogCode, LogLevel, TxAckInfo};
use crate::lorawan::{self, DataDownlink};
use crate::region::{Modulation as RegionModulation, Region};
use crate::server::Context;
use crate::storage::{DeviceContext, DeviceSession, QueueItem};
use crate::uplink::data::log;

pub const MAX_CONFIRMED_TRANSMISSIONS: u32 = 3;

/// What a data uplink asks of its receive windows.
pub struct DataDownlinkPlan {
    pub session: DeviceSession,
    pub device: Arc<DeviceContext>,
    pub uplink_dr: u8,
    /// The uplink was confirmed: it must be acknowledged, queue or no queue.
    pub ack: bool,
    /// The uplink carries the ACK bit for our last confirmed downlink.
    pub device_acked: bool,
    /// Encoded MAC command answers for FOpts.
    pub mac_answers: Vec<u8>,
    /// Only acknowledge (a retransmitted confirmed uplink): the queue is left alone.
    pub ack_only: bool,
}

/// One receive window's radio parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub name: &'static str,
    pub delay_us: u32,
    pub frequency: u32,
    pub dr: u8,
}

/// RX1 and RX2 for a Class A downlink answering an uplink at `uplink_freq`/`uplink_dr`.
pub fn class_a_windows(
    region: &dyn Region,
    delay_s: u8,
    uplink_freq: u32,
    uplink_dr: u8,
    rx1_dr_offset: u8,
    rx2_frequency: u32,
    rx2_dr: u8,
) -> Option<[Window; 2]> {
    let delay = u32::from(delay_s.max(1));
    let rx1_dr = region.rx1_dr(uplink_dr, rx1_dr_offset).ok()?;
    let rx1_frequency = region.rx1_frequency(uplink_freq).ok()?;
    Some([
        Window { name: "rx1", delay_us: delay * 1_000_000, frequency: rx1_frequency, dr: rx1_dr },
        Window { name: "rx2", delay_us: (delay + 1) * 1_000_000, frequency: rx2_frequency, dr: rx2_dr },
    ])
}

/// The copy heard best by a gateway that can be reached (it sent PULL_DATA).
fn pick_gateway<'a>(ctx: &Context, up: &'a DedupedUplink) -> Option<&'a UplinkFrame> {
    up.frames.iter().find(|f| ctx.gateways.gateway_state(f.rx_info.gateway_id).is_some_and(|s| s.pull_addr.is_some()))
}

fn frame_for(ctx: &Context, via: &UplinkFrame, w: &Window, phy: Vec<u8>, downlink_id: u32) -> Option<DownlinkFrame> {
    let modulation: Modulation = ctx.region.data_rate(w.dr)?.modulation.to_frame()?;
    Some(DownlinkFrame {
        gateway_id: via.rx_info.gateway_id,
        downlink_id,
        phy_payload: phy,
        timing: Timing::Tmst(via.rx_info.tmst.wrapping_add(w.delay_us)),
        frequency: w.frequency,
        power: ctx.config.downlink_tx_power.unwrap_or_else(|| ctx.region.downlink_tx_power(w.frequency)),
        modulation,
        rf_chain: 0,
        polarization_inversion: true,
        antenna: via.rx_info.antenna,
    })
}

/// Sends in RX1; on a TX_ACK error retries once in RX2. Returns the gateway's verdict and
/// the frame that was accepted, if any.
async fn send_rx1_then_rx2(
    ctx: &Context,
    via: &UplinkFrame,
    windows: &[Window; 2],
    phy: Vec<u8>,
    payload_len: usize,
) -> (TxAckStatus, Option<DownlinkFrame>) {
    let downlink_id: u32 = rand::thread_rng().gen();
    let mut last = TxAckStatus::Unknown;
    for (i, w) in windows.iter().enumerate() {
        let n = ctx.region.max_payload_size(w.dr).map_or(0, |m| m.n);
        if payload_len > n {
            tracing::debug!(window = w.name, dr = w.dr, "payload does not fit this window's data rate");
            continue;
        }
        let Some(frame) = frame_for(ctx, via, w, phy.clone(), downlink_id) else { continue };
        let status = ctx.gateways.send(frame.clone()).await;
        ctx.metrics.downlinks.with_label_values(&[w.name, status.as_str()]).inc();
        last = status;
        match status {
            TxAckStatus::Ok | TxAckStatus::Timeout => return (status, Some(frame)),
            // The gateway is gone: RX2 through it would fail the same way.
            TxAckStatus::GatewayNotConnected => return (status, None),
            _ if i == 0 => tracing::info!(status = status.as_str(), "RX1 refused by the gateway, retrying in RX2"),
            _ => {}
        }
    }
    (last, None)
}

pub async fn send_join_accept(ctx: &Context, up: &DedupedUplink, device: &Arc<DeviceContext>, phy: Vec<u8>) {
    let Some(via) = pick_gateway(ctx, up) else {
        log(
            ctx,
            device,
            LogLevel::Error,
            LogCode::DownlinkGateway,
            "no gateway that heard the join request can send the join-accept (no PULL_DATA seen)",
            [],
        )
        .await;
        return;
    };
    let Some(dr) = RegionModulation::from_frame(&via.tx_info.modulation).and_then(|m| ctx.region.dr_for(&m)) else {
        return;
    };
    // Before the join the device uses the region's defaults: RX1 offset 0, default RX2.
    let Some(windows) = class_a_windows(
        ctx.region.as_ref(),
        ctx.region.join_accept_delay1().as_secs() as u8,
        via.tx_info.frequency,
        dr,
        0,
        ctx.region.default_rx2_frequency(),
        ctx.region.default_rx2_dr(),
    ) else {
        return;
    };
    let len = phy.len().saturating_sub(13);
    let (status, sent) = send_rx1_then_rx2(ctx, via, &windows, phy, len).await;
    if sent.is_none() {
        log(
            ctx,
            device,
            LogLevel::Error,
            LogCode::DownlinkGateway,
            &format!("join-accept not sent: {}", status.as_str()),
            [("gateway_id", via.rx_info.gateway_id.to_string())],
        )
        .await;
    }
}

/// Queue items of a device, reading the database only when the device may have some.
async fn queue_items(ctx: &Context, dev_eui: crate::types::Eui64) -> Vec<QueueItem> {
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

pub async fn after_data_uplink(ctx: &Context, up: &DedupedUplink, plan: DataDownlinkPlan) {
    let dev_eui = plan.session.dev_eui;
    let mut items = if plan.ack_only { Vec::new() } else { queue_items(ctx, dev_eui).await };
    resolve_pending(ctx, up, &plan, &mut items).await;
    let mut next = items.first().cloned();

    let Some(via) = pick_gateway(ctx, up) else {
        if plan.ack || !plan.mac_answers.is_empty() || next.is_some() {
            log(
                ctx,
                &plan.device,
                LogLevel::Warning,
                LogCode::DownlinkGateway,
                "no gateway that heard the uplink can send a downlink (no PULL_DATA seen)",
                [],
            )
            .await;
        }
        return;
    };
    let s = &plan.session;
    let Some(windows) = class_a_windows(
        ctx.region.as_ref(),
        s.rx1_delay,
        via.tx_info.frequency,
        plan.uplink_dr,
        s.rx1_dr_offset,
        s.rx2_frequency,
        s.rx2_dr,
    ) else {
        return;
    };

    // Payload size limits (RP002-1.0.3 §2.4.6): FOpts + FRMPayload must fit RX1's data rate.
    if let Some(item) = &next {
        let n = ctx.region.max_payload_size(windows[0].dr).map_or(0, |m| m.n);
        if item.data.len() + plan.mac_answers.len() > n {
            log(
                ctx,
                &plan.device,
                LogLevel::Error,
                LogCode::DownlinkPayloadSize,
                &format!(
                    "queue item of {} bytes does not fit data rate {} (max {} bytes with {} bytes of MAC commands); removed from the queue",
                    item.data.len(),
                    windows[0].dr,
                    n,
                    plan.mac_answers.len()
                ),
                [("queue_item_id", item.id.to_string())],
            )
            .await;
            let _ = ctx.storage.queue.delete(item.id).await;
            items.remove(0);
            next = items.first().cloned();
        }
    }
    if !plan.ack && plan.mac_answers.is_empty() && next.is_none() {
        return;
    }

    let f_cnt_down = match ctx.storage.sessions.next_f_cnt_down(dev_eui).await {
        Ok(f) => f,
        Err(e) => {
            ctx.storage_error("could not allocate a downlink frame counter", &e);
            return;
        }
    };
    ctx.cache.set_n_f_cnt_down(dev_eui, f_cnt_down.wrapping_add(1));
    let f_opts = if plan.mac_answers.len() <= 15 { plan.mac_answers.clone() } else { Vec::new() };
    let (f_port, payload, confirmed) = match &next {
        Some(item) => (Some(item.f_port), item.data.clone(), item.confirmed),
        // MAC answers too long for FOpts go on FPort 0 (LoRaWAN 1.0.4 §4.3.1.6).
        None if plan.mac_answers.len() > 15 => (Some(0), plan.mac_answers.clone(), false),
        None => (None, Vec::new(), false),
    };
    let phy = match lorawan::build_data_downlink(
        &DataDownlink {
            confirmed,
            dev_addr: s.dev_addr,
            f_cnt_down,
            ack: plan.ack,
            f_pending: items.len() > 1,
            adr: false,
            f_opts: f_opts.clone(),
            f_port,
            frm_payload: payload.clone(),
        },
        &s.nwk_s_enc_key,
        &s.app_s_key,
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not build the downlink");
            return;
        }
    };

    let (status, sent) = send_rx1_then_rx2(ctx, via, &windows, phy, payload.len() + f_opts.len()).await;
    let Some(frame) = sent else {
        log(
            ctx,
            &plan.device,
            LogLevel::Error,
            LogCode::DownlinkGateway,
            &format!("downlink not sent: {}", status.as_str()),
            [("gateway_id", via.rx_info.gateway_id.to_string()), ("f_cnt_down", f_cnt_down.to_string())],
        )
        .await;
        return;
    };
    if let Some(mut item) = next {
        if item.confirmed {
            item.is_pending = true;
            item.f_cnt_down = Some(f_cnt_down);
            item.retries += 1;
            if item.timeout_at.is_none() {
                item.timeout_at = Some(Utc::now() + chrono::Duration::seconds(ctx.config.confirmed_downlink_timeout_secs as i64));
            }
            if let Err(e) = ctx.storage.queue.update(&item).await {
                ctx.storage_error("could not mark the queue item pending", &e);
            }
        } else if let Err(e) = ctx.storage.queue.delete(item.id).await {
            ctx.storage_error("could not remove the sent queue item", &e);
        }
        ctx.emit(AppEvent::TxAck(Box::new(TxAckInfo {
            downlink_id: frame.downlink_id,
            time: Utc::now(),
            device: plan.device.clone(),
            queue_item_id: Some(item.id),
            f_cnt_down,
            gateway_id: frame.gateway_id,
            frame,
        })))
        .await;
    }
}

/// Settles a pending confirmed downlink against this uplink (see the module docs).
async fn resolve_pending(ctx: &Context, up: &DedupedUplink, plan: &DataDownlinkPlan, items: &mut Vec<QueueItem>) {
    let Some(pos) = items.iter().position(|i| i.is_pending) else { return };
    let item = items[pos].clone();
    let expired = item.timeout_at.is_some_and(|t| t <= Utc::now()) || item.retries >= MAX_CONFIRMED_TRANSMISSIONS;
    if plan.device_acked || expired {
        items.remove(pos);
        if let Err(e) = ctx.storage.queue.delete(item.id).await {
            ctx.storage_error("could not remove the settled queue item", &e);
        }
        if !plan.device_acked {
            log(
                ctx,
                &plan.device,
                LogLevel::Warning,
                LogCode::Expired,
                &format!("confirmed downlink was not acknowledged after {} transmissions; dropped", item.retries),
                [("queue_item_id", item.id.to_string())],
            )
            .await;
        }
        ctx.emit(AppEvent::Ack(AckInfo {
            deduplication_id: up.deduplication_id,
            time: Utc::now(),
            device: plan.device.clone(),
            queue_item_id: item.id,
            acknowledged: plan.device_acked,
            f_cnt_down: item.f_cnt_down.unwrap_or(0),
        }))
        .await;
    } else {
        // Not acknowledged yet: send it again in this uplink's windows.
        let item = items.remove(pos);
        items.insert(0, item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Eu868;

    #[test]
    fn class_a_windows_follow_rp002_for_eu868() {
        let w = class_a_windows(&Eu868, 1, 868_300_000, 5, 0, 869_525_000, 0).unwrap();
        assert_eq!(w[0], Window { name: "rx1", delay_us: 1_000_000, frequency: 868_300_000, dr: 5 });
        assert_eq!(w[1], Window { name: "rx2", delay_us: 2_000_000, frequency: 869_525_000, dr: 0 });
        let w = class_a_windows(&Eu868, 5, 868_100_000, 5, 2, 869_525_000, 3).unwrap();
        assert_eq!((w[0].delay_us, w[0].dr), (5_000_000, 3));
        assert_eq!((w[1].delay_us, w[1].dr), (6_000_000, 3));
    }
}
