//! Properties every region must have, whatever its tables say.

use super::{region_by_name, CfListType, Modulation, Region};

/// One common name per region; every region module adds its own.
const NAMES: &[&str] = &["EU868", "US915", "AU915", "CN470"];

fn regions() -> Vec<Box<dyn Region>> {
    NAMES.iter().map(|n| region_by_name(n).unwrap_or_else(|| panic!("{n} does not resolve"))).collect()
}

#[test]
fn every_region_resolves_by_its_common_name_and_its_config_id() {
    for r in regions() {
        assert_eq!(region_by_name(r.common_name()).unwrap().config_id(), r.config_id());
        assert_eq!(region_by_name(r.config_id()).unwrap().config_id(), r.config_id());
        assert_eq!(r.config_id(), r.config_id().to_ascii_lowercase());
    }
}

#[test]
fn every_rx1_data_rate_is_a_downlink_data_rate() {
    for r in regions() {
        for dr in (0..=15).filter(|dr| r.data_rate(*dr).is_some_and(|d| d.uplink)) {
            for offset in 0..=r.max_rx1_dr_offset() {
                let rx1 = r.rx1_dr(dr, offset).unwrap_or_else(|e| panic!("{} DR{dr} offset {offset}: {e}", r.common_name()));
                assert!(r.data_rate(rx1).is_some_and(|d| d.downlink), "{} DR{dr} offset {offset} -> DR{rx1}", r.common_name());
                assert!(r.max_payload_size(rx1).is_some(), "{} DR{rx1} has no max payload", r.common_name());
            }
        }
    }
}

#[test]
fn the_default_rx2_data_rate_is_a_downlink_data_rate() {
    for r in regions() {
        assert!(r.data_rate(r.default_rx2_dr()).is_some_and(|d| d.downlink), "{}", r.common_name());
        assert!(r.join_accept_delay2() > r.join_accept_delay1(), "{}", r.common_name());
    }
}

#[test]
fn every_uplink_data_rate_round_trips_through_its_modulation() {
    for r in regions() {
        for dr in 0..=15 {
            let Some(d) = r.data_rate(dr) else { continue };
            assert!(d.uplink || d.downlink, "{} DR{dr} is neither", r.common_name());
            if d.uplink {
                assert_eq!(r.dr_for(&d.modulation), Some(dr), "{} DR{dr}", r.common_name());
            }
            if d.downlink {
                assert_eq!(r.downlink_dr_for(&d.modulation), Some(dr), "{} DR{dr}", r.common_name());
            }
        }
    }
}

#[test]
fn rx1_of_every_default_channel_is_in_the_band() {
    for r in regions() {
        for c in r.uplink_channels() {
            let rx1 = r.rx1_frequency(c.frequency).unwrap_or_else(|e| panic!("{} {} Hz: {e}", r.common_name(), c.frequency));
            // RX1 and RX2 are in the same band: no plan puts them more than 10 MHz apart.
            assert!(rx1.abs_diff(r.default_rx2_frequency()) < 10_000_000, "{} RX1 {rx1} Hz", r.common_name());
            for dr in c.min_dr..=c.max_dr {
                assert!(r.data_rate(dr).is_some_and(|d| d.uplink), "{} channel {} Hz DR{dr}", r.common_name(), c.frequency);
            }
        }
    }
}

#[test]
fn max_adr_dr_is_an_uplink_lora_data_rate_of_the_default_channels() {
    for r in regions() {
        let d = r.data_rate(r.max_adr_dr()).unwrap();
        assert!(d.uplink && matches!(d.modulation, Modulation::Lora { .. }), "{}", r.common_name());
        assert!(r.default_uplink_channels().iter().any(|c| (c.min_dr..=c.max_dr).contains(&r.max_adr_dr())), "{}", r.common_name());
        assert!(r.required_snr(r.max_adr_dr()).is_some(), "{}", r.common_name());
    }
}

#[test]
fn tx_power_offsets_are_defined_up_to_the_largest_index() {
    for r in regions() {
        assert_eq!(r.tx_power_offset(0), Some(0), "{}", r.common_name());
        for i in 1..=r.max_tx_power_index() {
            assert!(r.tx_power_offset(i).unwrap() < r.tx_power_offset(i - 1).unwrap(), "{} index {i}", r.common_name());
        }
        assert_eq!(r.tx_power_offset(r.max_tx_power_index() + 1), None, "{}", r.common_name());
    }
}

#[test]
fn default_extra_channels_pass_the_regions_own_check_and_fit_the_cf_list() {
    for r in regions() {
        assert_eq!(r.check_extra_channels(&r.default_extra_channels()), Ok(()), "{}", r.common_name());
        let enabled = r.default_enabled_uplink_channels();
        assert!(enabled.iter().all(|&i| usize::from(i) < r.default_uplink_channels().len()), "{}", r.common_name());
        let cf = r.cf_list(&r.default_extra_channels(), &enabled);
        match r.cf_list_type() {
            Some(CfListType::ChannelMask) => assert_eq!(cf.map(|c| c[15]), Some(1), "{}", r.common_name()),
            Some(CfListType::Frequencies) if !r.default_extra_channels().is_empty() => {
                assert_eq!(cf.map(|c| c[15]), Some(0), "{}", r.common_name())
            }
            _ => {}
        }
    }
}
