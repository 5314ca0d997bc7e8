//! One deduplicated uplink, by message type.

pub mod data;
pub mod join;

use tracing::Instrument;

use crate::dedup::DedupedUplink;
use crate::lorawan::{Phy, PhyError};
use crate::server::Context;

/// Handles one uplink, whose PHYPayload the run loop already parsed (to order it by device).
pub async fn handle(ctx: &Context, up: DedupedUplink, phy: Result<Phy, PhyError>) {
    let span = tracing::debug_span!("uplink", dedup_id = %up.deduplication_id, dev_eui = tracing::field::Empty);
    dispatch(ctx, up, phy).instrument(span).await
}

async fn dispatch(ctx: &Context, up: DedupedUplink, phy: Result<Phy, PhyError>) {
    match phy {
        Ok(Phy::JoinRequest(jr)) => join::handle(ctx, &up, jr).await,
        Ok(Phy::Data(frame)) if frame.is_uplink() => data::handle(ctx, &up, frame).await,
        Ok(_) => ctx.metrics.uplinks_rejected.with_label_values(&["unsupported_type"]).inc(),
        Err(e) => {
            tracing::debug!(error = %e, "unparseable PHYPayload");
            ctx.metrics.uplinks_rejected.with_label_values(&["parse_error"]).inc();
        }
    }
}
