//! Carrying out the queue side of a decision: settled confirmed items, items too large for
//! the data rate, and the item a gateway accepted.

use std::sync::Arc;

use chrono::Utc;
use loraflow_packet_forwarder::frame::DownlinkFrame;
use uuid::Uuid;

use super::decide::{DownlinkDecision, Settled};
use super::Responding;
use crate::events::{AckInfo, AppEvent, LogCode, LogLevel, TxAckInfo};
use crate::server::Context;
use crate::storage::{DeviceContext, QueueItem};

/// Removes what the decision settled or found too large, with their events.
pub async fn before_send(ctx: &Context, r: &Responding<'_>, d: &DownlinkDecision) {
    if let Some(s) = &d.settled {
        settled(ctx, r.device, s, r.up.deduplication_id).await;
    }
    let dr = d.windows.map(|w| w[0].dr).unwrap_or_default();
    drop_too_large(ctx, r.device, &d.too_large, dr).await;
}

/// A pending confirmed item was acknowledged or expired: removed, with its `ack` event (and
/// an `EXPIRED` log event when it expired). `deduplication_id` is the uplink that settled it,
/// nil when a Class C timeout did.
pub async fn settled(ctx: &Context, device: &Arc<DeviceContext>, s: &Settled, deduplication_id: Uuid) {
    if let Err(e) = ctx.storage.queue.delete(s.item.id).await {
        ctx.storage_error("could not remove the settled queue item", &e);
    }
    if !s.acknowledged {
        ctx.log(
            device,
            LogLevel::Warning,
            LogCode::Expired,
            &format!("confirmed downlink was not acknowledged after {} transmissions; dropped", s.item.retries),
            [("queue_item_id", s.item.id.to_string())],
        )
        .await;
    }
    ctx.emit(AppEvent::Ack(AckInfo {
        deduplication_id,
        time: Utc::now(),
        device: device.clone(),
        queue_item_id: s.item.id,
        acknowledged: s.acknowledged,
        f_cnt_down: s.item.f_cnt_down.unwrap_or(0),
    }))
    .await;
}

/// Queue items larger than data rate `dr` can carry: removed with an error `log` event.
pub async fn drop_too_large(ctx: &Context, device: &Arc<DeviceContext>, too_large: &[(QueueItem, usize)], dr: u8) {
    for (item, max) in too_large {
        ctx.log(
            device,
            LogLevel::Error,
            LogCode::DownlinkPayloadSize,
            &format!("queue item of {} bytes does not fit data rate {dr} (max {max} bytes); removed from the queue", item.data.len()),
            [("queue_item_id", item.id.to_string())],
        )
        .await;
        if let Err(e) = ctx.storage.queue.delete(item.id).await {
            ctx.storage_error("could not remove a queue item too large to send", &e);
        }
    }
}

/// A gateway accepted the frame: a confirmed item waits for its ACK, an unconfirmed one is
/// done; either way a `txack` event.
pub async fn after_send(ctx: &Context, r: &Responding<'_>, d: &DownlinkDecision, f_cnt_down: u32, frame: DownlinkFrame) {
    let Some(mut item) = d.send.as_ref().and_then(|p| p.item.clone()) else { return };
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
        device: r.device.clone(),
        queue_item_id: Some(item.id),
        f_cnt_down,
        gateway_id: frame.gateway_id,
        frame,
    })))
    .await;
}
