//! Putting one built frame on air: the attempts `downlink_attempts::plan_attempts` allows
//! (RX1 then RX2 on the best gateway that heard the uplink, then the next-best gateway's RX1
//! and RX2, skipping windows that would break a gateway's duty cycle), tried in order until a
//! gateway accepts the frame (LoRaWAN 1.0.4 §3.3, DESIGN §5, issue 9 part 7).

use std::sync::Arc;
use std::time::Instant;

use loraflow_packet_forwarder::frame::{DownlinkFrame, GatewayId, Modulation, Timing, TxAckStatus, UplinkFrame};
use rand::Rng;

use super::decide::Window;
use crate::cluster::routes::Route;
use crate::dedup::DedupedUplink;
use crate::downlink_attempts::{plan_attempts, Attempt, NoAttempt, WindowRadio};
use crate::frame_feed::{DownFrame, DownlinkFor, FrameEvent};
use crate::region_config::RegionConfig;
use crate::server::Context;

/// When a frame goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Class A: the window's delay after the uplink, on the gateway's concentrator clock.
    AfterUplink,
    /// Class C: at once (`imme`), the device listens on its RX2 parameters.
    Immediately,
}

/// One planned attempt with what it takes to build its frame: the uplink copy of that gateway
/// (its own tmst and antenna) and the window's timing.
pub struct Planned<'a> {
    /// The region configuration of the gateway (radio settings, power).
    pub region: &'a RegionConfig,
    pub attempt: Attempt,
    pub via: &'a UplinkFrame,
    pub window: Window,
    pub delivery: Delivery,
    /// Where the gateway is held: here or, in a cluster, by another instance.
    pub route: Route,
}

/// The copies heard by gateways that can be reached (they sent PULL_DATA here or, in a
/// cluster, to another instance), best first, one per gateway, with their routes.
pub async fn candidates<'a>(ctx: &Context, up: &'a DedupedUplink) -> Vec<(&'a UplinkFrame, Route)> {
    let mut firsts: Vec<&UplinkFrame> = Vec::new();
    for f in &up.frames {
        if !firsts.iter().any(|o| o.rx_info.gateway_id == f.rx_info.gateway_id) {
            firsts.push(f);
        }
    }
    let ids: Vec<GatewayId> = firsts.iter().map(|f| f.rx_info.gateway_id).collect();
    let routes = ctx.router.routes(&ids).await;
    firsts.into_iter().zip(routes).filter(|(_, r)| *r != Route::Unreachable).collect()
}

/// The attempts for a frame of `phy_len` bytes whose MAC payload (FOpts + FRMPayload, the
/// part RP002's N limits) is `payload_len` bytes, best first. Windows whose data rate cannot
/// carry the payload are left out; the ledger is read as it stands now.
pub async fn plan<'a>(
    ctx: &Context,
    region: &'a RegionConfig,
    up: &'a DedupedUplink,
    windows: &[Window],
    delivery: Delivery,
    phy_len: usize,
    payload_len: usize,
) -> Result<Vec<Planned<'a>>, NoAttempt> {
    let via = candidates(ctx, up).await;
    let fitting: Vec<Window> =
        windows.iter().copied().filter(|w| region.region.max_payload_size(w.dr).is_some_and(|m| payload_len <= m.n)).collect();
    let radios: Vec<WindowRadio> = fitting.iter().map(|w| WindowRadio { window: w.name, frequency: w.frequency, dr: w.dr }).collect();
    let gateways: Vec<GatewayId> = via.iter().map(|(f, _)| f.rx_info.gateway_id).collect();
    let now = Instant::now();
    let attempts = ctx.duty_cycle.with(|ledger| plan_attempts(&gateways, &radios, phy_len, region.region.as_ref(), ledger, now))?;
    Ok(attempts
        .into_iter()
        .filter_map(|attempt| {
            let (via, route) = via.iter().find(|(f, _)| f.rx_info.gateway_id == attempt.gateway)?;
            let window = fitting.iter().find(|w| w.name == attempt.radio.window)?;
            Some(Planned { region, attempt, via, window: *window, delivery, route: route.clone() })
        })
        .collect())
}

/// What to do after a gateway answered an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The frame is on its way: record its airtime and stop.
    Sent,
    /// The gateway refused this window: try the next attempt (its RX2, or the next gateway).
    NextAttempt,
    /// The gateway cannot be reached: skip its other windows.
    NextGateway,
}

/// The rule for a TX_ACK status. A missing TX_ACK counts as sent: older packet forwarders
/// never send one, and sending the frame twice would be worse than not knowing.
pub fn next_after(status: TxAckStatus) -> Next {
    match status {
        TxAckStatus::Ok | TxAckStatus::Timeout => Next::Sent,
        TxAckStatus::GatewayNotConnected => Next::NextGateway,
        TxAckStatus::TooLate
        | TxAckStatus::TooEarly
        | TxAckStatus::CollisionPacket
        | TxAckStatus::CollisionBeacon
        | TxAckStatus::TxFreq
        | TxAckStatus::TxPower
        | TxAckStatus::GpsUnlocked
        | TxAckStatus::Unknown => Next::NextAttempt,
    }
}

fn frame_for(p: &Planned, phy: Vec<u8>, downlink_id: u32) -> Option<DownlinkFrame> {
    let modulation: Modulation = p.region.region.downlink_modulation(p.window.dr)?;
    Some(DownlinkFrame {
        gateway_id: p.attempt.gateway,
        downlink_id,
        phy_payload: phy,
        timing: match p.delivery {
            Delivery::AfterUplink => Timing::Tmst(p.via.rx_info.tmst.wrapping_add(p.window.delay_us)),
            Delivery::Immediately => Timing::Immediately,
        },
        frequency: p.window.frequency,
        power: p.region.downlink_tx_power(p.window.frequency),
        modulation,
        rf_chain: 0,
        polarization_inversion: true,
        antenna: p.via.rx_info.antenna,
    })
}

/// How the attempts ended.
pub enum Sent {
    /// A gateway accepted this frame; its airtime is recorded.
    Accepted(DownlinkFrame),
    /// Every attempt was refused: the last gateway's verdict, or `None` when other downlinks
    /// used up the planned windows' airtime before any attempt could be made.
    Refused(Option<(GatewayId, TxAckStatus)>),
}

/// Tries the attempts in order until a gateway accepts the frame. An attempt whose window the
/// ledger no longer allows (another downlink used the airtime since planning) is skipped.
/// Every attempt made is counted for its gateway and shown to its live watchers, with its
/// TX_ACK result.
pub async fn send_attempts(ctx: &Context, attempts: &[Planned<'_>], phy: Vec<u8>, to: &DownlinkFor) -> Sent {
    let downlink_id: u32 = rand::thread_rng().gen();
    let mut last = None;
    let mut unreachable: Option<GatewayId> = None;
    for p in attempts {
        let a = &p.attempt;
        if unreachable == Some(a.gateway) || !still_allowed(ctx, a) {
            continue;
        }
        let Some(frame) = frame_for(p, phy.clone(), downlink_id) else { continue };
        let status = ctx.router.send(frame.clone(), &p.route, Some(*to), Some(p.window.dr)).await;
        ctx.metrics.downlinks.with_label_values(&[p.window.name.as_str(), status.as_str()]).inc();
        if status != TxAckStatus::GatewayNotConnected {
            ctx.handle.traffic().gateway_downlink(a.gateway, chrono::Utc::now());
        }
        ctx.handle.frames().send_with(a.gateway, || Arc::new(FrameEvent::Down(DownFrame::new(&frame, to, Some(p.window.dr), status))));
        match next_after(status) {
            Next::Sent => {
                if let Some(band) = a.sub_band {
                    ctx.duty_cycle.record(a.gateway, band.id, a.airtime, Instant::now());
                }
                return Sent::Accepted(frame);
            }
            Next::NextGateway => unreachable = Some(a.gateway),
            Next::NextAttempt => {
                tracing::info!(gateway_id = %a.gateway, window = %a.radio.window, status = status.as_str(), "downlink refused by the gateway, trying the next attempt")
            }
        }
        last = Some((a.gateway, status));
    }
    Sent::Refused(last)
}

fn still_allowed(ctx: &Context, a: &Attempt) -> bool {
    match &a.sub_band {
        Some(band) => ctx.duty_cycle.check(a.gateway, band, a.airtime, Instant::now()).is_ok(),
        None => true,
    }
}

/// Length of a data downlink PHYPayload: MHDR, FHDR (DevAddr, FCtrl, FCnt) and FOpts, FPort
/// and FRMPayload when there is a port, MIC (LoRaWAN 1.0.4 §4).
pub fn data_phy_len(f_opts: usize, f_port: Option<u8>, frm_payload: usize) -> usize {
    1 + 7 + f_opts + f_port.map_or(0, |_| 1 + frm_payload) + 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::{build_data_downlink, DataDownlink};
    use crate::types::{AesKey, DevAddr};

    #[test]
    fn a_transmission_error_moves_on_to_the_next_window_or_gateway() {
        let cases = [
            (TxAckStatus::Ok, Next::Sent),
            (TxAckStatus::Timeout, Next::Sent),
            (TxAckStatus::TooLate, Next::NextAttempt),
            (TxAckStatus::TooEarly, Next::NextAttempt),
            (TxAckStatus::CollisionPacket, Next::NextAttempt),
            (TxAckStatus::CollisionBeacon, Next::NextAttempt),
            (TxAckStatus::TxFreq, Next::NextAttempt),
            (TxAckStatus::TxPower, Next::NextAttempt),
            (TxAckStatus::GpsUnlocked, Next::NextAttempt),
            (TxAckStatus::Unknown, Next::NextAttempt),
            (TxAckStatus::GatewayNotConnected, Next::NextGateway),
        ];
        for (status, want) in cases {
            assert_eq!(next_after(status), want, "{}", status.as_str());
        }
    }

    #[test]
    fn the_planned_length_is_the_length_of_the_built_frame() {
        let cases: [(&[u8], Option<u8>, &[u8]); 4] =
            [(&[], None, &[]), (&[0x06], None, &[]), (&[0x06, 0x02], Some(3), b"hello"), (&[], Some(0), &[0x06; 20])];
        for (f_opts, f_port, frm) in cases {
            let phy = build_data_downlink(
                &DataDownlink {
                    confirmed: false,
                    dev_addr: DevAddr::default(),
                    f_cnt_down: 7,
                    ack: false,
                    f_pending: false,
                    adr: false,
                    f_opts: f_opts.to_vec(),
                    f_port,
                    frm_payload: frm.to_vec(),
                },
                &AesKey::default(),
                &AesKey::default(),
            )
            .unwrap();
            assert_eq!(data_phy_len(f_opts.len(), f_port, frm.len()), phy.len(), "{f_opts:?} {f_port:?} {frm:?}");
        }
    }
}
