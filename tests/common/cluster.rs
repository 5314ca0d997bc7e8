//! Several loraflow instances as one network: one fresh PostgreSQL database, the machine's
//! Redis under a key prefix of the test's own (so tests never see each other's keys or
//! channels), and one Mosquitto the test starts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Api, TestServer};

/// The machine's Redis (scripts/test starts it).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

pub struct TestCluster {
    pub instances: Vec<TestServer>,
    pub database_url: String,
    pub mqtt_url: String,
    /// `cluster.key_prefix` of every instance.
    pub prefix: String,
    extra_env: Vec<(String, String)>,
}

impl TestCluster {
    /// Starts `n` instances on `mqtt_url` (an external broker), one after the other.
    pub async fn start(n: usize, mqtt_url: &str, extra_env: &[(&str, &str)]) -> TestCluster {
        let database_url = loraflow_network_server::storage::testing::fresh_postgres_url().await;
        let prefix = format!("lftest-{}", uuid::Uuid::new_v4().simple());
        let mut cluster = TestCluster {
            instances: Vec::new(),
            database_url,
            mqtt_url: mqtt_url.to_string(),
            prefix,
            extra_env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        for i in 0..n {
            let server = cluster.spawn(i);
            cluster.instances.push(server);
        }
        cluster
    }

    /// Starts instance `i` (again, after `kill`), on the cluster's database, Redis prefix and broker.
    pub fn spawn(&self, i: usize) -> TestServer {
        let id = format!("node{i}");
        let mut env: Vec<(&str, &str)> = vec![
            ("LORAFLOW_CLUSTER__REDIS_URL", REDIS_URL),
            ("LORAFLOW_CLUSTER__KEY_PREFIX", &self.prefix),
            ("LORAFLOW_CLUSTER__INSTANCE_ID", &id),
            ("LORAFLOW_MQTT__URL", &self.mqtt_url),
        ];
        let client_id = format!("{}-{id}", self.prefix);
        env.push(("LORAFLOW_MQTT__CLIENT_ID", &client_id));
        for (k, v) in &self.extra_env {
            env.push((k, v));
        }
        TestServer::start_on(&self.database_url, &env)
    }

    pub fn api(&self, i: usize) -> Api {
        self.instances[i].client()
    }

    /// Replaces instance `i` with a freshly started one (after a SIGKILL, say).
    pub fn restart(&mut self, i: usize) {
        let server = self.spawn(i);
        self.instances[i] = server;
    }
}

/// A `redis-server` of the test's own, so that it can be killed and started again (Redis
/// outages); the machine's Redis is shared by every test.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
