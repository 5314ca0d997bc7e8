//! `mqtts://` against a real Mosquitto with a CA, server and client certificates made by
//! the test (openssl CLI): events out and commands in over TLS, the broker certificate
//! really verified, and the client certificate presented for mutual TLS.

mod mqtt_support;

// In a module named `mqtt` so that `cargo test -p loraflow-app-server mqtt` selects them.
mod mqtt {
    use super::mqtt_support;

    use std::net::{SocketAddr, TcpStream};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use loraflow_app_server::mqtt::{MqttConfig, MqttHandle, MqttIntegration};
    use mqtt_support::{free_port, payloads, Subscriber};
    use rumqttc::QoS;
    use tokio_util::sync::CancellationToken;

    const TOPIC: &str = "loraflow-tls-test/events";
    const DEV_EUI: &str = "0102030405060708";

    /// A CA, a server certificate for 127.0.0.1/localhost and a client certificate signed
    /// by it, plus an unrelated CA that signed nothing of the broker's.
    struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        fn ca(&self) -> String {
            self.path("ca.pem")
        }
        fn other_ca(&self) -> String {
            self.path("other-ca.pem")
        }
        fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }

        fn create(dir: &Path) -> Self {
            let pki = Pki { dir: dir.to_path_buf() };
            pki.self_signed_ca("ca", "loraflow test CA");
            pki.self_signed_ca("other-ca", "unrelated test CA");
            pki.signed_by_ca("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
            pki.signed_by_ca("wrong-name", "broker.invalid", "subjectAltName=DNS:broker.invalid\nextendedKeyUsage=serverAuth\n");
            pki.signed_by_ca("client", "loraflow-client", "extendedKeyUsage=clientAuth\n");
            // Mosquitto started as root drops to its own user, which must still read these.
            for entry in std::fs::read_dir(dir).unwrap() {
                std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            pki
        }

        fn key(&self, name: &str) {
            openssl(&self.dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &format!("{name}-key.pem")]);
        }

        fn self_signed_ca(&self, name: &str, cn: &str) {
            self.key(name);
            openssl(
                &self.dir,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    &format!("{name}-key.pem"),
                    "-subj",
                    &format!("/CN={cn}"),
                    "-days",
                    "2",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }

        /// webpki refuses CA certificates as end entities, hence CA:FALSE.
        fn signed_by_ca(&self, name: &str, cn: &str, extensions: &str) {
            self.key(name);
            openssl(
                &self.dir,
                &["req", "-new", "-key", &format!("{name}-key.pem"), "-subj", &format!("/CN={cn}"), "-out", &format!("{name}.csr")],
            );
            let ext = format!("{name}.ext");
            std::fs::write(
                self.dir.join(&ext),
                format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
            )
            .unwrap();
            openssl(
                &self.dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca-key.pem",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("/usr/bin/openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A Mosquitto with a plain listener (for the test's own clients), a TLS listener, a TLS
    /// listener whose certificate (from the same CA) names another host, and a TLS listener
    /// that requires a client certificate signed by the CA.
    struct TlsBroker {
        plain: u16,
        tls: u16,
        wrong_name: u16,
        mutual: u16,
        pki: Pki,
        child: Child,
    }

    impl TlsBroker {
        fn start() -> Self {
            let dir = std::env::temp_dir().join(format!("loraflow-mosquitto-tls-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let pki = Pki::create(&dir);
            let (plain, tls, wrong_name, mutual) = (free_port(), free_port(), free_port(), free_port());
            let files = |name: &str| {
                format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\n",
                    pki.ca(),
                    pki.path(&format!("{name}.pem")),
                    pki.path(&format!("{name}-key.pem"))
                )
            };
            let tls_files = files("server");
            let wrong_name_files = files("wrong-name");
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "per_listener_settings false\nallow_anonymous true\nlog_dest stderr\n\
                     listener {plain} 127.0.0.1\n\
                     listener {tls} 127.0.0.1\n{tls_files}\
                     listener {wrong_name} 127.0.0.1\n{wrong_name_files}\
                     listener {mutual} 127.0.0.1\n{tls_files}require_certificate true\n"
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
            let child = Command::new("/usr/sbin/mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run /usr/sbin/mosquitto");
            let broker = TlsBroker { plain, tls, wrong_name, mutual, pki, child };
            let deadline = Instant::now() + Duration::from_secs(10);
            for port in [plain, tls, wrong_name, mutual] {
                while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
                    assert!(Instant::now() < deadline, "mosquitto did not listen on {port}: {}", broker.log());
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            broker
        }

        fn plain_addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.plain))
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.pki.dir.join("mosquitto.log")).unwrap_or_default()
        }
    }

    impl Drop for TlsBroker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.pki.dir);
        }
    }

    async fn start(
        cfg: MqttConfig,
    ) -> (MqttHandle, tokio::sync::mpsc::Receiver<loraflow_app_server::mqtt::DownlinkCommand>, CancellationToken) {
        let shutdown = CancellationToken::new();
        let (mqtt, commands, embedded) = MqttIntegration::start(&cfg, &prometheus::Registry::new(), shutdown.clone()).await.unwrap();
        assert_eq!(embedded, None);
        (mqtt, commands, shutdown)
    }

    async fn wait_connected(mqtt: &MqttHandle, broker: &TlsBroker) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mqtt.is_connected() {
            assert!(Instant::now() < deadline, "no TLS connection within 10 s; mosquitto log:\n{}", broker.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Watches for `within`, so that a connection that succeeds late is caught too.
    async fn assert_never_connects(mqtt: &MqttHandle, within: Duration, why: &str) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            assert!(!mqtt.is_connected(), "connected although {why}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mqtt: MqttHandle, shutdown: CancellationToken) {
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), mqtt.stopped()).await.expect("stopped");
    }

    /// Events reach a plain subscriber and a command published in plain reaches us.
    async fn events_and_commands_flow(
        mqtt: &MqttHandle,
        commands: &mut tokio::sync::mpsc::Receiver<loraflow_app_server::mqtt::DownlinkCommand>,
        broker: &TlsBroker,
        prefix: &str,
    ) {
        let mut sub = Subscriber::connect(broker.plain_addr(), &format!("{TOPIC}/#"), false).await;
        let msgs = payloads(prefix, 20);
        for m in &msgs {
            mqtt.publish(format!("{TOPIC}/{prefix}"), m.clone().into_bytes()).unwrap();
        }
        assert_eq!(sub.expect_all(&msgs, Duration::from_secs(10)).await, msgs);
        assert!(mqtt.flush(Duration::from_secs(5)).await, "all acknowledged over TLS");

        // The command subscription is sent right after the CONNACK and may not be active
        // yet: publish again until it arrives.
        let app = uuid::Uuid::new_v4().to_string();
        let topic = format!("application/{app}/device/{DEV_EUI}/command/down");
        let payload = format!(r#"{{"devEui":"{DEV_EUI}","confirmed":false,"fPort":10,"data":"AQI=","via":"{prefix}"}}"#);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let command = loop {
            sub.client.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone().into_bytes()).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(300), commands.recv()).await {
                Ok(Some(c)) => break c,
                Ok(None) => panic!("command channel closed"),
                Err(_) => assert!(tokio::time::Instant::now() < deadline, "no command received over TLS within 10 s"),
            }
        };
        assert_eq!(command.application_id, app);
        assert_eq!(command.dev_eui, DEV_EUI);
        assert_eq!(command.payload, payload.into_bytes());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_broker_ca_events_go_out_and_commands_come_in_over_tls() {
        let broker = TlsBroker::start();
        let cfg = MqttConfig { url: format!("mqtts://127.0.0.1:{}", broker.tls), tls_ca_file: broker.pki.ca(), ..MqttConfig::default() };
        let (mqtt, mut commands, shutdown) = start(cfg).await;
        wait_connected(&mqtt, &broker).await;
        events_and_commands_flow(&mqtt, &mut commands, &broker, "tls").await;
        stop(mqtt, shutdown).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_host_name_in_the_url_is_checked_against_the_certificate_names() {
        let broker = TlsBroker::start();
        // Trusted CA, but the certificate is for broker.invalid, not 127.0.0.1.
        let (mismatch, _c, mismatch_stop) = start(MqttConfig {
            url: format!("mqtts://127.0.0.1:{}", broker.wrong_name),
            tls_ca_file: broker.pki.ca(),
            ..MqttConfig::default()
        })
        .await;
        assert_never_connects(&mismatch, Duration::from_secs(2), "the certificate names another host").await;
        stop(mismatch, mismatch_stop).await;

        // `localhost` is in the certificate's names just like 127.0.0.1.
        let cfg = MqttConfig { url: format!("mqtts://localhost:{}", broker.tls), tls_ca_file: broker.pki.ca(), ..MqttConfig::default() };
        let (mqtt, _commands, shutdown) = start(cfg).await;
        wait_connected(&mqtt, &broker).await;
        stop(mqtt, shutdown).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_certificate_from_an_untrusted_ca_is_refused() {
        let broker = TlsBroker::start();
        let url = format!("mqtts://127.0.0.1:{}", broker.tls);

        // System roots only. A container without any would fail at start naming the key,
        // which also refuses the broker; this machine has them, so the handshake is tried.
        let system = MqttConfig { url: url.clone(), ..MqttConfig::default() };
        let (system_mqtt, _c1, system_stop) = start(system).await;
        // A CA file, but of another CA.
        let other = MqttConfig { url: url.clone(), tls_ca_file: broker.pki.other_ca(), ..MqttConfig::default() };
        let (other_mqtt, _c2, other_stop) = start(other).await;
        let both = async {
            tokio::join!(
                assert_never_connects(&system_mqtt, Duration::from_secs(2), "the broker's CA is not among the system roots"),
                assert_never_connects(&other_mqtt, Duration::from_secs(2), "the CA file holds another CA"),
            )
        };
        both.await;

        // Same listener, right CA: the refusals above were the certificate check, not the broker.
        let (good, _c3, good_stop) = start(MqttConfig { url, tls_ca_file: broker.pki.ca(), ..MqttConfig::default() }).await;
        wait_connected(&good, &broker).await;

        stop(system_mqtt, system_stop).await;
        stop(other_mqtt, other_stop).await;
        stop(good, good_stop).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_client_certificate_the_client_connects_where_one_is_required() {
        let broker = TlsBroker::start();
        let url = format!("mqtts://127.0.0.1:{}", broker.mutual);

        // Without a client certificate the broker refuses us: the listener really requires one.
        let (anonymous, _c, anonymous_stop) =
            start(MqttConfig { url: url.clone(), tls_ca_file: broker.pki.ca(), ..MqttConfig::default() }).await;
        assert_never_connects(&anonymous, Duration::from_secs(2), "no client certificate was presented").await;
        stop(anonymous, anonymous_stop).await;

        let cfg = MqttConfig {
            url,
            tls_ca_file: broker.pki.ca(),
            tls_cert_file: broker.pki.path("client.pem"),
            tls_key_file: broker.pki.path("client-key.pem"),
            ..MqttConfig::default()
        };
        let (mqtt, mut commands, shutdown) = start(cfg).await;
        wait_connected(&mqtt, &broker).await;
        events_and_commands_flow(&mqtt, &mut commands, &broker, "mutual").await;
        stop(mqtt, shutdown).await;
    }
}
