//! Each device's events for its live watchers, taken where they are published on MQTT.

use std::sync::Arc;

use loraflow_network_server::feed::Feed;
use loraflow_network_server::types::Eui64;

use crate::integration::EventPublisher;
use crate::mqtt::MqttQueueFull;

/// Events kept per watched device for its slowest watcher.
pub const EVENTS_PER_DEVICE: usize = 256;

/// One published event: its MQTT event name and its JSON exactly as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    pub kind: Arc<str>,
    pub json: Arc<str>,
}

/// Devices' events, by DevEUI.
pub type DeviceFeed = Feed<Eui64, DeviceEvent>;

pub fn device_feed() -> DeviceFeed {
    Feed::new(EVENTS_PER_DEVICE)
}

/// The device and event name of an event topic,
/// `application/{applicationId}/device/{devEui}/event/{kind}`; `None` for other topics.
pub fn device_event_topic(topic: &str) -> Option<(Eui64, &str)> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("application"), Some(_), Some("device"), Some(eui), Some("event"), Some(kind), None) if !kind.is_empty() => {
            Some((eui.parse().ok()?, kind))
        }
        _ => None,
    }
}

/// The MQTT publisher with the live feed beside it: every event published goes to the
/// watchers of its device first (in the same call, so in publication order), then to MQTT.
/// When nobody watches any device this costs one atomic load: no parsing, no copy.
pub struct LivePublisher {
    inner: Arc<dyn EventPublisher>,
    devices: DeviceFeed,
}

impl LivePublisher {
    pub fn new(inner: Arc<dyn EventPublisher>, devices: DeviceFeed) -> LivePublisher {
        LivePublisher { inner, devices }
    }
}

impl EventPublisher for LivePublisher {
    fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), MqttQueueFull> {
        if self.devices.any_watched() {
            if let Some((dev_eui, kind)) = device_event_topic(&topic) {
                // The watchers see what was published, even if the MQTT queue is full.
                self.devices.send_with(dev_eui, || DeviceEvent { kind: kind.into(), json: String::from_utf8_lossy(&payload).into() });
            }
        }
        self.inner.publish(topic, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loraflow_network_server::feed::Next;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl EventPublisher for Recorder {
        fn publish(&self, topic: String, _payload: Vec<u8>) -> Result<(), MqttQueueFull> {
            self.0.lock().unwrap().push(topic);
            Ok(())
        }
    }

    #[test]
    fn event_topics_name_their_device_and_kind() {
        let eui: Eui64 = "0102030405060708".parse().unwrap();
        assert_eq!(device_event_topic("application/a/device/0102030405060708/event/up"), Some((eui, "up")));
        for other in [
            "application/a/device/0102030405060708/command/down",
            "application/a/device/nothex/event/up",
            "application/a/device/0102030405060708/event/up/extra",
            "gateway/x/event/up",
        ] {
            assert_eq!(device_event_topic(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn watchers_get_their_devices_events_in_order_and_mqtt_gets_everything() {
        let mqtt = Arc::new(Recorder::default());
        let feed = device_feed();
        let publisher = LivePublisher::new(mqtt.clone(), feed.clone());
        let watched: Eui64 = "0102030405060708".parse().unwrap();
        let mut watch = feed.watch(watched);
        publisher.publish("application/a/device/0102030405060708/event/join".into(), b"{\"a\":1}".to_vec()).unwrap();
        publisher.publish("application/a/device/ffffffffffffffff/event/up".into(), b"{}".to_vec()).unwrap();
        publisher.publish("application/a/device/0102030405060708/event/up".into(), b"{\"b\":2}".to_vec()).unwrap();
        assert_eq!(mqtt.0.lock().unwrap().len(), 3);
        let expect = |kind: &str, json: &str| Some(Next::Item(DeviceEvent { kind: kind.into(), json: json.into() }));
        assert_eq!(watch.next().await, expect("join", "{\"a\":1}"));
        assert_eq!(watch.next().await, expect("up", "{\"b\":2}"));
    }
}
