//! Downlink transmit power as a gateway sees it in PULL_RESP `powe`: the EU868 sub-band
//! maximum as EIRP (16 dBm on 868.x MHz RX1, 29 dBm on the 869.525 MHz RX2), or
//! `network.downlink_tx_power` for every window when set. Power does not touch storage, so
//! SQLite is enough.

mod common;

use std::time::Duration;

use common::device::Device;
use common::gateway::{b64, rxpk, FakeGateway, PULL_ACK, PUSH_ACK};
use common::{provision, Backend, TestServer};
use serde_json::json;

const GATEWAY: &str = "00000000000000b1";
const DEV_EUI: &str = "2122232425262728";

/// Sends one uplink on `freq_mhz` with a queued item, refuses RX1 with TOO_LATE and returns
/// the `powe` of the RX1 and RX2 PULL_RESPs.
async fn rx1_and_rx2_power(extra_env: &[(&str, &str)], freq_mhz: f64) -> (serde_json::Value, serde_json::Value) {
    let server = TestServer::start(Backend::Sqlite, extra_env).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "NONE", "").await;
    provision::gateway(&api, GATEWAY).await;
    let (nwk_s_key, app_s_key) = ("44024241ed4ce9a68c6a8bc055233fd3", "ec925802ae430ca77fd3dd73cb2cc588");
    provision::abp_device(&api, &p, DEV_EUI, "26015678", nwk_s_key, app_s_key).await;
    let mut dev = Device::abp(DEV_EUI, "26015678", nwk_s_key, app_s_key);
    let (s, body) = api.post(&format!("/api/devices/{DEV_EUI}/queue"), json!({"fPort": 3, "data": b64(b"power")})).await;
    assert_eq!(s, 201, "{body}");

    let mut gw = FakeGateway::new(GATEWAY, server.gateway).await;
    let t = gw.pull_data().await;
    gw.expect_ack(PULL_ACK, t).await;
    let mut pk = rxpk(&dev.uplink(false, 1, b"up"), 5_000_000, -70, 7.0);
    pk["freq"] = json!(freq_mhz);
    let t = gw.push_rxpk(vec![pk]).await;
    gw.expect_ack(PUSH_ACK, t).await;

    let rx1 = gw.next_pull_resp(Duration::from_secs(5)).await.expect("RX1 attempt");
    assert_eq!(rx1.txpk["freq"].as_f64().unwrap(), freq_mhz);
    gw.tx_ack(rx1.token, "TOO_LATE").await;
    let rx2 = gw.next_pull_resp(Duration::from_secs(3)).await.expect("RX2 retry");
    assert_eq!(rx2.txpk["freq"].as_f64().unwrap(), 869.525);
    gw.tx_ack(rx2.token, "NONE").await;
    (rx1.txpk["powe"].clone(), rx2.txpk["powe"].clone())
}

#[tokio::test]
async fn rx1_on_868_mhz_uses_16_dbm_and_rx2_on_869_525_mhz_uses_29_dbm() {
    assert_eq!(rx1_and_rx2_power(&[], 868.1).await, (json!(16), json!(29)));
}

#[tokio::test]
async fn rx1_on_a_cflist_channel_in_band_l_uses_16_dbm() {
    assert_eq!(rx1_and_rx2_power(&[], 867.5).await, (json!(16), json!(29)));
}

#[tokio::test]
async fn network_downlink_tx_power_overrides_every_window() {
    let env = [("LORAFLOW_NETWORK__DOWNLINK_TX_POWER", "20")];
    assert_eq!(rx1_and_rx2_power(&env, 868.3).await, (json!(20), json!(20)));
}
