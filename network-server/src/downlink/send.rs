//! Putting one built frame on air through one gateway: RX1, then RX2 when the gateway
//! refuses RX1 (LoRaWAN 1.0.4 §3.3, DESIGN §5).

use loraflow_packet_forwarder::frame::{DownlinkFrame, Modulation, Timing, TxAckStatus, UplinkFrame};
use rand::Rng;

use super::decide::Window;
use crate::dedup::DedupedUplink;
use crate::server::Context;

/// The copy heard best by a gateway that can be reached (it sent PULL_DATA).
pub fn pick_gateway<'a>(ctx: &Context, up: &'a DedupedUplink) -> Option<&'a UplinkFrame> {
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

/// Sends in RX1; on a TX_ACK error retries once in RX2. A window whose data rate cannot
/// carry `payload_len` bytes (FOpts + FRMPayload) is skipped. Returns the gateway's verdict
/// and the frame that was accepted, if any.
pub async fn send_rx1_then_rx2(
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
