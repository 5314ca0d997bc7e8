//! A data uplink, step by step (LoRaWAN 1.0.4 §4): find the session by DevAddr and MIC,
//! check the frame counter, persist it with a compare-and-set, hand the still-encrypted
//! frame to the application side, answer MAC commands, and use the Class A receive windows
//! for an ACK, MAC answers or a queued downlink.

use std::sync::Arc;

use chrono::Utc;

use crate::dedup::DedupedUplink;
use crate::downlink::decide::{adr_step, AdrOutcome, AdrProfile};
use crate::downlink::DataDownlinkPlan;
use crate::events::{AppEvent, DataUp, LogCode, LogLevel};
use crate::fcnt::{self, Again};
use crate::fcnt_writer::CasOutcome;
use crate::lorawan::{self, DataFrame};
use crate::mac::engine::UplinkFacts;
use crate::mac::{self, MacContext, UplinkMacCommand};
use crate::region::Modulation as RegionModulation;
use crate::region_config::RegionConfig;
use crate::server::Context;
use crate::storage::{DeviceContext, DeviceSession, FCntUpdate};
use crate::uplink::{Identified, Rejection, Verdict};

/// Why an uplink was not processed further; each is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    UnknownDevAddr,
    Mic,
    Replay,
    /// The last accepted frame again (the device did not get our ACK): answered, not processed.
    Retransmission,
    /// The last accepted frame again from a device with NbTrans > 1: expected, not processed.
    NbTransRepeat,
    FCntRace,
    /// Cluster mode: another instance processed this very transmission (each deduplicated
    /// alone while Redis did not answer) and answered it; counted as `fcnt_race`.
    ProcessedElsewhere,
    DeviceDisabled,
    Storage,
    UnknownModulation,
    /// Heard by gateways of a region configuration other than the device profile's region.
    RegionMismatch,
}

impl Dropped {
    /// Every reason counted in `loraflow_uplinks_rejected_total` (repeats have their own counter).
    pub const REJECTED: [Dropped; 9] = [
        Dropped::UnknownDevAddr,
        Dropped::Mic,
        Dropped::Replay,
        Dropped::Retransmission,
        Dropped::FCntRace,
        Dropped::DeviceDisabled,
        Dropped::Storage,
        Dropped::UnknownModulation,
        Dropped::RegionMismatch,
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            Dropped::UnknownDevAddr => "unknown_dev_addr",
            Dropped::Mic => "mic",
            Dropped::Replay => "replay",
            Dropped::Retransmission => "retransmission",
            Dropped::NbTransRepeat => "nb_trans_repeat",
            Dropped::FCntRace | Dropped::ProcessedElsewhere => "fcnt_race",
            Dropped::DeviceDisabled => "device_disabled",
            Dropped::Storage => "storage_error",
            Dropped::UnknownModulation => "unknown_data_rate",
            Dropped::RegionMismatch => "region_mismatch",
        }
    }
}

/// Runs the steps and returns the verdict, with the answer to send in the receive windows
/// (left to the caller, so that the verdict is known before the downlink goes out); counts
/// a rejection in its metric. `identified` learns the device and full frame counter as soon
/// as a session's key validates the MIC.
pub async fn handle(
    ctx: &Context,
    region: &RegionConfig,
    up: &DedupedUplink,
    frame: &DataFrame,
    identified: &mut Identified,
) -> (Verdict, Option<DataDownlinkPlan>) {
    match process(ctx, region, up, frame, identified).await {
        Ok(plan) => (Verdict::AcceptedData, Some(plan)),
        Err(Refused { dropped: d, answer: plan }) => {
            if d == Dropped::NbTransRepeat {
                ctx.metrics.uplink_repeats.inc();
            } else {
                ctx.metrics.uplinks_rejected.with_label_values(&[d.reason()]).inc();
                tracing::debug!(reason = d.reason(), dev_addr = %frame.dev_addr, "uplink dropped");
            }
            (Verdict::Rejected(Rejection::Data(d)), plan)
        }
    }
}

/// The session whose key validates the MIC, and the frame counter it validated with.
struct Matched {
    session: DeviceSession,
    f_cnt: u32,
    /// The MIC only validated with the raw 16-bit counter below the expected one: the device
    /// was reset (or replays an old frame).
    reset: bool,
}

/// A device profile names its region; gateways of another region's configuration speak
/// another band plan, so such an uplink cannot be answered (ChirpStack likewise refuses it
/// with an error log). The text explains it for the device's `log` event.
pub fn profile_region_matches(device: &DeviceContext, region: &RegionConfig) -> Result<(), String> {
    match crate::region::region_by_name(&device.profile.region) {
        Some(r) if r.config_id() != region.region.config_id() => Err(format!(
            "device profile region {} does not match region config {} ({}) of the gateways that heard the uplink",
            device.profile.region,
            region.id,
            region.common_name()
        )),
        _ => Ok(()),
    }
}

/// A data uplink not processed, and the ACK it still gets (a repeated confirmed uplink).
struct Refused {
    dropped: Dropped,
    answer: Option<DataDownlinkPlan>,
}

impl From<Dropped> for Refused {
    fn from(dropped: Dropped) -> Self {
        Refused { dropped, answer: None }
    }
}

async fn process(
    ctx: &Context,
    region: &RegionConfig,
    up: &DedupedUplink,
    frame: &DataFrame,
    identified: &mut Identified,
) -> Result<DataDownlinkPlan, Refused> {
    // Uplinks of one DevAddr are handled one at a time (`server::UplinkKey`), so a lost
    // compare-and-set means the cached counter was behind the stored one (another instance,
    // a change over REST, counters kept in memory during an outage): the frame is checked
    // once more against the counter as it really is, which accepts it or calls it a replay.
    let first = &up.frames[0];
    let mut second_try = false;
    let (matched, device, dr, checked) = loop {
        let matched = find_session(ctx, up, frame).await?;
        *identified = Identified { dev_eui: Some(matched.session.dev_eui), f_cnt: Some(matched.f_cnt) };
        let device = device_context(ctx, &matched).await?;
        if let Err(text) = profile_region_matches(&device, region) {
            ctx.log(&device, LogLevel::Error, LogCode::Unknown, &text, [("deduplication_id", up.deduplication_id.to_string())]).await;
            return Err(Dropped::RegionMismatch.into());
        }
        let dr = RegionModulation::from_frame(&first.tx_info.modulation)
            .and_then(|m| region.region.dr_for(&m))
            .ok_or(Dropped::UnknownModulation)?;
        match check_and_store_f_cnt(ctx, up, &matched, &device).await {
            Err(Dropped::FCntRace) if !second_try => second_try = true,
            checked => break (matched, device, dr, checked),
        }
    };
    let mut session = match checked {
        Ok(s) => s,
        Err(d @ (Dropped::Retransmission | Dropped::NbTransRepeat)) if frame.is_confirmed() => {
            // DESIGN §5: a confirmed uplink is always ACKed. The device repeats the frame
            // (our ACK did not reach it, or NbTrans); it is not processed again.
            let plan = DataDownlinkPlan {
                session: matched.session.clone(),
                device,
                uplink: facts(region, up, frame, matched.f_cnt, dr, Vec::new()),
                ack_only: true,
                adr: None,
            };
            return Err(Refused { dropped: d, answer: Some(plan) });
        }
        Err(d) => return Err(d.into()),
    };
    ctx.metrics.uplinks_accepted.inc();
    ctx.device_seen.lock().expect("lock").insert(device.device.dev_eui, Utc::now());

    let commands = mac_commands(frame, matched.f_cnt, &session);
    let uplink = facts(region, up, frame, matched.f_cnt, dr, commands);
    let adr = adr(ctx, region, &mut session, &device, &uplink);

    // Application payload: still encrypted; the application side decrypts it.
    if frame.f_port.is_some_and(|p| p > 0) {
        ctx.emit(AppEvent::Up(Box::new(DataUp {
            deduplication_id: up.deduplication_id,
            time: up.first_seen,
            device: device.clone(),
            dev_addr: frame.dev_addr,
            adr: frame.fctrl.adr,
            dr,
            f_cnt: matched.f_cnt,
            f_port: frame.f_port,
            confirmed: frame.is_confirmed(),
            frm_payload: frame.frm_payload.clone(),
            app_s_key: session.app_s_key,
            rx_info: up.frames.iter().map(|f| f.rx_info.clone()).collect(),
            tx_info: first.tx_info.clone(),
            region_config_id: region.id.clone(),
            region_common_name: region.common_name(),
            received_at: up.first_seen_instant.into_std(),
            adr_decision: adr.map(|o| o.decided),
        })))
        .await;
    }
    ctx.metrics.processing_seconds.observe(up.first_seen_instant.elapsed().as_secs_f64() - ctx.config.dedup_window_ms as f64 / 1000.0);

    Ok(DataDownlinkPlan { session, device, uplink, ack_only: false, adr })
}

/// The ADR step (`downlink::decide::adr_step`): the uplink joins the session's ADR history and
/// the algorithm's decision is counted by direction.
fn adr(
    ctx: &Context,
    region: &RegionConfig,
    session: &mut DeviceSession,
    device: &DeviceContext,
    uplink: &UplinkFacts,
) -> Option<AdrOutcome> {
    let p = &device.profile;
    let profile = AdrProfile {
        enabled: p.adr_enabled,
        min_dr: p.adr_min_dr,
        max_dr: p.adr_max_dr,
        installation_margin_db: p.adr_installation_margin_db,
    };
    let outcome = adr_step(region.region.as_ref(), &mut session.mac_state, uplink, &profile)?;
    ctx.metrics.adr_decisions.with_label_values(&[outcome.direction().as_str()]).inc();
    tracing::debug!(believed = ?outcome.believed, decided = ?outcome.decided, "ADR");
    Some(outcome)
}

/// What the downlink decision needs to know about this uplink.
fn facts(region: &RegionConfig, up: &DedupedUplink, frame: &DataFrame, f_cnt: u32, dr: u8, commands: Vec<UplinkMacCommand>) -> UplinkFacts {
    let first = &up.frames[0];
    UplinkFacts {
        f_cnt,
        dr,
        frequency: first.tx_info.frequency,
        adr: frame.fctrl.adr,
        adr_ack_req: frame.fctrl.adr_ack_req,
        confirmed: frame.is_confirmed(),
        ack: frame.fctrl.ack,
        commands,
        link: MacContext {
            // Every gateway counts (ADR takes the best SNR of any gateway that heard the uplink).
            best_snr: up.frames.iter().map(|f| f.rx_info.snr).fold(first.rx_info.snr, f32::max),
            spreading_factor: match region.region.data_rate(dr).map(|d| d.modulation) {
                Some(RegionModulation::Lora { spreading_factor, .. }) => Some(spreading_factor),
                _ => None,
            },
            gateway_count: up.frames.len() as u32,
            rx_time: first.rx_info.time.unwrap_or(first.rx_info.received_at),
        },
    }
}

async fn device_context(ctx: &Context, matched: &Matched) -> Result<Arc<DeviceContext>, Dropped> {
    let device = match ctx.cache.context(matched.session.dev_eui).await {
        Ok(d) => d,
        // Deleted while its session was cached: forget it.
        Err(crate::storage::StorageError::NotFound) => {
            ctx.cache.invalidate(matched.session.dev_eui);
            return Err(Dropped::UnknownDevAddr);
        }
        Err(e) => return Err(storage_error(ctx, &e)),
    };
    tracing::Span::current().record("dev_eui", tracing::field::display(matched.session.dev_eui));
    if device.device.is_disabled {
        return Err(Dropped::DeviceDisabled);
    }
    Ok(device)
}

async fn find_session(ctx: &Context, up: &DedupedUplink, frame: &DataFrame) -> Result<Matched, Dropped> {
    let mut sessions = ctx.cache.by_dev_addr(frame.dev_addr).await.map_err(|e| storage_error(ctx, &e))?;
    if sessions.is_empty() && ctx.cluster.is_some() && crate::dev_addr::in_net_id(frame.dev_addr, ctx.net_id) {
        // A device that joined (or was activated) through another instance a moment ago,
        // whose announcement has not arrived yet: the database knows it already.
        sessions = ctx.cache.load_dev_addr(frame.dev_addr).await.map_err(|e| storage_error(ctx, &e))?;
    }
    if sessions.is_empty() {
        return Err(Dropped::UnknownDevAddr);
    }
    for s in &sessions {
        let f_cnt = fcnt::full_f_cnt(s.f_cnt_up, frame.f_cnt16);
        if lorawan::data_mic_valid(&up.phy_payload, &s.f_nwk_s_int_key, f_cnt) {
            return Ok(Matched { session: s.clone(), f_cnt, reset: false });
        }
    }
    // A device that was reset restarts at FCnt 0: the MIC then only validates with the raw
    // 16-bit value (LoRaWAN 1.0.4 §4.3.1.5 for ABP; an OTAA device would rejoin instead).
    for s in &sessions {
        let raw = u32::from(frame.f_cnt16);
        if raw < s.f_cnt_up && lorawan::data_mic_valid(&up.phy_payload, &s.f_nwk_s_int_key, raw) {
            return Ok(Matched { session: s.clone(), f_cnt: raw, reset: true });
        }
    }
    if let [only] = sessions.as_slice() {
        if let Ok(device) = ctx.cache.context(only.dev_eui).await {
            ctx.log(
                &device,
                LogLevel::Error,
                LogCode::UplinkMic,
                "MIC of uplink frame is invalid, make sure keys are correct",
                [("deduplication_id", up.deduplication_id.to_string())],
            )
            .await;
        }
    }
    Err(Dropped::Mic)
}

/// Frame-counter rules (LoRaWAN 1.0.4 §4.3.1.5): only a counter at or above the next expected
/// value is accepted, unless the device skips the check. The new value is written with a
/// compare-and-set before anything is published, so two racing copies cannot both pass.
async fn check_and_store_f_cnt(
    ctx: &Context,
    up: &DedupedUplink,
    m: &Matched,
    device: &Arc<DeviceContext>,
) -> Result<DeviceSession, Dropped> {
    let s = &m.session;
    let skip = device.device.skip_fcnt_check;
    if m.reset {
        let text = if skip {
            "frame counter reset or rollover detected; accepted because the device skips the frame-counter check"
        } else {
            "frame counter reset or rollover detected; uplink rejected (reactivate the device, or enable skipFcntCheck)"
        };
        ctx.log(
            device,
            LogLevel::Warning,
            LogCode::UplinkFCntReset,
            text,
            [
                ("deduplication_id", up.deduplication_id.to_string()),
                ("f_cnt", m.f_cnt.to_string()),
                ("expected_f_cnt", s.f_cnt_up.to_string()),
            ],
        )
        .await;
        if !skip {
            return Err(Dropped::Replay);
        }
    } else if m.f_cnt < s.f_cnt_up && !skip {
        if m.f_cnt + 1 == s.f_cnt_up {
            // The counter moved after this transmission was first heard: not the device
            // repeating it (it waits for its receive windows first) but another instance
            // that processed the same uplink. That one answered and published it. (A cached
            // session's `updated_at` only ever lags, which leaves a real repeat alone.)
            if ctx.cluster.is_some() && s.updated_at > up.first_seen {
                return Err(Dropped::ProcessedElsewhere);
            }
            if fcnt::again(s.mac_state.nb_trans) == Again::NbTransRepeat {
                return Err(Dropped::NbTransRepeat);
            }
            ctx.log(
                device,
                LogLevel::Warning,
                LogCode::UplinkFCntRetransmission,
                "uplink was flagged as re-transmission / frame-counter did not increment",
                [("deduplication_id", up.deduplication_id.to_string()), ("f_cnt", m.f_cnt.to_string())],
            )
            .await;
            return Err(Dropped::Retransmission);
        }
        return Err(Dropped::Replay);
    }
    let update = FCntUpdate { dev_eui: s.dev_eui, expected: s.f_cnt_up, next: m.f_cnt.wrapping_add(1) };
    match ctx.fcnt.compare_and_set(update).await {
        Ok(CasOutcome::Applied) => {
            ctx.cache.set_f_cnt_up(s.dev_eui, update.next);
            let mut s = s.clone();
            s.f_cnt_up = update.next;
            Ok(s)
        }
        // The writer holds the true counter in memory (database outage): take it as it is.
        // Re-reading the database would return the stale value, or nothing at all.
        Ok(CasOutcome::Conflict { current: Some(current) }) => {
            ctx.cache.set_f_cnt_up(s.dev_eui, current);
            Err(Dropped::FCntRace)
        }
        Ok(CasOutcome::Conflict { current: None }) => {
            // Someone else (another instance, a change over REST) moved the counter: re-read.
            ctx.cache.invalidate(s.dev_eui);
            Err(Dropped::FCntRace)
        }
        Err(e) => Err(storage_error(ctx, &e)),
    }
}

/// The MAC commands the device sent, from FOpts or as the whole FRMPayload on FPort 0
/// (encrypted with the NwkSKey), never both (LoRaWAN 1.0.4 §4.3.1.6).
fn mac_commands(frame: &DataFrame, f_cnt: u32, session: &DeviceSession) -> Vec<UplinkMacCommand> {
    let raw = if frame.f_port == Some(0) {
        lorawan::encrypt_frm_payload(&session.nwk_s_enc_key, true, frame.dev_addr, f_cnt, &frame.frm_payload)
    } else {
        frame.f_opts.clone()
    };
    let (commands, error) = mac::parse_uplink_commands(&raw);
    if let Some(e) = error {
        tracing::info!(error = %e, "MAC commands partly unparseable; the rest is ignored");
    }
    commands
}

fn storage_error(ctx: &Context, e: &crate::storage::StorageError) -> Dropped {
    ctx.storage_error("while processing an uplink", e);
    Dropped::Storage
}
