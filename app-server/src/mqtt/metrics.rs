//! Prometheus metrics of the MQTT transport, registered in the caller's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub(crate) struct MqttMetrics {
    /// Publishes the broker acknowledged (PUBACK).
    pub published: IntCounter,
    /// Publishes that did not get through on the first attempt (connection lost before
    /// PUBACK: re-sent after reconnect), abandoned at shutdown, or refused as invalid.
    pub publish_failures: IntCounter,
    /// Accepted messages not yet acknowledged by the broker.
    pub queue_depth: IntGauge,
    /// Messages refused by `publish` because the queue was full or closed.
    pub queue_dropped: IntCounter,
    pub connected: IntGauge,
    pub commands_received: IntCounter,
    /// Downlink commands dropped because their consumer did not keep up.
    pub commands_dropped: IntCounter,
    /// Command messages refused before parsing (larger than `MAX_COMMAND_SIZE`).
    pub commands_rejected: IntCounter,
    /// Connection losses of loraflow's own client.
    pub reconnects: IntCounter,
    /// Embedded broker: rumqttd instances replaced after failed health probes.
    pub embedded_restarts: IntCounter,
    /// Embedded broker: client connections open on `mqtt.embedded_bind`.
    pub embedded_connections: IntGauge,
    /// Embedded broker: connections refused at `mqtt.embedded_max_connections`.
    pub embedded_refused: IntCounter,
    /// Embedded broker: clients refused by the access rules, by reason.
    pub embedded_denied: IntCounterVec,
}

impl MqttMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = MqttMetrics {
            published: IntCounter::new("loraflow_mqtt_published_total", "MQTT messages published and acknowledged by the broker")?,
            publish_failures: IntCounter::new(
                "loraflow_mqtt_publish_failures_total",
                "MQTT publish attempts that failed (connection lost before PUBACK, abandoned at shutdown, invalid)",
            )?,
            queue_depth: IntGauge::new("loraflow_mqtt_queue_depth", "MQTT messages accepted but not yet acknowledged by the broker")?,
            queue_dropped: IntCounter::new(
                "loraflow_mqtt_queue_dropped_total",
                "MQTT messages dropped because the publish queue was full (mqtt.queue_size)",
            )?,
            connected: IntGauge::new("loraflow_mqtt_connected", "1 while connected to the MQTT broker, else 0")?,
            commands_received: IntCounter::new("loraflow_mqtt_commands_received_total", "Downlink command messages received over MQTT")?,
            commands_dropped: IntCounter::new(
                "loraflow_mqtt_commands_dropped_total",
                "Downlink command messages dropped because the command queue was full",
            )?,
            commands_rejected: IntCounter::new(
                "loraflow_mqtt_commands_rejected_total",
                "Downlink command messages refused before parsing because they are too large",
            )?,
            reconnects: IntCounter::new("loraflow_mqtt_connection_losses_total", "Times the connection to the MQTT broker was lost")?,
            embedded_restarts: IntCounter::new(
                "loraflow_mqtt_embedded_restarts_total",
                "Embedded MQTT broker instances replaced because they stopped answering health probes",
            )?,
            embedded_connections: IntGauge::new(
                "loraflow_mqtt_embedded_connections",
                "Client connections open on the embedded MQTT broker's address (mqtt.embedded_bind)",
            )?,
            embedded_refused: IntCounter::new(
                "loraflow_mqtt_embedded_refused_total",
                "Connections refused by the embedded MQTT broker at mqtt.embedded_max_connections",
            )?,
            embedded_denied: IntCounterVec::new(
                Opts::new(
                    "loraflow_mqtt_embedded_denied_total",
                    "Embedded MQTT broker clients refused by the access rules (bad or missing credentials, a topic of another application)",
                ),
                &["reason"],
            )?,
        };
        // Every reason shows from the start, at 0.
        for reason in super::gate::Denied::ALL {
            m.embedded_denied.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.publish_failures.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.queue_dropped.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.commands_received.clone()))?;
        registry.register(Box::new(m.commands_dropped.clone()))?;
        registry.register(Box::new(m.commands_rejected.clone()))?;
        registry.register(Box::new(m.reconnects.clone()))?;
        registry.register(Box::new(m.embedded_restarts.clone()))?;
        registry.register(Box::new(m.embedded_connections.clone()))?;
        registry.register(Box::new(m.embedded_refused.clone()))?;
        registry.register(Box::new(m.embedded_denied.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_metrics_are_registered_under_their_names() {
        let registry = Registry::new();
        let m = MqttMetrics::register(&registry).unwrap();
        m.published.inc();
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_string()).collect();
        for name in [
            "loraflow_mqtt_published_total",
            "loraflow_mqtt_publish_failures_total",
            "loraflow_mqtt_queue_depth",
            "loraflow_mqtt_queue_dropped_total",
            "loraflow_mqtt_connected",
            "loraflow_mqtt_commands_received_total",
            "loraflow_mqtt_commands_dropped_total",
            "loraflow_mqtt_commands_rejected_total",
            "loraflow_mqtt_connection_losses_total",
            "loraflow_mqtt_embedded_restarts_total",
            "loraflow_mqtt_embedded_connections",
            "loraflow_mqtt_embedded_refused_total",
            "loraflow_mqtt_embedded_denied_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn registering_twice_in_one_registry_fails() {
        let registry = Registry::new();
        MqttMetrics::register(&registry).unwrap();
        assert!(MqttMetrics::register(&registry).is_err());
    }
}
