//! Property tests of the PHYPayload layer (issue 12 part 8): any bytes parse to a [`Phy`] or
//! a [`PhyError`] and the MIC checks and join-accept decryption take any bytes without a
//! panic; every frame the builders make parses back to the fields it was built from, with a
//! MIC that holds for exactly those keys and counter; and the identifier and key types read
//! back what they print.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;
use crate::types::{AesKey, DevAddr};

fn key() -> impl Strategy<Value = AesKey> {
    any::<[u8; 16]>().prop_map(AesKey)
}

fn dev_addr() -> impl Strategy<Value = DevAddr> {
    any::<u32>().prop_map(DevAddr::from_u32)
}

fn eui() -> impl Strategy<Value = Eui64> {
    any::<u64>().prop_map(Eui64::from_u64)
}

/// Bytes that reach every branch of the parser: any MHDR, then lengths around the limits of
/// each frame type, data frames with FOptsLen set at random.
fn phy_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        (any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(mhdr, rest)| {
            let mut b = vec![mhdr & 0xe0];
            b.extend(rest);
            b
        }),
    ]
}

/// The parts of a data frame the builders take: FOpts of at most 15 bytes, a payload only with
/// an FPort, no FOpts with FPort 0, and at most 255 bytes in all.
#[derive(Debug, Clone)]
struct Body {
    f_opts: Vec<u8>,
    f_port: Option<u8>,
    frm_payload: Vec<u8>,
}

fn body() -> impl Strategy<Value = Body> {
    (vec(any::<u8>(), 0..=15), option::of(any::<u8>()), vec(any::<u8>(), 0..=242))
        .prop_map(|(f_opts, f_port, frm_payload)| {
            let f_opts = if f_port == Some(0) { Vec::new() } else { f_opts };
            let frm_payload = if f_port.is_some() { frm_payload } else { Vec::new() };
            Body { f_opts, f_port, frm_payload }
        })
        .prop_filter("fits a LoRa packet", |b| {
            1 + 7 + b.f_opts.len() + usize::from(b.f_port.is_some()) + b.frm_payload.len() + 4 <= MAX_PHY_LEN
        })
}

fn uplink() -> impl Strategy<Value = DataUplink> {
    (any::<bool>(), dev_addr(), any::<u32>(), any::<[bool; 4]>(), body()).prop_map(|(confirmed, dev_addr, f_cnt_up, flags, b)| DataUplink {
        confirmed,
        dev_addr,
        f_cnt_up,
        adr: flags[0],
        adr_ack_req: flags[1],
        ack: flags[2],
        class_b: flags[3],
        f_opts: b.f_opts,
        f_port: b.f_port,
        frm_payload: b.frm_payload,
    })
}

fn downlink() -> impl Strategy<Value = DataDownlink> {
    (any::<bool>(), dev_addr(), any::<u32>(), any::<[bool; 3]>(), body()).prop_map(|(confirmed, dev_addr, f_cnt_down, flags, b)| {
        DataDownlink {
            confirmed,
            dev_addr,
            f_cnt_down,
            ack: flags[0],
            f_pending: flags[1],
            adr: flags[2],
            f_opts: b.f_opts,
            f_port: b.f_port,
            frm_payload: b.frm_payload,
        }
    })
}

fn join_accept_fields() -> impl Strategy<Value = JoinAcceptFields> {
    (0u32..=0x00ff_ffff, any::<[u8; 3]>(), dev_addr(), 0u8..=7, 0u8..=15, 0u8..=15, option::of(any::<[u8; 16]>())).prop_map(
        |(join_nonce, net_id, dev_addr, rx1_dr_offset, rx2_dr, rx_delay, cf_list)| JoinAcceptFields {
            join_nonce,
            net_id,
            dev_addr,
            rx1_dr_offset,
            rx2_dr,
            rx_delay,
            cf_list,
        },
    )
}

/// The frame's plain payload: FPort 0 is encrypted with the network key, others with the
/// application key (LoRaWAN 1.0.4 §4.3.3).
fn plain(f: &DataFrame, f_cnt: u32, nwk: &AesKey, app: &AesKey) -> Vec<u8> {
    let key = if f.f_port == Some(0) { nwk } else { app };
    encrypt_frm_payload(key, f.is_uplink(), f.dev_addr, f_cnt, &f.frm_payload)
}

proptest! {
    #[test]
    fn any_bytes_parse_or_fail_with_a_reason(b in phy_bytes(), k in key()) {
        match parse(&b) {
            Ok(Phy::Data(f)) => {
                prop_assert!(b.len() >= 12 && b.len() <= MAX_PHY_LEN);
                prop_assert_eq!(&f.mic[..], &b[b.len() - 4..]);
                prop_assert!(f.f_opts.len() <= 15);
                prop_assert!(f.f_port.is_some() || f.frm_payload.is_empty());
                prop_assert!(f.f_port != Some(0) || f.f_opts.is_empty(), "FOpts with FPort 0");
                prop_assert_eq!(8 + f.f_opts.len() + usize::from(f.f_port.is_some()) + f.frm_payload.len() + 4, b.len());
            }
            Ok(Phy::JoinRequest(_)) => prop_assert_eq!(b.len(), 23),
            Ok(Phy::JoinAccept(raw)) => prop_assert!(raw == b && (b.len() == 17 || b.len() == 33)),
            Ok(Phy::Proprietary(raw) | Phy::RejoinRequest(raw)) => prop_assert_eq!(&raw, &b),
            Err(_) => {}
        }
        let _ = data_mic_valid(&b, &k, 0);
        let _ = join_request_mic_valid(&b, &k);
        let _ = decrypt_join_accept(&b, &k);
    }

    #[test]
    fn an_uplink_parses_back_to_what_was_built(u in uplink(), nwk in key(), app in key()) {
        let phy = build_data_uplink(&u, &nwk, &app).unwrap();
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame: {phy:02x?}") };
        prop_assert_eq!(f.mtype, if u.confirmed { DataMType::ConfirmedUp } else { DataMType::UnconfirmedUp });
        prop_assert_eq!(f.dev_addr, u.dev_addr);
        prop_assert_eq!(f.fctrl, FCtrl { adr: u.adr, adr_ack_req: u.adr_ack_req, ack: u.ack, f_pending: false, class_b: u.class_b });
        prop_assert_eq!(f.f_cnt16, u.f_cnt_up as u16);
        prop_assert_eq!(&f.f_opts, &u.f_opts);
        prop_assert_eq!(f.f_port, u.f_port);
        prop_assert_eq!(plain(&f, u.f_cnt_up, &nwk, &app), u.frm_payload.clone());
        prop_assert!(data_mic_valid(&phy, &nwk, u.f_cnt_up));

        // Decoding then encoding: the parsed fields, payload decrypted, build the same bytes.
        let again = DataUplink {
            confirmed: f.is_confirmed(),
            dev_addr: f.dev_addr,
            f_cnt_up: u.f_cnt_up,
            adr: f.fctrl.adr,
            adr_ack_req: f.fctrl.adr_ack_req,
            ack: f.fctrl.ack,
            class_b: f.fctrl.class_b,
            f_opts: f.f_opts.clone(),
            f_port: f.f_port,
            frm_payload: plain(&f, u.f_cnt_up, &nwk, &app),
        };
        prop_assert_eq!(build_data_uplink(&again, &nwk, &app).unwrap(), phy);
    }

    #[test]
    fn a_downlink_parses_back_to_what_was_built(d in downlink(), nwk in key(), app in key()) {
        let phy = build_data_downlink(&d, &nwk, &app).unwrap();
        let Ok(Phy::Data(f)) = parse(&phy) else { panic!("not a data frame: {phy:02x?}") };
        prop_assert_eq!(f.mtype, if d.confirmed { DataMType::ConfirmedDown } else { DataMType::UnconfirmedDown });
        prop_assert_eq!(f.dev_addr, d.dev_addr);
        prop_assert_eq!(f.fctrl, FCtrl { adr: d.adr, adr_ack_req: false, ack: d.ack, f_pending: d.f_pending, class_b: false });
        prop_assert_eq!(f.f_cnt16, d.f_cnt_down as u16);
        prop_assert_eq!(&f.f_opts, &d.f_opts);
        prop_assert_eq!(f.f_port, d.f_port);
        prop_assert_eq!(plain(&f, d.f_cnt_down, &nwk, &app), d.frm_payload.clone());
        prop_assert!(data_mic_valid(&phy, &nwk, d.f_cnt_down));

        let again = DataDownlink {
            confirmed: f.is_confirmed(),
            dev_addr: f.dev_addr,
            f_cnt_down: d.f_cnt_down,
            ack: f.fctrl.ack,
            f_pending: f.fctrl.f_pending,
            adr: f.fctrl.adr,
            f_opts: f.f_opts.clone(),
            f_port: f.f_port,
            frm_payload: plain(&f, d.f_cnt_down, &nwk, &app),
        };
        prop_assert_eq!(build_data_downlink(&again, &nwk, &app).unwrap(), phy);
    }

    #[test]
    fn the_mic_holds_only_for_the_frame_key_and_counter_it_was_made_with(
        u in uplink(),
        nwk in key(),
        other in key(),
        f_cnt in any::<u32>(),
        bit in any::<prop::sample::Index>(),
    ) {
        prop_assume!(other != nwk && f_cnt != u.f_cnt_up);
        let phy = build_data_uplink(&u, &nwk, &nwk).unwrap();
        prop_assert!(data_mic_valid(&phy, &nwk, u.f_cnt_up));
        prop_assert!(!data_mic_valid(&phy, &other, u.f_cnt_up));
        prop_assert!(!data_mic_valid(&phy, &nwk, f_cnt));
        let mut flipped = phy.clone();
        let i = bit.index(phy.len() * 8);
        flipped[i / 8] ^= 1 << (i % 8);
        prop_assert!(!data_mic_valid(&flipped, &nwk, u.f_cnt_up));
    }

    #[test]
    fn builders_refuse_what_does_not_fit_without_panicking(
        f_opts in vec(any::<u8>(), 0..20),
        f_port in option::of(any::<u8>()),
        frm_payload in vec(any::<u8>(), 0..300),
        k in key(),
    ) {
        let d = DataDownlink { f_opts, f_port, frm_payload, ..Default::default() };
        if let Ok(phy) = build_data_downlink(&d, &k, &k) {
            prop_assert!(phy.len() <= MAX_PHY_LEN);
            prop_assert!(matches!(parse(&phy), Ok(Phy::Data(_))));
        }
    }

    #[test]
    fn a_join_request_parses_back_to_what_was_built(k in key(), join_eui in eui(), dev_eui in eui(), dev_nonce in any::<u16>()) {
        let phy = build_join_request(&k, join_eui, dev_eui, dev_nonce);
        let Ok(Phy::JoinRequest(jr)) = parse(&phy) else { panic!("not a join-request") };
        prop_assert_eq!((jr.join_eui, jr.dev_eui, jr.dev_nonce), (join_eui, dev_eui, dev_nonce));
        prop_assert_eq!(&jr.mic[..], &phy[19..]);
        prop_assert!(join_request_mic_valid(&phy, &k));
    }

    #[test]
    fn a_join_accept_decrypts_back_to_what_was_built(k in key(), fields in join_accept_fields()) {
        let phy = build_join_accept(&k, &fields).unwrap();
        prop_assert_eq!(parse(&phy), Ok(Phy::JoinAccept(phy.clone())));
        let d = decrypt_join_accept(&phy, &k).unwrap();
        prop_assert_eq!(d.fields, fields);
        prop_assert!(d.mic_valid);
    }

    #[test]
    fn any_join_accept_bytes_decrypt_to_fields_that_build_a_valid_one(
        k in key(),
        body in prop_oneof![vec(any::<u8>(), 16..=16), vec(any::<u8>(), 32..=32)],
    ) {
        // Decoding then encoding: random bytes have a wrong MIC, but the fields they decrypt
        // to build a join-accept that decrypts to the same fields with a right one.
        let mut phy = vec![0x20];
        phy.extend(body);
        let d = decrypt_join_accept(&phy, &k).unwrap();
        let rebuilt = build_join_accept(&k, &d.fields).unwrap();
        prop_assert_eq!(rebuilt.len(), phy.len());
        let again = decrypt_join_accept(&rebuilt, &k).unwrap();
        prop_assert_eq!(again.fields, d.fields);
        prop_assert!(again.mic_valid);
    }

    #[test]
    fn out_of_range_join_accept_fields_are_refused(
        k in key(),
        join_nonce in any::<u32>(),
        rx1_dr_offset in any::<u8>(),
        rx2_dr in any::<u8>(),
        rx_delay in any::<u8>(),
    ) {
        let f = JoinAcceptFields { join_nonce, rx1_dr_offset, rx2_dr, rx_delay, ..Default::default() };
        let in_range = join_nonce <= 0x00ff_ffff && rx1_dr_offset <= 7 && rx2_dr <= 15 && rx_delay <= 15;
        prop_assert_eq!(build_join_accept(&k, &f).is_ok(), in_range);
    }

    #[test]
    fn dev_addrs_keys_and_euis_read_back_what_they_print(a in dev_addr(), k in key(), e in eui()) {
        prop_assert_eq!(a.to_string().parse::<DevAddr>(), Ok(a));
        prop_assert_eq!(DevAddr::from_wire(a.to_wire()), a);
        prop_assert_eq!(k.to_hex().parse::<AesKey>(), Ok(k));
        prop_assert_eq!(e.to_string().parse::<Eui64>(), Ok(e));
        prop_assert_eq!(eui_from_wire(&eui_to_wire(e)), e);
        // JSON accepts upper case too and writes lower case.
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(serde_json::from_str::<DevAddr>(&json.to_ascii_uppercase()).unwrap(), a);
        let json = serde_json::to_string(&k).unwrap();
        prop_assert_eq!(serde_json::from_str::<AesKey>(&json.to_ascii_uppercase()).unwrap(), k);
    }

    #[test]
    fn any_text_is_a_dev_addr_or_key_or_refused(s in prop_oneof![".{0,40}", "[0-9a-fA-F]{6,10}", "[0-9a-fA-F]{30,34}"]) {
        if let Ok(a) = s.parse::<DevAddr>() {
            prop_assert_eq!(a.to_string(), s.to_ascii_lowercase());
        }
        if let Ok(k) = s.parse::<AesKey>() {
            prop_assert_eq!(k.to_hex(), s.to_ascii_lowercase());
        }
        let _ = serde_json::from_value::<DevAddr>(serde_json::Value::String(s.clone()));
        let _ = serde_json::from_value::<AesKey>(serde_json::Value::String(s));
    }
}
