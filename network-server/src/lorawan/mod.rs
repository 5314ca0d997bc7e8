//! LoRaWAN 1.0.x frames and crypto: the only module that touches the `lorawan` crate.
//!
//! Everything here is pure: bytes and keys in, bytes and our own types ([`Eui64`],
//! [`DevAddr`](crate::types::DevAddr), [`AesKey`](crate::types::AesKey)) out. The crate is
//! used where it is right (join-request MIC, data MIC check, join-accept decryption);
//! builders are written here with `aes`/`cmac` because the crate's JoinAccept builder is wrong
//! with a CFList and its block helpers are private.
//!
//! Layout:
//! - [`parse`] turns a PHYPayload into a [`Phy`] (frame layout: LoRaWAN 1.0.4 §4).
//! - `data`: data frames — parse, MIC (§4.4), FRMPayload encryption (§4.3.3), builders.
//! - `join`: join-request and join-accept (§6.2.4, §6.2.5).
//! - `crypto`: AES/CMAC primitives and the 1.0.x session-key derivation.
//! - `dev_nonce`: the DevNonce reuse rule.

mod crypto;
mod data;
pub mod dev_nonce;
mod join;
#[cfg(test)]
mod proptests;

pub use crypto::{data_mic, derive_session_keys_1_0, encrypt_frm_payload, SessionKeys};
pub use data::{build_data_downlink, build_data_uplink, data_mic_valid, BuildError, DataDownlink, DataFrame, DataMType, DataUplink, FCtrl};
pub use dev_nonce::{check_dev_nonce, DevNonceError};
pub use join::{
    build_join_accept, build_join_request, decrypt_join_accept, join_request_mic_valid, DecryptedJoinAccept, JoinAcceptFields, JoinRequest,
};

use crate::types::Eui64;

/// Largest PHYPayload any region allows (EU868 DR7: 250-byte MACPayload + MHDR + MIC)
/// rounded up to the 255 bytes a LoRa packet can carry.
pub const MAX_PHY_LEN: usize = 255;

/// Message type from the MHDR (LoRaWAN 1.0.4 §4.2.1, Table 2; 110 is RejoinRequest in 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MType {
    JoinRequest,
    JoinAccept,
    UnconfirmedDataUp,
    UnconfirmedDataDown,
    ConfirmedDataUp,
    ConfirmedDataDown,
    RejoinRequest,
    Proprietary,
}

impl MType {
    pub fn from_mhdr(mhdr: u8) -> MType {
        match mhdr >> 5 {
            0 => MType::JoinRequest,
            1 => MType::JoinAccept,
            2 => MType::UnconfirmedDataUp,
            3 => MType::UnconfirmedDataDown,
            4 => MType::ConfirmedDataUp,
            5 => MType::ConfirmedDataDown,
            6 => MType::RejoinRequest,
            _ => MType::Proprietary,
        }
    }
}

/// A parsed PHYPayload. Data frames keep FRMPayload encrypted: decrypt with
/// [`encrypt_frm_payload`] once the MIC and frame counter are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phy {
    JoinRequest(JoinRequest),
    Data(DataFrame),
    /// The whole encrypted PHYPayload (17 or 33 bytes); see [`decrypt_join_accept`].
    JoinAccept(Vec<u8>),
    /// MType 111: the whole PHYPayload, format unknown to us.
    Proprietary(Vec<u8>),
    /// MType 110 (LoRaWAN 1.1 only, RFU in 1.0.x): the whole PHYPayload, not interpreted.
    RejoinRequest(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhyError {
    #[error("empty PHYPayload")]
    Empty,
    #[error("unsupported LoRaWAN major version {0} (only LoRaWAN R1 = 0 is defined)")]
    UnsupportedMajor(u8),
    #[error("{mtype:?} of {len} bytes: expected {expected}")]
    BadLength { mtype: MType, len: usize, expected: &'static str },
    #[error("PHYPayload of {0} bytes is longer than a LoRa packet")]
    TooLong(usize),
    #[error("MAC commands in both FOpts and an FPort 0 payload (LoRaWAN 1.0.4 §4.3.1.6)")]
    MacCommandsTwice,
}

/// Parses a PHYPayload (LoRaWAN 1.0.4 §4). Never panics; any byte string is either a [`Phy`]
/// or a [`PhyError`] saying what is wrong with it.
pub fn parse(phy: &[u8]) -> Result<Phy, PhyError> {
    let mhdr = *phy.first().ok_or(PhyError::Empty)?;
    if phy.len() > MAX_PHY_LEN {
        return Err(PhyError::TooLong(phy.len()));
    }
    let mtype = MType::from_mhdr(mhdr);
    // Proprietary frames may use any Major; everything else must be LoRaWAN R1 (§4.2.2).
    if mtype != MType::Proprietary && mhdr & 0x03 != 0 {
        return Err(PhyError::UnsupportedMajor(mhdr & 0x03));
    }
    match mtype {
        MType::JoinRequest => join::parse_join_request(phy).map(Phy::JoinRequest),
        MType::JoinAccept => {
            if phy.len() == 17 || phy.len() == 33 {
                Ok(Phy::JoinAccept(phy.to_vec()))
            } else {
                Err(PhyError::BadLength { mtype, len: phy.len(), expected: "17 or 33" })
            }
        }
        MType::UnconfirmedDataUp | MType::UnconfirmedDataDown | MType::ConfirmedDataUp | MType::ConfirmedDataDown => {
            data::parse_data(phy).map(Phy::Data)
        }
        MType::RejoinRequest => {
            // 1.1 §6.2.4.2: type 0/2 are 19 bytes, type 1 is 24 bytes.
            if phy.len() == 19 || phy.len() == 24 {
                Ok(Phy::RejoinRequest(phy.to_vec()))
            } else {
                Err(PhyError::BadLength { mtype, len: phy.len(), expected: "19 or 24" })
            }
        }
        MType::Proprietary => Ok(Phy::Proprietary(phy.to_vec())),
    }
}

/// EUIs travel little-endian (LoRaWAN 1.0.4 §6.1.1).
pub(crate) fn eui_from_wire(b: &[u8]) -> Eui64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(b);
    out.reverse();
    Eui64(out)
}

pub(crate) fn eui_to_wire(e: Eui64) -> [u8; 8] {
    let mut b = e.0;
    b.reverse();
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn random_bytes_never_panic_the_parser() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x10ca);
        for _ in 0..200_000 {
            let len = rng.gen_range(0..300);
            let mut b = vec![0u8; len];
            rng.fill(&mut b[..]);
            // Bias towards valid MHDRs so the deeper paths are reached too.
            if len > 0 && rng.gen_bool(0.8) {
                b[0] &= 0xe0;
            }
            let _ = parse(&b);
        }
    }

    #[test]
    fn empty_and_short_frames_are_rejected_with_a_reason() {
        assert_eq!(parse(&[]), Err(PhyError::Empty));
        assert!(matches!(parse(&[0x40; 11]), Err(PhyError::BadLength { .. })));
        assert!(matches!(parse(&[0x00; 22]), Err(PhyError::BadLength { .. })));
        assert!(matches!(parse(&[0x20; 18]), Err(PhyError::BadLength { .. })));
        assert_eq!(parse(&[0x41; 12]), Err(PhyError::UnsupportedMajor(1)));
        assert!(matches!(parse(&[0x40; 256]), Err(PhyError::TooLong(256))));
    }

    #[test]
    fn proprietary_and_rejoin_frames_are_kept_raw() {
        assert_eq!(parse(&[0xe0, 1, 2]), Ok(Phy::Proprietary(vec![0xe0, 1, 2])));
        let rejoin = [0xc0; 19];
        assert_eq!(parse(&rejoin), Ok(Phy::RejoinRequest(rejoin.to_vec())));
    }
}
