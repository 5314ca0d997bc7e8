//! Each device's events for its live watchers, taken where they are published on MQTT.

use std::sync::Arc;

use loraflow_network_server::feed::Feed;
use loraflow_network_server::types::Eui64;

use crate::integration::{EventPublisher, Message};
use crate::mqtt::MqttQueueFull;

/// Events kept per watched device for its slowest watcher.
pub const EVENTS_PER_DEVICE: usize = 256;

/// One published event: its MQTT event name and its JSON exactly as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    pub kind: &'static str,
    pub json: Arc<str>,
}

/// Devices' events, by DevEUI.
pub type DeviceFeed = Feed<Eui64, DeviceEvent>;

pub fn device_feed() -> DeviceFeed {
    Feed::new(EVENTS_PER_DEVICE)
}

/// The MQTT publisher with the live feed beside it: every event published goes to the
/// watchers of its device first (in the same call, so in publication order), then to MQTT.
/// When nobody watches any device this costs one atomic load: no copy.
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
    fn publish(&self, message: Message) -> Result<(), MqttQueueFull> {
        if self.devices.any_watched() {
            // The watchers see what was published, even if the MQTT queue is full.
            self.devices
                .send_with(message.dev_eui, || DeviceEvent { kind: message.kind, json: String::from_utf8_lossy(&message.payload).into() });
        }
        self.inner.publish(message)
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
        fn publish(&self, m: Message) -> Result<(), MqttQueueFull> {
            self.0.lock().unwrap().push(m.topic);
            Ok(())
        }
    }

    #[tokio::test]
    async fn watchers_get_their_devices_events_in_order_and_mqtt_gets_everything() {
        let mqtt = Arc::new(Recorder::default());
        let feed = device_feed();
        let publisher = LivePublisher::new(mqtt.clone(), feed.clone());
        let watched: Eui64 = "0102030405060708".parse().unwrap();
        let mut watch = feed.watch(watched);
        let other = Eui64::from_u64(u64::MAX);
        let message = |kind, dev_eui: Eui64, json: &str| Message {
            kind,
            dev_eui,
            topic: format!("application/a/device/{dev_eui}/event/{kind}"),
            payload: json.as_bytes().to_vec(),
        };
        publisher.publish(message("join", watched, "{\"a\":1}")).unwrap();
        publisher.publish(message("up", other, "{}")).unwrap();
        publisher.publish(message("up", watched, "{\"b\":2}")).unwrap();
        assert_eq!(mqtt.0.lock().unwrap().len(), 3);
        let expect = |kind, json: &str| Some(Next::Item(DeviceEvent { kind, json: json.into() }));
        assert_eq!(watch.next().await, expect("join", "{\"a\":1}"));
        assert_eq!(watch.next().await, expect("up", "{\"b\":2}"));
    }
}
