//! `loraflow simulate --adr` against a real server: what its devices put on the air (seen by a
//! UDP relay between the simulator's gateways and the server) and, with the server's ADR, the
//! data rates converging.

mod common;
#[path = "../app-server/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::net::UdpSocket;

use common::{Backend, TestServer, TOKEN};
use loraflow_network_server::lorawan::{build_data_downlink, DataDownlink};
use loraflow_network_server::types::{AesKey, DevAddr};
use mqtt_support::Subscriber;

/// One data uplink as the server received it, read from the PUSH_DATA rxpk and the frame
/// header (LoRaWAN 1.0.4 §4.3.1), independently of the server's and the simulator's codecs.
#[derive(Debug, Clone)]
struct Heard {
    dev_addr: u32,
    f_cnt: u16,
    adr: bool,
    adr_ack_req: bool,
    f_opts: Vec<u8>,
    datr: String,
    freq_hz: u64,
    lsnr: f64,
}

#[derive(Default)]
struct Seen {
    uplinks: Vec<Heard>,
    /// Data downlinks the relay did not pass on.
    dropped_downlinks: u64,
}

/// A Semtech UDP relay: every datagram from a simulator gateway goes to the server from a
/// socket of its own, every answer back. It records the data uplinks and drops data
/// downlinks (PULL_RESP with a data frame), as if the devices were out of downlink range:
/// join-accepts pass, so devices join, and no LinkADRReq or ADRACKReq answer reaches them.
struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    front: Arc<UdpSocket>,
    /// Simulator gateway addresses, first seen first.
    gateways: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let gateways = Arc::new(Mutex::new(Vec::new()));
        let (front2, seen2, gateways2) = (front.clone(), seen.clone(), gateways.clone());
        tokio::spawn(async move {
            let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = front2.recv_from(&mut buf).await else { continue };
                let datagram = buf[..n].to_vec();
                if datagram.len() > 12 && datagram[3] == 0x00 {
                    record_push_data(&datagram[12..], &seen2);
                }
                let up = match upstream.get(&from) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        s.connect(server).await.unwrap();
                        upstream.insert(from, s.clone());
                        gateways2.lock().unwrap().push(from);
                        let (front3, seen3, back) = (front2.clone(), seen2.clone(), s.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok(n) = back.recv(&mut buf).await {
                                let d = &buf[..n];
                                if d.len() > 4 && d[3] == 0x03 && is_data_downlink(&d[4..]) {
                                    seen3.lock().unwrap().dropped_downlinks += 1;
                                    continue;
                                }
                                let _ = front3.send_to(d, from).await;
                            }
                        });
                        s
                    }
                };
                let _ = up.send(&datagram).await;
            }
        });
        Relay { addr, seen, front, gateways }
    }

    /// Sends `phy` to the first simulator gateway in a PULL_RESP, as the server would, in the
    /// device's RX2 (869.525 MHz, DR0): a Class A device hears nothing outside its windows.
    /// The virtual gateway sends at once whatever `tmst` says.
    async fn inject_downlink(&self, phy: &[u8]) {
        let gateway = self.gateways.lock().unwrap()[0];
        let txpk = serde_json::json!({"tmst": 2_000_000, "freq": 869.525, "rfch": 0, "powe": 14, "modu": "LORA", "datr": "SF12BW125",
                                      "codr": "4/5", "ipol": true, "size": phy.len(),
                                      "data": base64::engine::general_purpose::STANDARD.encode(phy)});
        let mut datagram = vec![2, 0xab, 0xcd, 0x03];
        datagram.extend_from_slice(serde_json::json!({ "txpk": txpk }).to_string().as_bytes());
        self.front.send_to(&datagram, gateway).await.unwrap();
    }

    fn uplinks(&self) -> Vec<Heard> {
        self.seen.lock().unwrap().uplinks.clone()
    }
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default()
}

fn record_push_data(json: &[u8], seen: &Mutex<Seen>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    for rx in v["rxpk"].as_array().into_iter().flatten() {
        let phy = b64(rx["data"].as_str().unwrap_or_default());
        // MType 010 unconfirmed or 100 confirmed data up; MHDR, DevAddr, FCtrl, FCnt.
        if phy.len() < 12 || !matches!(phy[0] >> 5, 0b010 | 0b100) {
            continue;
        }
        let f_opts_len = usize::from(phy[5] & 0x0f);
        seen.lock().unwrap().uplinks.push(Heard {
            dev_addr: u32::from_le_bytes([phy[1], phy[2], phy[3], phy[4]]),
            f_cnt: u16::from_le_bytes([phy[6], phy[7]]),
            adr: phy[5] & 0x80 != 0,
            adr_ack_req: phy[5] & 0x40 != 0,
            f_opts: phy.get(8..8 + f_opts_len).unwrap_or_default().to_vec(),
            datr: rx["datr"].as_str().unwrap_or_default().to_string(),
            freq_hz: (rx["freq"].as_f64().unwrap_or_default() * 1e6).round() as u64,
            lsnr: rx["lsnr"].as_f64().unwrap_or(f64::NAN),
        });
    }
}

fn is_data_downlink(json: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else { return false };
    let phy = b64(v["txpk"]["data"].as_str().unwrap_or_default());
    // MType 011 unconfirmed or 101 confirmed data down.
    phy.first().is_some_and(|m| matches!(m >> 5, 0b011 | 0b101))
}

/// Runs `loraflow simulate` with `args`; returns the `--json` report and stderr.
async fn simulate(gateway: SocketAddr, server: &TestServer, args: &[&str]) -> (serde_json::Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loraflow"))
        .args(["simulate", "--server", &gateway.to_string(), "--api", &server.url(""), "--token", TOKEN, "--json"])
        .args(args)
        .current_dir(server.state_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run loraflow simulate");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "simulate failed: {stdout}\n{stderr}");
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("stdout is one JSON report ({e}): {stdout:?}"));
    (report, stderr)
}

/// EU868 default channels plus the CFList channels the server hands out at join (867.1–867.9 MHz).
const JOIN_CHANNELS: [u64; 8] = [868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adr_devices_without_downlinks_request_an_answer_after_64_uplinks_then_back_off() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let relay = Relay::start(server.gateway).await;
    // Start at DR5 and TXPower 3 so that every backoff step is visible: default power at
    // ADR_ACK_CNT 96, DR4 at 128, DR3 at 160 (LoRaWAN 1.0.4 §4.3.1.1, Table 9).
    let (report, stderr) = simulate(
        relay.addr,
        &server,
        &[
            "--devices",
            "3",
            "--adr",
            "--dr",
            "5",
            "--tx-power",
            "3",
            "--snr",
            "9.5",
            "--interval",
            "0.05",
            "--uplinks",
            "170",
            "--seconds",
            "90",
            "--verbose",
        ],
    )
    .await;

    let devices = report["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 3, "{report}");
    for d in devices {
        assert!(d["devAddr"].is_string(), "joined: {d}");
        assert_eq!(d["uplinks"], 170, "{d}");
        assert_eq!(d["downlinks"], 0, "no data downlink reached the device: {d}");
        assert_eq!(d["adrAckReqs"], 170 - 64, "ADRACKReq on uplinks 64..=169: {d}");
        assert_eq!((d["dr"].as_u64(), d["txPower"].as_u64()), (Some(3), Some(0)), "{d}");
    }
    assert_eq!(report["errors"], 0, "{report}");
    let done = stderr.lines().find(|l| l.starts_with("simulate done: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(done.ends_with(" DR3:3"), "the summary shows the data-rate distribution: {done}");
    assert!(stderr.lines().any(|l| l.starts_with("[") && l.contains(" DR5:3")), "progress lines show DR5 before the backoff: {stderr}");
    assert!(stderr.contains("DevEUI") && stderr.contains("ADRACKReq"), "--verbose prints the device table: {stderr}");

    // What the server received, per device.
    let seen = relay.seen.lock().unwrap();
    let mut by_dev: BTreeMap<u32, BTreeMap<u16, Heard>> = BTreeMap::new();
    for h in &seen.uplinks {
        by_dev.entry(h.dev_addr).or_default().insert(h.f_cnt, h.clone());
    }
    assert_eq!(by_dev.len(), 3, "three devices on the air");
    for (dev_addr, frames) in &by_dev {
        assert_eq!(frames.len(), 170, "{dev_addr:08x}: every frame reached the server");
        for (f_cnt, h) in frames {
            let f_cnt = *f_cnt;
            let at = format!("{dev_addr:08x} FCnt {f_cnt}: {h:?}");
            assert!(h.adr, "ADR bit: {at}");
            assert_eq!(h.adr_ack_req, f_cnt >= 64, "ADRACKReq from ADR_ACK_LIMIT on: {at}");
            let datr = match f_cnt {
                0..=127 => "SF7BW125",
                128..=159 => "SF8BW125",
                _ => "SF9BW125",
            };
            assert_eq!(h.datr, datr, "one data rate lower every ADR_ACK_DELAY after the power step: {at}");
            assert!(JOIN_CHANNELS.contains(&h.freq_hz), "an enabled channel: {at}");
            if f_cnt < 96 {
                assert!(h.lsnr <= 9.5 - 6.0 + 1.0, "TXPower 3 is 6 dB quieter: {at}");
            } else {
                assert!(h.lsnr >= 9.5 - 1.0, "back at maximum power: {at}");
            }
        }
        let channels: std::collections::BTreeSet<u64> = frames.values().map(|h| h.freq_hz).collect();
        assert!(channels.len() >= 4, "{dev_addr:08x} hops over its channels, CFList ones included: {channels:?}");
    }
    // Before the server's ADR (issue 9), nothing is dropped; after it, answers to ADRACKReq
    // are dropped here on purpose.
    eprintln!("data downlinks dropped by the relay: {}", seen.dropped_downlinks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_device_applies_a_link_adr_req_answers_it_in_fopts_and_repeats_its_frames() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let relay = Relay::start(server.gateway).await;
    let dev_eui = "4c4653494d440000";
    let run = simulate(relay.addr, &server, &["--devices", "1", "--adr", "--interval", "0.2", "--uplinks", "30", "--seconds", "60"]);
    let inject = async {
        let heard = common::eventually(Duration::from_secs(20), || async { (relay.uplinks().len() >= 3).then_some(()) }).await;
        assert!(heard.is_some(), "the device joined and sent uplinks");
        let (status, session) = server.client().get(&format!("/api/devices/{dev_eui}/activation")).await;
        assert_eq!(status, 200, "{session}");
        let key = |k: &str| session[k].as_str().unwrap().parse::<AesKey>().unwrap();
        let dev_addr: u32 = u32::from_str_radix(session["devAddr"].as_str().unwrap(), 16).unwrap();
        // LinkADRReq: DR2, TXPower 1, channels 0-7, ChMaskCntl 0, NbTrans 2; then DevStatusReq.
        let f_opts = vec![0x03, 0x21, 0xff, 0x00, 0x02, 0x06];
        let down = DataDownlink {
            dev_addr: DevAddr::from_u32(dev_addr),
            f_cnt_down: session["fCntDown"].as_u64().unwrap() as u32,
            adr: true,
            f_opts,
            ..Default::default()
        };
        relay.inject_downlink(&build_data_downlink(&down, &key("nwkSKey"), &key("appSKey")).unwrap()).await;
        dev_addr
    };
    let ((report, _), dev_addr) = tokio::join!(run, inject);

    let d = &report["devices"][0];
    assert_eq!((d["dr"].as_u64(), d["txPower"].as_u64(), d["nbTrans"].as_u64()), (Some(2), Some(1), Some(2)), "{d}");
    assert_eq!(d["downlinks"], 1, "{d}");
    assert!(d["repeats"].as_u64() >= Some(1), "{d}");

    let mut frames: BTreeMap<u16, Vec<Heard>> = BTreeMap::new();
    for h in relay.uplinks().into_iter().filter(|h| h.dev_addr == dev_addr) {
        frames.entry(h.f_cnt).or_default().push(h);
    }
    assert_eq!(frames.len(), 30, "{frames:?}");
    let answered: Vec<u16> = frames.iter().filter(|(_, hs)| !hs[0].f_opts.is_empty()).map(|(f, _)| *f).collect();
    assert_eq!(answered.len(), 1, "the answers go out once: {frames:?}");
    let answer = &frames[&answered[0]][0].f_opts;
    assert_eq!(answer[..4], [0x03, 0x07, 0x06, 254], "LinkADRAns all ACK, DevStatusAns battery 254: {answer:?}");
    let margin = ((answer[4] << 2) as i8) >> 2;
    assert!((8..=11).contains(&margin), "DevStatusAns margin is the SNR the gateway reported (9.5 ± 1 dB): {margin}");
    for (f_cnt, hs) in &frames {
        let at = format!("FCnt {f_cnt}: {hs:?}");
        if *f_cnt < answered[0] {
            assert_eq!((hs.len(), hs[0].datr.as_str()), (1, "SF12BW125"), "before: DR0, sent once: {at}");
            assert!(hs[0].lsnr >= 8.5, "before: maximum power: {at}");
        } else {
            assert_eq!(hs.len(), 2, "NbTrans 2: {at}");
            assert!(hs.iter().all(|h| h.datr == "SF10BW125" && h.lsnr <= 8.5), "DR2 at TXPower 1 (2 dB quieter): {at}");
            assert!(hs.iter().all(|h| h.f_opts == hs[0].f_opts), "a repetition is the same frame: {at}");
        }
    }
}

/// Uplinks per device after which every device must be at DR5.
const CONVERGENCE_UPLINKS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adr_raises_every_simulated_device_from_dr0_to_dr5() {
    let server = TestServer::start(Backend::Sqlite, &[]).await;
    let mut ups = Subscriber::connect(server.mqtt.expect("embedded MQTT broker"), "application/+/device/+/event/up", false).await;
    let uplinks = CONVERGENCE_UPLINKS.to_string();
    // 9.5 dB at SF12 leaves 29.5 dB above the DR0 floor: room for DR5 and some power steps.
    let (report, stderr) = simulate(
        server.gateway,
        &server,
        &["--devices", "20", "--adr", "--snr", "9.5", "--interval", "0.5", "--uplinks", &uplinks, "--seconds", "120"],
    )
    .await;

    let devices = report["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 20, "{report}");
    for d in devices {
        assert_eq!(d["uplinks"].as_u64(), Some(CONVERGENCE_UPLINKS), "{d}");
        assert_eq!(d["dr"], 5, "DR5 within {CONVERGENCE_UPLINKS} uplinks: {d}");
        assert!(d["downlinks"].as_u64() >= Some(1), "a LinkADRReq arrived: {d}");
    }
    assert_eq!(report["errors"], 0, "{report}");
    assert!(stderr.lines().any(|l| l.starts_with("simulate done: ") && l.ends_with(" DR5:20")), "{stderr}");

    // The server saw every device start at DR0 and end at DR5, never going back down.
    let mut by_dev: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, ups.messages.recv()).await {
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
        let dev = v["deviceInfo"]["devEui"].as_str().unwrap_or_default().to_string();
        by_dev.entry(dev).or_default().insert(v["fCnt"].as_u64().unwrap_or_default(), v["dr"].as_u64().unwrap_or(99));
    }
    assert_eq!(by_dev.len(), 20, "up events from every device");
    for (dev, drs) in &by_dev {
        let seq: Vec<u64> = drs.values().copied().collect();
        assert_eq!(seq.first(), Some(&0), "{dev} starts at DR0: {seq:?}");
        assert_eq!(seq.last(), Some(&5), "{dev} ends at DR5: {seq:?}");
        assert!(seq.windows(2).all(|w| w[0] <= w[1]), "{dev} never steps down: {seq:?}");
    }
}
