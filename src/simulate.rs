//! `loraflow simulate`: virtual gateways and OTAA devices against a running server, over its
//! real interfaces only (Semtech UDP and REST). For demos, soak tests and trying codecs.
//!
//! Gateways and devices get EUIs from fixed prefixes, so a rerun reuses what the last run
//! registered: an existing device gets a new AppKey and its DevNonces are cleared so that it
//! can join again from nonce 1.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use loraflow_network_server::types::Eui64;

use crate::sim::device::{random_key, VirtualDevice};
use crate::sim::gateway::Gateways;
use crate::sim::payload::PayloadKind;
use crate::sim::provision::Api;
use crate::sim::router::Router;
use crate::sim::{join, Radio, Snapshot, Stats};

/// "LFSIMG" + index: the simulator's gateways.
pub const GATEWAY_EUI_PREFIX: u64 = 0x4c46_5349_4d47_0000;
/// "LFSIMD" + index: the simulator's devices.
pub const DEVICE_EUI_PREFIX: u64 = 0x4c46_5349_4d44_0000;
/// Name of the application and device profile the simulator creates.
pub const NAME: &str = "loraflow-simulator";
/// Largest FRMPayload at EU868 DR5 (RP002-1.0.3 §2.4.6, no repeater, no FOpts).
const MAX_PAYLOAD: usize = 242;
/// REST calls in flight while registering devices.
const PROVISION_CONCURRENCY: usize = 8;

/// Virtual gateways and OTAA devices sending uplinks to a running server.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Semtech UDP address of the server (its `gateway.bind`).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: String,
    /// REST base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub api: String,
    /// Admin API token (Bearer).
    #[arg(long, env = "LORAFLOW_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Number of virtual gateways; every device is heard by all of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub gateways: u32,
    /// Number of virtual OTAA devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub devices: u32,
    /// Seconds between two uplinks of one device (devices are staggered).
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Uplink payload as hex (default: a 4-byte counter).
    #[arg(long, value_name = "HEX", conflicts_with = "lpp")]
    pub payload: Option<String>,
    /// Send Cayenne LPP temperature + humidity and give the profile the CAYENNE_LPP codec.
    #[arg(long)]
    pub lpp: bool,
    /// FPort of the uplinks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=223))]
    pub f_port: u8,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
}

impl SimulateArgs {
    fn payload_kind(&self) -> anyhow::Result<PayloadKind> {
        if self.lpp {
            return Ok(PayloadKind::Lpp);
        }
        match &self.payload {
            None => Ok(PayloadKind::Counter),
            Some(h) => {
                let bytes = hex::decode(h.trim()).context("--payload: expected hex bytes, e.g. 0102ff")?;
                if bytes.len() > MAX_PAYLOAD {
                    bail!("--payload: {} bytes is more than the {MAX_PAYLOAD} an EU868 uplink can carry", bytes.len());
                }
                Ok(PayloadKind::Fixed(bytes))
            }
        }
    }
}

/// Runs the simulation until Ctrl-C or `--seconds`; prints a line per second and a final
/// `simulate done: sent=… joined=… downlinks=… errors=…`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<Snapshot> {
    let payload = args.payload_kind()?;
    if !(args.interval.is_finite() && args.interval >= 0.01) {
        bail!("--interval: expected seconds >= 0.01, got {}", args.interval);
    }
    let server = tokio::net::lookup_host(&args.server)
        .await
        .with_context(|| format!("--server {}: cannot resolve", args.server))?
        .next()
        .with_context(|| format!("--server {}: no address", args.server))?;
    let api = Api::new(&args.api, &args.token);

    let codec = if args.lpp { "CAYENNE_LPP" } else { "NONE" };
    let application_id = api.ensure_application(NAME).await.context("creating the application")?;
    let profile_id = api.ensure_device_profile(NAME, codec).await.context("creating the device profile")?;

    let gateways = Gateways::bind(GATEWAY_EUI_PREFIX, args.gateways as usize, server).await.context("binding gateway sockets")?;
    for (i, eui) in gateways.euis().into_iter().enumerate() {
        api.ensure_gateway(eui, &format!("sim-gw-{i}")).await.context("registering gateways")?;
    }

    let devices: Vec<VirtualDevice> = stream::iter(0..args.devices)
        .map(|i| {
            let api = api.clone();
            let (application_id, profile_id) = (application_id.clone(), profile_id.clone());
            async move {
                let dev_eui = Eui64::from_u64(DEVICE_EUI_PREFIX + u64::from(i));
                let app_key = random_key();
                let existed = api.ensure_device(dev_eui, &format!("sim-dev-{i}"), &application_id, &profile_id).await?;
                api.set_app_key(dev_eui, &app_key).await?;
                if existed {
                    api.clear_dev_nonces(dev_eui).await?;
                }
                anyhow::Ok(VirtualDevice::otaa(dev_eui, app_key))
            }
        })
        .buffered(PROVISION_CONCURRENCY)
        .try_collect()
        .await
        .context("registering devices")?;

    let stats = Arc::new(Stats::default());
    let radio = Radio { gateways: gateways.clone(), router: Arc::new(Router::default()), stats: stats.clone() };
    let shutdown = CancellationToken::new();
    let mut tasks = gateways.spawn(&radio.router, &stats, &shutdown);
    if !gateways.wait_pull_acks(Duration::from_secs(3)).await {
        tracing::warn!("not every gateway got a PULL_ACK; downlinks may not arrive");
    }

    let interval = Duration::from_secs_f64(args.interval);
    let count = devices.len();
    for (i, dev) in devices.into_iter().enumerate() {
        let stagger = interval.mul_f64(i as f64 / count as f64);
        // Joins are spread over the first second, not one burst.
        let join_delay = Duration::from_secs(1).mul_f64(i as f64 / count as f64);
        let ctx =
            DeviceCtx { index: i, radio: radio.clone(), payload: payload.clone(), f_port: args.f_port, interval, stagger, join_delay };
        tasks.push(tokio::spawn(run_device(dev, ctx, shutdown.clone())));
    }

    let total = args.devices;
    report_until_done(&stats, total, args.seconds, &shutdown).await;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let s = stats.snapshot();
    println!(
        "simulate done: sent={} joined={} downlinks={} errors={} join_retries={}",
        s.uplinks_sent, s.joined, s.downlinks, s.errors, s.join_retries
    );
    Ok(s)
}

struct DeviceCtx {
    index: usize,
    radio: Radio,
    payload: PayloadKind,
    f_port: u8,
    interval: Duration,
    stagger: Duration,
    join_delay: Duration,
}

async fn run_device(mut dev: VirtualDevice, ctx: DeviceCtx, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(ctx.join_delay) => {}
    }
    if join(&mut dev, &ctx.radio, &tx, &mut rx, 0, &shutdown).await.is_err() {
        return;
    }
    let stats = &ctx.radio.stats;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + ctx.stagger, ctx.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let payload = ctx.payload.payload(ctx.index, n);
                match dev.uplink(ctx.f_port, &payload) {
                    Ok((phy, _)) => {
                        if ctx.radio.transmit(&phy).await {
                            stats.uplinks_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        n = n.wrapping_add(1);
                    }
                    Err(e) => {
                        stats.error();
                        tracing::warn!(dev_eui = %dev.dev_eui, error = %e, "uplink not built");
                    }
                }
            }
            msg = rx.recv() => {
                let Some(phy) = msg else { return };
                match dev.read_downlink(&phy) {
                    Ok(_) => { stats.device_downlinks.fetch_add(1, Ordering::Relaxed); }
                    Err(e) => {
                        stats.error();
                        tracing::warn!(dev_eui = %dev.dev_eui, error = %e, "downlink refused");
                    }
                }
            }
        }
    }
}

fn status_line(elapsed: u64, s: &Snapshot, devices: u32) -> String {
    format!(
        "[{elapsed:>5}s] sent={} joined={}/{devices} downlinks={} errors={} join_retries={}",
        s.uplinks_sent, s.joined, s.downlinks, s.errors, s.join_retries
    )
}

/// Prints a line per second until Ctrl-C or `seconds` (0 = no limit).
async fn report_until_done(stats: &Stats, devices: u32, seconds: u64, shutdown: &CancellationToken) {
    let bar = if seconds > 0 {
        let b = ProgressBar::new(seconds);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b
    };
    bar.enable_steady_tick(Duration::from_millis(120));
    let to_stdout = !std::io::stdout().is_terminal();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let deadline = async {
        if seconds > 0 {
            tokio::time::sleep_until(start + Duration::from_secs(seconds)).await
        } else {
            std::future::pending::<()>().await
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = shutdown.cancelled() => break,
            _ = &mut deadline => break,
            _ = tick.tick() => {
                let elapsed = start.elapsed().as_secs();
                let s = stats.snapshot();
                let line = status_line(elapsed, &s, devices);
                bar.set_position(elapsed.min(seconds.max(1)));
                bar.set_message(format!("sent={} joined={}/{devices} errors={}", s.uplinks_sent, s.joined, s.errors));
                if to_stdout || bar.is_hidden() {
                    bar.suspend(|| println!("{line}"));
                } else {
                    bar.println(line);
                }
            }
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(extra: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let mut argv = vec!["x", "--server", "127.0.0.1:1700", "--api", "http://127.0.0.1:8080", "--token", "t"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn defaults_are_one_gateway_one_device_every_five_seconds_forever() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.gateways, a.devices, a.interval, a.seconds, a.f_port), (1, 1, 5.0, 0, 1));
        assert_eq!(a.payload_kind().unwrap(), PayloadKind::Counter);
    }

    #[test]
    fn payload_and_lpp_exclude_each_other() {
        assert!(parse(&["--payload", "01", "--lpp"]).is_err());
        assert_eq!(parse(&["--lpp"]).unwrap().payload_kind().unwrap(), PayloadKind::Lpp);
        assert_eq!(parse(&["--payload", "01ff"]).unwrap().payload_kind().unwrap(), PayloadKind::Fixed(vec![1, 0xff]));
    }

    #[test]
    fn bad_payload_hex_and_zero_gateways_are_refused() {
        assert!(parse(&["--payload", "zz"]).unwrap().payload_kind().is_err());
        assert!(parse(&["--payload", &"00".repeat(243)]).unwrap().payload_kind().is_err());
        assert!(parse(&["--gateways", "0"]).is_err());
    }

    #[test]
    fn the_status_line_names_every_counter() {
        let s = Snapshot { uplinks_sent: 4, joined: 2, downlinks: 2, errors: 0, join_retries: 1, ..Default::default() };
        assert_eq!(status_line(3, &s, 3), "[    3s] sent=4 joined=2/3 downlinks=2 errors=0 join_retries=1");
    }
}
