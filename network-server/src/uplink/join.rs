//! OTAA join for LoRaWAN 1.0.x (LoRaWAN 1.0.4 §6.2): loraflow acts as the join server.
//! Every rejection of a known device is explained in an `OTAA` log event.

use std::sync::Arc;

use chrono::Utc;
use rand::Rng;

use crate::dedup::DedupedUplink;
use crate::dev_addr;
use crate::events::{AppEvent, JoinInfo, LogCode, LogLevel};
use crate::lorawan::{self, JoinAcceptFields, JoinRequest};
use crate::region_config::RegionConfig;
use crate::server::Context;
use crate::storage::{DeviceContext, DeviceSession, StorageError};
use crate::uplink::{Rejection, Verdict};

/// The `reason` of a join-request over `network.join_requests_per_dev_eui_per_minute`.
const RATE_LIMITED: &str = "rate_limited";

/// Every `loraflow_joins_rejected_total` reason (a test keeps it in step with this file).
pub const REJECT_REASONS: [&str; 10] = [
    "unknown_device",
    "storage_error",
    "device_disabled",
    "region_mismatch",
    "otaa_not_supported",
    "no_keys",
    "mic",
    "build_error",
    "dev_nonce",
    RATE_LIMITED,
];

/// A join-accept to send in the join receive windows.
pub struct JoinAnswer {
    pub device: Arc<DeviceContext>,
    pub dev_addr: crate::types::DevAddr,
    pub phy: Vec<u8>,
}

/// Runs the steps and returns the verdict, with the join-accept to send (left to the caller,
/// so that the verdict is known before the downlink goes out); counts it in its metric.
pub async fn handle(ctx: &Context, region: &RegionConfig, up: &DedupedUplink, jr: &JoinRequest) -> (Verdict, Option<JoinAnswer>) {
    match process(ctx, region, up, jr).await {
        Ok(answer) => {
            ctx.metrics.joins_accepted.inc();
            (Verdict::AcceptedJoin, Some(answer))
        }
        Err(reason) => {
            ctx.metrics.joins_rejected.with_label_values(&[reason]).inc();
            if reason == RATE_LIMITED {
                if let Some(suppressed) = ctx.join_rate_log.allow() {
                    tracing::warn!(
                        dev_eui = %jr.dev_eui, suppressed_since_last_line = suppressed,
                        "join request over network.join_requests_per_dev_eui_per_minute, rejected"
                    );
                }
            } else {
                tracing::info!(dev_eui = %jr.dev_eui, reason, "join request rejected");
            }
            (Verdict::Rejected(Rejection::Join(reason)), None)
        }
    }
}

async fn reject(ctx: &Context, device: &Arc<DeviceContext>, reason: &'static str, description: String, up: &DedupedUplink) -> &'static str {
    ctx.log(device, LogLevel::Error, LogCode::Otaa, &description, [("deduplication_id", up.deduplication_id.to_string())]).await;
    reason
}

async fn process(ctx: &Context, region: &RegionConfig, up: &DedupedUplink, jr: &JoinRequest) -> Result<JoinAnswer, &'static str> {
    tracing::Span::current().record("dev_eui", tracing::field::display(jr.dev_eui));
    let device = match ctx.cache.context(jr.dev_eui).await {
        Ok(d) => d,
        Err(StorageError::NotFound) => return Err("unknown_device"),
        Err(e) => {
            ctx.storage_error("during a join", &e);
            return Err("storage_error");
        }
    };
    if device.device.is_disabled {
        return Err("device_disabled");
    }
    if let Err(text) = super::data::profile_region_matches(&device, region) {
        return Err(reject(ctx, &device, "region_mismatch", text, up).await);
    }
    if !device.profile.supports_otaa {
        return Err(reject(ctx, &device, "otaa_not_supported", "device profile does not support OTAA".into(), up).await);
    }
    let keys = match ctx.storage.devices.get_keys(jr.dev_eui).await {
        Ok(k) => k,
        Err(StorageError::NotFound) => {
            return Err(reject(ctx, &device, "no_keys", "device has no keys (PUT /api/devices/{devEui}/keys)".into(), up).await)
        }
        Err(e) => {
            ctx.storage_error("during a join", &e);
            return Err("storage_error");
        }
    };
    if !lorawan::join_request_mic_valid(&up.phy_payload, &keys.app_key) {
        return Err(reject(ctx, &device, "mic", "join-request MIC is invalid, make sure the AppKey is correct".into(), up).await);
    }
    if !ctx.join_rate.allow(jr.dev_eui) {
        return Err(RATE_LIMITED);
    }
    check_dev_nonce(ctx, up, jr, &device).await?;

    let join_nonce = ctx.storage.devices.next_join_nonce(jr.dev_eui).await.map_err(|e| {
        ctx.storage_error("during a join", &e);
        "storage_error"
    })?;
    let dev_addr = dev_addr::allocate(ctx.net_id, rand::thread_rng().gen());
    let keys_1_0 = lorawan::derive_session_keys_1_0(&keys.app_key, join_nonce, ctx.net_id, jr.dev_nonce);
    let now = Utc::now();
    // The join-accept carries RX1 delay, RX1DROffset and RX2 data rate but no RX2
    // frequency (LoRaWAN 1.0.4 §6.2.5): the device starts on the region's; a configured
    // one follows in RXParamSetupReq.
    let told = crate::mac::state::RxParams { rx2_frequency: region.region.default_rx2_frequency(), ..region.desired_rx };
    // No extra channels: no CFList at all rather than an empty one. A type-1 CFList (fixed
    // channels) leaves the device with exactly the enabled channels; a device too old to
    // read one keeps all and is confined with LinkADRReq (`mac::engine`).
    let cf_list = region.cf_list(&device.profile.mac_version);
    let mac_state = match (cf_list, region.confined_channels()) {
        (Some(_), Some(enabled)) => crate::mac::state::MacState::with_enabled_channels(region.region.as_ref(), enabled),
        (Some(_), None) => crate::mac::state::MacState::after_join(region.region.as_ref(), &region.extra_channels),
        (None, _) => crate::mac::state::MacState::after_join(region.region.as_ref(), &[]),
    };
    let session = DeviceSession {
        dev_eui: jr.dev_eui,
        dev_addr,
        mac_version: device.profile.mac_version.clone(),
        f_nwk_s_int_key: keys_1_0.nwk_s_key,
        s_nwk_s_int_key: keys_1_0.nwk_s_key,
        nwk_s_enc_key: keys_1_0.nwk_s_key,
        app_s_key: keys_1_0.app_s_key,
        f_cnt_up: 0,
        n_f_cnt_down: 0,
        rx1_delay: told.rx1_delay,
        rx1_dr_offset: told.rx1_dr_offset,
        rx2_dr: told.rx2_dr,
        rx2_frequency: told.rx2_frequency,
        pending_ack_f_cnt: None,
        is_otaa: true,
        mac_state,
        created_at: now,
        updated_at: now,
    };
    ctx.cache.save(session).await.map_err(|e| {
        ctx.storage_error("saving the session of a join", &e);
        "storage_error"
    })?;
    // Queue items of an earlier session are re-sent with the new session's counters.
    ctx.handle.changed(crate::cluster::Change::Queue { dev_eui: jr.dev_eui });

    let phy = match lorawan::build_join_accept(
        &keys.app_key,
        &JoinAcceptFields {
            join_nonce,
            net_id: ctx.net_id,
            dev_addr,
            rx1_dr_offset: told.rx1_dr_offset,
            rx2_dr: told.rx2_dr,
            rx_delay: told.rx1_delay,
            cf_list,
        },
    ) {
        Ok(phy) => phy,
        Err(e) => {
            tracing::error!(error = %e, "could not build the join-accept");
            return Err("build_error");
        }
    };
    ctx.emit(AppEvent::Join(JoinInfo {
        deduplication_id: up.deduplication_id,
        time: up.first_seen,
        device: device.clone(),
        dev_addr,
        region_config_id: region.id.clone(),
    }))
    .await;
    Ok(JoinAnswer { device, dev_addr, phy })
}

/// LoRaWAN 1.0.0–1.0.3: a DevNonce may not be reused; 1.0.4 §6.2.4: it must increase.
async fn check_dev_nonce(ctx: &Context, up: &DedupedUplink, jr: &JoinRequest, device: &Arc<DeviceContext>) -> Result<(), &'static str> {
    let storage_err = |e: StorageError| {
        ctx.storage_error("during a join", &e);
        "storage_error"
    };
    let max_used = ctx.storage.devices.max_dev_nonce(jr.dev_eui).await.map_err(storage_err)?;
    if let Err(e) = lorawan::check_dev_nonce(&device.profile.mac_version, jr.dev_nonce, false, max_used) {
        if processed_elsewhere(ctx, up, jr).await {
            return Err("dev_nonce");
        }
        return Err(reject(ctx, device, "dev_nonce", format!("DevNonce {} rejected: {e}", jr.dev_nonce), up).await);
    }
    let fresh = ctx.storage.devices.insert_dev_nonce(jr.dev_eui, jr.join_eui, jr.dev_nonce).await.map_err(storage_err)?;
    if !fresh {
        if processed_elsewhere(ctx, up, jr).await {
            return Err("dev_nonce");
        }
        let text = format!(
            "DevNonce {} has already been used (a reset device can join again after DELETE /api/devices/{}/dev-nonces)",
            jr.dev_nonce, jr.dev_eui
        );
        return Err(reject(ctx, device, "dev_nonce", text, up).await);
    }
    Ok(())
}

/// Cluster mode: the DevNonce was used after this join-request was first heard, so not by an
/// earlier join of the device but by another instance processing this very one (each
/// deduplicated alone while Redis did not answer). That instance answers it; this one
/// rejects it without an `OTAA` log event.
async fn processed_elsewhere(ctx: &Context, up: &DedupedUplink, jr: &JoinRequest) -> bool {
    if ctx.cluster.is_none() {
        return false;
    }
    match ctx.storage.devices.dev_nonce_used_at(jr.dev_eui, jr.join_eui, jr.dev_nonce).await {
        Ok(Some(at)) => at > up.first_seen,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    /// The reasons this file rejects with: `Err("…")` and `reject(ctx, device, "…", …)`.
    fn reasons_in_source() -> Vec<String> {
        let src = include_str!("join.rs");
        let src = &src[..src.find("#[cfg(test)]").expect("test module")];
        let mut out = Vec::new();
        for line in src.lines() {
            if let Some((_, rest)) = line.split_once("Err(\"") {
                out.extend(rest.split('"').next().map(str::to_owned));
            } else if let Some((_, rest)) = line.split_once("reject(ctx,") {
                out.extend(rest.split('"').nth(1).map(str::to_owned));
            }
        }
        out
    }

    #[test]
    fn every_reject_reason_is_pre_registered() {
        let found = reasons_in_source();
        assert!(found.len() >= 9, "{found:?}");
        for r in &found {
            assert!(super::REJECT_REASONS.contains(&r.as_str()), "join reject reason {r:?} missing from REJECT_REASONS");
        }
    }
}
