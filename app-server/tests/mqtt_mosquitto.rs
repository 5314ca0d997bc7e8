//! The MQTT transport against a Mosquitto that each test starts, stops, freezes and kills
//! itself: nothing accepted may be lost, whether it waited in the queue during an outage
//! or was in flight (sent, not acknowledged) when the connection broke.

mod mqtt_support;

// In a module named `mqtt` so that `cargo test -p loraflow-app-server mqtt` selects them.
mod mqtt {
    use super::mqtt_support;

    use std::time::{Duration, Instant};

    use loraflow_app_server::mqtt::{MqttConfig, MqttIntegration, MqttQueueFull};
    use mqtt_support::{free_port, metric, payloads, wait_until, Mosquitto, Subscriber};
    use tokio_util::sync::CancellationToken;

    const TOPIC: &str = "loraflow-test/events";

    fn external(url: String, queue_size: usize) -> MqttConfig {
        MqttConfig { url, queue_size, ..MqttConfig::default() }
    }

    fn publish_all(mqtt: &loraflow_app_server::mqtt::MqttHandle, msgs: &[String]) {
        for m in msgs {
            mqtt.publish(TOPIC.to_string(), m.clone().into_bytes()).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_lost_across_broker_restarts_queued_or_in_flight() {
        let mut broker = Mosquitto::start_new();
        // Persistent session on a persistent broker: it keeps our subscription over the
        // restarts and queues for us while we reconnect, so whatever reaches the broker
        // reaches us, whoever reconnects first.
        let mut sub = Subscriber::connect(broker.addr(), "loraflow-test/#", true).await;

        let registry = prometheus::Registry::new();
        let (mqtt, _commands, addr) =
            MqttIntegration::start(&external(broker.url(), 10_000), &registry, CancellationToken::new()).await.unwrap();
        assert_eq!(addr, None);
        wait_until("connected", Duration::from_secs(10), || mqtt.is_connected()).await;

        // Connected: published and received.
        let a = payloads("a", 10);
        publish_all(&mqtt, &a);
        assert_eq!(sub.expect_all(&a, Duration::from_secs(10)).await, a);
        assert!(mqtt.flush(Duration::from_secs(5)).await);

        // Broker down: messages wait in the queue.
        broker.stop();
        wait_until("disconnected", Duration::from_secs(10), || !mqtt.is_connected()).await;
        assert_eq!(metric(&registry, "loraflow_mqtt_connected"), 0.0);
        let b = payloads("b", 500);
        publish_all(&mqtt, &b);
        assert_eq!(mqtt.queue_depth(), 500);

        // Broker back on the same port: all 500 delivered, in order.
        broker.restart();
        assert_eq!(sub.expect_all(&b, Duration::from_secs(30)).await, b);
        assert!(mqtt.flush(Duration::from_secs(5)).await);
        assert_eq!(mqtt.queue_depth(), 0);

        // Broker frozen: messages are sent but never acknowledged. Then it dies, losing
        // whatever it had not read; our copies must be sent again.
        let failures_before = metric(&registry, "loraflow_mqtt_publish_failures_total");
        broker.freeze();
        let c = payloads("c", 300);
        publish_all(&mqtt, &c);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(mqtt.queue_depth(), 300, "nothing acknowledged by a frozen broker");
        broker.kill();
        broker.restart();
        assert_eq!(sub.expect_all(&c, Duration::from_secs(30)).await, c);
        assert!(mqtt.flush(Duration::from_secs(5)).await);
        let resent = metric(&registry, "loraflow_mqtt_publish_failures_total") - failures_before;
        assert_eq!(resent, 300.0, "all 300 were in flight when the connection broke, and were re-sent");
        assert_eq!(metric(&registry, "loraflow_mqtt_published_total"), 810.0);
    }

    #[tokio::test]
    async fn with_no_broker_the_eleventh_message_is_refused_and_counted() {
        let registry = prometheus::Registry::new();
        let cfg = external(format!("mqtt://127.0.0.1:{}", free_port()), 10);
        let (mqtt, _commands, _) = MqttIntegration::start(&cfg, &registry, CancellationToken::new()).await.unwrap();
        for i in 0..10 {
            mqtt.publish(TOPIC.into(), format!("{i}").into_bytes()).expect("room in the queue");
        }
        assert_eq!(mqtt.publish(TOPIC.into(), b"10".to_vec()), Err(MqttQueueFull));
        assert_eq!(metric(&registry, "loraflow_mqtt_queue_dropped_total"), 1.0);
        assert_eq!(metric(&registry, "loraflow_mqtt_queue_depth"), 10.0);
        assert_eq!(mqtt.queue_depth(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_delivers_what_was_queued_before_disconnecting() {
        let broker = Mosquitto::start_new();
        let mut sub = Subscriber::connect(broker.addr(), "loraflow-test/#", false).await;
        let registry = prometheus::Registry::new();
        let shutdown = CancellationToken::new();
        let (mqtt, _commands, _) = MqttIntegration::start(&external(broker.url(), 100_000), &registry, shutdown.clone()).await.unwrap();
        wait_until("connected", Duration::from_secs(10), || mqtt.is_connected()).await;

        let msgs = payloads("s", 5000);
        publish_all(&mqtt, &msgs);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), mqtt.stopped()).await.expect("stopped within the flush time");
        assert_eq!(mqtt.queue_depth(), 0, "everything acknowledged before the disconnect");
        assert_eq!(metric(&registry, "loraflow_mqtt_published_total"), 5000.0);
        assert_eq!(sub.expect_all(&msgs, Duration::from_secs(10)).await, msgs);
        assert_eq!(mqtt.publish(TOPIC.into(), b"late".to_vec()), Err(MqttQueueFull), "stopped accepting");
        assert_eq!(metric(&registry, "loraflow_mqtt_connected"), 0.0);
    }

    /// Throughput to a local Mosquitto. Run with
    /// `cargo test -p loraflow-app-server --release --test mqtt_mosquitto -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement; run explicitly in release mode"]
    async fn throughput_to_a_local_mosquitto() {
        let broker = Mosquitto::start_new();
        let registry = prometheus::Registry::new();
        let (mqtt, _commands, _) =
            MqttIntegration::start(&external(broker.url(), 200_000), &registry, CancellationToken::new()).await.unwrap();
        wait_until("connected", Duration::from_secs(10), || mqtt.is_connected()).await;
        let payload = vec![b'x'; 600]; // about an uplink event
        let n = 200_000;
        let start = Instant::now();
        for i in 0..n {
            mqtt.publish(format!("application/a/device/{i:016x}/event/up"), payload.clone()).unwrap();
        }
        assert!(mqtt.flush(Duration::from_secs(60)).await, "all acknowledged");
        let secs = start.elapsed().as_secs_f64();
        println!("{n} messages of {} bytes acknowledged in {secs:.2} s: {:.0} msg/s", payload.len(), n as f64 / secs);
    }
}
