//! What `loraflow simulate` shows per device: each device task writes its radio state here,
//! the progress line reads the data-rate distribution, `--verbose` prints a table and `--json`
//! the rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use loraflow_network_server::types::{DevAddr, Eui64};
use serde::Serialize;

use super::mac::DeviceMac;

/// One device's live state, written by its task only.
#[derive(Debug)]
pub struct DeviceSlot {
    pub dev_eui: Eui64,
    joined: AtomicBool,
    /// Finished its `--uplinks`.
    done: AtomicBool,
    dev_addr: AtomicU32,
    dr: AtomicU8,
    tx_power: AtomicU8,
    nb_trans: AtomicU8,
    uplinks: AtomicU64,
    repeats: AtomicU64,
    downlinks: AtomicU64,
    class_c_downlinks: AtomicU64,
    refused_downlinks: AtomicU64,
    adr_ack_reqs: AtomicU64,
}

/// A copy of one device's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRow {
    pub dev_eui: Eui64,
    /// `None` until the device has joined.
    pub dev_addr: Option<DevAddr>,
    pub dr: u8,
    pub tx_power: u8,
    pub nb_trans: u8,
    /// Frames sent (new FCnt each), FPort 0 answers included, repetitions not.
    pub uplinks: u64,
    /// Repetitions sent because NbTrans > 1.
    pub repeats: u64,
    /// Data downlinks accepted (join-accepts not counted), Class C ones included.
    pub downlinks: u64,
    /// Of those, the ones heard outside RX1/RX2: immediate downlinks on RX2 (Class C).
    pub class_c_downlinks: u64,
    /// Downlinks for this device sent where it was not listening (a frequency or data rate of
    /// no open window, or immediate to a Class A device); dropped as a real radio would. The
    /// simulator does not check `tmst` timing.
    pub refused_downlinks: u64,
    /// Uplinks that carried ADRACKReq.
    pub adr_ack_reqs: u64,
}

impl DeviceSlot {
    pub fn new(dev_eui: Eui64) -> Self {
        DeviceSlot {
            dev_eui,
            joined: AtomicBool::new(false),
            done: AtomicBool::new(false),
            dev_addr: AtomicU32::new(0),
            dr: AtomicU8::new(0),
            tx_power: AtomicU8::new(0),
            nb_trans: AtomicU8::new(1),
            uplinks: AtomicU64::new(0),
            repeats: AtomicU64::new(0),
            downlinks: AtomicU64::new(0),
            class_c_downlinks: AtomicU64::new(0),
            refused_downlinks: AtomicU64::new(0),
            adr_ack_reqs: AtomicU64::new(0),
        }
    }

    pub fn joined(&self, dev_addr: DevAddr, mac: &DeviceMac) {
        self.dev_addr.store(dev_addr.as_u32(), Ordering::Relaxed);
        self.radio(mac);
        self.joined.store(true, Ordering::Relaxed);
    }

    /// The device's current data rate, power and NbTrans.
    pub fn radio(&self, mac: &DeviceMac) {
        self.dr.store(mac.dr(), Ordering::Relaxed);
        self.tx_power.store(mac.tx_power(), Ordering::Relaxed);
        self.nb_trans.store(mac.nb_trans(), Ordering::Relaxed);
    }

    pub fn uplink(&self, adr_ack_req: bool) {
        self.uplinks.fetch_add(1, Ordering::Relaxed);
        if adr_ack_req {
            self.adr_ack_reqs.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn repeat(&self) {
        self.repeats.fetch_add(1, Ordering::Relaxed);
    }

    pub fn downlink(&self, class_c: bool) {
        self.downlinks.fetch_add(1, Ordering::Relaxed);
        if class_c {
            self.class_c_downlinks.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused(&self) {
        self.refused_downlinks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    pub fn uplinks(&self) -> u64 {
        self.uplinks.load(Ordering::Relaxed)
    }

    pub fn row(&self) -> DeviceRow {
        let joined = self.joined.load(Ordering::Relaxed);
        DeviceRow {
            dev_eui: self.dev_eui,
            dev_addr: joined.then(|| DevAddr::from_u32(self.dev_addr.load(Ordering::Relaxed))),
            dr: self.dr.load(Ordering::Relaxed),
            tx_power: self.tx_power.load(Ordering::Relaxed),
            nb_trans: self.nb_trans.load(Ordering::Relaxed),
            uplinks: self.uplinks.load(Ordering::Relaxed),
            repeats: self.repeats.load(Ordering::Relaxed),
            downlinks: self.downlinks.load(Ordering::Relaxed),
            class_c_downlinks: self.class_c_downlinks.load(Ordering::Relaxed),
            refused_downlinks: self.refused_downlinks.load(Ordering::Relaxed),
            adr_ack_reqs: self.adr_ack_reqs.load(Ordering::Relaxed),
        }
    }
}

/// How many joined devices use each data rate, lowest first: `DR0:3 DR5:17`.
pub fn dr_distribution(rows: &[DeviceRow]) -> String {
    let mut by_dr: BTreeMap<u8, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.dev_addr.is_some()) {
        *by_dr.entry(r.dr).or_default() += 1;
    }
    by_dr.iter().map(|(dr, n)| format!("DR{dr}:{n}")).collect::<Vec<_>>().join(" ")
}

/// A fixed-width table, one line per device.
pub fn table(rows: &[DeviceRow]) -> String {
    let mut out = String::from("DevEUI            DevAddr   DR  TXPower  NbTrans  Uplinks  Downlinks  ClassC  Refused  ADRACKReq\n");
    for r in rows {
        let addr = r.dev_addr.map_or_else(|| "-".to_string(), |a| a.to_string());
        let _ = writeln!(
            out,
            "{:<16}  {:<8}  {:>2}  {:>7}  {:>7}  {:>7}  {:>9}  {:>6}  {:>7}  {:>9}",
            r.dev_eui.to_string(),
            addr,
            r.dr,
            r.tx_power,
            r.nb_trans,
            r.uplinks,
            r.downlinks,
            r.class_c_downlinks,
            r.refused_downlinks,
            r.adr_ack_reqs
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::mac::MacConfig;

    fn row(i: u64, dr: u8, joined: bool) -> DeviceRow {
        DeviceRow {
            dev_eui: Eui64::from_u64(i),
            dev_addr: joined.then(|| DevAddr::from_u32(0x2601_0000 + i as u32)),
            dr,
            tx_power: 1,
            nb_trans: 1,
            uplinks: 10 * i,
            repeats: 0,
            downlinks: i,
            class_c_downlinks: i / 2,
            refused_downlinks: 0,
            adr_ack_reqs: 0,
        }
    }

    #[test]
    fn the_distribution_counts_joined_devices_per_data_rate() {
        let rows = [row(1, 5, true), row(2, 0, true), row(3, 5, true), row(4, 3, false)];
        assert_eq!(dr_distribution(&rows), "DR0:1 DR5:2");
        assert_eq!(dr_distribution(&[]), "");
    }

    #[test]
    fn the_table_has_a_header_and_a_line_per_device() {
        let t = table(&[row(1, 5, true), row(2, 0, false)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("DevEUI") && lines[0].ends_with("ADRACKReq"), "{t}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["0000000000000001", "26010001", "5", "1", "1", "10", "1", "0", "0", "0"]
        );
        assert_eq!(lines[2].split_whitespace().nth(1), Some("-"));
    }

    #[test]
    fn a_slot_reports_what_its_device_did() {
        let slot = DeviceSlot::new(Eui64::from_u64(9));
        assert_eq!(slot.row().dev_addr, None);
        let mac = DeviceMac::new(MacConfig { adr: true, initial_dr: 0, initial_tx_power: 2, ..MacConfig::default() });
        slot.joined(DevAddr::from_u32(7), &mac);
        slot.uplink(false);
        slot.uplink(true);
        slot.repeat();
        slot.downlink(false);
        slot.downlink(true);
        slot.refused();
        let r = slot.row();
        assert_eq!((r.dev_addr, r.dr, r.tx_power, r.nb_trans), (Some(DevAddr::from_u32(7)), 0, 2, 1));
        assert_eq!((r.uplinks, r.repeats, r.downlinks, r.adr_ack_reqs), (2, 1, 2, 1));
        assert_eq!((r.class_c_downlinks, r.refused_downlinks), (1, 1));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (json["devEui"].as_str(), json["devAddr"].as_str(), json["txPower"].as_u64()),
            (Some("0000000000000009"), Some("00000007"), Some(2))
        );
        assert_eq!((json["classCDownlinks"].as_u64(), json["refusedDownlinks"].as_u64()), (Some(1), Some(1)));
    }
}
