//! Property tests of the Semtech UDP codec (issue 12 part 8): any datagram, rxpk, stat or
//! TX_ACK body a network can deliver decodes to a value or an error, never a panic; and what
//! the encoders write (server side and virtual-gateway side) decodes back to what they were
//! given.

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::frame::{DownlinkFrame, Eui64, Modulation, RxInfo, Timing, TxAckStatus, UplinkFrame, UplinkTxInfo};

// ---------------------------------------------------------------------------------------------
// Strategies

/// Any text, control characters and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn eui() -> impl Strategy<Value = Eui64> {
    any::<u64>().prop_map(Eui64::from_u64)
}

fn finite_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("finite", |x| x.is_finite())
}

fn finite_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |x| x.is_finite())
}

/// A frequency an encoder can write: any non-zero Hz value of a `u32`.
fn hz() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn datr() -> impl Strategy<Value = Datr> {
    prop_oneof![text().prop_map(Datr::Name), lora_datr_text().prop_map(Datr::Name), any::<u32>().prop_map(Datr::Bps)]
}

/// `SF…BW…` look-alikes, so the LoRa data-rate parser is reached with near misses too.
fn lora_datr_text() -> impl Strategy<Value = String> {
    "SF[0-9]{0,3}BW([0-9]{0,6}(\\.[0-9]{0,3})?|[0-9.eE+-]{0,8}|inf|NaN)"
}

fn rsig() -> impl Strategy<Value = Rsig> {
    (
        any::<u32>(),
        option::of(any::<u32>()),
        option::of(any::<i32>()),
        option::of(any::<i32>()),
        option::of(finite_f32()),
        option::of(text()),
        option::of(any::<i64>()),
    )
        .prop_map(|(ant, chan, rssic, rssis, lsnr, etime, foff)| Rsig { ant, chan, rssic, rssis, lsnr, etime, foff })
}

/// Any rxpk the JSON can carry (not necessarily one a frame can be made of).
fn rxpk() -> impl Strategy<Value = Rxpk> {
    (
        (option::of(text()), option::of(any::<u64>()), any::<u32>(), hz(), any::<u32>(), any::<u32>(), option::of(any::<i8>())),
        (text(), datr(), option::of(text()), option::of(any::<i32>()), option::of(finite_f32()), option::of(any::<u32>())),
        (text(), option::of(vec(rsig(), 0..3))),
    )
        .prop_map(|((time, tmms, tmst, freq, chan, rfch, stat), (modu, datr, codr, rssi, lsnr, size), (data, rsig))| Rxpk {
            time,
            tmms,
            tmst,
            freq,
            chan,
            rfch,
            stat,
            modu,
            datr,
            codr,
            rssi,
            lsnr,
            size,
            data,
            rsig,
        })
}

fn stat() -> impl Strategy<Value = Stat> {
    (
        option::of(text()),
        option::of(finite_f64()),
        option::of(finite_f64()),
        option::of(finite_f64()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(finite_f64()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
    )
        .prop_map(|(time, lati, long, alti, rxnb, rxok, rxfw, ackr, dwnb, txnb)| Stat {
            time,
            lati,
            long,
            alti,
            rxnb,
            rxok,
            rxfw,
            ackr,
            dwnb,
            txnb,
        })
}

fn txpk() -> impl Strategy<Value = Txpk> {
    (
        (any::<bool>(), option::of(any::<u32>()), option::of(any::<u64>()), hz(), any::<u32>(), any::<i32>(), text(), datr()),
        (option::of(text()), option::of(any::<u32>()), option::of(any::<bool>()), option::of(any::<u32>()), any::<u32>(), text()),
        (option::of(any::<bool>()), option::of(any::<u32>())),
    )
        .prop_map(|((imme, tmst, tmms, freq, rfch, powe, modu, datr), (codr, fdev, ipol, prea, size, data), (ncrc, ant))| Txpk {
            imme,
            tmst,
            tmms,
            freq,
            rfch,
            powe,
            modu,
            datr,
            codr,
            fdev,
            ipol,
            prea,
            size,
            data,
            ncrc,
            ant,
        })
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
        ]
    })
}

fn tx_ack_payload() -> impl Strategy<Value = Option<TxAckPayload>> {
    // `"value": null` reads back as no value: the same TX_ACK, so null is left out here.
    let value = json_value().prop_filter("null reads back as absent", |v| !v.is_null());
    let ack = (option::of(text()), option::of(text()), option::of(value)).prop_map(|(error, warn, value)| TxpkAck { error, warn, value });
    option::of(option::of(ack).prop_map(|txpk_ack| TxAckPayload { txpk_ack }))
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        (any::<u16>(), eui(), vec(rxpk(), 0..3), option::of(stat())).prop_map(|(token, gateway_id, rxpk, stat)| Packet::PushData(
            PushData { token, gateway_id, payload: PushDataPayload { rxpk, stat } }
        )),
        any::<u16>().prop_map(|token| Packet::PushAck(PushAck { token })),
        (any::<u16>(), eui()).prop_map(|(token, gateway_id)| Packet::PullData(PullData { token, gateway_id })),
        (any::<u16>(), txpk()).prop_map(|(token, txpk)| Packet::PullResp(PullResp { token, txpk })),
        any::<u16>().prop_map(|token| Packet::PullAck(PullAck { token })),
        (any::<u16>(), eui(), tx_ack_payload()).prop_map(|(token, gateway_id, payload)| Packet::TxAck(TxAck {
            token,
            gateway_id,
            payload
        })),
    ]
}

/// What a gateway can put after the header: raw bytes, JSON text, JSON with C-string
/// terminators, or the JSON of a real PUSH_DATA payload.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (vec(rxpk(), 0..3), option::of(stat())).prop_map(|(rxpk, stat)| serde_json::to_vec(&PushDataPayload { rxpk, stat }).unwrap()),
        (json_value(), 0..3usize).prop_map(|(v, nuls)| {
            let mut b = v.to_string().into_bytes();
            b.extend(std::iter::repeat_n(0u8, nuls));
            b
        }),
    ]
}

/// A datagram that gets past the header check often: version 2 and a known identifier
/// most of the time, then any body.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..80),
        (prop_oneof![Just(2u8), any::<u8>()], any::<u16>(), prop_oneof![0u8..=5, any::<u8>()], any::<[u8; 8]>(), body()).prop_map(
            |(version, token, id, eui, body)| {
                let mut d = vec![version];
                d.extend_from_slice(&token.to_be_bytes());
                d.push(id);
                d.extend_from_slice(&eui);
                d.extend(body);
                d
            }
        ),
    ]
}

/// An rxpk object as a gateway might garble it: a well-formed one with a few fields removed
/// or replaced by values of any type.
fn garbled_rxpk_json() -> impl Strategy<Value = Value> {
    static FIELDS: [&str; 16] =
        ["time", "tmms", "tmst", "freq", "chan", "rfch", "stat", "modu", "datr", "codr", "rssi", "lsnr", "size", "data", "rsig", "foo"];
    let plausible = prop_oneof![
        json_value(),
        any::<f64>().prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        lora_datr_text().prop_map(Value::String),
        prop_oneof![Just("LORA"), Just("FSK"), Just("LR-FHSS")].prop_map(Value::from),
        vec(any::<u8>(), 0..40).prop_map(|b| Value::String(BASE64.encode(b))),
        vec(rsig(), 0..3).prop_map(|r| serde_json::to_value(r).unwrap()),
    ];
    (rxpk(), vec((proptest::sample::select(&FIELDS[..]), option::of(plausible)), 0..4)).prop_map(|(rxpk, edits)| {
        let mut v = serde_json::to_value(rxpk).unwrap();
        let obj = v.as_object_mut().unwrap();
        for (field, value) in edits {
            match value {
                Some(value) => obj.insert(field.to_string(), value),
                None => obj.remove(field),
            };
        }
        v
    })
}

/// A radio frame the virtual-gateway encoder can describe exactly: LoRa with a non-empty
/// coding rate (a LoRa rxpk needs one), FSK at a non-zero rate, LR-FHSS with a name; no CRC
/// error (dropped by design); times of microsecond precision in years 1970..=9999 (what
/// RFC 3339 with microseconds carries); an SNR only where the modulation has one.
fn uplink_frame() -> impl Strategy<Value = UplinkFrame> {
    let modulation = prop_oneof![
        (1..=u32::MAX, 5u8..=12, "[0-9A-Za-z/]{1,6}").prop_map(|(bandwidth, spreading_factor, code_rate)| Modulation::Lora {
            bandwidth,
            spreading_factor,
            code_rate
        }),
        (1..=u32::MAX).prop_map(|datarate| Modulation::Fsk { datarate }),
        (".{1,10}", text()).prop_map(|(datr, code_rate)| Modulation::LrFhss { datr, code_rate }),
    ];
    let time = option::of((0i64..=253_402_300_799, 0u32..1_000_000).prop_map(|(s, us)| Utc.timestamp_opt(s, us * 1000).unwrap()));
    (
        (vec(any::<u8>(), 0..=255), hz(), modulation),
        (
            eui(),
            any::<u32>(),
            time,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            finite_f32(),
            any::<i8>().prop_filter("CRC error", |s| *s != -1),
        ),
    )
        .prop_map(
            |((phy_payload, frequency, modulation), (gateway_id, tmst, time, channel, rf_chain, antenna, rssi, snr, crc_status))| {
                let snr = if matches!(modulation, Modulation::Lora { .. }) { snr } else { 0.0 };
                UplinkFrame {
                    phy_payload,
                    tx_info: UplinkTxInfo { frequency, modulation },
                    rx_info: RxInfo {
                        gateway_id,
                        uplink_id: 0,
                        tmst,
                        time,
                        received_at: received_at(),
                        channel,
                        rf_chain,
                        antenna,
                        rssi,
                        snr,
                        crc_status,
                        context: tmst.to_be_bytes().to_vec(),
                    },
                }
            },
        )
}

fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

/// A downlink a Semtech gateway can send (LoRa or FSK, at most 255 bytes).
fn downlink_frame() -> impl Strategy<Value = DownlinkFrame> {
    let modulation = prop_oneof![
        (1..=u32::MAX, 5u8..=12, "[0-9A-Za-z/]{0,6}").prop_map(|(bandwidth, spreading_factor, code_rate)| Modulation::Lora {
            bandwidth,
            spreading_factor,
            code_rate
        }),
        any::<u32>().prop_map(|datarate| Modulation::Fsk { datarate }),
    ];
    let timing = prop_oneof![any::<u32>().prop_map(Timing::Tmst), Just(Timing::Immediately)];
    (eui(), any::<u32>(), vec(any::<u8>(), 0..=255), timing, hz(), any::<i32>(), modulation, any::<u32>(), any::<bool>(), any::<u32>())
        .prop_map(
            |(gateway_id, downlink_id, phy_payload, timing, frequency, power, modulation, rf_chain, polarization_inversion, antenna)| {
                DownlinkFrame {
                    gateway_id,
                    downlink_id,
                    phy_payload,
                    timing,
                    frequency,
                    power,
                    modulation,
                    rf_chain,
                    polarization_inversion,
                    antenna,
                }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// What the server does with a datagram, without the socket: header, then the body parsers
// and the rxpk → frame and stat conversions it runs (`server::on_datagram` and friends).

fn server_side(datagram: &[u8]) {
    let Ok((header, body)) = Header::decode(datagram) else { return };
    assert_eq!(header.gateway_id.is_some(), header.identifier.has_gateway_id());
    match header.identifier {
        Identifier::PushData => {
            let Ok(payload) = RawPushDataPayload::parse(body) else { return };
            for value in payload.rxpk {
                let _ = Rxpk::from_value(value).and_then(|r| r.to_uplink_frames(header.gateway_id.unwrap_or_default(), received_at()));
            }
            if let Some(value) = payload.stat {
                let _ = Stat::from_value(value).map(|s| s.to_gateway_stats());
            }
        }
        Identifier::TxAck => {
            let _ = TxAckPayload::parse(body).map(|p| TxAck { token: header.token, gateway_id: Eui64::default(), payload: p }.status());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #[test]
    fn any_datagram_decodes_or_fails_without_panicking(d in datagram()) {
        let header = Header::decode(&d);
        match Packet::decode(&d) {
            Ok(p) => {
                let (h, _) = header.expect("a decoded packet has a header");
                prop_assert_eq!(p.identifier(), h.identifier);
            }
            Err(DecodeError::Header(e)) => prop_assert_eq!(header.map(|_| ()), Err(e)),
            Err(_) => prop_assert!(header.is_ok()),
        }
        let _ = PushData::decode(&d);
        let _ = PullData::decode(&d);
        let _ = PullResp::decode(&d);
        let _ = TxAck::decode(&d);
        let _ = PushAck::decode(&d);
        let _ = PullAck::decode(&d);
        server_side(&d);
    }

    #[test]
    fn any_body_parses_or_fails_without_panicking(b in body()) {
        if let Some(json) = header::json_body(&b) {
            prop_assert!(!json.is_empty());
            prop_assert!(b.starts_with(json));
        }
        let _ = RawPushDataPayload::parse(&b);
        let _ = TxAckPayload::parse(&b);
    }

    #[test]
    fn a_garbled_rxpk_becomes_frames_or_a_drop_reason(v in garbled_rxpk_json(), gw in eui()) {
        if let Ok(frames) = Rxpk::from_value(v).and_then(|r| r.to_uplink_frames(gw, received_at())) {
            prop_assert!(!frames.is_empty());
            for f in frames {
                prop_assert_eq!(f.rx_info.gateway_id, gw);
                prop_assert!(f.tx_info.frequency > 0);
                prop_assert_ne!(f.rx_info.crc_status, -1);
            }
        }
    }

    #[test]
    fn any_stat_value_is_read_or_refused(v in json_value()) {
        let _ = Stat::from_value(v).map(|s| s.to_gateway_stats());
    }

    #[test]
    fn every_packet_decodes_to_what_was_encoded(p in packet()) {
        let bytes = p.encode();
        prop_assert_eq!(bytes[3], p.identifier() as u8);
        prop_assert_eq!(Packet::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn decoding_then_encoding_a_packet_is_stable(p in packet()) {
        // The encoder's bytes are canonical: decoding and encoding them again gives them back.
        let bytes = p.encode();
        prop_assert_eq!(Packet::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn a_virtual_gateways_rxpk_gives_back_its_frame(frame in uplink_frame()) {
        let rxpk = Rxpk::from_uplink_frame(&frame);
        let datagram = PushData { token: 1, gateway_id: frame.rx_info.gateway_id, payload: PushDataPayload { rxpk: vec![rxpk], stat: None } }.encode();
        let Ok((header, body)) = Header::decode(&datagram) else { panic!("header") };
        let raw = RawPushDataPayload::parse(body).unwrap();
        let frames = Rxpk::from_value(raw.rxpk[0].clone()).unwrap().to_uplink_frames(header.gateway_id.unwrap(), received_at()).unwrap();
        prop_assert_eq!(frames.len(), 1);
        let mut back = frames[0].clone();
        back.rx_info.uplink_id = frame.rx_info.uplink_id;
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn a_downlinks_txpk_gives_the_gateway_the_same_transmission(frame in downlink_frame(), token in any::<u16>()) {
        let txpk = Txpk::from_downlink(&frame).unwrap();
        let back = PullResp::decode(&PullResp { token, txpk }.encode()).unwrap();
        prop_assert_eq!(back.token, token);
        let t = back.txpk;
        prop_assert_eq!(t.payload().unwrap(), frame.phy_payload.clone());
        prop_assert_eq!(t.size as usize, frame.phy_payload.len());
        prop_assert_eq!(t.modulation(), Some(frame.modulation.clone()));
        prop_assert_eq!(t.freq, frame.frequency);
        prop_assert_eq!(t.powe, frame.power);
        prop_assert_eq!(t.rfch, frame.rf_chain);
        prop_assert_eq!(t.ant.unwrap_or(0), frame.antenna);
        match frame.timing {
            Timing::Tmst(tmst) => prop_assert_eq!((t.imme, t.tmst), (false, Some(tmst))),
            Timing::Immediately => prop_assert_eq!((t.imme, t.tmst), (true, None)),
        }
        if matches!(frame.modulation, Modulation::Lora { .. }) {
            prop_assert_eq!(t.ipol, Some(frame.polarization_inversion));
        }
    }

    #[test]
    fn oversized_downlinks_are_refused(len in 256usize..600) {
        let frame = DownlinkFrame {
            gateway_id: Eui64::default(),
            downlink_id: 0,
            phy_payload: vec![0; len],
            timing: Timing::Immediately,
            frequency: 868_100_000,
            power: 14,
            modulation: Modulation::Fsk { datarate: 50_000 },
            rf_chain: 0,
            polarization_inversion: false,
            antenna: 0,
        };
        prop_assert_eq!(Txpk::from_downlink(&frame), Err(TxpkError::PayloadTooLarge(len)));
    }

    #[test]
    fn a_tx_ack_carries_its_status(token in any::<u16>(), gw in eui(), i in 0..TxAckStatus::ALL.len()) {
        let status = TxAckStatus::ALL[i];
        let back = TxAck::decode(&TxAck::new(token, gw, status).encode()).unwrap();
        // Only the names a gateway sends are on the wire; the server's own verdicts
        // (not connected, timeout) read back as an unknown error.
        let expected = match status {
            TxAckStatus::GatewayNotConnected | TxAckStatus::Timeout => TxAckStatus::Unknown,
            s => s,
        };
        prop_assert_eq!((back.token, back.gateway_id, back.status()), (token, gw, expected));
    }

    #[test]
    fn any_lora_datr_text_parses_or_is_refused(s in prop_oneof![lora_datr_text(), text()]) {
        if let Some((sf, bw)) = datr::parse_lora_datr(&s) {
            prop_assert!((5..=12).contains(&sf));
            prop_assert!(bw >= 1);
        }
    }

    #[test]
    fn lora_datr_names_round_trip(sf in 5u8..=12, bw in 1..=u32::MAX) {
        prop_assert_eq!(datr::parse_lora_datr(&datr::lora_datr(sf, bw)), Some((sf, bw)));
    }

    #[test]
    fn frequencies_round_trip_through_mhz_text(hz in hz()) {
        let text = freq::hz_to_mhz_text(hz);
        prop_assert_eq!(freq::mhz_to_hz(text.parse().unwrap()), Some(hz));
    }

    #[test]
    fn any_mhz_value_is_a_frequency_or_refused(mhz in any::<f64>()) {
        if let Some(hz) = freq::mhz_to_hz(mhz) {
            prop_assert!(hz > 0);
        }
    }

    #[test]
    fn euis_round_trip_through_text_and_json(e in eui()) {
        prop_assert_eq!(e.to_string().parse::<Eui64>(), Ok(e));
        let json = serde_json::to_string(&e).unwrap();
        prop_assert_eq!(serde_json::from_str::<Eui64>(&json).unwrap(), e);
    }

    #[test]
    fn any_text_is_an_eui_or_refused(s in prop_oneof![text(), "[0-9a-fA-F]{14,18}"]) {
        if let Ok(e) = s.parse::<Eui64>() {
            prop_assert_eq!(e.to_string(), s.to_ascii_lowercase());
        }
    }
}
