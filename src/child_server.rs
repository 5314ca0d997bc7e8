//! A `loraflow serve` child process on ephemeral ports, for the tools that measure a server
//! (`bench`, `bench-query`). It is this same binary, so that what is measured is the real
//! server, and a child, so that its CPU time and peak RSS can be read from `/proc/<pid>` apart
//! from the tool's own.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start the child.
#[derive(Debug, Clone, Default)]
pub struct ChildSpec<'a> {
    /// `--config` handed on to the child.
    pub config_file: Option<&'a Path>,
    /// `database.url`; `None`: a SQLite file in the child's temporary working directory.
    pub database_url: Option<&'a str>,
    /// `RUST_LOG` of the child.
    pub log: &'a str,
    /// An external MQTT broker (`mqtt.url`); `None`: the embedded broker on an ephemeral port.
    pub mqtt_url: Option<&'a str>,
    /// Further `LORAFLOW_…` settings.
    pub env: Vec<(&'static str, String)>,
}

/// A running child server. Killed when dropped; [`ChildServer::stop`] ends it gracefully.
pub struct ChildServer {
    process: tokio::process::Child,
    pid: u32,
    /// `http://host:port` of its REST API.
    pub api: String,
    /// Its Semtech UDP address.
    pub gateway: SocketAddr,
    /// Its embedded MQTT broker, when it runs one.
    pub mqtt_embedded: Option<SocketAddr>,
    /// Its admin API token (random per start).
    pub token: String,
    _dir: tempfile::TempDir,
}

impl ChildServer {
    /// Starts the child and waits for its ready line.
    pub async fn spawn(spec: ChildSpec<'_>) -> anyhow::Result<ChildServer> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let database_url = match spec.database_url {
            Some(u) => u.to_string(),
            None => format!("sqlite://{}", dir.path().join("loraflow.db").display()),
        };
        let token = hex::encode(rand::random::<[u8; 16]>());
        let exe = std::env::current_exe().context("locating the loraflow executable")?;
        let mut cmd = tokio::process::Command::new(exe);
        if let Some(c) = spec.config_file {
            cmd.arg("--config").arg(std::path::absolute(c).unwrap_or_else(|_| c.to_path_buf()));
        }
        cmd.arg("serve")
            .current_dir(dir.path())
            .env("RUST_LOG", spec.log)
            .env("LORAFLOW_GATEWAY__BIND", "127.0.0.1:0")
            .env("LORAFLOW_API__BIND", "127.0.0.1:0")
            .env("LORAFLOW_API__ADMIN_TOKEN", &token)
            .env("LORAFLOW_DATABASE__URL", &database_url)
            .envs(spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match spec.mqtt_url {
            Some(url) => cmd.env("LORAFLOW_MQTT__URL", url),
            None => cmd.env("LORAFLOW_MQTT__URL", "").env("LORAFLOW_MQTT__EMBEDDED_BIND", "127.0.0.1:0"),
        };
        let mut process = cmd.spawn().context("starting the server process")?;
        let pid = process.id().ok_or_else(|| anyhow!("the server process exited at once"))?;
        let stdout = process.stdout.take().ok_or_else(|| anyhow!("no stdout of the server process"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("loraflow ready: ") {
                    return anyhow::Ok(Some(rest.to_string()));
                }
            }
            Ok(None)
        })
        .await;
        let ready = match ready {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = process.wait().await.ok();
                bail!("the server exited before it was ready ({status:?}); its errors are above");
            }
            Err(_) => bail!("the server was not ready within {} s", READY_TIMEOUT.as_secs()),
        };
        // Keep reading so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready = ReadyLine::parse(&ready)?;
        Ok(ChildServer {
            process,
            pid,
            api: format!("http://{}", ready.api),
            gateway: ready.gateway,
            mqtt_embedded: ready.mqtt,
            token,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// User + system CPU seconds of the child so far (`/proc/<pid>/stat` fields 14, 15).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = proc_stat_cpu_ticks(&stat)?;
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (hz > 0).then(|| ticks as f64 / hz as f64)
    }

    /// Peak resident set of the child (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        proc_status_kib(&status, "VmHWM:").map(|kib| (kib as f64 / 1024.0 * 10.0).round() / 10.0)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.process.wait()).await.is_err() {
            let _ = self.process.kill().await;
        }
    }
}

/// The addresses in `loraflow ready: api=http://… gateway_udp=… mqtt_embedded=…`.
#[derive(Debug, PartialEq, Eq)]
struct ReadyLine {
    api: SocketAddr,
    gateway: SocketAddr,
    mqtt: Option<SocketAddr>,
}

impl ReadyLine {
    fn parse(rest: &str) -> anyhow::Result<ReadyLine> {
        let field = |name: &str| -> Option<SocketAddr> {
            rest.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.trim_start_matches("http://").parse().ok())
        };
        Ok(ReadyLine {
            api: field("api").ok_or_else(|| anyhow!("no api address in the ready line {rest:?}"))?,
            gateway: field("gateway_udp").ok_or_else(|| anyhow!("no gateway_udp address in the ready line {rest:?}"))?,
            mqtt: field("mqtt_embedded"),
        })
    }
}

/// utime + stime from `/proc/<pid>/stat`; the command name may contain spaces and
/// parentheses, so fields are counted after the last `)`.
fn proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is the first after the name: utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn proc_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// `CREATE DATABASE name` on the PostgreSQL server at `server`.
pub async fn create_postgres_database(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(server).await.with_context(|| "--database: cannot connect to PostgreSQL")?;
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.with_context(|| format!("--database: cannot create database {name}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// `DROP DATABASE name`, closing its connections.
pub async fn drop_postgres_database(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(server).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_the_bound_addresses() {
        let r = ReadyLine::parse("api=http://127.0.0.1:4000 gateway_udp=127.0.0.1:4001 mqtt_embedded=127.0.0.1:4002").unwrap();
        assert_eq!(r.api.port(), 4000);
        assert_eq!(r.gateway.port(), 4001);
        assert_eq!(r.mqtt.map(|m| m.port()), Some(4002));
        assert_eq!(ReadyLine::parse("api=http://127.0.0.1:4000 gateway_udp=127.0.0.1:4001").unwrap().mqtt, None);
        assert!(ReadyLine::parse("api=http://127.0.0.1:4000").is_err());
    }

    #[test]
    fn proc_files_give_cpu_ticks_and_peak_rss() {
        let stat = "1234 (loraflow (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 8 0 100 0 0";
        assert_eq!(proc_stat_cpu_ticks(stat), Some(290));
        let status = "Name:\tloraflow\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(proc_status_kib(status, "VmHWM:"), Some(51200));
    }
}
