//! A virtual gateway speaking Semtech UDP protocol v2 (packet_forwarder PROTOCOL.TXT) from the
//! gateway side: PUSH_DATA for what its radio "hears", PULL_DATA every 5 s on the same socket
//! to keep the downlink path open (§5.2; two at start), a TX_ACK for every PULL_RESP (§5.5), and the
//! downlink handed to the [`Router`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use loraflow_network_server::types::Eui64;
use loraflow_packet_forwarder::semtech::{
    Datr, Header, Identifier, PullData, PullResp, PushData, PushDataPayload, Rxpk, TxAck, TxAckPayload, TxpkAck,
};
use rand::Rng;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use loraflow_network_server::region::Modulation;

use super::mac::{DownlinkRadio, TxParams};
use super::router::{Delivery, Router};
use super::Stats;

/// PULL_DATA period of the reference packet forwarder (`keepalive_interval`).
pub const PULL_INTERVAL: Duration = Duration::from_secs(5);

/// SNR (dB) at the nearest gateway of a device sending at maximum power, unless `--snr` says
/// otherwise: what every simulated device got before the SNR was configurable.
pub const DEFAULT_SNR: f32 = 9.5;

/// What one gateway measured for one packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub rssi: i32,
    pub snr: f32,
}

impl Signal {
    /// Gateway 0 hears best, each further one about 12 dB weaker in RSSI and 3 dB in SNR, with a
    /// little jitter so that the best gateway is still mostly, not always, the same one.
    /// `link_snr` is the SNR at gateway 0 when the device sends at maximum power;
    /// `power_offset_db` (≤ 0, the region's TX power table: EU868 and US915 2 dB per TXPower
    /// step) lowers both RSSI and SNR, so that ADR sees a quieter device.
    pub fn for_gateway(index: usize, link_snr: f32, power_offset_db: i32, rng: &mut impl Rng) -> Signal {
        let step = index.min(8) as f32;
        let power_loss = -power_offset_db.min(0) as f32;
        let rssi = -50.0 + (link_snr - DEFAULT_SNR) - 12.0 * step - power_loss + rng.gen_range(-3.0f32..=3.0);
        let snr = link_snr - 3.0 * step - power_loss + rng.gen_range(-1.0f32..1.0);
        Signal { rssi: rssi.round() as i32, snr: (snr * 10.0).round() / 10.0 }
    }
}

/// The rxpk `modu`, `datr` and `codr` of a modulation: `SF10BW125`, `SF8BW500`, FSK bit/s.
/// LR-FHSS is not simulated; devices never pick it.
fn rxpk_modulation(m: &Modulation) -> (&'static str, Datr, Option<String>) {
    match *m {
        Modulation::Fsk { bitrate } => ("FSK", Datr::Bps(bitrate), None),
        Modulation::Lora { spreading_factor, bandwidth } => {
            ("LORA", Datr::Name(format!("SF{spreading_factor}BW{}", bandwidth / 1000)), Some("4/5".into()))
        }
        Modulation::LrFhss { .. } => ("LORA", Datr::Name("SF12BW125".into()), Some("4/5".into())),
    }
}

pub struct VirtualGateway {
    pub eui: Eui64,
    pub index: usize,
    socket: UdpSocket,
    server: SocketAddr,
    next_token: AtomicU16,
    epoch: Instant,
    /// Concentrator counters start anywhere.
    tmst_base: u32,
    pull_acked: AtomicBool,
}

impl VirtualGateway {
    /// A gateway with its own UDP socket, bound on the address family of `server`.
    pub async fn bind(eui: Eui64, index: usize, server: SocketAddr) -> std::io::Result<Arc<VirtualGateway>> {
        let local: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let socket = UdpSocket::bind(local).await?;
        let mut rng = rand::thread_rng();
        Ok(Arc::new(VirtualGateway {
            eui,
            index,
            socket,
            server,
            next_token: AtomicU16::new(rng.gen()),
            epoch: Instant::now(),
            tmst_base: rng.gen(),
            pull_acked: AtomicBool::new(false),
        }))
    }

    fn token(&self) -> u16 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// The concentrator's microsecond counter, wrapping like the real one.
    pub fn tmst(&self) -> u32 {
        self.tmst_base.wrapping_add(self.epoch.elapsed().as_micros() as u32)
    }

    /// Whether the server has answered a PULL_DATA (downlinks can reach us).
    pub fn has_pull_ack(&self) -> bool {
        self.pull_acked.load(Ordering::Relaxed)
    }

    /// A PUSH_DATA datagram with one rxpk: the frequency, channel and data rate the device sent
    /// on, and what this gateway measured.
    pub fn push_data(&self, phy: &[u8], signal: Signal, tx: &TxParams) -> Vec<u8> {
        let (modu, datr, codr) = rxpk_modulation(&tx.modulation);
        let rxpk = Rxpk {
            time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            tmms: None,
            tmst: self.tmst(),
            freq: tx.frequency,
            chan: u32::from(tx.channel),
            rfch: 0,
            stat: Some(1),
            modu: modu.into(),
            datr,
            codr,
            rssi: Some(signal.rssi),
            lsnr: Some(signal.snr),
            size: Some(phy.len() as u32),
            data: base64::engine::general_purpose::STANDARD.encode(phy),
            rsig: None,
        };
        PushData { token: self.token(), gateway_id: self.eui, payload: PushDataPayload { rxpk: vec![rxpk], stat: None } }.encode()
    }

    pub async fn send_uplink(&self, phy: &[u8], signal: Signal, tx: &TxParams) -> std::io::Result<()> {
        self.socket.send_to(&self.push_data(phy, signal, tx), self.server).await.map(drop)
    }

    pub async fn pull_data(&self) -> std::io::Result<()> {
        let bytes = PullData { token: self.token(), gateway_id: self.eui }.encode();
        self.socket.send_to(&bytes, self.server).await.map(drop)
    }

    /// Keeps the downlink path open and answers the server until `shutdown`.
    pub async fn run(self: Arc<Self>, router: Arc<Router>, stats: Arc<Stats>, shutdown: CancellationToken) {
        let mut pull = tokio::time::interval(PULL_INTERVAL);
        pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 65_536];
        // A server that knows this EUI from another socket (an earlier run against the same
        // server) moves the downlink path only after two PULL_DATA in a row from the new one
        // (docs/operations.md, "Gateway security"). A real forwarder gets there at its second
        // keepalive; the simulator sends two at once so that its first joins are answered.
        let mut first = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = pull.tick() => {
                    let count = if std::mem::take(&mut first) { 2 } else { 1 };
                    for _ in 0..count {
                        if let Err(e) = self.pull_data().await {
                            stats.error();
                            tracing::warn!(gateway = %self.eui, error = %e, "PULL_DATA not sent");
                        }
                    }
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _)) => self.handle(&buf[..n], &router, &stats).await,
                    Err(e) => {
                        // ICMP port unreachable surfaces here on Linux while the server restarts.
                        stats.error();
                        tracing::debug!(gateway = %self.eui, error = %e, "UDP receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    async fn handle(&self, datagram: &[u8], router: &Router, stats: &Stats) {
        let Ok((header, _)) = Header::decode(datagram) else {
            stats.error();
            return;
        };
        match header.identifier {
            Identifier::PushAck => {
                stats.push_acks.fetch_add(1, Ordering::Relaxed);
            }
            Identifier::PullAck => self.pull_acked.store(true, Ordering::Relaxed),
            Identifier::PullResp => self.handle_pull_resp(datagram, router, stats).await,
            _ => {}
        }
    }

    async fn handle_pull_resp(&self, datagram: &[u8], router: &Router, stats: &Stats) {
        stats.downlinks.fetch_add(1, Ordering::Relaxed);
        let resp = match PullResp::decode(datagram) {
            Ok(r) => r,
            Err(e) => {
                stats.error();
                tracing::warn!(gateway = %self.eui, error = %e, "undecodable PULL_RESP");
                return;
            }
        };
        // The simulated radio always transmits: every PULL_RESP is acknowledged as sent.
        let ack = TxAck {
            token: resp.token,
            gateway_id: self.eui,
            payload: Some(TxAckPayload { txpk_ack: Some(TxpkAck { error: Some("NONE".into()), warn: None, value: None }) }),
        };
        if let Err(e) = self.socket.send_to(&ack.encode(), self.server).await {
            stats.error();
            tracing::warn!(gateway = %self.eui, error = %e, "TX_ACK not sent");
        }
        let Ok(phy) = base64::engine::general_purpose::STANDARD.decode(&resp.txpk.data) else {
            stats.error();
            return;
        };
        let Some(modulation) = resp.txpk.modulation().as_ref().and_then(Modulation::from_frame) else {
            stats.error();
            tracing::warn!(gateway = %self.eui, modu = %resp.txpk.modu, datr = ?resp.txpk.datr, "PULL_RESP with an unknown modulation");
            return;
        };
        let radio = DownlinkRadio { frequency: resp.txpk.freq, modulation, immediate: resp.txpk.imme };
        match router.deliver(&phy, radio) {
            Delivery::Delivered => {}
            Delivery::Unclaimed => {
                stats.unclaimed_downlinks.fetch_add(1, Ordering::Relaxed);
            }
            Delivery::Malformed => stats.error(),
        }
    }
}

/// What became of one transmission.
#[derive(Debug)]
pub struct Heard {
    /// Copies that left (one per gateway).
    pub sent: usize,
    /// The first I/O error.
    pub error: Option<std::io::Error>,
    /// Best SNR the gateways reported, over the copies that left.
    pub best_snr: Option<f32>,
}

/// All virtual gateways: every device is in range of every one of them.
#[derive(Clone)]
pub struct Gateways(pub Vec<Arc<VirtualGateway>>);

impl Gateways {
    /// Binds `count` gateways with EUIs `prefix + i`.
    pub async fn bind(prefix: u64, count: usize, server: SocketAddr) -> std::io::Result<Gateways> {
        Self::bind_spread(prefix, count, &[server]).await
    }

    /// Binds `count` gateways with EUIs `prefix + i`, gateway `i` attached to
    /// `servers[i % servers.len()]`: with several instances of one network, consecutive
    /// gateways sit on different instances, so that every uplink (heard by all gateways)
    /// reaches every instance once `count >= servers.len()`.
    pub async fn bind_spread(prefix: u64, count: usize, servers: &[SocketAddr]) -> std::io::Result<Gateways> {
        if servers.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no server address for the gateways"));
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            out.push(VirtualGateway::bind(Eui64::from_u64(prefix + i as u64), i, servers[i % servers.len()]).await?);
        }
        Ok(Gateways(out))
    }

    /// The server address each gateway sends to, in gateway order.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|g| g.server).collect()
    }

    pub fn euis(&self) -> Vec<Eui64> {
        self.0.iter().map(|g| g.eui).collect()
    }

    /// Starts every gateway's receive and keep-alive loop.
    pub fn spawn(&self, router: &Arc<Router>, stats: &Arc<Stats>, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.0.iter().map(|g| tokio::spawn(g.clone().run(router.clone(), stats.clone(), shutdown.clone()))).collect()
    }

    /// Waits until every gateway got a PULL_ACK, or `timeout`; returns whether all did.
    pub async fn wait_pull_acks(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.0.iter().all(|g| g.has_pull_ack()) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Sends `phy` as heard by every gateway, each with its own signal for a device whose SNR
    /// at the nearest gateway is `link_snr` at maximum power.
    pub async fn transmit(&self, phy: &[u8], tx: &TxParams, link_snr: f32) -> Heard {
        let signals: Vec<Signal> = {
            let mut rng = rand::thread_rng();
            self.0.iter().map(|g| Signal::for_gateway(g.index, link_snr, tx.power_offset_db, &mut rng)).collect()
        };
        let mut heard = Heard { sent: 0, error: None, best_snr: None };
        for (g, s) in self.0.iter().zip(signals) {
            match g.send_uplink(phy, s, tx).await {
                Ok(()) => {
                    heard.sent += 1;
                    heard.best_snr = Some(heard.best_snr.map_or(s.snr, |b: f32| b.max(s.snr)));
                }
                Err(e) => {
                    heard.error.get_or_insert(e);
                }
            }
        }
        heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora(spreading_factor: u8, bandwidth: u32) -> Modulation {
        Modulation::Lora { spreading_factor, bandwidth }
    }

    fn tx(modulation: Modulation, channel: u8, frequency: u32) -> TxParams {
        TxParams { dr: 0, tx_power: 0, channel, frequency, modulation, power_offset_db: 0 }
    }

    #[tokio::test]
    async fn push_data_carries_the_frame_and_the_gateway_eui() {
        let gw = VirtualGateway::bind(Eui64::from_u64(0x0102), 0, "127.0.0.1:9".parse().unwrap()).await.unwrap();
        let tx = tx(lora(7, 125_000), 1, 868_300_000);
        let bytes = gw.push_data(&[1, 2, 3], Signal { rssi: -60, snr: 7.5 }, &tx);
        let p = PushData::decode(&bytes).unwrap();
        assert_eq!(p.gateway_id, Eui64::from_u64(0x0102));
        let rx = &p.payload.rxpk[0];
        assert_eq!((rx.freq, rx.chan, rx.rssi, rx.lsnr, rx.size), (868_300_000, 1, Some(-60), Some(7.5), Some(3)));
        assert_eq!((rx.modu.as_str(), &rx.datr, rx.codr.as_deref()), ("LORA", &Datr::Name("SF7BW125".into()), Some("4/5")));
        assert_eq!(rx.data, "AQID");
    }

    #[tokio::test]
    async fn the_rxpk_carries_the_data_rate_and_channel_the_device_used() {
        let gw = VirtualGateway::bind(Eui64::from_u64(1), 0, "127.0.0.1:9".parse().unwrap()).await.unwrap();
        // (modulation, modu, datr, codr): EU868 DR0, DR3, DR6, DR7 and US915 DR0, DR4.
        let table = [
            (lora(12, 125_000), "LORA", Datr::Name("SF12BW125".into()), Some("4/5")),
            (lora(9, 125_000), "LORA", Datr::Name("SF9BW125".into()), Some("4/5")),
            (lora(7, 250_000), "LORA", Datr::Name("SF7BW250".into()), Some("4/5")),
            (Modulation::Fsk { bitrate: 50_000 }, "FSK", Datr::Bps(50_000), None),
            (lora(10, 125_000), "LORA", Datr::Name("SF10BW125".into()), Some("4/5")),
            (lora(8, 500_000), "LORA", Datr::Name("SF8BW500".into()), Some("4/5")),
        ];
        for (m, modu, datr, codr) in table {
            let p = PushData::decode(&gw.push_data(&[1], Signal { rssi: -60, snr: 7.5 }, &tx(m, 4, 867_300_000))).unwrap();
            let rx = &p.payload.rxpk[0];
            assert_eq!((rx.modu.as_str(), &rx.datr, rx.codr.as_deref()), (modu, &datr, codr), "{m:?}");
            assert_eq!((rx.freq, rx.chan), (867_300_000, 4), "{m:?}");
        }
    }

    #[tokio::test]
    async fn spread_gateways_take_the_instances_in_turn() {
        let a: SocketAddr = "127.0.0.1:1700".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1701".parse().unwrap();
        let gws = Gateways::bind_spread(0x10, 5, &[a, b]).await.unwrap();
        assert_eq!(gws.servers(), [a, b, a, b, a]);
        assert_eq!(gws.euis()[4], Eui64::from_u64(0x14));
        assert!(Gateways::bind_spread(0x10, 1, &[]).await.is_err());
    }

    #[test]
    fn nearer_gateways_hear_louder() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let a = Signal::for_gateway(0, DEFAULT_SNR, 0, &mut rng);
            let b = Signal::for_gateway(1, DEFAULT_SNR, 0, &mut rng);
            assert!(a.rssi > b.rssi && a.snr > b.snr, "{a:?} {b:?}");
        }
    }

    #[test]
    fn each_tx_power_step_costs_two_db_of_snr() {
        let mut rng = rand::thread_rng();
        // (link SNR, TXPower index, expected SNR at gateway 0 before ±1 dB jitter)
        let table = [(9.5, 0, 9.5), (9.5, 3, 3.5), (9.5, 7, -4.5), (-20.0, 0, -20.0), (12.0, 1, 10.0)];
        for (link, power, want) in table {
            for _ in 0..50 {
                let s = Signal::for_gateway(0, link, -2 * power, &mut rng);
                assert!((s.snr - want).abs() <= 1.0, "link {link} power {power}: {s:?}");
            }
        }
        let loud = Signal::for_gateway(0, 9.5, 0, &mut rng);
        let quiet = Signal::for_gateway(0, 9.5, -14, &mut rng);
        assert!(loud.rssi - quiet.rssi >= 14 - 6, "RSSI drops with power too: {loud:?} {quiet:?}");
    }

    #[tokio::test]
    async fn every_pull_resp_gets_a_tx_ack_and_its_frame_reaches_the_router() {
        use loraflow_network_server::lorawan::{build_join_accept, JoinAcceptFields};
        use loraflow_network_server::types::AesKey;

        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let gw = VirtualGateway::bind(Eui64::from_u64(7), 0, server.local_addr().unwrap()).await.unwrap();
        let router = Arc::new(Router::default());
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        router.expect_join(Eui64::from_u64(1), AesKey([3; 16]), tx);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gw.clone().run(router.clone(), stats.clone(), shutdown.clone()));

        // Two PULL_DATA at start, so that a server that knew the EUI elsewhere moves the path.
        let mut buf = [0u8; 2048];
        let mut gw_addr = None;
        for _ in 0..2 {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let pull = PullData::decode(&buf[..n]).unwrap();
            assert_eq!(pull.gateway_id, Eui64::from_u64(7));
            server.send_to(&[2, buf[1], buf[2], 4], from).await.unwrap();
            gw_addr = Some(from);
        }
        let gw_addr = gw_addr.unwrap();

        let ja = build_join_accept(&AesKey([3; 16]), &JoinAcceptFields::default()).unwrap();
        let txpk = serde_json::json!({"imme": true, "freq": 869.525, "rfch": 0, "powe": 14, "modu": "LORA", "datr": "SF12BW125",
                                      "codr": "4/5", "ipol": true, "size": ja.len(), "data": base64::engine::general_purpose::STANDARD.encode(&ja)});
        let mut resp = vec![2, 0x12, 0x34, 3];
        resp.extend_from_slice(serde_json::json!({ "txpk": txpk }).to_string().as_bytes());
        server.send_to(&resp, gw_addr).await.unwrap();

        let (n, _) = server.recv_from(&mut buf).await.unwrap();
        let ack = TxAck::decode(&buf[..n]).unwrap();
        assert_eq!((ack.token, ack.gateway_id), (0x1234, Eui64::from_u64(7)));
        assert_eq!(ack.payload.unwrap().txpk_ack.unwrap().error.as_deref(), Some("NONE"));
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.unwrap().unwrap();
        assert_eq!(got.phy, ja);
        assert_eq!(got.radio, DownlinkRadio { frequency: 869_525_000, modulation: lora(12, 125_000), immediate: true });
        assert!(gw.has_pull_ack());
        assert_eq!(stats.downlinks.load(Ordering::Relaxed), 1);
        shutdown.cancel();
        task.await.unwrap();
    }
}
