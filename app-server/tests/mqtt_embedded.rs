//! The MQTT transport against its embedded broker (rumqttd) on port 0.

mod mqtt_support;

// In a module named `mqtt` so that `cargo test -p loraflow-app-server mqtt` selects them.
mod mqtt {
    use super::mqtt_support;

    use std::time::Duration;

    use loraflow_app_server::mqtt::{MqttConfig, MqttIntegration};
    use mqtt_support::{metric, payloads, Subscriber};
    use rumqttc::QoS;
    use tokio_util::sync::CancellationToken;

    fn embedded_config() -> MqttConfig {
        MqttConfig { embedded_bind: "127.0.0.1:0".parse().unwrap(), ..MqttConfig::default() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_broker_on_port_zero_delivers_every_event_in_order() {
        let registry = prometheus::Registry::new();
        let shutdown = CancellationToken::new();
        let (mqtt, _commands, addr) = MqttIntegration::start(&embedded_config(), &registry, shutdown.clone()).await.unwrap();
        let addr = addr.expect("embedded broker address");
        assert_ne!(addr.port(), 0);
        assert!(mqtt.is_connected());
        assert_eq!(metric(&registry, "loraflow_mqtt_connected"), 1.0);

        let mut sub = Subscriber::connect(addr, "application/+/device/+/event/up", false).await;
        let app = uuid::Uuid::new_v4();
        let sent = payloads("up", 1000);
        for p in &sent {
            mqtt.publish(format!("application/{app}/device/0102030405060708/event/up"), p.clone().into_bytes()).unwrap();
        }
        let got = sub.expect_all(&sent, Duration::from_secs(20)).await;
        assert_eq!(got, sent, "first arrivals in publish order");
        assert!(mqtt.flush(Duration::from_secs(5)).await);
        assert_eq!(mqtt.queue_depth(), 0);
        assert_eq!(metric(&registry, "loraflow_mqtt_published_total"), 1000.0);
        assert_eq!(metric(&registry, "loraflow_mqtt_queue_depth"), 0.0);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), mqtt.stopped()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_published_by_a_client_arrives_on_the_commands_receiver() {
        let registry = prometheus::Registry::new();
        let (mqtt, mut commands, addr) = MqttIntegration::start(&embedded_config(), &registry, CancellationToken::new()).await.unwrap();
        assert!(mqtt.is_connected(), "start returns once subscribed");

        let sub = Subscriber::connect(addr.unwrap(), "nothing/here", false).await;
        let app = uuid::Uuid::new_v4().to_string();
        let body = br#"{"devEui":"0102030405060708","confirmed":false,"fPort":10,"data":"AQID"}"#;
        sub.client
            .publish(format!("application/{app}/device/0102030405060708/command/down"), QoS::AtLeastOnce, false, body.to_vec())
            .await
            .unwrap();
        // Not a command topic: must not come out of the receiver.
        sub.client
            .publish(format!("application/{app}/device/0102030405060708/event/up"), QoS::AtLeastOnce, false, b"x".to_vec())
            .await
            .unwrap();

        let command = tokio::time::timeout(Duration::from_secs(5), commands.recv()).await.expect("command in time").unwrap();
        assert_eq!(command.application_id, app);
        assert_eq!(command.dev_eui, "0102030405060708");
        assert_eq!(command.payload, body.to_vec());
        assert_eq!(metric(&registry, "loraflow_mqtt_commands_received_total"), 1.0);
        assert!(tokio::time::timeout(Duration::from_millis(300), commands.recv()).await.is_err(), "only the one command");
    }

    #[tokio::test]
    async fn an_embedded_bind_address_in_use_is_reported_with_the_key_that_moves_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = MqttConfig { embedded_bind: taken.local_addr().unwrap(), ..MqttConfig::default() };
        let e = MqttIntegration::start(&cfg, &prometheus::Registry::new(), CancellationToken::new())
            .await
            .err()
            .expect("address in use")
            .to_string();
        assert!(e.contains(&taken.local_addr().unwrap().to_string()), "{e}");
        assert!(e.contains("mqtt.embedded_bind") && e.contains("LORAFLOW_MQTT__EMBEDDED_BIND"), "{e}");
    }
}
