//! AES-128 and AES-CMAC primitives of LoRaWAN 1.0.x, written against the `aes` and `cmac`
//! crates because the `lorawan` crate keeps its block builders private.

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use cmac::{Cmac, Mac};

use crate::types::{AesKey, DevAddr};

pub(crate) fn aes_encrypt_block(key: &AesKey, block: &mut [u8; 16]) {
    let cipher = Aes128::new(GenericArray::from_slice(&key.0));
    cipher.encrypt_block(GenericArray::from_mut_slice(block));
}

pub(crate) fn aes_decrypt_block(key: &AesKey, block: &mut [u8; 16]) {
    let cipher = Aes128::new(GenericArray::from_slice(&key.0));
    cipher.decrypt_block(GenericArray::from_mut_slice(block));
}

/// AES-CMAC over the concatenation of `parts` (RFC 4493); LoRaWAN MICs are its first 4 bytes.
pub(crate) fn cmac4(key: &AesKey, parts: &[&[u8]]) -> [u8; 4] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(GenericArray::from_slice(&key.0));
    for p in parts {
        mac.update(p);
    }
    let full = mac.finalize().into_bytes();
    [full[0], full[1], full[2], full[3]]
}

/// The B0 (MIC, §4.4) and Ai (encryption, §4.3.3) blocks share this layout:
/// `first | 0x00 x4 | Dir | DevAddr (LE) | FCnt (LE, 32 bits) | 0x00 | last`.
fn helper_block(first: u8, uplink: bool, dev_addr: DevAddr, f_cnt: u32, last: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = first;
    b[5] = if uplink { 0 } else { 1 };
    b[6..10].copy_from_slice(&dev_addr.to_wire());
    b[10..14].copy_from_slice(&f_cnt.to_le_bytes());
    b[15] = last;
    b
}

/// MIC of a data frame: `cmac(NwkSKey, B0 | msg)[0..4]` where msg is MHDR..FRMPayload
/// (LoRaWAN 1.0.4 §4.4). `phy_without_mic` longer than 255 bytes cannot be a LoRaWAN frame;
/// its length byte is truncated like every other implementation does.
pub fn data_mic(phy_without_mic: &[u8], key: &AesKey, dev_addr: DevAddr, f_cnt: u32, uplink: bool) -> [u8; 4] {
    let b0 = helper_block(0x49, uplink, dev_addr, f_cnt, phy_without_mic.len() as u8);
    cmac4(key, &[&b0, phy_without_mic])
}

/// FRMPayload encryption, AES-128 in counter mode with the Ai blocks (LoRaWAN 1.0.4 §4.3.3).
/// XOR with the key stream, so the same call decrypts.
pub fn encrypt_frm_payload(key: &AesKey, uplink: bool, dev_addr: DevAddr, f_cnt: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        // The block counter is one byte: FRMPayload never exceeds 255 bytes, so i + 1 <= 16.
        let mut s = helper_block(0x01, uplink, dev_addr, f_cnt, (i + 1) as u8);
        aes_encrypt_block(key, &mut s);
        for (b, k) in chunk.iter_mut().zip(s.iter()) {
            *b ^= k;
        }
    }
    out
}

/// Session keys of a LoRaWAN 1.0.x OTAA session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    pub nwk_s_key: AesKey,
    pub app_s_key: AesKey,
}

/// LoRaWAN 1.0.4 §6.2.5:
/// `NwkSKey = aes128_encrypt(AppKey, 0x01 | JoinNonce | NetID | DevNonce | pad16)`,
/// AppSKey the same with 0x02. Every field little-endian on the wire. `net_id` is written MSB
/// first (as in config, "000013"); `join_nonce` uses its low 24 bits.
pub fn derive_session_keys_1_0(app_key: &AesKey, join_nonce: u32, net_id: [u8; 3], dev_nonce: u16) -> SessionKeys {
    let derive = |first: u8| {
        let mut b = [0u8; 16];
        b[0] = first;
        b[1..4].copy_from_slice(&join_nonce.to_le_bytes()[..3]);
        b[4..7].copy_from_slice(&[net_id[2], net_id[1], net_id[0]]);
        b[7..9].copy_from_slice(&dev_nonce.to_le_bytes());
        aes_encrypt_block(app_key, &mut b);
        AesKey(b)
    };
    SessionKeys { nwk_s_key: derive(0x01), app_s_key: derive(0x02) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AesKey {
        s.parse().unwrap()
    }

    #[test]
    fn session_keys_match_the_chirpstack_lorawan_1_0_vector() {
        // Source: ChirpStack lrwn/src/keys.rs test `lorawan_1_0` (via /work/shared/TEST-VECTORS.md).
        let keys = derive_session_keys_1_0(&key("01020304050607080102030405060708"), 65536, [0x01, 0x02, 0x03], 258);
        assert_eq!(keys.nwk_s_key, key("df53c35f3034ccced0ff354c70de04df"));
        assert_eq!(keys.app_s_key, key("927b9c911183cffe4cb2ff4b75545f6d"));
    }

    #[test]
    fn session_keys_match_the_lorawan_crate_derivation() {
        // Source: lora-rs lorawan 0.9.0 tests/lorawan.rs `test_derive_newskey`/`test_derive_appskey`:
        // the brocaar join-accept (JoinNonce 0x570bc7, NetID 0x221101) with DevNonce 2d 10 on
        // the wire, AppKey 00112233... (the crate's comment names the still-encrypted bytes).
        let keys = derive_session_keys_1_0(&key("00112233445566778899aabbccddeeff"), 0x570bc7, [0x22, 0x11, 0x01], 0x102d);
        assert_eq!(keys.nwk_s_key, key("7bb25f89e0d1371e1fbf4d997e1468a3"));
        assert_eq!(keys.app_s_key, key("148820dfb1e0c9d6289cde16c1af249f"));
    }

    #[test]
    fn frm_payload_encryption_is_its_own_inverse_across_block_boundaries() {
        let k = key("000102030405060708090a0b0c0d0e0f");
        let addr = DevAddr::from_u32(0x2601_1234);
        let plain: Vec<u8> = (0..=40).collect();
        let enc = encrypt_frm_payload(&k, true, addr, 70_000, &plain);
        assert_ne!(enc, plain);
        assert_eq!(encrypt_frm_payload(&k, true, addr, 70_000, &enc), plain);
        // Direction and counter are part of the key stream.
        assert_ne!(encrypt_frm_payload(&k, false, addr, 70_000, &plain), enc);
        assert_ne!(encrypt_frm_payload(&k, true, addr, 70_001, &plain), enc);
    }
}
