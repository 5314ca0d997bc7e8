//! Property tests of the CFList (issue 12 part 8), encoded by the network server's regions
//! and decoded by the simulated device as a real one would: the channels a region writes are
//! the channels the device ends up with, and any 16 bytes — or any downlink MAC commands — are
//! taken by the device without a panic.

use std::sync::Arc;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use super::mac::{DeviceMac, MacConfig};
use super::plan::RadioPlan;

/// One plan per region (a sub-band for the fixed-channel ones).
const PLANS: [&str; 15] = [
    "eu868", "us915_1", "au915_0", "cn470_0", "as923", "as923_2", "as923_3", "as923_4", "kr920", "in865", "ru864", "cn779", "eu433",
    "ism2400", "cn470_11",
];

fn plan() -> impl Strategy<Value = Arc<RadioPlan>> {
    prop::sample::select(&PLANS[..]).prop_map(|id| Arc::new(RadioPlan::from_id(id).unwrap()))
}

fn joined(plan: &Arc<RadioPlan>, cf: Option<&[u8; 16]>) -> DeviceMac {
    let mut d = DeviceMac::for_plan(MacConfig::default(), plan.clone());
    d.join(0, 0, 1, cf);
    d
}

/// Up to five extra channels the region accepts (in its band, on the 100 Hz grid, not a
/// default channel, each once).
fn plan_with_extra_channels() -> impl Strategy<Value = (Arc<RadioPlan>, Vec<u32>)> {
    plan().prop_filter("dynamic channels", |p| !p.layout.is_fixed() && p.region.cf_list_type().is_some()).prop_flat_map(|p| {
        let band = p.band();
        let region = p.region.clone();
        let extra = vec((*band.start() / 100)..=(*band.end() / 100), 1..=5)
            .prop_map(|fs| fs.into_iter().map(|f| f * 100).collect::<Vec<u32>>())
            .prop_filter("the region accepts them", move |fs| region.check_extra_channels(fs).is_ok());
        (Just(p), extra)
    })
}

/// A non-empty set of a fixed-channel region's channels.
fn plan_with_enabled_channels() -> impl Strategy<Value = (Arc<RadioPlan>, Vec<u8>)> {
    plan().prop_filter("fixed channels", |p| p.layout.is_fixed()).prop_flat_map(|p| {
        let n = p.region.default_uplink_channels().len() as u8;
        (Just(p), btree_set(0..n, 1..=usize::from(n)).prop_map(|s| s.into_iter().collect::<Vec<u8>>()))
    })
}

proptest! {
    #[test]
    fn a_type_0_cf_list_gives_the_device_the_extra_channels((plan, extra) in plan_with_extra_channels()) {
        let cf = plan.region.cf_list(&extra, &[]).expect("a region with extra channels writes a CFList");
        prop_assert_eq!(cf[15], 0, "CFListType 0");
        let d = joined(&plan, Some(&cf));
        let n = plan.region.default_uplink_channels().len();
        let got: Vec<u32> = (n..n + extra.len()).filter_map(|i| d.channel(i).map(|c| c.frequency)).collect();
        prop_assert_eq!(got, extra.clone());
        prop_assert_eq!(d.channel(n + extra.len()), None);
    }

    #[test]
    fn a_type_1_cf_list_enables_exactly_the_channels_it_names((plan, enabled) in plan_with_enabled_channels()) {
        let cf = plan.region.cf_list(&[], &enabled).expect("a fixed-channel region writes a CFList");
        prop_assert_eq!(cf[15], 1, "CFListType 1");
        prop_assert_eq!(joined(&plan, Some(&cf)).enabled_channels(), enabled);
    }

    #[test]
    fn any_cf_list_bytes_are_taken_or_ignored(plan in plan(), cf in any::<[u8; 16]>()) {
        let d = joined(&plan, Some(&cf));
        prop_assert!(!d.enabled_channels().is_empty());
        let band = plan.band();
        for i in d.enabled_channels() {
            if let Some(c) = d.channel(usize::from(i)) {
                prop_assert!(band.contains(&c.frequency), "channel {i} at {} Hz", c.frequency);
            }
        }
    }

    #[test]
    fn any_downlink_mac_commands_are_handled_by_the_device(plan in plan(), cmds in vec(prop_oneof![3 => 0x02u8..=0x0d, 1 => any::<u8>()], 0..40)) {
        let mut d = joined(&plan, None);
        let _ = d.downlink_received(&cmds);
        let _ = d.next_uplink();
    }
}
