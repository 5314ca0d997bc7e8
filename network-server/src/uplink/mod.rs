//! One deduplicated uplink, by message type. The steps return their [`Verdict`]; [`handle`]
//! alone turns it into the traffic counts and the live frame feed, once per uplink and one
//! frame per gateway copy.

pub mod data;
pub mod join;
pub mod verdict;

use std::sync::Arc;

use chrono::Utc;
use loraflow_packet_forwarder::frame::UplinkFrame;
use tracing::Instrument;

use crate::dedup::DedupedUplink;
use crate::frame_feed::{FrameEvent, UpFrame, UplinkFacts};
use crate::lorawan::{Phy, PhyError};
use crate::region::Modulation as RegionModulation;
use crate::region_config::{GatewayRegions, RegionConfig, Regions};
use crate::server::Context;
use crate::types::Eui64;

pub use verdict::{FrameRejection, Rejection, Verdict};

/// `loraflow_uplinks_rejected_total` reasons decided before the message type is known.
pub const FRAME_REJECT_REASONS: [&str; 3] = ["channel_not_enabled", "unsupported_type", "parse_error"];

/// Which device an uplink turned out to be from, as far as the steps got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identified {
    pub dev_eui: Option<Eui64>,
    /// The full frame counter, once a session's key validated the MIC.
    pub f_cnt: Option<u32>,
}

/// What is left to do once the verdict is reported: the answer in the receive windows.
enum Answer {
    Data(Box<crate::downlink::DataDownlinkPlan>),
    JoinAccept(join::JoinAnswer),
}

/// Everything [`dispatch`] decided about one uplink.
struct Decided {
    verdict: Verdict,
    answer: Option<Answer>,
    region: Option<Arc<RegionConfig>>,
    /// Copies from gateways of other region configurations, left out of the uplink.
    left_out: Vec<UplinkFrame>,
    identified: Identified,
}

/// Handles one uplink, whose PHYPayload the run loop already parsed (to order it by device).
pub async fn handle(ctx: &Context, mut up: DedupedUplink, phy: Result<Phy, PhyError>) {
    let span = tracing::debug_span!("uplink", dedup_id = %up.deduplication_id, dev_eui = tracing::field::Empty);
    async {
        let mut decided = dispatch(ctx, &mut up, &phy).await;
        // Reported before the answer goes out: a console shows the uplink, then its downlink.
        report(ctx, &up, phy.as_ref().ok(), &decided);
        // Decided: the frame counter (or DevNonce) is settled in the database and the uplink
        // published, so a takeover by a contributor could only be dropped as processed
        // elsewhere. Marked before the downlink, which may wait for RX1, beyond the grace.
        if let Some(done) = up.done.take() {
            done.mark();
        }
        if let (Some(answer), Some(region)) = (decided.answer.take(), decided.region.as_ref()) {
            match answer {
                Answer::Data(plan) => crate::downlink::after_data_uplink(ctx, region, &up, *plan).await,
                Answer::JoinAccept(a) => crate::downlink::send_join_accept(ctx, region, &up, &a.device, a.dev_addr, a.phy).await,
            }
        }
    }
    .instrument(span)
    .await
}

async fn dispatch(ctx: &Context, up: &mut DedupedUplink, phy: &Result<Phy, PhyError>) -> Decided {
    let mut decided = Decided {
        verdict: Verdict::Rejected(Rejection::Frame(FrameRejection::ParseError)),
        answer: None,
        region: None,
        left_out: Vec::new(),
        identified: Identified::default(),
    };
    let Some((region, left_out)) = select_region(&ctx.regions, ctx.handle.gateway_regions(), up) else { return decided };
    decided.region = Some(region.clone());
    decided.left_out = left_out;
    decided.verdict = if !region.accepts_uplink(up.frames[0].tx_info.frequency) {
        // Not a channel of the plan: a device of another network, or one whose channels
        // were never confined. Answering would put it on a channel no gateway listens to.
        tracing::debug!(frequency = up.frames[0].tx_info.frequency, region_config_id = %region.id, "uplink on a channel that is not enabled");
        frame_rejected(ctx, FrameRejection::ChannelNotEnabled)
    } else {
        match phy {
            Ok(Phy::JoinRequest(jr)) => {
                decided.identified.dev_eui = Some(jr.dev_eui);
                let (verdict, answer) = join::handle(ctx, &region, up, jr).await;
                decided.answer = answer.map(Answer::JoinAccept);
                verdict
            }
            Ok(Phy::Data(frame)) if frame.is_uplink() => {
                let (verdict, answer) = data::handle(ctx, &region, up, frame, &mut decided.identified).await;
                decided.answer = answer.map(|plan| Answer::Data(Box::new(plan)));
                verdict
            }
            Ok(_) => frame_rejected(ctx, FrameRejection::UnsupportedType),
            Err(e) => {
                tracing::debug!(error = %e, "unparseable PHYPayload");
                frame_rejected(ctx, FrameRejection::ParseError)
            }
        }
    };
    decided
}

fn frame_rejected(ctx: &Context, r: FrameRejection) -> Verdict {
    ctx.metrics.uplinks_rejected.with_label_values(&[r.reason()]).inc();
    Verdict::Rejected(Rejection::Frame(r))
}

/// The traffic counts and, for watched gateways, one frame per copy with its verdict.
fn report(ctx: &Context, up: &DedupedUplink, phy: Option<&Phy>, decided: &Decided) {
    let now = Utc::now();
    let traffic = ctx.handle.traffic();
    match decided.verdict {
        Verdict::AcceptedData => traffic.accepted_uplink(now),
        Verdict::AcceptedJoin => traffic.accepted_join(now),
        Verdict::Rejected(_) => {}
    }
    let left_out = Verdict::Rejected(Rejection::OtherRegionConfig);
    let copies = up.frames.iter().map(|f| (f, decided.verdict)).chain(decided.left_out.iter().map(|f| (f, left_out)));
    let feed = ctx.handle.frames();
    let watched = feed.any_watched();
    let mut facts = None;
    for (copy, verdict) in copies {
        let gateway = copy.rx_info.gateway_id;
        traffic.gateway_uplink(gateway, verdict.accepted(), now);
        if watched {
            let facts = facts.get_or_insert_with(|| UplinkFacts {
                phy,
                dev_eui: decided.identified.dev_eui,
                f_cnt: decided.identified.f_cnt,
                dr: decided
                    .region
                    .as_ref()
                    .and_then(|r| RegionModulation::from_frame(&copy.tx_info.modulation).and_then(|m| r.region.dr_for(&m))),
                deduplication_id: Some(up.deduplication_id),
            });
            feed.send_with(gateway, || Arc::new(FrameEvent::Up(UpFrame::new(copy, facts, verdict.reason()))));
        }
    }
}

/// The region configuration an uplink is handled with: that of the gateway with the best
/// copy, and the copies left out: those from gateways of other configurations (their radios
/// use another band plan, so they cannot carry the answer). `None` only for an uplink without
/// copies.
pub fn select_region(
    regions: &Regions,
    gateways: &GatewayRegions,
    up: &mut DedupedUplink,
) -> Option<(Arc<RegionConfig>, Vec<UplinkFrame>)> {
    let best = up.frames.first()?.rx_info.gateway_id;
    let region = gateways.config_of(regions, best).clone();
    let same = |f: &UplinkFrame| Arc::ptr_eq(gateways.config_of(regions, f.rx_info.gateway_id), &region);
    // Nearly always every copy is kept: then nothing is moved or allocated.
    if up.frames.iter().all(same) {
        return Some((region, Vec::new()));
    }
    let (kept, left_out) = std::mem::take(&mut up.frames).into_iter().partition(same);
    up.frames = kept;
    Some((region, left_out))
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
            done: None,
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
        let (r, left_out) = select_region(&regions, &gateways, &mut up).unwrap();
        assert_eq!(&*r.id, "second");
        assert_eq!(left_out.len(), 1);
        let kept: Vec<u64> = up.frames.iter().map(|f| f.rx_info.gateway_id.as_u64()).collect();
        assert_eq!(kept, [2, 3]);

        // Unknown / unconfigured gateways belong to the first config.
        let mut up = uplink(&[9, 2, 1]);
        let (r, _) = select_region(&regions, &gateways, &mut up).unwrap();
        assert_eq!(&*r.id, "first");
        let kept: Vec<u64> = up.frames.iter().map(|f| f.rx_info.gateway_id.as_u64()).collect();
        assert_eq!(kept, [9, 1]);

        assert!(select_region(&regions, &gateways, &mut uplink(&[])).is_none());
    }
}
