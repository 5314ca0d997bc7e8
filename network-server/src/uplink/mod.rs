//! One deduplicated uplink, by message type.

pub mod data;
pub mod join;

use std::sync::Arc;

use tracing::Instrument;

use crate::dedup::DedupedUplink;
use crate::lorawan::{Phy, PhyError};
use crate::region_config::{GatewayRegions, RegionConfig, Regions};
use crate::server::Context;

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
