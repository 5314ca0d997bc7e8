//! One deduplicated uplink, by message type.

pub mod data;
pub mod join;

use std::sync::Arc;

use tracing::Instrument;

use crate::dedup::DedupedUplink;
use crate::lorawan::{Phy, PhyError};
use crate::region_config::{GatewayRegions, RegionConfig, Regions};
use crate::server::Context;

/// `loraflow_uplinks_rejected_total` reasons decided before the message type is known.
pub const FRAME_REJECT_REASONS: [&str; 3] = ["channel_not_enabled", "unsupported_type", "parse_error"];

/// Handles one uplink, whose PHYPayload the run loop already parsed (to order it by device).
pub async fn handle(ctx: &Context, up: DedupedUplink, phy: Result<Phy, PhyError>) {
    let span = tracing::debug_span!("uplink", dedup_id = %up.deduplication_id, dev_eui = tracing::field::Empty);
    dispatch(ctx, up, phy).instrument(span).await
}

async fn dispatch(ctx: &Context, mut up: DedupedUplink, phy: Result<Phy, PhyError>) {
    let Some(region) = select_region(&ctx.regions, ctx.handle.gateway_regions(), &mut up) else { return };
    if !region.accepts_uplink(up.frames[0].tx_info.frequency) {
        // Not a channel of the plan: a device of another network, or one whose channels
        // were never confined. Answering would put it on a channel no gateway listens to.
        tracing::debug!(frequency = up.frames[0].tx_info.frequency, region_config_id = %region.id, "uplink on a channel that is not enabled");
        ctx.metrics.uplinks_rejected.with_label_values(&["channel_not_enabled"]).inc();
        return;
    }
    match phy {
        Ok(Phy::JoinRequest(jr)) => join::handle(ctx, &region, &up, jr).await,
        Ok(Phy::Data(frame)) if frame.is_uplink() => data::handle(ctx, &region, &up, frame).await,
        Ok(_) => ctx.metrics.uplinks_rejected.with_label_values(&["unsupported_type"]).inc(),
        Err(e) => {
            tracing::debug!(error = %e, "unparseable PHYPayload");
            ctx.metrics.uplinks_rejected.with_label_values(&["parse_error"]).inc();
        }
    }
}

/// The region configuration an uplink is handled with: that of the gateway with the best
/// copy. Copies from gateways of other configurations are left out (their radios use another
/// band plan, so they cannot carry the answer). `None` only for an uplink without copies.
pub fn select_region(regions: &Regions, gateways: &GatewayRegions, up: &mut DedupedUplink) -> Option<Arc<RegionConfig>> {
    let best = up.frames.first()?.rx_info.gateway_id;
    let region = gateways.config_of(regions, best).clone();
    up.frames.retain(|f| Arc::ptr_eq(gateways.config_of(regions, f.rx_info.gateway_id), &region));
    Some(region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkConfig;
    use crate::region_config::RegionEntry;
    use crate::types::Eui64;
    use loraflow_packet_forwarder::frame::{Modulation, RxInfo, UplinkFrame, UplinkTxInfo};

    fn frame(gw: u64) -> UplinkFrame {
        UplinkFrame {
            phy_payload: vec![0x40],
            tx_info: UplinkTxInfo {
                frequency: 868_100_000,
                modulation: Modulation::Lora { bandwidth: 125_000, spreading_factor: 7, code_rate: "4/5".into() },
            },
            rx_info: RxInfo {
                gateway_id: Eui64::from_u64(gw),
                uplink_id: 1,
                tmst: 1000,
                time: None,
                received_at: chrono::Utc::now(),
                channel: 0,
                rf_chain: 0,
                antenna: 0,
                rssi: -60,
                snr: 5.0,
                crc_status: 1,
                context: vec![],
            },
        }
    }

    fn uplink(gateways: &[u64]) -> DedupedUplink {
        DedupedUplink {
            deduplication_id: uuid::Uuid::new_v4(),
            phy_payload: vec![0x40],
            frames: gateways.iter().map(|g| frame(*g)).collect(),
            first_seen: chrono::Utc::now(),
            first_seen_instant: tokio::time::Instant::now(),
        }
    }

    fn two_configs() -> Regions {
        let entry = |id: &str| RegionEntry { id: id.into(), common_name: "EU868".into(), ..Default::default() };
        Regions::from_config(&NetworkConfig::default(), &[entry("first"), entry("second")]).unwrap()
    }

    #[test]
    fn the_best_copy_picks_the_config_and_other_configs_copies_are_left_out() {
        let regions = two_configs();
        let gateways = GatewayRegions::default();
        gateways.set(Eui64::from_u64(2), "second");
        gateways.set(Eui64::from_u64(3), "second");

        // Best copy from gateway 2 (second); gateway 1 (no config: the first) is left out.
        let mut up = uplink(&[2, 1, 3]);
        let r = select_region(&regions, &gateways, &mut up).unwrap();
        assert_eq!(&*r.id, "second");
        let kept: Vec<u64> = up.frames.iter().map(|f| f.rx_info.gateway_id.as_u64()).collect();
        assert_eq!(kept, [2, 3]);

        // Unknown / unconfigured gateways belong to the first config.
        let mut up = uplink(&[9, 2, 1]);
        let r = select_region(&regions, &gateways, &mut up).unwrap();
        assert_eq!(&*r.id, "first");
        let kept: Vec<u64> = up.frames.iter().map(|f| f.rx_info.gateway_id.as_u64()).collect();
        assert_eq!(kept, [9, 1]);

        assert!(select_region(&regions, &gateways, &mut uplink(&[])).is_none());
    }
}
