//! DevAddr allocation inside a NetID.
//!
//! LoRaWAN Backend Interfaces §6.1 (DevAddr assignment) and LoRaWAN 1.1 §6.1.1: the NetID's
//! three most significant bits give its type 0..7; a DevAddr of that type starts with a prefix
//! of `type` one-bits and a zero, then the NwkID (the NetID's least significant bits), then
//! NwkAddr, which the network server chooses freely.
//!
//! Type 3's NwkID is 11 bits: the Backend Interfaces 1.0 text printed 10, which left the
//! widths not summing to 32; later revisions, ChirpStack and Helium use 11.

use crate::types::DevAddr;

/// (NwkID bits, NwkAddr bits) per NetID type; prefix length is type + 1.
const LAYOUT: [(u32, u32); 8] = [(6, 25), (6, 24), (9, 20), (11, 17), (12, 15), (13, 13), (15, 10), (17, 7)];

/// The NetID type: its three most significant bits. `net_id` is MSB first ("000013").
pub fn net_id_type(net_id: [u8; 3]) -> u8 {
    net_id[0] >> 5
}

/// The DevAddr prefix of a NetID as (value, length in bits), e.g. NetID 000000 -> (0x00000000, 7).
pub fn dev_addr_prefix(net_id: [u8; 3]) -> (u32, u32) {
    let t = u32::from(net_id_type(net_id));
    let (nwk_id_bits, nwk_addr_bits) = LAYOUT[t as usize];
    let id = u32::from_be_bytes([0, net_id[0], net_id[1], net_id[2]]);
    let nwk_id = id & ((1 << nwk_id_bits) - 1);
    // `t` ones followed by a zero, in the top t+1 bits.
    let type_bits = if t == 0 { 0 } else { !0u32 << (32 - t) };
    (type_bits | (nwk_id << nwk_addr_bits), 32 - nwk_addr_bits)
}

/// A DevAddr inside `net_id` whose NwkAddr bits come from `rand`.
pub fn allocate(net_id: [u8; 3], rand: u32) -> DevAddr {
    let (prefix, len) = dev_addr_prefix(net_id);
    let addr_mask = u32::MAX >> len;
    DevAddr::from_u32(prefix | (rand & addr_mask))
}

/// Whether `dev_addr` carries the prefix (type and NwkID) of `net_id`.
pub fn in_net_id(dev_addr: DevAddr, net_id: [u8; 3]) -> bool {
    let (prefix, len) = dev_addr_prefix(net_id);
    let mask = !(u32::MAX >> len);
    dev_addr.as_u32() & mask == prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_id_000000_gives_type_0_addresses_starting_with_7_zero_bits() {
        // Source: ChirpStack lrwn/src/devaddr.rs `test_dev_addr_set_addr_prefix`:
        // ffffffff with NetID 000000's prefix becomes 01ffffff.
        assert_eq!(dev_addr_prefix([0, 0, 0]), (0, 7));
        assert_eq!(allocate([0, 0, 0], u32::MAX), DevAddr::from_u32(0x01ff_ffff));
        assert_eq!(allocate([0, 0, 0], 0x1234_5678), DevAddr::from_u32(0x0034_5678));
        assert!(in_net_id(DevAddr::from_u32(0x01ab_cdef), [0, 0, 0]));
        assert!(!in_net_id(DevAddr::from_u32(0x0201_1234), [0, 0, 0]));
        assert!(!in_net_id(DevAddr::from_u32(0x8000_0000), [0, 0, 0]));
    }

    #[test]
    fn net_id_00003f_puts_its_nwk_id_after_the_type_0_prefix() {
        // Source: ChirpStack lrwn/src/devaddr.rs: ffffffff with NetID 00003f -> 7fffffff.
        assert_eq!(allocate([0, 0, 0x3f], u32::MAX), DevAddr::from_u32(0x7fff_ffff));
        // TTN's NetID 000013: DevAddrs 26xxxxxx/27xxxxxx.
        assert_eq!(dev_addr_prefix([0, 0, 0x13]), (0x2600_0000, 7));
        assert!(in_net_id("26011234".parse().unwrap(), [0, 0, 0x13]));
        assert!(!in_net_id("5bffffff".parse().unwrap(), [0, 0, 0x13]));
        // ChirpStack's type 0 example 5bffffff has NwkID 0x2d.
        assert!(in_net_id("5bffffff".parse().unwrap(), [0, 0, 0x2d]));
    }

    #[test]
    fn higher_net_id_types_use_their_prefix_and_widths() {
        // Type 3 NetID 600014 (NwkID 11 bits = 0x014): prefix 1110, then NwkID, 17 address bits.
        let (p, len) = dev_addr_prefix([0x60, 0x00, 0x14]);
        assert_eq!(len, 15);
        assert_eq!(p, 0xe000_0000 | (0x14 << 17));
        let a = allocate([0x60, 0x00, 0x14], u32::MAX);
        assert_eq!(a.as_u32(), p | 0x1_ffff);
        assert!(in_net_id(a, [0x60, 0x00, 0x14]));
        assert!(!in_net_id(a, [0x60, 0x00, 0x15]));

        // Type 6 NetID c00053 (NwkID 15 bits): prefix 1111110.
        let a = allocate([0xc0, 0x00, 0x53], 0);
        assert_eq!(a.as_u32(), 0xfc00_0000 | (0x53 << 10));
        // Type 7 NetID e1ffff (NwkID 17 bits = 0x1ffff): prefix 11111110.
        let a = allocate([0xe1, 0xff, 0xff], 0xffff_ffff);
        assert_eq!(a.as_u32(), 0xfeff_ffff);
        assert_eq!(net_id_type([0xe0, 0xff, 0xff]), 7);
    }

    #[test]
    fn every_type_keeps_random_bits_out_of_the_prefix() {
        for t in 0u8..8 {
            let net_id = [t << 5, 0x12, 0x34];
            for r in [0, 1, 0xdead_beef, u32::MAX] {
                assert!(in_net_id(allocate(net_id, r), net_id), "type {t}, rand {r:#x}");
            }
        }
    }
}
