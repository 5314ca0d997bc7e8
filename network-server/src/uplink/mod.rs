//! One deduplicated uplink, by message type.

pub mod data;
pub mod join;

use tracing::Instrument;

use crate::dedup::DedupedUplink;
use crate::lorawan::{self, Phy};
use crate::server::Context;

pub async fn handle(ctx: &Context, up: DedupedUplink) {
    let span = tracing::debug_span!("uplink", dedup_id = %up.deduplication_id, dev_eui = tracing::field::Empty);
    dispatch(ctx, up).instrument(span).await
}

async fn dispatch(ctx: &Context, up: DedupedUplink) {
    match lorawan::parse(&up.phy_payload) {
        Ok(Phy::JoinRequest(jr)) => join::handle(ctx, &up, jr).await,
        Ok(Phy::Data(frame)) if frame.is_uplink() => data::handle(ctx, &up, frame).await,
        Ok(_) => ctx.metrics.uplinks_rejected.with_label_values(&["unsupported_type"]).inc(),
        Err(e) => {
            tracing::debug!(error = %e, "unparseable PHYPayload");
            ctx.metrics.uplinks_rejected.with_label_values(&["parse_error"]).inc();
        }
    }
}
