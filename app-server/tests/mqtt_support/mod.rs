//! Real brokers and a real subscriber for the MQTT transport tests.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Mosquitto started by the test on its own port, with persistence in its own directory
/// so that a persistent subscriber session survives a broker restart.
pub struct Mosquitto {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Configuration lines after the listener's (`allow_anonymous true` unless they say).
    extra_conf: String,
}

impl Mosquitto {
    pub fn start_new() -> Self {
        Self::start_with(|_| String::new())
    }

    /// With configuration lines made from the broker's own directory (for password and ACL
    /// files the test writes there).
    pub fn start_with(conf: impl FnOnce(&std::path::Path) -> String) -> Self {
        let dir = std::env::temp_dir().join(format!("loraflow-mosquitto-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // Mosquitto started as root drops to its own user, which must still write here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let extra_conf = conf(&dir);
        let mut m = Mosquitto { port: free_port(), dir, child: None, extra_conf };
        m.restart();
        m
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and directory; returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\n{}persistence true\npersistence_location {}/\n\
                 max_queued_messages 1000000\nlog_dest none\n{}\n",
                self.port,
                if self.extra_conf.contains("allow_anonymous") { "" } else { "allow_anonymous true\n" },
                self.dir.display(),
                self.extra_conf
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run /usr/sbin/mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {}", self.addr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: Mosquitto saves its sessions and exits.
    pub fn stop(&mut self) {
        self.signal("TERM");
        self.wait();
    }

    /// SIGKILL: nothing saved, every connection reset.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            c.kill().unwrap();
        }
        self.wait();
    }

    /// SIGSTOP: connections stay open but nothing is read or acknowledged.
    pub fn freeze(&mut self) {
        self.signal("STOP");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid}");
    }

    fn wait(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.wait().unwrap();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain rumqttc subscriber that (re)subscribes on every connect and hands over
/// every message it receives as (topic, payload).
pub struct Subscriber {
    pub client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// `persistent`: clean_session = false under a fixed random id, so a broker with
    /// persistence keeps queueing for it while it is away.
    pub async fn connect(addr: SocketAddr, filter: &str, persistent: bool) -> Self {
        let id = format!("probe-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_clean_session(!persistent);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, messages) = mpsc::unbounded_channel();
        let (subscribed_tx, mut subscribed_rx) = mpsc::unbounded_channel();
        let sub_client = client.clone();
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        sub_client.subscribe(filter.clone(), QoS::AtLeastOnce).await.unwrap();
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx.recv()).await.expect("subscriber connected and subscribed");
        Subscriber { client, messages, task }
    }

    /// The next message on exactly `topic`, as JSON; messages on other topics are skipped.
    /// Panics after 10 s.
    pub async fn next_json(&mut self, topic: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (t, payload) = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic}"))
                .expect("subscriber open");
            if t == topic {
                return serde_json::from_slice(&payload).expect("JSON payload");
            }
        }
    }

    /// Receives until every payload in `expected` was seen (duplicates allowed, QoS 1 is
    /// at least once); returns the payloads in order of first arrival.
    pub async fn expect_all(&mut self, expected: &[String], within: Duration) -> Vec<String> {
        let mut missing: std::collections::HashSet<&str> = expected.iter().map(String::as_str).collect();
        let mut first_seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while !missing.is_empty() {
            let (_, payload) = match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) => m,
                _ => panic!("{} of {} messages never arrived, e.g. {:?}", missing.len(), expected.len(), missing.iter().next()),
            };
            let payload = String::from_utf8(payload).unwrap();
            if missing.remove(payload.as_str()) {
                first_seen.push(payload);
            }
        }
        first_seen
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn metric(registry: &prometheus::Registry, name: &str) -> f64 {
    let family = registry.gather().into_iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("{name} not registered"));
    let m = &family.get_metric()[0];
    if m.get_counter().get_value() != 0.0 {
        m.get_counter().get_value()
    } else {
        m.get_gauge().get_value()
    }
}

pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn payloads(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}
