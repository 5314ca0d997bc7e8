//! `/api/regions`: the region configurations of this server and their channel plans, so that
//! tools (the simulator, a console) can learn which channels and data rates gateways use.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use loraflow_network_server::region::{CfListType, Modulation};
use loraflow_network_server::region_config::RegionConfig;

use super::error::ApiError;
use super::openapi::ReadErrors;
use super::{ApiState, ListResponse};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelJson {
    /// Index in the region's channel plan (extra channels follow the default ones).
    index: u8,
    /// Hz
    frequency: u32,
    min_dr: u8,
    max_dr: u8,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataRateJson {
    dr: u8,
    /// `LORA`, `FSK` or `LR_FHSS`.
    modulation: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    spreading_factor: Option<u8>,
    /// Hz (LoRa) or occupied channel width (LR-FHSS).
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bitrate: Option<u32>,
    uplink: bool,
    downlink: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rx2Json {
    frequency: u32,
    dr: u8,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionJson {
    id: String,
    common_name: &'static str,
    /// The channels gateways listen on: the enabled default channels, then the extra ones.
    uplink_channels: Vec<ChannelJson>,
    /// `FREQUENCIES` (type 0), `CHANNEL_MASK` (type 1) or null.
    cf_list_type: Option<&'static str>,
    rx1_delay: u8,
    rx1_dr_offset: u8,
    rx2: Rx2Json,
    /// Seconds after a join-request the join-accept's RX1 opens.
    join_accept_delay1: u64,
    data_rates: Vec<DataRateJson>,
}

fn data_rates(r: &RegionConfig) -> Vec<DataRateJson> {
    (0..=15u8)
        .filter_map(|dr| {
            let d = r.region.data_rate(dr)?;
            let (modulation, spreading_factor, bandwidth, bitrate) = match d.modulation {
                Modulation::Lora { spreading_factor, bandwidth } => ("LORA", Some(spreading_factor), Some(bandwidth), None),
                Modulation::Fsk { bitrate } => ("FSK", None, None, Some(bitrate)),
                Modulation::LrFhss { occupied_channel_width, .. } => ("LR_FHSS", None, Some(occupied_channel_width), None),
            };
            Some(DataRateJson { dr, modulation, spreading_factor, bandwidth, bitrate, uplink: d.uplink, downlink: d.downlink })
        })
        .collect()
}

pub fn to_json(r: &RegionConfig) -> RegionJson {
    let defaults = r.region.default_uplink_channels();
    let mut uplink_channels: Vec<ChannelJson> = r
        .enabled_uplink_channels
        .iter()
        .filter_map(|&i| {
            let c = defaults.get(usize::from(i))?;
            Some(ChannelJson { index: i, frequency: c.frequency, min_dr: c.min_dr, max_dr: c.max_dr })
        })
        .collect();
    let (min_dr, max_dr) = r.region.extra_channel_dr_range();
    uplink_channels.extend(r.extra_channels.iter().enumerate().map(|(n, &frequency)| ChannelJson {
        index: (defaults.len() + n) as u8,
        frequency,
        min_dr,
        max_dr,
    }));
    RegionJson {
        id: r.id.to_string(),
        common_name: r.common_name(),
        uplink_channels,
        cf_list_type: r.region.cf_list_type().map(|t| match t {
            CfListType::Frequencies => "FREQUENCIES",
            CfListType::ChannelMask => "CHANNEL_MASK",
        }),
        rx1_delay: r.desired_rx.rx1_delay,
        rx1_dr_offset: r.desired_rx.rx1_dr_offset,
        rx2: Rx2Json { frequency: r.desired_rx.rx2_frequency, dr: r.desired_rx.rx2_dr },
        join_accept_delay1: r.region.join_accept_delay1().as_secs(),
        data_rates: data_rates(r),
    }
}

#[utoipa::path(
    operation_id = "regions_list",
    summary = "List the region configurations and their channel plans",
    get,
    path = "/regions",
    tag = "regions",
    responses((status = 200, body = ListResponse<RegionJson>), ReadErrors)
)]
pub async fn list(State(state): State<ApiState>) -> Json<ListResponse<RegionJson>> {
    let result: Vec<RegionJson> = state.regions.iter().map(|r| to_json(r)).collect();
    Json(ListResponse { total_count: result.len() as u64, result })
}

#[utoipa::path(
    operation_id = "regions_get",
    summary = "Get a region configuration",
    get,
    path = "/regions/{id}",
    tag = "regions",
    params(("id" = String, Path, description = "Region configuration id, e.g. eu868")),
    responses((status = 200, body = RegionJson), ReadErrors)
)]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<RegionJson>, ApiError> {
    let r = state.regions.get(&id).ok_or_else(|| ApiError::NotFound(format!("region config {id:?} does not exist")))?;
    Ok(Json(to_json(r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_network_server::region_config::Regions;

    #[test]
    fn eu868_lists_its_default_and_extra_channels_and_rx2() {
        let r = Regions::single("EU868");
        let j = serde_json::to_value(to_json(r.first())).unwrap();
        assert_eq!(j["id"], "eu868");
        assert_eq!(j["commonName"], "EU868");
        assert_eq!(j["cfListType"], "FREQUENCIES");
        let freqs: Vec<u64> = j["uplinkChannels"].as_array().unwrap().iter().map(|c| c["frequency"].as_u64().unwrap()).collect();
        assert_eq!(freqs, [868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000]);
        assert_eq!(j["uplinkChannels"][3]["index"], 3);
        assert_eq!(j["rx2"], serde_json::json!({"frequency": 869_525_000, "dr": 0}));
        assert_eq!(j["joinAcceptDelay1"], 5);
        assert_eq!(
            j["dataRates"][0],
            serde_json::json!({"dr": 0, "modulation": "LORA", "spreadingFactor": 12, "bandwidth": 125000, "uplink": true, "downlink": true})
        );
    }
}
