//! A virtual gateway speaking raw Semtech UDP protocol v2 bytes, written from the protocol
//! text independently of the server's own codec.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::net::UdpSocket;

pub const PUSH_DATA: u8 = 0x00;
pub const PUSH_ACK: u8 = 0x01;
pub const PULL_DATA: u8 = 0x02;
pub const PULL_RESP: u8 = 0x03;
pub const PULL_ACK: u8 = 0x04;
pub const TX_ACK: u8 = 0x05;

pub struct FakeGateway {
    pub eui: [u8; 8],
    pub socket: UdpSocket,
    pub server: SocketAddr,
    next_token: u16,
}

/// One received PULL_RESP.
#[derive(Debug, Clone)]
pub struct PullResp {
    pub token: u16,
    pub txpk: serde_json::Value,
}

impl PullResp {
    pub fn phy_payload(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(self.txpk["data"].as_str().unwrap()).unwrap()
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An rxpk object for a LoRa frame with sensible defaults.
pub fn rxpk(phy: &[u8], tmst: u32, rssi: i32, lsnr: f64) -> serde_json::Value {
    serde_json::json!({
        "tmst": tmst, "chan": 0, "rfch": 0, "freq": 868.1, "stat": 1, "modu": "LORA",
        "datr": "SF7BW125", "codr": "4/5", "rssi": rssi, "lsnr": lsnr, "size": phy.len(), "data": b64(phy)
    })
}

impl FakeGateway {
    pub async fn new(eui_hex: &str, server: SocketAddr) -> FakeGateway {
        Self::bound_to(eui_hex, "127.0.0.1", server).await
    }

    /// A gateway sending from another loopback address (e.g. `127.0.0.2`, which Linux routes
    /// without set-up): a NAT rebinding, or a forger using the gateway's EUI.
    pub async fn bound_to(eui_hex: &str, ip: &str, server: SocketAddr) -> FakeGateway {
        let mut eui = [0u8; 8];
        hex::decode_to_slice(eui_hex, &mut eui).unwrap();
        let socket = UdpSocket::bind((ip, 0)).await.unwrap();
        FakeGateway { eui, socket, server, next_token: 1 }
    }

    pub fn token(&mut self) -> u16 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.unwrap();
    }

    fn header(&self, token: u16, kind: u8, with_eui: bool) -> Vec<u8> {
        let mut b = vec![2, (token >> 8) as u8, token as u8, kind];
        if with_eui {
            b.extend_from_slice(&self.eui);
        }
        b
    }

    pub async fn push_json(&mut self, json: &serde_json::Value) -> u16 {
        let token = self.token();
        let mut b = self.header(token, PUSH_DATA, true);
        b.extend_from_slice(json.to_string().as_bytes());
        self.send_raw(&b).await;
        token
    }

    pub async fn push_rxpk(&mut self, rxpks: Vec<serde_json::Value>) -> u16 {
        self.push_json(&serde_json::json!({ "rxpk": rxpks })).await
    }

    pub async fn pull_data(&mut self) -> u16 {
        let token = self.token();
        let b = self.header(token, PULL_DATA, true);
        self.send_raw(&b).await;
        token
    }

    pub async fn tx_ack(&self, token: u16, error: &str) {
        let mut b = self.header(token, TX_ACK, true);
        b.extend_from_slice(serde_json::json!({ "txpk_ack": { "error": error } }).to_string().as_bytes());
        self.send_raw(&b).await;
    }

    /// Next datagram from the server, or None after `timeout`.
    pub async fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(timeout, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Discards whatever the server sent so far (e.g. thousands of ACKs), until it is quiet.
    pub async fn drain(&self) {
        while self.recv(Duration::from_millis(200)).await.is_some() {}
    }

    /// Waits for an ACK of `kind` with `token`, skipping other datagrams.
    pub async fn expect_ack(&self, kind: u8, token: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let d = self.recv(left).await.unwrap_or_else(|| panic!("no ack {kind:#04x} for token {token}"));
            if d.len() >= 4 && d[0] == 2 && d[3] == kind && u16::from_be_bytes([d[1], d[2]]) == token {
                return;
            }
        }
    }

    /// Waits for the next PULL_RESP (skipping ACKs), or None after `timeout`.
    pub async fn next_pull_resp(&self, timeout: Duration) -> Option<PullResp> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let d = self.recv(left).await?;
            if d.len() > 4 && d[0] == 2 && d[3] == PULL_RESP {
                let v: serde_json::Value = serde_json::from_slice(&d[4..]).expect("PULL_RESP json");
                return Some(PullResp { token: u16::from_be_bytes([d[1], d[2]]), txpk: v["txpk"].clone() });
            }
        }
    }
}

/// Two gateways that hear the same uplinks, one well and one poorly: the setting of the
/// downlink tests where the best gateway is tried first and the other after a refusal.
pub struct GatewayPair {
    pub best: FakeGateway,
    pub second: FakeGateway,
    ids: [&'static str; 2],
}

impl GatewayPair {
    /// Both gateways (EUIs in hex), not yet connected.
    pub async fn new(best: &'static str, second: &'static str, server: SocketAddr) -> GatewayPair {
        GatewayPair { best: FakeGateway::new(best, server).await, second: FakeGateway::new(second, server).await, ids: [best, second] }
    }

    /// PULL_DATA from both, to `server` (which may have moved after a restart).
    pub async fn connect(&mut self, server: SocketAddr) {
        for gw in [&mut self.best, &mut self.second] {
            gw.server = server;
            let t = gw.pull_data().await;
            gw.expect_ack(PULL_ACK, t).await;
        }
    }

    /// `phy` heard by the best gateway at `tmst` (RSSI -60, SNR 9) and by the second one on its
    /// own clock, `second_offset` µs later (RSSI -110, SNR -4).
    pub async fn hear(&mut self, phy: &[u8], tmst: u32, second_offset: u32) {
        let t = self.best.push_rxpk(vec![rxpk(phy, tmst, -60, 9.0)]).await;
        self.best.expect_ack(PUSH_ACK, t).await;
        let t = self.second.push_rxpk(vec![rxpk(phy, tmst.wrapping_add(second_offset), -110, -4.0)]).await;
        self.second.expect_ack(PUSH_ACK, t).await;
    }

    /// The next PULL_RESP from either gateway, with that gateway's id.
    pub async fn next_downlink(&self, timeout: Duration) -> Option<(&'static str, PullResp)> {
        tokio::select! {
            r = self.best.next_pull_resp(timeout) => r.map(|r| (self.ids[0], r)),
            r = self.second.next_pull_resp(timeout) => r.map(|r| (self.ids[1], r)),
        }
    }

    /// TX_ACK from gateway `id` for `resp`, with `error` ("NONE" for success).
    pub async fn tx_ack(&self, id: &str, resp: &PullResp, error: &str) {
        let g = if id == self.ids[0] { &self.best } else { &self.second };
        g.tx_ack(resp.token, error).await;
    }
}
