//! A virtual LoRaWAN 1.0.x end device: OTAA join (LoRaWAN 1.0.4 §6.2.4, §6.2.5), data
//! uplinks (§4) and the downlinks addressed to it, with the device side of the MAC commands
//! in [`DeviceMac`]. No I/O: callers move the bytes.

use loraflow_network_server::lorawan::{self, DataUplink, Phy};
use loraflow_network_server::types::{AesKey, DevAddr, Eui64};
use rand::Rng;

use std::sync::Arc;

use super::mac::{place, DeviceMac, DownlinkRadio, MacConfig, MacReport, Placement, RxWindow, TxParams, WindowError};
use super::plan::RadioPlan;

/// An activated session, from a join-accept or from ABP keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub dev_addr: DevAddr,
    pub nwk_s_key: AesKey,
    pub app_s_key: AesKey,
    /// The FCnt the next uplink carries.
    pub f_cnt_up: u32,
}

impl Session {
    /// A random ABP session for `dev_addr`, frame counters at 0.
    pub fn random_abp(dev_addr: DevAddr) -> Session {
        Session { dev_addr, nwk_s_key: random_key(), app_s_key: random_key(), f_cnt_up: 0 }
    }
}

/// A data downlink as the device reads it, after MIC check and decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedDownlink {
    pub confirmed: bool,
    pub f_cnt: u32,
    pub f_port: Option<u8>,
    pub payload: Vec<u8>,
    /// What its MAC commands (FOpts or FPort 0) did.
    pub mac: MacReport,
}

/// A data uplink ready to go on air.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub phy: Vec<u8>,
    pub f_cnt: u32,
    pub tx: TxParams,
    pub adr_ack_req: bool,
    /// Transmissions of this frame, the first one included (NbTrans).
    pub nb_trans: u8,
    /// False when MAC answers took the frame (FPort 0) and the application payload waits.
    pub app_payload_sent: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("join-accept cannot be decrypted: {0}")]
    BadJoinAccept(String),
    #[error("join-accept MIC does not match the AppKey")]
    JoinAcceptMic,
    #[error("downlink cannot be parsed: {0}")]
    BadDownlink(String),
    #[error("downlink for DevAddr {0} reached another device")]
    WrongDevAddr(DevAddr),
    #[error("downlink MIC does not match the NwkSKey")]
    DownlinkMic,
    #[error("the device has no session yet")]
    NotActivated,
    #[error("uplink cannot be built: {0}")]
    Build(String),
    #[error("a {len}-byte payload does not fit DR{dr} (at most {max})")]
    PayloadTooLong { len: usize, dr: u8, max: usize },
}

pub fn random_key() -> AesKey {
    AesKey(rand::thread_rng().gen())
}

/// One simulated end device.
#[derive(Debug, Clone)]
pub struct VirtualDevice {
    pub dev_eui: Eui64,
    pub join_eui: Eui64,
    pub app_key: AesKey,
    pub session: Option<Session>,
    /// The DevNonce of the last join-request sent.
    dev_nonce: u16,
    /// Downlink FCnt seen last, to extend the 16 bits on air (§4.3.1.5).
    f_cnt_down: Option<u32>,
    /// A confirmed downlink arrived: the next uplink sets ACK (§4.3.1.2).
    ack_pending: bool,
    /// Data rate, power, channels, ADR and the MAC answers to send.
    pub mac: DeviceMac,
    /// The last transmission, whose receive windows the device listens to.
    last_tx: Option<TxParams>,
}

impl VirtualDevice {
    pub fn otaa(dev_eui: Eui64, app_key: AesKey) -> VirtualDevice {
        VirtualDevice {
            dev_eui,
            join_eui: Eui64::default(),
            app_key,
            session: None,
            dev_nonce: 0,
            f_cnt_down: None,
            ack_pending: false,
            mac: DeviceMac::new(MacConfig::default()),
            last_tx: None,
        }
    }

    /// The same device with another MAC configuration (ADR, data rates, battery, class).
    pub fn with_mac(self, config: MacConfig) -> VirtualDevice {
        let plan = self.mac.plan().clone();
        VirtualDevice { mac: DeviceMac::for_plan(config, plan), ..self }
    }

    /// The same device in another region and channel plan.
    pub fn with_plan(self, plan: Arc<RadioPlan>) -> VirtualDevice {
        let config = *self.mac.config();
        VirtualDevice { mac: DeviceMac::for_plan(config, plan), ..self }
    }

    /// Channel, data rate and power of the next join-request, remembered for its windows.
    pub fn join_tx(&mut self, rng: &mut impl Rng) -> TxParams {
        let tx = self.mac.join_tx(rng);
        self.last_tx = Some(tx);
        tx
    }

    /// A new channel for a repetition of the last frame (frequency hopping, LoRaWAN 1.0.4
    /// §5.2), remembered for its windows.
    pub fn repeat_tx(&mut self, rng: &mut impl Rng) -> TxParams {
        let tx = self.mac.choose_channel(rng);
        self.last_tx = Some(tx);
        tx
    }

    /// The window in which the device hears a downlink sent on `radio`, after its last
    /// transmission (a join-request when `join`), or why it does not hear it.
    pub fn hears(&self, radio: &DownlinkRadio, join: bool) -> Result<RxWindow, WindowError> {
        self.mac.rx_window(self.last_tx.as_ref(), radio, join)
    }

    pub fn abp(dev_eui: Eui64, session: Session) -> VirtualDevice {
        VirtualDevice { session: Some(session), ..VirtualDevice::otaa(dev_eui, AesKey::default()) }
    }

    pub fn dev_nonce(&self) -> u16 {
        self.dev_nonce
    }

    /// A join-request with the next DevNonce. Nonces count up from 1, which both the 1.0.3
    /// rule (never reuse one) and the 1.0.4 rule (always greater) accept once the server has
    /// forgotten the device's old nonces.
    pub fn join_request(&mut self) -> Vec<u8> {
        self.dev_nonce = self.dev_nonce.wrapping_add(1).max(1);
        lorawan::build_join_request(&self.app_key, self.join_eui, self.dev_eui, self.dev_nonce)
    }

    /// Whether `phy` is a join-accept encrypted for this device: its MIC matches our AppKey.
    pub fn is_my_join_accept(app_key: &AesKey, phy: &[u8]) -> bool {
        matches!(lorawan::parse(phy), Ok(Phy::JoinAccept(_))) && lorawan::decrypt_join_accept(phy, app_key).is_ok_and(|ja| ja.mic_valid)
    }

    /// Takes the session a join-accept grants (§6.2.5): keys from AppKey, JoinNonce, NetID and
    /// the DevNonce of our last join-request.
    pub fn accept(&mut self, phy: &[u8]) -> Result<Session, DeviceError> {
        let ja = lorawan::decrypt_join_accept(phy, &self.app_key).map_err(|e| DeviceError::BadJoinAccept(e.to_string()))?;
        if !ja.mic_valid {
            return Err(DeviceError::JoinAcceptMic);
        }
        let keys = lorawan::derive_session_keys_1_0(&self.app_key, ja.fields.join_nonce, ja.fields.net_id, self.dev_nonce);
        let session = Session { dev_addr: ja.fields.dev_addr, nwk_s_key: keys.nwk_s_key, app_s_key: keys.app_s_key, f_cnt_up: 0 };
        self.session = Some(session);
        self.f_cnt_down = None;
        self.ack_pending = false;
        let f = &ja.fields;
        self.mac.join(f.rx1_dr_offset, f.rx2_dr, f.rx_delay, f.cf_list.as_ref());
        Ok(session)
    }

    /// An unconfirmed data uplink on `f_port`; returns the PHYPayload and the FCnt it carries.
    pub fn uplink(&mut self, f_port: u8, payload: &[u8]) -> Result<(Vec<u8>, u32), DeviceError> {
        self.next_uplink(f_port, payload, &mut rand::thread_rng()).map(|u| (u.phy, u.f_cnt))
    }

    /// The next unconfirmed data uplink: `payload` on `f_port` with the pending MAC answers in
    /// FOpts, or the answers alone on FPort 0 when they do not fit (see [`place`]), at the
    /// current data rate and power on a channel chosen with `rng`.
    pub fn next_uplink(&mut self, f_port: u8, payload: &[u8], rng: &mut impl Rng) -> Result<Uplink, DeviceError> {
        let s = self.session.as_mut().ok_or(DeviceError::NotActivated)?;
        let max = self.mac.max_payload(self.mac.dr());
        if payload.len() > max {
            return Err(DeviceError::PayloadTooLong { len: payload.len(), dr: self.mac.dr(), max });
        }
        let mac = self.mac.next_uplink();
        let (f_opts, f_port, frm_payload, app_payload_sent) = match place(mac.commands, payload.len(), self.mac.max_payload(mac.dr)) {
            Placement::FOpts(f_opts) => (f_opts, Some(f_port), payload.to_vec(), true),
            Placement::Port0(cmds) => (Vec::new(), Some(0), cmds, false),
        };
        // Backoff may just have lowered the data rate, or the answers alone may be too long.
        let max = self.mac.max_payload(mac.dr);
        if f_opts.len() + frm_payload.len() > max {
            return Err(DeviceError::PayloadTooLong { len: f_opts.len() + frm_payload.len(), dr: mac.dr, max });
        }
        let ack = std::mem::take(&mut self.ack_pending);
        let f_cnt = s.f_cnt_up;
        let phy = lorawan::build_data_uplink(
            &DataUplink {
                confirmed: false,
                dev_addr: s.dev_addr,
                f_cnt_up: f_cnt,
                adr: mac.adr,
                adr_ack_req: mac.adr_ack_req,
                ack,
                class_b: false,
                f_opts,
                f_port,
                frm_payload,
            },
            &s.nwk_s_key,
            &s.app_s_key,
        )
        .map_err(|e| DeviceError::Build(e.to_string()))?;
        s.f_cnt_up = s.f_cnt_up.wrapping_add(1);
        let tx = self.mac.choose_channel(rng);
        self.last_tx = Some(tx);
        Ok(Uplink { phy, f_cnt, tx, adr_ack_req: mac.adr_ack_req, nb_trans: mac.nb_trans, app_payload_sent })
    }

    /// Checks and decrypts a data downlink for our session.
    pub fn read_downlink(&mut self, phy: &[u8]) -> Result<ReceivedDownlink, DeviceError> {
        let s = self.session.as_ref().ok_or(DeviceError::NotActivated)?;
        let d = match lorawan::parse(phy) {
            Ok(Phy::Data(d)) if !d.is_uplink() => d,
            Ok(other) => return Err(DeviceError::BadDownlink(format!("not a data downlink: {other:?}"))),
            Err(e) => return Err(DeviceError::BadDownlink(e.to_string())),
        };
        if d.dev_addr != s.dev_addr {
            return Err(DeviceError::WrongDevAddr(d.dev_addr));
        }
        let f_cnt = extend_f_cnt(self.f_cnt_down, d.f_cnt16);
        let mic = lorawan::data_mic(&phy[..phy.len() - 4], &s.nwk_s_key, s.dev_addr, f_cnt, false);
        if mic != d.mic {
            return Err(DeviceError::DownlinkMic);
        }
        // §4.3.1.6: MAC commands travel in FOpts or in an FPort 0 payload, never both.
        if d.f_port == Some(0) && !d.f_opts.is_empty() {
            return Err(DeviceError::BadDownlink("MAC commands in both FOpts and FPort 0".into()));
        }
        // §4.3.3: FPort 0 carries MAC commands encrypted with the NwkSKey.
        let key = if d.f_port == Some(0) { &s.nwk_s_key } else { &s.app_s_key };
        let payload = lorawan::encrypt_frm_payload(key, false, s.dev_addr, f_cnt, &d.frm_payload);
        self.f_cnt_down = Some(f_cnt);
        if d.is_confirmed() {
            self.ack_pending = true;
        }
        let mac = self.mac.downlink_received(if d.f_port == Some(0) { &payload } else { &d.f_opts });
        Ok(ReceivedDownlink { confirmed: d.is_confirmed(), f_cnt, f_port: d.f_port, payload, mac })
    }
}

/// The full 32-bit counter closest above the last one whose low 16 bits are `low`
/// (LoRaWAN 1.0.4 §4.3.1.5).
fn extend_f_cnt(last: Option<u32>, low: u16) -> u32 {
    let Some(last) = last else { return u32::from(low) };
    let candidate = (last & 0xffff_0000) | u32::from(low);
    if candidate < last {
        candidate.wrapping_add(0x1_0000)
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_network_server::lorawan::{build_data_downlink, build_join_accept, DataDownlink, JoinAcceptFields};

    fn device() -> VirtualDevice {
        VirtualDevice::otaa("0102030405060708".parse().unwrap(), AesKey([7; 16]))
    }

    fn accept_fields() -> JoinAcceptFields {
        JoinAcceptFields {
            join_nonce: 0x0a0b0c,
            net_id: [0, 0, 0x13],
            dev_addr: DevAddr::from_u32(0x2601_1234),
            rx_delay: 1,
            ..Default::default()
        }
    }

    #[test]
    fn join_requests_use_increasing_dev_nonces_and_a_valid_mic() {
        let mut d = device();
        let a = d.join_request();
        let b = d.join_request();
        assert_eq!((u16::from_le_bytes([a[17], a[18]]), u16::from_le_bytes([b[17], b[18]])), (1, 2));
        assert!(lorawan::join_request_mic_valid(&a, &d.app_key));
        assert!(!lorawan::join_request_mic_valid(&a, &AesKey([8; 16])));
    }

    #[test]
    fn a_join_accept_for_our_key_gives_the_session_the_server_derives() {
        let mut d = device();
        d.join_request();
        let phy = build_join_accept(&d.app_key, &accept_fields()).unwrap();
        assert!(VirtualDevice::is_my_join_accept(&d.app_key, &phy));
        let s = d.accept(&phy).unwrap();
        let keys = lorawan::derive_session_keys_1_0(&d.app_key, 0x0a0b0c, [0, 0, 0x13], 1);
        assert_eq!((s.dev_addr, s.nwk_s_key, s.app_s_key, s.f_cnt_up), (DevAddr::from_u32(0x2601_1234), keys.nwk_s_key, keys.app_s_key, 0));
    }

    #[test]
    fn a_join_accept_for_another_key_is_refused() {
        let mut d = device();
        d.join_request();
        let phy = build_join_accept(&AesKey([9; 16]), &accept_fields()).unwrap();
        assert!(!VirtualDevice::is_my_join_accept(&d.app_key, &phy));
        assert_eq!(d.accept(&phy), Err(DeviceError::JoinAcceptMic));
        assert!(d.session.is_none());
    }

    #[test]
    fn uplinks_count_up_and_decrypt_with_the_app_s_key() {
        let s = Session::random_abp(DevAddr::from_u32(0x0000_0042));
        let mut d = VirtualDevice::abp("0102030405060708".parse().unwrap(), s);
        let (_, f0) = d.uplink(1, b"a").unwrap();
        let (phy, f1) = d.uplink(1, b"hello").unwrap();
        assert_eq!((f0, f1), (0, 1));
        assert!(lorawan::data_mic_valid(&phy, &s.nwk_s_key, 1));
        let Ok(Phy::Data(frame)) = lorawan::parse(&phy) else { panic!("data frame") };
        assert_eq!(lorawan::encrypt_frm_payload(&s.app_s_key, true, s.dev_addr, 1, &frame.frm_payload), b"hello");
    }

    #[test]
    fn an_uplink_before_activation_is_an_error() {
        assert_eq!(device().uplink(1, b"x").unwrap_err(), DeviceError::NotActivated);
    }

    #[test]
    fn a_confirmed_downlink_is_read_and_acked_by_the_next_uplink() {
        let s = Session::random_abp(DevAddr::from_u32(0x0000_0042));
        let mut d = VirtualDevice::abp("0102030405060708".parse().unwrap(), s);
        let down = DataDownlink {
            confirmed: true,
            dev_addr: s.dev_addr,
            f_cnt_down: 3,
            f_port: Some(5),
            frm_payload: b"cmd".to_vec(),
            ..Default::default()
        };
        let phy = build_data_downlink(&down, &s.nwk_s_key, &s.app_s_key).unwrap();
        let r = d.read_downlink(&phy).unwrap();
        assert_eq!((r.confirmed, r.f_cnt, r.f_port, r.payload.as_slice()), (true, 3, Some(5), &b"cmd"[..]));
        let (up, _) = d.uplink(1, b"x").unwrap();
        assert_eq!(up[5] & 0x20, 0x20, "ACK bit set");
        let (up, _) = d.uplink(1, b"x").unwrap();
        assert_eq!(up[5] & 0x20, 0, "ACK only once");
    }

    #[test]
    fn a_downlink_with_a_wrong_mic_or_address_is_refused() {
        let s = Session::random_abp(DevAddr::from_u32(0x0000_0042));
        let mut d = VirtualDevice::abp("0102030405060708".parse().unwrap(), s);
        let down = DataDownlink { dev_addr: s.dev_addr, f_port: Some(5), frm_payload: b"cmd".to_vec(), ..Default::default() };
        let phy = build_data_downlink(&down, &AesKey([1; 16]), &s.app_s_key).unwrap();
        assert_eq!(d.read_downlink(&phy), Err(DeviceError::DownlinkMic));
        let other = DataDownlink { dev_addr: DevAddr::from_u32(7), ..down };
        let phy = build_data_downlink(&other, &s.nwk_s_key, &s.app_s_key).unwrap();
        assert_eq!(d.read_downlink(&phy), Err(DeviceError::WrongDevAddr(DevAddr::from_u32(7))));
    }

    fn adr_device() -> (VirtualDevice, Session) {
        let s = Session::random_abp(DevAddr::from_u32(0x0000_0042));
        let config = MacConfig { adr: true, initial_dr: 0, ..MacConfig::default() };
        (VirtualDevice::abp("0102030405060708".parse().unwrap(), s).with_mac(config), s)
    }

    fn parse_up(phy: &[u8]) -> lorawan::DataFrame {
        let Ok(Phy::Data(frame)) = lorawan::parse(phy) else { panic!("data frame") };
        frame
    }

    #[test]
    fn a_link_adr_req_in_fopts_is_answered_in_fopts_and_the_next_uplinks_use_the_new_rate() {
        let (mut d, s) = adr_device();
        let mut rng = rand::thread_rng();
        let up = d.next_uplink(1, b"x", &mut rng).unwrap();
        assert_eq!((up.tx.dr, up.tx.tx_power, up.adr_ack_req), (0, 0, false));
        assert!(parse_up(&up.phy).fctrl.adr, "ADR bit set");
        let f_opts = vec![0x03, 0x52, 0x07, 0x00, 0x01]; // LinkADRReq DR5, TXPower 2, ch 0-2, NbTrans 1
        let down = DataDownlink { dev_addr: s.dev_addr, f_opts, adr: true, ..Default::default() };
        let r = d.read_downlink(&build_data_downlink(&down, &s.nwk_s_key, &s.app_s_key).unwrap()).unwrap();
        assert_eq!(r.mac.commands.len(), 1);
        let up = d.next_uplink(1, b"x", &mut rng).unwrap();
        let frame = parse_up(&up.phy);
        assert_eq!(frame.f_opts, vec![0x03, 0x07], "LinkADRAns with all three ACK bits");
        assert_eq!((frame.f_port, up.app_payload_sent), (Some(1), true));
        assert_eq!((up.tx.dr, up.tx.tx_power, up.nb_trans), (5, 2, 1));
        assert!(up.tx.channel < 3, "only the channels of the mask: {:?}", up.tx);
        assert_eq!(parse_up(&d.next_uplink(1, b"x", &mut rng).unwrap().phy).f_opts, Vec::<u8>::new(), "answered once");
    }

    #[test]
    fn mac_commands_on_fport_0_are_read_with_the_nwk_s_key() {
        let (mut d, s) = adr_device();
        d.mac.set_link_snr(-3.2);
        let down = DataDownlink { dev_addr: s.dev_addr, f_port: Some(0), frm_payload: vec![0x06], ..Default::default() };
        let r = d.read_downlink(&build_data_downlink(&down, &s.nwk_s_key, &s.app_s_key).unwrap()).unwrap();
        assert_eq!(r.mac.answers.len(), 1, "{r:?}");
        let up = d.next_uplink(1, b"x", &mut rand::thread_rng()).unwrap();
        assert_eq!(parse_up(&up.phy).f_opts, vec![0x06, 254, 0x3d], "DevStatusAns: battery 254, margin -3");
    }

    #[test]
    fn answers_longer_than_fopts_go_alone_on_fport_0_and_the_payload_waits() {
        let (mut d, s) = adr_device();
        let mut rng = rand::thread_rng();
        // Eight NewChannelReq: eight 2-byte answers, 16 bytes, one more than FOpts holds.
        let mut cmds = Vec::new();
        for i in 8..16u8 {
            cmds.extend_from_slice(&[0x07, i]);
            cmds.extend_from_slice(&(8_688_000 + u32::from(i)).to_le_bytes()[..3]);
            cmds.push(0x50);
        }
        let down = DataDownlink { dev_addr: s.dev_addr, f_port: Some(0), frm_payload: cmds, ..Default::default() };
        d.read_downlink(&build_data_downlink(&down, &s.nwk_s_key, &s.app_s_key).unwrap()).unwrap();
        let up = d.next_uplink(1, b"app", &mut rng).unwrap();
        let frame = parse_up(&up.phy);
        assert_eq!((frame.f_port, frame.f_opts.len(), up.app_payload_sent), (Some(0), 0, false));
        let clear = lorawan::encrypt_frm_payload(&s.nwk_s_key, true, s.dev_addr, up.f_cnt, &frame.frm_payload);
        assert_eq!(clear, [0x07, 0x03].repeat(8), "NewChannelAns x8, encrypted with the NwkSKey");
        let up = d.next_uplink(1, b"app", &mut rng).unwrap();
        let frame = parse_up(&up.phy);
        assert_eq!((frame.f_port, up.app_payload_sent), (Some(1), true));
        assert_eq!(lorawan::encrypt_frm_payload(&s.app_s_key, true, s.dev_addr, up.f_cnt, &frame.frm_payload), b"app");
    }

    #[test]
    fn a_downlink_with_mac_commands_in_fopts_and_on_fport_0_is_refused() {
        let (mut d, s) = adr_device();
        let down =
            DataDownlink { dev_addr: s.dev_addr, f_opts: vec![0x06], f_port: Some(1), frm_payload: vec![0x06], ..Default::default() };
        let mut phy = build_data_downlink(&down, &s.nwk_s_key, &s.app_s_key).unwrap();
        phy[9] = 0; // the FPort byte after MHDR, FHDR (7) and one FOpts byte
        let n = phy.len() - 4;
        let mic = lorawan::data_mic(&phy[..n], &s.nwk_s_key, s.dev_addr, 0, false);
        phy[n..].copy_from_slice(&mic);
        assert!(matches!(d.read_downlink(&phy), Err(DeviceError::BadDownlink(_))));
    }

    #[test]
    fn a_payload_too_long_for_the_data_rate_is_an_error_that_changes_nothing() {
        let (mut d, _) = adr_device();
        let e = d.next_uplink(1, &[0; 52], &mut rand::thread_rng()).unwrap_err();
        assert_eq!(e, DeviceError::PayloadTooLong { len: 52, dr: 0, max: 51 });
        assert_eq!((d.session.unwrap().f_cnt_up, d.mac.adr_ack_cnt()), (0, 0));
    }

    #[test]
    fn the_join_accept_sets_the_rx_parameters_and_cf_list_channels() {
        let mut d = device().with_mac(MacConfig { adr: true, initial_dr: 0, ..MacConfig::default() });
        d.join_request();
        let mut cf = [0u8; 16];
        cf[..3].copy_from_slice(&8_671_000u32.to_le_bytes()[..3]);
        let fields = JoinAcceptFields { rx1_dr_offset: 2, rx2_dr: 3, rx_delay: 5, cf_list: Some(cf), ..accept_fields() };
        d.accept(&build_join_accept(&d.app_key, &fields).unwrap()).unwrap();
        assert_eq!(d.mac.rx_params(), (2, 3, 869_525_000, 5));
        assert_eq!(d.mac.channel(3).map(|c| c.frequency), Some(867_100_000));
        assert_eq!(d.mac.ch_mask(), 0x000f);
    }

    #[test]
    fn downlink_counters_extend_past_16_bits() {
        assert_eq!(extend_f_cnt(None, 5), 5);
        assert_eq!(extend_f_cnt(Some(5), 6), 6);
        assert_eq!(extend_f_cnt(Some(0xffff), 1), 0x1_0001);
        assert_eq!(extend_f_cnt(Some(0x1_0002), 3), 0x1_0003);
    }
}
