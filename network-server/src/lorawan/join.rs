//! Join-request and join-accept (LoRaWAN 1.0.4 §6.2.4, §6.2.5).

use lorawan::parser::AsPhyPayloadBytes;

use super::crypto::{aes_decrypt_block, cmac4};
use super::data::BuildError;
use super::{eui_from_wire, eui_to_wire, MType, PhyError};
use crate::types::{AesKey, DevAddr, Eui64};

const JOIN_REQUEST_LEN: usize = 23;

/// A parsed join-request: MHDR | JoinEUI | DevEUI | DevNonce | MIC, 23 bytes (§6.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRequest {
    pub join_eui: Eui64,
    pub dev_eui: Eui64,
    pub dev_nonce: u16,
    pub mic: [u8; 4],
}

pub(super) fn parse_join_request(phy: &[u8]) -> Result<JoinRequest, PhyError> {
    if phy.len() != JOIN_REQUEST_LEN {
        return Err(PhyError::BadLength { mtype: MType::JoinRequest, len: phy.len(), expected: "23" });
    }
    Ok(JoinRequest {
        join_eui: eui_from_wire(&phy[1..9]),
        dev_eui: eui_from_wire(&phy[9..17]),
        dev_nonce: u16::from_le_bytes([phy[17], phy[18]]),
        mic: [phy[19], phy[20], phy[21], phy[22]],
    })
}

/// `cmac(AppKey, MHDR | JoinEUI | DevEUI | DevNonce)[0..4]` (§6.2.4), checked by the `lorawan`
/// crate. False for anything that is not a 23-byte join-request.
pub fn join_request_mic_valid(phy: &[u8], app_key: &AesKey) -> bool {
    match lorawan::parser::JoinRequestPayload::new(phy) {
        Ok(jr) => jr.validate_mic(&lorawan::keys::AES128(app_key.0)),
        Err(_) => false,
    }
}

/// Builds a join-request as a device would (tests and the device simulator).
pub fn build_join_request(app_key: &AesKey, join_eui: Eui64, dev_eui: Eui64, dev_nonce: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOIN_REQUEST_LEN);
    out.push(0x00);
    out.extend_from_slice(&eui_to_wire(join_eui));
    out.extend_from_slice(&eui_to_wire(dev_eui));
    out.extend_from_slice(&dev_nonce.to_le_bytes());
    let mic = cmac4(app_key, &[&out]);
    out.extend_from_slice(&mic);
    out
}

/// The fields of a join-accept (§6.2.5), in our byte order: `net_id` MSB first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoinAcceptFields {
    /// JoinNonce (AppNonce in 1.0.0-1.0.3), 24 bits.
    pub join_nonce: u32,
    pub net_id: [u8; 3],
    pub dev_addr: DevAddr,
    /// DLSettings bits 6..4 (0..=7).
    pub rx1_dr_offset: u8,
    /// DLSettings bits 3..0.
    pub rx2_dr: u8,
    /// RxDelay bits 3..0: seconds, where 0 also means 1 s (§5.7).
    pub rx_delay: u8,
    /// Raw 16-byte CFList, type byte last (RP002-1.0.3 §2.4.4 for EU868).
    pub cf_list: Option<[u8; 16]>,
}

/// A decrypted join-accept and whether its MIC is right for the key that decrypted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptedJoinAccept {
    pub fields: JoinAcceptFields,
    pub mic: [u8; 4],
    pub mic_valid: bool,
}

/// Builds a join-accept PHYPayload (§6.2.5). MIC over MHDR | JoinNonce | NetID | DevAddr |
/// DLSettings | RxDelay | CFList; then everything after MHDR, MIC included, goes through
/// AES-128 *decrypt* in ECB mode so that the device only needs the encrypt primitive.
/// Written by hand: the `lorawan` crate leaves a CFList tail unencrypted and out of the MIC.
pub fn build_join_accept(app_key: &AesKey, f: &JoinAcceptFields) -> Result<Vec<u8>, BuildError> {
    let check = |field: &'static str, value: u32, max: u32| {
        if value > max {
            Err(BuildError::FieldRange { field, value })
        } else {
            Ok(())
        }
    };
    check("join_nonce", f.join_nonce, 0x00ff_ffff)?;
    check("rx1_dr_offset", f.rx1_dr_offset.into(), 7)?;
    check("rx2_dr", f.rx2_dr.into(), 15)?;
    check("rx_delay", f.rx_delay.into(), 15)?;

    let mut out = Vec::with_capacity(33);
    out.push(0x20);
    out.extend_from_slice(&f.join_nonce.to_le_bytes()[..3]);
    out.extend_from_slice(&[f.net_id[2], f.net_id[1], f.net_id[0]]);
    out.extend_from_slice(&f.dev_addr.to_wire());
    out.push((f.rx1_dr_offset << 4) | f.rx2_dr);
    out.push(f.rx_delay);
    if let Some(cf) = &f.cf_list {
        out.extend_from_slice(cf);
    }
    let mic = cmac4(app_key, &[&out]);
    out.extend_from_slice(&mic);
    // Body after MHDR is 16 or 32 bytes: whole AES blocks.
    for block in out[1..].chunks_exact_mut(16) {
        let mut b = [0u8; 16];
        b.copy_from_slice(block);
        aes_decrypt_block(app_key, &mut b);
        block.copy_from_slice(&b);
    }
    Ok(out)
}

/// Decrypts a join-accept as a device would and reports whether the MIC matches.
/// Decryption and MIC check are the `lorawan` crate's (both right, CFList included).
pub fn decrypt_join_accept(phy: &[u8], app_key: &AesKey) -> Result<DecryptedJoinAccept, PhyError> {
    let bad = || PhyError::BadLength { mtype: MType::JoinAccept, len: phy.len(), expected: "17 or 33" };
    let enc = lorawan::parser::EncryptedJoinAcceptPayload::new(phy.to_vec()).map_err(|_| bad())?;
    let key = lorawan::keys::AppKey::from(app_key.0);
    let dec = enc.decrypt(&key);
    let mic_valid = dec.validate_mic(&key);
    let b = dec.as_bytes();
    let n = b.len();
    let cf_list = (n == 33).then(|| {
        let mut cf = [0u8; 16];
        cf.copy_from_slice(&b[13..29]);
        cf
    });
    Ok(DecryptedJoinAccept {
        fields: JoinAcceptFields {
            join_nonce: u32::from_le_bytes([b[1], b[2], b[3], 0]),
            net_id: [b[6], b[5], b[4]],
            dev_addr: DevAddr::from_wire([b[7], b[8], b[9], b[10]]),
            rx1_dr_offset: (b[11] >> 4) & 0x07,
            rx2_dr: b[11] & 0x0f,
            rx_delay: b[12] & 0x0f,
            cf_list,
        },
        mic: [b[n - 4], b[n - 3], b[n - 2], b[n - 1]],
        mic_valid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::{parse, Phy};

    const BROCAAR_APP_KEY: &str = "00112233445566778899aabbccddeeff";
    const BROCAAR_JOIN_ACCEPT: &str = "20493eeb51fba2116f810edb3742975142";

    fn brocaar_fields() -> JoinAcceptFields {
        JoinAcceptFields {
            join_nonce: 0x57_0bc7,
            net_id: [0x22, 0x11, 0x01],
            dev_addr: DevAddr::from_u32(0x0203_1980),
            rx1_dr_offset: 0,
            rx2_dr: 0,
            rx_delay: 0,
            cf_list: None,
        }
    }

    #[test]
    fn brocaar_join_accept_decrypts_to_the_published_fields_and_valid_mic() {
        // Source: brocaar/lorawan phypayload_test.go (via /work/shared/TEST-VECTORS.md).
        let phy = hex::decode(BROCAAR_JOIN_ACCEPT).unwrap();
        assert_eq!(parse(&phy), Ok(Phy::JoinAccept(phy.clone())));
        let d = decrypt_join_accept(&phy, &BROCAAR_APP_KEY.parse().unwrap()).unwrap();
        assert_eq!(d.fields, brocaar_fields());
        assert_eq!(d.mic, [0x43, 0x48, 0x5b, 0xbc]);
        assert!(d.mic_valid);
        let wrong = decrypt_join_accept(&phy, &AesKey([0; 16])).unwrap();
        assert!(!wrong.mic_valid);
    }

    #[test]
    fn building_the_brocaar_join_accept_gives_the_published_encrypted_bytes() {
        // Source: brocaar/lorawan phypayload_test.go (via /work/shared/TEST-VECTORS.md).
        let phy = build_join_accept(&BROCAAR_APP_KEY.parse().unwrap(), &brocaar_fields()).unwrap();
        assert_eq!(hex::encode(phy), BROCAAR_JOIN_ACCEPT);
    }

    // Source: lora-rs lorawan 0.9.0 tests/lorawan.rs `phy_join_accept_payload_with_c_f_list`
    // (AppKey 01 x16; channels 867.1, 867.3, 867.5, 867.7, 867.9 MHz; JoinNonce 03 02 01 on the
    // wire, DLSettings 0x12, RxDelay 3).
    const LORA_RS_CFLIST_JOIN_ACCEPT: &str = "20e45673b63cb4b9cecb2aa83f0333e615d2ac89eea1659837c3aa6df9689889cf";

    #[test]
    fn cflist_join_accept_decrypts_with_the_cflist_under_the_mic() {
        let phy = hex::decode(LORA_RS_CFLIST_JOIN_ACCEPT).unwrap();
        let key = AesKey([1; 16]);
        let d = decrypt_join_accept(&phy, &key).unwrap();
        assert!(d.mic_valid);
        assert_eq!(d.fields.join_nonce, 0x01_0203);
        assert_eq!(d.fields.rx1_dr_offset, 1);
        assert_eq!(d.fields.rx2_dr, 2);
        assert_eq!(d.fields.rx_delay, 3);
        let cf = d.fields.cf_list.expect("CFList present");
        assert_eq!(&cf[..15], &[0x18, 0x4f, 0x84, 0xe8, 0x56, 0x84, 0xb8, 0x5e, 0x84, 0x88, 0x66, 0x84, 0x58, 0x6e, 0x84]);
        assert_eq!(cf[15], 0, "CFList type 0 (frequencies)");

        // Same bytes back from our builder: the MIC covers the CFList and the whole tail is
        // encrypted (the two things the crate's builder gets wrong).
        assert_eq!(hex::encode(build_join_accept(&key, &d.fields).unwrap()), LORA_RS_CFLIST_JOIN_ACCEPT);

        // Any change to the CFList must break the MIC.
        let mut tampered = d.fields;
        let mut cf2 = cf;
        cf2[0] ^= 1;
        tampered.cf_list = Some(cf2);
        let rebuilt = build_join_accept(&key, &tampered).unwrap();
        let mut spliced = rebuilt.clone();
        spliced[29..].copy_from_slice(&phy[29..]);
        assert!(!decrypt_join_accept(&spliced, &key).unwrap().mic_valid);
    }

    #[test]
    fn region_cflist_round_trips_through_a_join_accept() {
        let key = AesKey([7; 16]);
        let fields = JoinAcceptFields {
            join_nonce: 0xab_cdef,
            net_id: [0, 0, 0x13],
            dev_addr: DevAddr::from_u32(0x2601_1234),
            rx1_dr_offset: 5,
            rx2_dr: 3,
            rx_delay: 1,
            cf_list: crate::region::Region::cf_list(
                &crate::region::Eu868,
                &crate::region::Region::default_extra_channels(&crate::region::Eu868),
                &[],
            ),
        };
        let phy = build_join_accept(&key, &fields).unwrap();
        assert_eq!(phy.len(), 33);
        let d = decrypt_join_accept(&phy, &key).unwrap();
        assert!(d.mic_valid);
        assert_eq!(d.fields, fields);
    }

    #[test]
    fn join_accept_fields_out_of_range_are_refused() {
        let key = AesKey([7; 16]);
        let f = JoinAcceptFields { join_nonce: 0x0100_0000, ..Default::default() };
        assert!(matches!(build_join_accept(&key, &f), Err(BuildError::FieldRange { field: "join_nonce", .. })));
        let f = JoinAcceptFields { rx1_dr_offset: 8, ..Default::default() };
        assert!(build_join_accept(&key, &f).is_err());
        assert!(decrypt_join_accept(&[0x20; 18], &key).is_err());
    }

    #[test]
    fn join_request_round_trips_and_its_mic_needs_the_right_key() {
        let key: AesKey = "01020304050607080102030405060708".parse().unwrap();
        let join_eui: Eui64 = "0102030405060708".parse().unwrap();
        let dev_eui: Eui64 = "a1a2a3a4a5a6a7a8".parse().unwrap();
        let phy = build_join_request(&key, join_eui, dev_eui, 0x1234);
        assert_eq!(phy.len(), 23);
        assert_eq!(&phy[1..3], &[0x08, 0x07], "EUIs travel little-endian");
        let Ok(Phy::JoinRequest(jr)) = parse(&phy) else { panic!("not a join-request") };
        assert_eq!(jr.join_eui, join_eui);
        assert_eq!(jr.dev_eui, dev_eui);
        assert_eq!(jr.dev_nonce, 0x1234);
        assert!(join_request_mic_valid(&phy, &key));
        assert!(!join_request_mic_valid(&phy, &AesKey([0; 16])));
        assert!(!join_request_mic_valid(&phy[..22], &key));
    }

    #[test]
    fn join_request_matches_the_lora_rs_vector() {
        // Source: lora-rs lorawan 0.9.0 tests/lorawan.rs `test_join_request_creator` (AppKey 01 x16).
        let expected = "00040302010403020105040302050403022d106a990e12";
        let phy = build_join_request(&AesKey([1; 16]), "0102030401020304".parse().unwrap(), "0203040502030405".parse().unwrap(), 0x102d);
        assert_eq!(hex::encode(&phy), expected);
        assert!(join_request_mic_valid(&phy, &AesKey([1; 16])));
    }
}
