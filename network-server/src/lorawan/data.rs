//! Data frames (LoRaWAN 1.0.4 §4.3): parsing, MIC check, building up- and downlinks.

use super::crypto::{data_mic, encrypt_frm_payload};
use super::{MType, PhyError, MAX_PHY_LEN};
use crate::types::{AesKey, DevAddr};

/// The four data message types (§4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMType {
    UnconfirmedUp,
    ConfirmedUp,
    UnconfirmedDown,
    ConfirmedDown,
}

impl DataMType {
    pub fn is_uplink(self) -> bool {
        matches!(self, DataMType::UnconfirmedUp | DataMType::ConfirmedUp)
    }

    pub fn is_confirmed(self) -> bool {
        matches!(self, DataMType::ConfirmedUp | DataMType::ConfirmedDown)
    }

    fn mhdr(self) -> u8 {
        match self {
            DataMType::UnconfirmedUp => 0x40,
            DataMType::UnconfirmedDown => 0x60,
            DataMType::ConfirmedUp => 0x80,
            DataMType::ConfirmedDown => 0xa0,
        }
    }

    fn from_mtype(m: MType) -> Option<DataMType> {
        match m {
            MType::UnconfirmedDataUp => Some(DataMType::UnconfirmedUp),
            MType::ConfirmedDataUp => Some(DataMType::ConfirmedUp),
            MType::UnconfirmedDataDown => Some(DataMType::UnconfirmedDown),
            MType::ConfirmedDataDown => Some(DataMType::ConfirmedDown),
            _ => None,
        }
    }
}

/// FCtrl flags (§4.3.1). Bit 4 is FPending on downlinks and ClassB on uplinks (1.0.3+);
/// bit 6 is ADRACKReq on uplinks and RFU on downlinks. The flag that does not apply to the
/// frame's direction is always false after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FCtrl {
    pub adr: bool,
    pub adr_ack_req: bool,
    pub ack: bool,
    pub f_pending: bool,
    pub class_b: bool,
}

/// A parsed data frame; `frm_payload` is still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    pub mtype: DataMType,
    pub dev_addr: DevAddr,
    pub fctrl: FCtrl,
    /// The 16 low bits sent on air; see `crate::fcnt` for the full counter.
    pub f_cnt16: u16,
    /// Plain MAC commands piggybacked in FOpts (LoRaWAN 1.0.x does not encrypt them).
    pub f_opts: Vec<u8>,
    pub f_port: Option<u8>,
    pub frm_payload: Vec<u8>,
    pub mic: [u8; 4],
}

impl DataFrame {
    pub fn is_uplink(&self) -> bool {
        self.mtype.is_uplink()
    }

    pub fn is_confirmed(&self) -> bool {
        self.mtype.is_confirmed()
    }
}

/// MHDR(1) | DevAddr(4) | FCtrl(1) | FCnt(2) | FOpts(0..15) | [FPort(1) | FRMPayload] | MIC(4).
pub(super) fn parse_data(phy: &[u8]) -> Result<DataFrame, PhyError> {
    let mtype = MType::from_mhdr(phy[0]);
    let dmtype = DataMType::from_mtype(mtype).ok_or(PhyError::BadLength { mtype, len: phy.len(), expected: "a data frame" })?;
    if phy.len() < 12 {
        return Err(PhyError::BadLength { mtype, len: phy.len(), expected: "at least 12" });
    }
    let fctrl_byte = phy[5];
    let f_opts_len = usize::from(fctrl_byte & 0x0f);
    let fhdr_end = 8 + f_opts_len;
    let mic_start = phy.len() - 4;
    if fhdr_end > mic_start {
        return Err(PhyError::BadLength { mtype, len: phy.len(), expected: "room for the FOptsLen announced in FCtrl" });
    }
    let uplink = dmtype.is_uplink();
    let fctrl = FCtrl {
        adr: fctrl_byte & 0x80 != 0,
        adr_ack_req: uplink && fctrl_byte & 0x40 != 0,
        ack: fctrl_byte & 0x20 != 0,
        f_pending: !uplink && fctrl_byte & 0x10 != 0,
        class_b: uplink && fctrl_byte & 0x10 != 0,
    };
    // FPort is present whenever anything follows FHDR, even with an empty FRMPayload (§4.3.2).
    let (f_port, frm_payload) =
        if fhdr_end < mic_start { (Some(phy[fhdr_end]), phy[fhdr_end + 1..mic_start].to_vec()) } else { (None, Vec::new()) };
    if f_port == Some(0) && f_opts_len > 0 {
        return Err(PhyError::MacCommandsTwice);
    }
    Ok(DataFrame {
        mtype: dmtype,
        dev_addr: DevAddr::from_wire([phy[1], phy[2], phy[3], phy[4]]),
        fctrl,
        f_cnt16: u16::from_le_bytes([phy[6], phy[7]]),
        f_opts: phy[8..fhdr_end].to_vec(),
        f_port,
        frm_payload,
        mic: [phy[mic_start], phy[mic_start + 1], phy[mic_start + 2], phy[mic_start + 3]],
    })
}

/// Checks a data frame's MIC for the given full 32-bit frame counter (§4.4), using the
/// `lorawan` crate. False for anything that is not a well-formed data frame.
pub fn data_mic_valid(phy: &[u8], nwk_s_key: &AesKey, f_cnt: u32) -> bool {
    match lorawan::parser::EncryptedDataPayload::new(phy) {
        Ok(p) => p.validate_mic(&lorawan::keys::AES128(nwk_s_key.0), f_cnt),
        Err(_) => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("FOpts of {0} bytes: at most 15 fit in FHDR")]
    FOptsTooLong(usize),
    #[error("FRMPayload without FPort")]
    PayloadWithoutPort,
    #[error("MAC commands in both FOpts and an FPort 0 payload")]
    MacCommandsTwice,
    #[error("frame of {0} bytes is longer than a LoRa packet")]
    TooLong(usize),
    #[error("{field} = {value} does not fit its field")]
    FieldRange { field: &'static str, value: u32 },
}

/// A downlink the network server sends; `f_opts` and `frm_payload` are plain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataDownlink {
    pub confirmed: bool,
    pub dev_addr: DevAddr,
    pub f_cnt_down: u32,
    pub ack: bool,
    pub f_pending: bool,
    pub adr: bool,
    pub f_opts: Vec<u8>,
    pub f_port: Option<u8>,
    pub frm_payload: Vec<u8>,
}

/// An uplink as a device sends it (tests and the device simulator act as devices).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataUplink {
    pub confirmed: bool,
    pub dev_addr: DevAddr,
    pub f_cnt_up: u32,
    pub adr: bool,
    pub adr_ack_req: bool,
    pub ack: bool,
    pub class_b: bool,
    pub f_opts: Vec<u8>,
    pub f_port: Option<u8>,
    pub frm_payload: Vec<u8>,
}

/// Builds a data downlink PHYPayload: FPort 0 payloads are encrypted with the NwkSKey,
/// other ports with the AppSKey (§4.3.3); MIC with the NwkSKey (§4.4).
pub fn build_data_downlink(d: &DataDownlink, nwk_s_key: &AesKey, app_s_key: &AesKey) -> Result<Vec<u8>, BuildError> {
    let mtype = if d.confirmed { DataMType::ConfirmedDown } else { DataMType::UnconfirmedDown };
    let fctrl = (u8::from(d.adr) << 7) | (u8::from(d.ack) << 5) | (u8::from(d.f_pending) << 4);
    build(mtype, d.dev_addr, fctrl, d.f_cnt_down, &d.f_opts, d.f_port, &d.frm_payload, nwk_s_key, app_s_key)
}

/// Builds a data uplink PHYPayload, as a device would.
pub fn build_data_uplink(u: &DataUplink, nwk_s_key: &AesKey, app_s_key: &AesKey) -> Result<Vec<u8>, BuildError> {
    let mtype = if u.confirmed { DataMType::ConfirmedUp } else { DataMType::UnconfirmedUp };
    let fctrl = (u8::from(u.adr) << 7) | (u8::from(u.adr_ack_req) << 6) | (u8::from(u.ack) << 5) | (u8::from(u.class_b) << 4);
    build(mtype, u.dev_addr, fctrl, u.f_cnt_up, &u.f_opts, u.f_port, &u.frm_payload, nwk_s_key, app_s_key)
}

#[allow(clippy::too_many_arguments)]
fn build(
    mtype: DataMType,
    dev_addr: DevAddr,
    fctrl: u8,
    f_cnt: u32,
    f_opts: &[u8],
    f_port: Option<u8>,
    frm_payload: &[u8],
    nwk_s_key: &AesKey,
    app_s_key: &AesKey,
) -> Result<Vec<u8>, BuildError> {
    if f_opts.len() > 15 {
        return Err(BuildError::FOptsTooLong(f_opts.len()));
    }
    if f_port.is_none() && !frm_payload.is_empty() {
        return Err(BuildError::PayloadWithoutPort);
    }
    if f_port == Some(0) && !f_opts.is_empty() {
        return Err(BuildError::MacCommandsTwice);
    }
    let len = 1 + 7 + f_opts.len() + usize::from(f_port.is_some()) + frm_payload.len() + 4;
    if len > MAX_PHY_LEN {
        return Err(BuildError::TooLong(len));
    }
    let uplink = mtype.is_uplink();
    let mut out = Vec::with_capacity(len);
    out.push(mtype.mhdr());
    out.extend_from_slice(&dev_addr.to_wire());
    out.push(fctrl | f_opts.len() as u8);
    // Only the 16 low bits travel (§4.3.1.5).
    out.extend_from_slice(&(f_cnt as u16).to_le_bytes());
    out.extend_from_slice(f_opts);
    if let Some(port) = f_port {
        out.push(port);
        let key = if port == 0 { nwk_s_key } else { app_s_key };
        out.extend(encrypt_frm_payload(key, uplink, dev_addr, f_cnt, frm_payload));
    }
    let mic = data_mic(&out, nwk_s_key, dev_addr, f_cnt, uplink);
    out.extend_from_slice(&mic);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::{parse, Phy};

    fn key(s: &str) -> AesKey {
        s.parse().unwrap()
    }

    const LORA_PACKET_PHY: &str = "40f17dbe4900020001954378762b11ff0d";

    #[test]
    fn lora_packet_uplink_has_the_published_mic_and_decrypts_to_test() {
        // Source: lora-packet README/tests and brocaar/lorawan (via /work/shared/TEST-VECTORS.md).
        let phy = hex::decode(LORA_PACKET_PHY).unwrap();
        let nwk = key("44024241ed4ce9a68c6a8bc055233fd3");
        let app = key("ec925802ae430ca77fd3dd73cb2cc588");
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame") };
        assert_eq!(f.mtype, DataMType::UnconfirmedUp);
        assert_eq!(f.dev_addr, DevAddr::from_u32(0x49be_7df1));
        assert_eq!(f.fctrl, FCtrl::default());
        assert_eq!(f.f_cnt16, 2);
        assert_eq!(f.f_port, Some(1));
        assert!(f.f_opts.is_empty());
        assert_eq!(f.mic, [0x2b, 0x11, 0xff, 0x0d]);
        assert_eq!(data_mic(&phy[..phy.len() - 4], &nwk, f.dev_addr, 2, true), f.mic);
        assert!(data_mic_valid(&phy, &nwk, 2));
        assert!(!data_mic_valid(&phy, &nwk, 0x0001_0002));
        assert!(!data_mic_valid(&phy, &app, 2));
        assert_eq!(encrypt_frm_payload(&app, true, f.dev_addr, 2, &f.frm_payload), b"test");
    }

    #[test]
    fn building_the_lora_packet_uplink_reproduces_its_bytes() {
        // Source: lora-packet README/tests (via /work/shared/TEST-VECTORS.md).
        let up = DataUplink {
            dev_addr: DevAddr::from_u32(0x49be_7df1),
            f_cnt_up: 2,
            f_port: Some(1),
            frm_payload: b"test".to_vec(),
            ..Default::default()
        };
        let phy = build_data_uplink(&up, &key("44024241ed4ce9a68c6a8bc055233fd3"), &key("ec925802ae430ca77fd3dd73cb2cc588")).unwrap();
        assert_eq!(hex::encode(phy), LORA_PACKET_PHY);
    }

    #[test]
    fn downlink_round_trips_with_flags_fopts_and_a_32_bit_counter() {
        let nwk = key("000102030405060708090a0b0c0d0e0f");
        let app = key("0f0e0d0c0b0a09080706050403020100");
        let d = DataDownlink {
            confirmed: true,
            dev_addr: DevAddr::from_u32(0x2601_1234),
            f_cnt_down: 0x0001_0005,
            ack: true,
            f_pending: true,
            adr: true,
            f_opts: vec![0x02, 0x14, 0x01],
            f_port: Some(10),
            frm_payload: b"hello".to_vec(),
        };
        let phy = build_data_downlink(&d, &nwk, &app).unwrap();
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame") };
        assert_eq!(f.mtype, DataMType::ConfirmedDown);
        assert_eq!(f.dev_addr, d.dev_addr);
        assert_eq!(f.fctrl, FCtrl { adr: true, adr_ack_req: false, ack: true, f_pending: true, class_b: false });
        assert_eq!(f.f_cnt16, 5);
        assert_eq!(f.f_opts, d.f_opts);
        assert!(data_mic_valid(&phy, &nwk, 0x0001_0005));
        assert!(!data_mic_valid(&phy, &nwk, 5));
        let plain = encrypt_frm_payload(&app, false, d.dev_addr, 0x0001_0005, &f.frm_payload);
        assert_eq!(plain, b"hello");
    }

    #[test]
    fn fport_zero_payload_is_encrypted_with_the_network_key() {
        let nwk = key("000102030405060708090a0b0c0d0e0f");
        let app = key("0f0e0d0c0b0a09080706050403020100");
        let d = DataDownlink { dev_addr: DevAddr::from_u32(1), f_port: Some(0), frm_payload: vec![0x06], ..Default::default() };
        let phy = build_data_downlink(&d, &nwk, &app).unwrap();
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame") };
        assert_eq!(encrypt_frm_payload(&nwk, false, d.dev_addr, 0, &f.frm_payload), vec![0x06]);
    }

    #[test]
    fn uplink_flags_are_read_per_direction() {
        let u = DataUplink { dev_addr: DevAddr::from_u32(7), adr: true, adr_ack_req: true, class_b: true, ..Default::default() };
        let k = AesKey([1; 16]);
        let phy = build_data_uplink(&u, &k, &k).unwrap();
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame") };
        assert_eq!(f.fctrl, FCtrl { adr: true, adr_ack_req: true, ack: false, f_pending: false, class_b: true });
        assert_eq!(f.f_port, None);
        assert_eq!(phy.len(), 12);
    }

    #[test]
    fn fport_with_empty_payload_is_still_an_fport() {
        let k = AesKey([1; 16]);
        let u = DataUplink { f_port: Some(3), ..Default::default() };
        let phy = build_data_uplink(&u, &k, &k).unwrap();
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame") };
        assert_eq!(f.f_port, Some(3));
        assert!(f.frm_payload.is_empty());
        assert!(data_mic_valid(&phy, &k, 0));
    }

    #[test]
    fn invalid_frames_are_refused_by_the_builder_and_the_parser() {
        let k = AesKey([1; 16]);
        let too_long = DataDownlink { f_opts: vec![0; 16], ..Default::default() };
        assert_eq!(build_data_downlink(&too_long, &k, &k), Err(BuildError::FOptsTooLong(16)));
        let no_port = DataDownlink { frm_payload: vec![1], ..Default::default() };
        assert_eq!(build_data_downlink(&no_port, &k, &k), Err(BuildError::PayloadWithoutPort));
        let twice = DataDownlink { f_opts: vec![6], f_port: Some(0), ..Default::default() };
        assert_eq!(build_data_downlink(&twice, &k, &k), Err(BuildError::MacCommandsTwice));
        let huge = DataDownlink { f_port: Some(1), frm_payload: vec![0; 250], ..Default::default() };
        assert!(matches!(build_data_downlink(&huge, &k, &k), Err(BuildError::TooLong(_))));

        // FOptsLen 3 announced but only 2 bytes before the MIC.
        let short = [0x40, 1, 2, 3, 4, 0x03, 0, 0, 0xaa, 0xbb, 1, 2, 3, 4];
        assert!(matches!(parse(&short), Err(PhyError::BadLength { .. })));
        // FOpts and FPort 0 together.
        let both = [0x40, 1, 2, 3, 4, 0x01, 0, 0, 0x02, 0x00, 0x99, 1, 2, 3, 4];
        assert_eq!(parse(&both), Err(PhyError::MacCommandsTwice));
    }
}
