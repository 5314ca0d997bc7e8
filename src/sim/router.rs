//! Hands each downlink a virtual gateway receives to the virtual device it is for, as the
//! radio would. A join-accept names no device: it is the one whose AppKey gives a valid MIC
//! (LoRaWAN 1.0.4 §6.2.5), so only devices waiting for a join-accept are tried. Data downlinks
//! go by DevAddr.

use std::collections::HashMap;
use std::sync::Mutex;

use loraflow_network_server::lorawan::{self, Phy};
use loraflow_network_server::types::{AesKey, DevAddr, Eui64};
use tokio::sync::mpsc;

use super::device::VirtualDevice;
use super::mac::DownlinkRadio;

/// A downlink as it reaches a device: the frame and how the gateway sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    pub phy: Vec<u8>,
    pub radio: DownlinkRadio,
}

pub type DownlinkSender = mpsc::UnboundedSender<Downlink>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// No waiting device has the key or address: a wrong MIC, or a device that gave up.
    Unclaimed,
    /// Not a LoRaWAN downlink at all.
    Malformed,
}

#[derive(Default)]
pub struct Router {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    joining: HashMap<Eui64, (AesKey, DownlinkSender)>,
    active: HashMap<DevAddr, DownlinkSender>,
}

impl Router {
    /// `dev_eui` waits for a join-accept encrypted with `app_key`.
    pub fn expect_join(&self, dev_eui: Eui64, app_key: AesKey, tx: DownlinkSender) {
        self.lock().joining.insert(dev_eui, (app_key, tx));
    }

    pub fn cancel_join(&self, dev_eui: Eui64) {
        self.lock().joining.remove(&dev_eui);
    }

    /// Data downlinks for `dev_addr` go to `tx` from now on.
    pub fn activate(&self, dev_addr: DevAddr, tx: DownlinkSender) {
        self.lock().active.insert(dev_addr, tx);
    }

    /// Gives `phy`, sent on `radio`, to the device it is for; whether that device listens on
    /// `radio` is the device's check.
    pub fn deliver(&self, phy: &[u8], radio: DownlinkRadio) -> Delivery {
        let down = || Downlink { phy: phy.to_vec(), radio };
        let mut inner = self.lock();
        match lorawan::parse(phy) {
            Ok(Phy::JoinAccept(_)) => {
                let found = inner.joining.iter().find(|(_, (key, _))| VirtualDevice::is_my_join_accept(key, phy)).map(|(eui, _)| *eui);
                match found.and_then(|eui| inner.joining.remove(&eui)) {
                    Some((_, tx)) if tx.send(down()).is_ok() => Delivery::Delivered,
                    _ => Delivery::Unclaimed,
                }
            }
            Ok(Phy::Data(d)) if !d.is_uplink() => match inner.active.get(&d.dev_addr) {
                Some(tx) if tx.send(down()).is_ok() => Delivery::Delivered,
                _ => Delivery::Unclaimed,
            },
            _ => Delivery::Malformed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; recover the data if something ever did.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_network_server::lorawan::{build_data_downlink, build_join_accept, DataDownlink, JoinAcceptFields};
    use loraflow_network_server::region::Modulation;

    const RADIO: DownlinkRadio = DownlinkRadio {
        frequency: 869_525_000,
        modulation: Modulation::Lora { spreading_factor: 12, bandwidth: 125_000 },
        immediate: false,
    };

    #[test]
    fn a_join_accept_reaches_only_the_device_whose_key_matches() {
        let router = Router::default();
        let (tx_a, mut rx_a) = mpsc::unbounded_channel();
        let (tx_b, mut rx_b) = mpsc::unbounded_channel();
        router.expect_join(Eui64::from_u64(1), AesKey([1; 16]), tx_a);
        router.expect_join(Eui64::from_u64(2), AesKey([2; 16]), tx_b);
        let ja = build_join_accept(&AesKey([2; 16]), &JoinAcceptFields::default()).unwrap();
        assert_eq!(router.deliver(&ja, RADIO), Delivery::Delivered);
        assert_eq!(rx_b.try_recv().unwrap(), Downlink { phy: ja.clone(), radio: RADIO });
        assert!(rx_a.try_recv().is_err());
        // Delivered once: the device stops listening for join-accepts.
        assert_eq!(router.deliver(&ja, RADIO), Delivery::Unclaimed);
    }

    #[test]
    fn data_downlinks_go_by_dev_addr() {
        let router = Router::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        router.activate(DevAddr::from_u32(5), tx);
        let phy = |addr| {
            build_data_downlink(
                &DataDownlink { dev_addr: DevAddr::from_u32(addr), ..Default::default() },
                &AesKey([0; 16]),
                &AesKey([0; 16]),
            )
            .unwrap()
        };
        assert_eq!(router.deliver(&phy(5), RADIO), Delivery::Delivered);
        assert_eq!(rx.try_recv().unwrap().phy, phy(5));
        assert_eq!(router.deliver(&phy(6), RADIO), Delivery::Unclaimed);
        assert_eq!(router.deliver(&[0xff], RADIO), Delivery::Malformed);
    }
}
