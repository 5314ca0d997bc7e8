//! `loraflow bench`: end-to-end throughput and latency of a server, measured the way users see
//! it: Semtech UDP uplinks in, MQTT `up` events out.
//!
//! By default the server under test is this same binary started as a child process
//! (`crate::child_server`: `serve` on ephemeral ports with a temporary SQLite file or a fresh
//! PostgreSQL database), so that its CPU time and peak RSS can be read from `/proc/<pid>`
//! apart from the load generator's own.
//! `--target-api`/`--target-udp` point it at a server that is already running instead.
//!
//! Several instances of one network (cluster mode, docs/operations.md "Several instances"):
//! `--instances N` starts N children on one PostgreSQL database, one Redis key prefix of the
//! run's own and the `--mqtt` broker; `--target-udp a,b,c` attaches to running ones. Gateway
//! `i` sits on instance `i mod N`, so with at least N gateways every uplink reaches every
//! instance and must still be published exactly once: the report counts duplicates (an fCnt
//! published twice) apart from loss, and sums the CPU time of all instances.
//!
//! Latency is from the moment the first gateway copy of an uplink is sent to the moment its
//! `up` event (matched by devEui + fCnt) arrives over MQTT, minus the deduplication window
//! the server waits by design.

use loraflow_network_server::storage::config::with_database;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use loraflow_network_server::types::Eui64;

use crate::child_server::{create_postgres_database, drop_postgres_database, ChildServer, ChildSpec};
use crate::sim::device::{random_key, Session, VirtualDevice};
use crate::sim::gateway::Gateways;
use crate::sim::mac::MacConfig;
use crate::sim::payload::PayloadKind;
use crate::sim::plan::RadioPlan;
use crate::sim::provision::{abp_dev_addr, Api, ProfileSpec};
use crate::sim::router::Router;
use crate::sim::{join, Radio, Stats};

/// "LFBNCG" + index: the bench's gateways.
pub const GATEWAY_EUI_PREFIX: u64 = 0x4c46_424e_4347_0000;
/// "LFBNCD" + index: the bench's devices.
pub const DEVICE_EUI_PREFIX: u64 = 0x4c46_424e_4344_0000;
pub const NAME: &str = "loraflow-bench";
const UP_TOPIC: &str = "application/+/device/+/event/up";
const PROVISION_CONCURRENCY: usize = 16;
const JOIN_CONCURRENCY: usize = 32;
const JOIN_ATTEMPTS: u32 = 3;
/// After the last uplink: give up waiting for events once none arrived for this long
/// (plus the dedup window), or after `DRAIN_MAX` in all.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// Load-test a server: uplinks over Semtech UDP, `up` events over MQTT.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of devices the uplinks are spread across.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,
    /// Region and channel plan of the devices (`eu868`, `us915_1`, `as923_2`, … or a common
    /// name, as for `simulate`); a child server is configured with the same region and channels.
    #[arg(long, default_value = "eu868", value_name = "ID")]
    pub region: String,
    /// Number of gateways hearing every uplink, spread over the instances (gateway i on
    /// instance i mod N). Default: one per instance.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub gateways: Option<u32>,
    /// Child servers to start as instances of one network (cluster mode): they share the
    /// --database PostgreSQL database, the --redis Redis (under a key prefix of this run) and
    /// the --mqtt broker, all three required.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16), conflicts_with = "target_api")]
    pub instances: u32,
    /// Redis of the child instances (`cluster.redis_url`); default redis://127.0.0.1:6379/0
    /// with --instances > 1. Given with one instance, that instance runs in cluster mode too
    /// (the baseline for the cluster's cost).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Uplinks per second (each sent once per gateway).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of sending (per step with --find-max).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Database of the child server: a sqlite:// URL, or a postgres:// server URL in which a
    /// fresh database is created (and dropped afterwards). Default: a temporary SQLite file.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// MQTT broker (mqtt://[user:pass@]host:port). Child server: it publishes there instead of
    /// its embedded broker. --target-api: where the target publishes (default mqtt://127.0.0.1:1883).
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// REST base URL of an already running server to test instead of a child process.
    #[arg(long, value_name = "URL", requires_all = ["target_udp", "token"])]
    pub target_api: Option<String>,
    /// Semtech UDP address of that server; with several instances of one network, their
    /// addresses separated by commas (the gateways are spread over them).
    #[arg(long, value_name = "HOST:PORT[,…]", requires = "target_api", value_delimiter = ',')]
    pub target_udp: Vec<String>,
    /// Admin API token of that server.
    #[arg(long, env = "LORAFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Activate devices by OTAA joins over the virtual gateways instead of ABP.
    #[arg(long)]
    pub otaa: bool,
    /// What the devices send: `counter` (4 bytes, codec NONE) or `lpp` (Cayenne LPP
    /// temperature and humidity on a CAYENNE_LPP profile: two measurements per uplink, and
    /// every event must carry both decoded values).
    #[arg(long, value_enum, default_value_t = BenchPayload::Counter)]
    pub payload: BenchPayload,
    /// Raise the rate step by step (×--step-factor) until events are lost or p99 exceeds
    /// --max-p99-ms; report the last good rate.
    #[arg(long)]
    pub find_max: bool,
    #[arg(long, default_value_t = 1.5)]
    pub step_factor: f64,
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_steps: u32,
    /// The server's deduplication window (set on the child server; must match a target's
    /// `network.dedup_window_ms`). Subtracted from the latencies.
    #[arg(long, default_value_t = 200)]
    pub dedup_ms: u64,
    /// Tasks sending uplinks (devices are split between them).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub senders: u32,
    /// Skip the warm-up pass (one uplink per device before the measured steps, reported
    /// apart: the first uplink of a device costs the server a database lookup).
    #[arg(long)]
    pub no_warmup: bool,
    /// `RUST_LOG` of the child server.
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    pub server_log: String,
    /// Print the result as JSON (for machines) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `--config` given to `loraflow`, handed on to the child server.
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
}

/// The uplink payload of the bench's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchPayload {
    /// The uplink number, 4 bytes; the profile decodes nothing.
    Counter,
    /// The simulator's Cayenne LPP reading (temperature on channel 1, humidity on channel 2).
    Lpp,
}

impl BenchPayload {
    fn codec(self) -> &'static str {
        match self {
            BenchPayload::Counter => "NONE",
            BenchPayload::Lpp => "CAYENNE_LPP",
        }
    }

    /// The bytes of uplink `n` (counted from 1 within a step) of device `device`.
    fn bytes(self, device: usize, n: u64) -> Vec<u8> {
        match self {
            BenchPayload::Counter => (n as u32).to_be_bytes().to_vec(),
            BenchPayload::Lpp => PayloadKind::Lpp.payload(device, n as u32),
        }
    }
}

/// One rate step.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// Target uplinks per second.
    pub rate: f64,
    /// How long sending took.
    pub send_seconds: f64,
    pub sent: u64,
    /// `up` events matched to an uplink of this step.
    pub received: u64,
    /// Uplinks whose event did not arrive before the drain wait ended.
    pub lost: u64,
    /// Further events for an uplink already received in this step (the same devEui and fCnt
    /// published twice): 0 unless deduplication failed, e.g. across instances.
    pub duplicates: u64,
    /// Events that matched no uplink of this step (late from an earlier step).
    pub unmatched: u64,
    /// With `--payload lpp`: matched events whose `object` lacks the decoded temperature or
    /// humidity; null for the counter payload.
    pub missing_object: Option<u64>,
    /// Events per second while they flowed (first to last event).
    pub achieved_events_per_sec: f64,
    pub latency_ms: Latency,
    /// Server CPU time (user + system) per 1,000 uplinks, summed over all instances; null for a
    /// target not started here.
    pub server_cpu_seconds_per_1000_uplinks: Option<f64>,
    /// The same for each instance started here, in instance order (how the load was spread).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_cpu_seconds_per_1000_uplinks: Vec<f64>,
    /// Server peak resident set (VmHWM) in MiB, the largest instance's; null for a target not
    /// started here.
    pub server_peak_rss_mib: Option<f64>,
    /// Uplink copies not sent, and other generator-side failures.
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// The whole run: set-up, every step, and the last step's figures at the top level.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// The `--region` id.
    pub region: String,
    pub devices: u32,
    pub gateways: u32,
    pub activation: &'static str,
    pub payload: BenchPayload,
    pub dedup_ms: u64,
    /// `child` (started here) or `target`.
    pub server: &'static str,
    /// The first instance's pid.
    pub server_pid: Option<u32>,
    /// Instances of the network: children started, or --target-udp addresses.
    pub instances: u32,
    /// `cluster.key_prefix` of children started in cluster mode.
    pub cluster_prefix: Option<String>,
    pub database: String,
    /// Devices that could not be activated (OTAA join failures) and sent nothing.
    pub inactive_devices: u32,
    /// With --find-max: the highest rate with no loss and p99 within the limit.
    pub knee: Option<f64>,
    /// One uplink per device at `--rate` before the steps (cold caches); null with --no-warmup.
    pub warmup: Option<StepResult>,
    pub steps: Vec<StepResult>,
    #[serde(flatten)]
    pub last: StepResult,
}

/// Runs the benchmark and prints the table or the JSON.
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate: expected uplinks per second > 0, got {}", args.rate);
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds: expected > 0, got {}", args.seconds);
    }
    if args.find_max && !(args.step_factor.is_finite() && args.step_factor > 1.0) {
        bail!("--step-factor: expected > 1, got {}", args.step_factor);
    }
    check_cluster_args(&args)?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    let mut target = Target::start(&args).await?;
    let result = bench(&args, &target, &stop).await;
    target.stop().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report, &args));
    }
    Ok(report)
}

async fn bench(args: &BenchArgs, target: &Target, stop: &CancellationToken) -> anyhow::Result<BenchReport> {
    let collector = Arc::new(Collector::default());
    let mqtt_stop = CancellationToken::new();
    let _mqtt_guard = mqtt_stop.clone().drop_guard();
    subscribe(&target.mqtt, args.payload, collector.clone(), mqtt_stop.clone()).await.context("subscribing to the MQTT up events")?;

    let plan = bench_plan(args)?;
    let api = Api::new(&target.api, &target.token);
    let application_id = api.ensure_application(NAME).await.context("creating the application")?;
    let spec = ProfileSpec { region: plan.common_name(), codec: args.payload.codec(), ..ProfileSpec::default() };
    let profile_id = api.ensure_device_profile_spec(NAME, &spec).await.context("creating the device profile")?;
    let n_gateways = gateway_count(args, target.udp.len());
    let gateways = Gateways::bind_spread(GATEWAY_EUI_PREFIX, n_gateways as usize, &target.udp).await.context("binding gateway sockets")?;
    let region_config = crate::simulate::gateway_region_config(&api, &plan).await?;
    for (i, eui) in gateways.euis().into_iter().enumerate() {
        api.ensure_gateway_in(eui, &format!("bench-gw-{i}"), region_config.as_deref()).await.context("registering gateways")?;
    }
    let stats = Arc::new(Stats::default());
    let radio = Radio { gateways: gateways.clone(), router: Arc::new(Router::default()), stats: stats.clone() };
    let gw_stop = CancellationToken::new();
    let _gw_guard = gw_stop.clone().drop_guard();
    gateways.spawn(&radio.router, &stats, &gw_stop);
    if !gateways.wait_pull_acks(Duration::from_secs(5)).await {
        let silent: Vec<String> =
            gateways.0.iter().zip(gateways.servers()).filter(|(g, _)| !g.has_pull_ack()).map(|(_, s)| s.to_string()).collect();
        bail!("the server did not answer PULL_DATA at {} within 5 s", silent.join(", "));
    }

    let devices = activate(args, &plan, &api, &application_id, &profile_id, &radio, stop).await?;
    let inactive = args.devices - devices.len() as u32;
    if devices.is_empty() {
        bail!("no device could be activated");
    }

    let mut groups: Vec<Vec<VirtualDevice>> = (0..args.senders.min(devices.len() as u32)).map(|_| Vec::new()).collect();
    let n_groups = groups.len();
    for (i, d) in devices.into_iter().enumerate() {
        groups[i % n_groups].push(d);
    }

    let warmup = if args.no_warmup {
        None
    } else {
        let active = groups.iter().map(Vec::len).sum::<usize>() as u64;
        let (step, back) = run_step(args, args.rate, active, "warm-up", groups, &radio, &collector, target, stop).await;
        groups = back;
        Some(step)
    };
    let mut steps = Vec::new();
    let mut knee = None;
    let mut rate = args.rate;
    let max_steps = if args.find_max { args.max_steps } else { 1 };
    for _ in 0..max_steps {
        let total = (rate * args.seconds).round().max(1.0) as u64;
        let (step, back) = run_step(args, rate, total, &format!("{rate:.0} uplinks/s"), groups, &radio, &collector, target, stop).await;
        groups = back;
        let good = step.sent > 0
            && step.lost == 0
            && step.duplicates == 0
            && step.missing_object.unwrap_or(0) == 0
            && step.latency_ms.p99.is_some_and(|p| p <= args.max_p99_ms);
        if !args.json && args.find_max {
            eprintln!(
                "step {:>8.1}/s: sent={} lost={} duplicates={}{} p99={} ms -> {}",
                step.rate,
                step.sent,
                step.lost,
                step.duplicates,
                step.missing_object.map_or_else(String::new, |n| format!(" no_object={n}")),
                fmt_opt(step.latency_ms.p99, 1),
                if good { "ok" } else { "over the limit" }
            );
        }
        steps.push(step);
        if stop.is_cancelled() {
            break;
        }
        if !good {
            break;
        }
        knee = Some(rate);
        rate *= args.step_factor;
    }
    let last = steps.last().cloned().ok_or_else(|| anyhow!("no step ran"))?;
    Ok(BenchReport {
        region: plan.id.clone(),
        devices: args.devices,
        gateways: n_gateways,
        activation: if args.otaa { "otaa" } else { "abp" },
        payload: args.payload,
        dedup_ms: args.dedup_ms,
        server: if target.children.is_empty() { "target" } else { "child" },
        server_pid: target.pid(),
        instances: target.udp.len() as u32,
        cluster_prefix: target.cluster_prefix.clone(),
        database: target.database_kind.clone(),
        inactive_devices: inactive,
        knee: if args.find_max { knee } else { None },
        warmup,
        steps,
        last,
    })
}

/// Registers the devices and activates them: ABP with random keys, or OTAA joins.
async fn activate(
    args: &BenchArgs,
    plan: &Arc<RadioPlan>,
    api: &Api,
    application_id: &str,
    profile_id: &str,
    radio: &Radio,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<VirtualDevice>> {
    let bar = progress(u64::from(args.devices), if args.otaa { "registering" } else { "activating (ABP)" });
    let addr_offset: u32 = rand::random::<u32>() & 0x01ff_ffff;
    let registered: Vec<anyhow::Result<VirtualDevice>> = stream::iter(0..args.devices)
        .map(|i| {
            let bar = bar.clone();
            async move {
                let dev_eui = Eui64::from_u64(DEVICE_EUI_PREFIX + u64::from(i));
                // The fastest 125 kHz LoRa rate of the region, as before in EU868 (DR5).
                let fast = plan.region.max_adr_dr();
                let config = MacConfig { max_dr: fast, initial_dr: fast, ..MacConfig::default() };
                let existed = api.ensure_device(dev_eui, &format!("bench-dev-{i}"), application_id, profile_id).await?;
                let dev = if args.otaa {
                    let app_key = random_key();
                    api.set_app_key(dev_eui, &app_key).await?;
                    if existed {
                        api.clear_dev_nonces(dev_eui).await?;
                    }
                    VirtualDevice::otaa(dev_eui, app_key)
                } else {
                    let session = Session::random_abp(abp_dev_addr(addr_offset, i));
                    api.activate_abp(dev_eui, &session).await?;
                    VirtualDevice::abp(dev_eui, session)
                };
                let dev = dev.with_plan(plan.clone()).with_mac(config);
                bar.inc(1);
                anyhow::Ok(dev)
            }
        })
        .buffer_unordered(PROVISION_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    let devices = registered.into_iter().collect::<anyhow::Result<Vec<_>>>().context("registering devices")?;
    if !args.otaa {
        return Ok(devices);
    }
    let bar = progress(devices.len() as u64, "joining (OTAA)");
    let joined: Vec<Option<VirtualDevice>> = stream::iter(devices)
        .map(|mut dev| {
            let bar = bar.clone();
            async move {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let r = join(&mut dev, radio, &tx, &mut rx, JOIN_ATTEMPTS, stop).await;
                bar.inc(1);
                r.ok().map(|_| dev)
            }
        })
        .buffer_unordered(JOIN_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    Ok(joined.into_iter().flatten().collect())
}

/// Several instances need what they share: PostgreSQL and an external broker (the embedded
/// broker and SQLite are one process's own). Redis defaults to the local one.
fn check_cluster_args(args: &BenchArgs) -> anyhow::Result<()> {
    if args.instances <= 1 && args.redis.is_none() {
        return Ok(());
    }
    if args.target_api.is_some() {
        bail!("--instances/--redis start child servers; with --target-api give the instances' addresses in --target-udp");
    }
    if !args.database.as_deref().is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://")) {
        bail!("--instances/--redis: the instances share one PostgreSQL database; give --database postgres://…");
    }
    if args.mqtt.is_none() {
        bail!("--instances/--redis: the instances publish to one external broker; give --mqtt mqtt://…");
    }
    if let Some(g) = args.gateways {
        if g < args.instances {
            bail!("--gateways {g} < --instances {}: some instance would hear no uplink", args.instances);
        }
    }
    Ok(())
}

/// `--gateways`, or one gateway per instance.
fn gateway_count(args: &BenchArgs, instances: usize) -> u32 {
    args.gateways.unwrap_or(instances.max(1) as u32)
}

fn bench_plan(args: &BenchArgs) -> anyhow::Result<Arc<RadioPlan>> {
    RadioPlan::from_id(&args.region).map(Arc::new).map_err(|e| anyhow!("--region: {e}"))
}

/// The child server's region settings for `plan` (DESIGN.md §8 keys): `network.region`, its
/// default extra channels (none in fixed-channel regions), and for fixed-channel regions the
/// enabled uplink channels of the sub-band.
fn server_region_env(plan: &RadioPlan) -> Vec<(&'static str, String)> {
    let join = |v: Vec<String>| v.join(",");
    let mut env = vec![
        ("LORAFLOW_NETWORK__REGION", plan.common_name().to_string()),
        ("LORAFLOW_NETWORK__EXTRA_CHANNELS", join(plan.region.default_extra_channels().iter().map(u32::to_string).collect())),
    ];
    if plan.layout.is_fixed() {
        env.push(("LORAFLOW_NETWORK__ENABLED_UPLINK_CHANNELS", join(plan.enabled.iter().map(u8::to_string).collect())));
    }
    env
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>18} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Sends `total` uplinks at `rate` per second, waits for the events, and measures.
/// Gives the devices back (their frame counters moved on).
#[allow(clippy::too_many_arguments)]
async fn run_step(
    args: &BenchArgs,
    rate: f64,
    total: u64,
    label: &str,
    groups: Vec<Vec<VirtualDevice>>,
    radio: &Radio,
    collector: &Arc<Collector>,
    target: &Target,
    stop: &CancellationToken,
) -> (StepResult, Vec<Vec<VirtualDevice>>) {
    collector.reset();
    let dedup = Duration::from_millis(args.dedup_ms);
    let n = groups.len() as u64;
    let cpu_before = target.instance_cpu_seconds();
    let errors_before = radio.stats.errors.load(Ordering::Relaxed);
    let sent = Arc::new(AtomicU64::new(0));
    let bar = progress(total, label);

    let started = Instant::now();
    let tasks: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, devices)| {
            let share = total / n + u64::from((t as u64) < total % n);
            let task_rate = rate * share as f64 / total as f64;
            let pace = Pace { count: share, rate: task_rate, payload: args.payload };
            tokio::spawn(send_paced(devices, pace, radio.clone(), collector.clone(), sent.clone(), stop.clone()))
        })
        .collect();
    let ticker = {
        let (bar, sent, collector) = (bar.clone(), sent.clone(), collector.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(sent.load(Ordering::Relaxed));
                bar.set_message(format!("events={}", collector.matched.load(Ordering::Relaxed)));
            }
        })
    };
    let mut groups = Vec::with_capacity(tasks.len());
    for t in tasks {
        // A sender only fails by panicking; its devices are lost for later steps.
        if let Ok(devices) = t.await {
            groups.push(devices);
        }
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let sent_total = sent.load(Ordering::Relaxed);

    bar.set_prefix("waiting for events");
    let send_end = Instant::now();
    loop {
        if collector.pending_len() == 0 || stop.is_cancelled() {
            break;
        }
        let last = collector.last_event().map_or(send_end, |t| t.max(send_end));
        if last.elapsed() > DRAIN_IDLE + dedup || send_end.elapsed() > DRAIN_MAX {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ticker.abort();
    bar.finish_and_clear();

    let per_instance = cpu_per_1000(cpu_before.as_deref(), target.instance_cpu_seconds().as_deref(), sent_total);
    let cpu = (!per_instance.is_empty()).then(|| per_instance.iter().sum::<f64>());
    let Finished { received, duplicates, unmatched, lost, latencies, rate: rate_achieved } = collector.finish(dedup);
    let missing_object = collector.missing_object.load(Ordering::Relaxed);
    let step = StepResult {
        rate,
        send_seconds,
        sent: sent_total,
        received,
        lost,
        duplicates,
        unmatched,
        missing_object: (args.payload == BenchPayload::Lpp).then_some(missing_object),
        achieved_events_per_sec: rate_achieved,
        latency_ms: percentiles(latencies),
        server_cpu_seconds_per_1000_uplinks: cpu,
        instance_cpu_seconds_per_1000_uplinks: if per_instance.len() > 1 { per_instance } else { Vec::new() },
        server_peak_rss_mib: target.peak_rss_mib(),
        errors: radio.stats.errors.load(Ordering::Relaxed) - errors_before,
    };
    (step, groups)
}

/// CPU seconds per 1,000 uplinks of each instance between two readings; empty when an
/// instance could not be read (it ended) or nothing was sent.
fn cpu_per_1000(before: Option<&[f64]>, after: Option<&[f64]>, sent: u64) -> Vec<f64> {
    match (before, after) {
        (Some(a), Some(b)) if sent > 0 && a.len() == b.len() => a.iter().zip(b).map(|(a, b)| (b - a) / sent as f64 * 1000.0).collect(),
        _ => Vec::new(),
    }
}

/// What one sender task sends: `count` uplinks at `rate` per second.
struct Pace {
    count: u64,
    rate: f64,
    payload: BenchPayload,
}

/// Sends `pace.count` uplinks at `pace.rate` per second, round-robin over `devices`, paced
/// against the clock (1 ms ticks, catching up on late ticks) so that a slow tick does not lower
/// the rate.
async fn send_paced(
    mut devices: Vec<VirtualDevice>,
    pace: Pace,
    radio: Radio,
    collector: Arc<Collector>,
    sent: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Vec<VirtualDevice> {
    let Pace { count, rate, payload } = pace;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut done = 0u64;
    let mut next = 0usize;
    while done < count && !stop.is_cancelled() {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(count);
        while done < due {
            let len = devices.len();
            let dev = &mut devices[next];
            next = (next + 1) % len;
            done += 1;
            // The device's number (its EUI past the prefix) makes LPP readings differ by device.
            let bytes = payload.bytes(dev.dev_eui.as_u64().wrapping_sub(DEVICE_EUI_PREFIX) as usize, done);
            let up = match dev.next_uplink(1, &bytes, &mut rand::thread_rng()) {
                Ok(x) => x,
                Err(e) => {
                    radio.stats.error();
                    tracing::warn!(error = %e, "uplink not built");
                    continue;
                }
            };
            collector.expect(dev.dev_eui, up.f_cnt, Instant::now());
            if radio.transmit(&up.phy, &up.tx).await {
                sent.fetch_add(1, Ordering::Relaxed);
            } else {
                collector.forget(dev.dev_eui, up.f_cnt);
            }
        }
    }
    devices
}

/// Matches `up` events to the uplinks waiting for them.
#[derive(Default)]
struct Collector {
    pending: Mutex<HashMap<(Eui64, u32), Instant>>,
    /// Uplinks of this step whose event arrived: a second event for one is a duplicate.
    received: Mutex<HashSet<(Eui64, u32)>>,
    /// Latency of each matched event, before subtracting the dedup window.
    latencies: Mutex<Vec<Duration>>,
    first_last: Mutex<Option<(Instant, Instant)>>,
    matched: AtomicU64,
    duplicates: AtomicU64,
    unmatched: AtomicU64,
    /// Matched events without the decoded values the payload must give.
    missing_object: AtomicU64,
}

impl Collector {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reset(&self) {
        Self::lock(&self.pending).clear();
        Self::lock(&self.received).clear();
        Self::lock(&self.latencies).clear();
        *Self::lock(&self.first_last) = None;
        self.matched.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.unmatched.store(0, Ordering::Relaxed);
        self.missing_object.store(0, Ordering::Relaxed);
    }

    fn expect(&self, dev_eui: Eui64, f_cnt: u32, at: Instant) {
        Self::lock(&self.pending).insert((dev_eui, f_cnt), at);
    }

    fn forget(&self, dev_eui: Eui64, f_cnt: u32) {
        Self::lock(&self.pending).remove(&(dev_eui, f_cnt));
    }

    fn pending_len(&self) -> usize {
        Self::lock(&self.pending).len()
    }

    fn last_event(&self) -> Option<Instant> {
        Self::lock(&self.first_last).map(|(_, l)| l)
    }

    /// An `up` event of `dev_eui`/`f_cnt` arrived `at`; `decoded` says whether it carries the
    /// values the payload must decode to.
    fn event(&self, dev_eui: Eui64, f_cnt: u32, decoded: bool, at: Instant) {
        let sent_at = Self::lock(&self.pending).remove(&(dev_eui, f_cnt));
        match sent_at {
            Some(t) => {
                Self::lock(&self.received).insert((dev_eui, f_cnt));
                if !decoded {
                    self.missing_object.fetch_add(1, Ordering::Relaxed);
                }
                Self::lock(&self.latencies).push(at.saturating_duration_since(t));
                let mut fl = Self::lock(&self.first_last);
                *fl = Some(fl.map_or((at, at), |(f, _)| (f, at)));
                self.matched.fetch_add(1, Ordering::Relaxed);
            }
            None if Self::lock(&self.received).contains(&(dev_eui, f_cnt)) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The step's counts; clears what is still pending, which counts as lost.
    fn finish(&self, dedup: Duration) -> Finished {
        let lost = {
            let mut p = Self::lock(&self.pending);
            let n = p.len() as u64;
            p.clear();
            n
        };
        let received = self.matched.load(Ordering::Relaxed);
        let latencies = Self::lock(&self.latencies).iter().map(|d| (d.as_secs_f64() - dedup.as_secs_f64()) * 1000.0).collect();
        let rate = match *Self::lock(&self.first_last) {
            Some((f, l)) if received > 1 && l > f => (received - 1) as f64 / (l - f).as_secs_f64(),
            _ => received as f64,
        };
        Finished {
            received,
            duplicates: self.duplicates.load(Ordering::Relaxed),
            unmatched: self.unmatched.load(Ordering::Relaxed),
            lost,
            latencies,
            rate,
        }
    }
}

/// What [`Collector::finish`] counted.
#[derive(Debug)]
struct Finished {
    received: u64,
    duplicates: u64,
    unmatched: u64,
    lost: u64,
    /// Milliseconds, minus the dedup window.
    latencies: Vec<f64>,
    /// Events per second from the first to the last.
    rate: f64,
}

/// p50, p99 and max (nearest-rank), rounded to 0.01 ms.
fn percentiles(mut ms: Vec<f64>) -> Latency {
    if ms.is_empty() {
        return Latency::default();
    }
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let r = |x: f64| (x * 100.0).round() / 100.0;
    Latency { p50: Some(r(rank(0.50))), p99: Some(r(rank(0.99))), max: Some(r(ms[ms.len() - 1])) }
}

/// Where the MQTT events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MqttTarget {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl MqttTarget {
    /// `mqtt://[user[:pass]@]host[:port]` (or `tcp://`).
    fn parse(url: &str) -> anyhow::Result<MqttTarget> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| anyhow!("--mqtt: expected mqtt://host:port, got {url:?} (TLS brokers are not supported by bench)"))?;
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((creds, hp)) => {
                let (u, p) = creds.split_once(':').unwrap_or((creds, ""));
                (Some((u.to_string(), p.to_string())), hp)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_start_matches('[').trim_end_matches(']'), p.parse().with_context(|| format!("--mqtt: bad port in {url:?}"))?)
            }
            _ => (hostport, 1883),
        };
        if host.is_empty() {
            bail!("--mqtt: no host in {url:?}");
        }
        Ok(MqttTarget { host: host.to_string(), port, credentials })
    }
}

/// Subscribes to every `up` event (QoS 1) and feeds the collector until `stop`; returns once
/// the subscription is acknowledged.
async fn subscribe(target: &MqttTarget, payload: BenchPayload, collector: Arc<Collector>, stop: CancellationToken) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(format!("loraflow-bench-{}", uuid::Uuid::new_v4().simple()), &target.host, target.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = &target.credentials {
        opts.set_credentials(u, p);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client.subscribe(UP_TOPIC, QoS::AtLeastOnce).await?;
    let (subscribed_tx, mut subscribed) = watch::channel(false);
    tokio::spawn(async move {
        let _client = client;
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    if let Some(up) = parse_up_event(&p.topic, &p.payload) {
                        let decoded = payload == BenchPayload::Counter || up.lpp_decoded;
                        collector.event(up.dev_eui, up.f_cnt, decoded, at);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(true);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT connection error; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed.wait_for(|s| *s))
        .await
        .map_err(|_| anyhow!("no SUBACK from the MQTT broker at {}:{} within 10 s", target.host, target.port))?
        .map_err(|_| anyhow!("the MQTT client stopped before subscribing"))?;
    Ok(())
}

/// What the bench reads from an `up` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UpEvent {
    dev_eui: Eui64,
    f_cnt: u32,
    /// Whether `object` holds the decoded LPP temperature (channel 1) and humidity (channel 2).
    lpp_decoded: bool,
}

/// devEui from `application/{id}/device/{devEui}/event/up`, fCnt and the decoded object from
/// the JSON.
fn parse_up_event(topic: &str, payload: &[u8]) -> Option<UpEvent> {
    #[derive(serde::Deserialize)]
    struct Up {
        #[serde(rename = "fCnt")]
        f_cnt: u32,
        #[serde(default)]
        object: Option<serde_json::Value>,
    }
    let dev_eui = topic.split('/').nth(3)?.to_ascii_lowercase().parse().ok()?;
    let up: Up = serde_json::from_slice(payload).ok()?;
    let lpp_decoded = up.object.is_some_and(|o| o["temperatureSensor"]["1"].is_number() && o["humiditySensor"]["2"].is_number());
    Some(UpEvent { dev_eui, f_cnt: up.f_cnt, lpp_decoded })
}

/// The server under test: one or several instances of one network.
struct Target {
    /// REST API of the first instance: provisioning goes there, the other instances learn of
    /// it as in production (cluster invalidation).
    api: String,
    /// Semtech UDP address of each instance.
    udp: Vec<SocketAddr>,
    token: String,
    mqtt: MqttTarget,
    /// Child servers started here, in instance order; empty for a target.
    children: Vec<ChildServer>,
    /// The PostgreSQL database created for the children: (server URL, name).
    created_database: Option<(String, String)>,
    database_kind: String,
    /// `cluster.key_prefix` of children in cluster mode.
    cluster_prefix: Option<String>,
}

impl Target {
    async fn start(args: &BenchArgs) -> anyhow::Result<Target> {
        if let Some(api) = &args.target_api {
            let mut udp = Vec::new();
            for a in &args.target_udp {
                let addr = tokio::net::lookup_host(a)
                    .await
                    .with_context(|| format!("--target-udp {a}: cannot resolve"))?
                    .next()
                    .with_context(|| format!("--target-udp {a}: no address"))?;
                udp.push(addr);
            }
            if udp.is_empty() {
                bail!("--target-udp: no address");
            }
            if args.database.is_some() {
                tracing::warn!("--database is ignored with --target-api");
            }
            return Ok(Target {
                api: api.clone(),
                udp,
                token: args.token.clone().unwrap_or_default(),
                mqtt: MqttTarget::parse(args.mqtt.as_deref().unwrap_or("mqtt://127.0.0.1:1883"))?,
                children: Vec::new(),
                created_database: None,
                database_kind: "unknown".into(),
                cluster_prefix: None,
            });
        }
        Self::spawn_children(args).await
    }

    async fn spawn_children(args: &BenchArgs) -> anyhow::Result<Target> {
        let mut created_database = None;
        let (database_url, database_kind) = match args.database.as_deref() {
            None => (None, "sqlite".to_string()),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let name = format!("loraflow_bench_{}", uuid::Uuid::new_v4().simple());
                create_postgres_database(u, &name).await?;
                created_database = Some((u.to_string(), name.clone()));
                (Some(with_database(u, &name)), "postgres".to_string())
            }
            Some(u) if u.starts_with("sqlite:") => (Some(u.to_string()), "sqlite".to_string()),
            Some(u) => bail!("--database: expected sqlite://… or postgres://…, got {u:?}"),
        };
        let plan = bench_plan(args)?;
        let cluster = cluster_run(args);
        let mut target = Target {
            api: String::new(),
            udp: Vec::new(),
            token: String::new(),
            mqtt: MqttTarget { host: String::new(), port: 0, credentials: None },
            children: Vec::new(),
            created_database,
            database_kind,
            cluster_prefix: cluster.as_ref().map(|c| c.prefix.clone()),
        };
        // One after the other: the first applies the database migrations.
        for i in 0..args.instances {
            let mut env = server_region_env(&plan);
            env.push(("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", args.dedup_ms.to_string()));
            if let Some(c) = &cluster {
                env.extend(c.instance_env(i));
            }
            let spec = ChildSpec {
                config_file: args.config_file.as_deref(),
                database_url: database_url.as_deref(),
                log: &args.server_log,
                mqtt_url: args.mqtt.as_deref(),
                env,
            };
            match ChildServer::spawn(spec).await {
                Ok(server) => target.children.push(server),
                Err(e) => {
                    target.stop().await;
                    return Err(e.context(format!("starting instance {i}")));
                }
            }
        }
        let first = &target.children[0];
        target.mqtt = match &args.mqtt {
            Some(url) => MqttTarget::parse(url)?,
            None => {
                let m = first.mqtt_embedded.ok_or_else(|| anyhow!("the server started no embedded MQTT broker"))?;
                MqttTarget { host: m.ip().to_string(), port: m.port(), credentials: None }
            }
        };
        // Every child has its own admin token; REST calls all go to the first.
        target.api = first.api.clone();
        target.token = first.token.clone();
        target.udp = target.children.iter().map(|c| c.gateway).collect();
        Ok(target)
    }

    fn pid(&self) -> Option<u32> {
        self.children.first().map(ChildServer::pid)
    }

    /// CPU seconds of each instance so far; None for a target or when one has ended.
    fn instance_cpu_seconds(&self) -> Option<Vec<f64>> {
        if self.children.is_empty() {
            return None;
        }
        self.children.iter().map(ChildServer::cpu_seconds).collect()
    }

    /// The largest peak resident set of the instances.
    fn peak_rss_mib(&self) -> Option<f64> {
        self.children.iter().filter_map(ChildServer::peak_rss_mib).reduce(f64::max)
    }

    /// Stops the child servers and drops a database created for them.
    async fn stop(&mut self) {
        for child in self.children.drain(..) {
            child.stop().await;
        }
        if let Some((server, name)) = self.created_database.take() {
            if let Err(e) = drop_postgres_database(&server, &name).await {
                eprintln!("loraflow bench: could not drop database {name}: {e:#}");
            }
        }
    }
}

/// The cluster settings shared by the children of one run.
#[derive(Debug, Clone, PartialEq)]
struct ClusterRun {
    redis_url: String,
    /// Unique per run, so that runs (and tests) on one Redis never see each other's keys.
    prefix: String,
}

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379/0";

/// Cluster mode for the children: with several instances, or with --redis.
fn cluster_run(args: &BenchArgs) -> Option<ClusterRun> {
    if args.instances <= 1 && args.redis.is_none() {
        return None;
    }
    Some(ClusterRun {
        redis_url: args.redis.clone().unwrap_or_else(|| DEFAULT_REDIS.to_string()),
        prefix: format!("lfbench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    })
}

impl ClusterRun {
    /// `[cluster]` of instance `i`, and an MQTT client id of its own (one id shared by two
    /// instances would make the broker disconnect one whenever the other connects).
    fn instance_env(&self, i: u32) -> Vec<(&'static str, String)> {
        let id = format!("bench{i}");
        vec![
            ("LORAFLOW_CLUSTER__REDIS_URL", self.redis_url.clone()),
            ("LORAFLOW_CLUSTER__KEY_PREFIX", self.prefix.clone()),
            ("LORAFLOW_MQTT__CLIENT_ID", format!("{}-{id}", self.prefix)),
            ("LORAFLOW_CLUSTER__INSTANCE_ID", id),
        ]
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.decimals$}"))
}

/// The human-readable result.
fn table(r: &BenchReport, args: &BenchArgs) -> String {
    let mut out = String::new();
    let server = match (r.server_pid, &r.cluster_prefix) {
        (Some(pid), None) => format!("child pid {pid} ({})", r.database),
        (Some(_), Some(prefix)) => format!("{} child instances ({}, redis prefix {prefix})", r.instances, r.database),
        (None, _) if r.instances > 1 => format!("target {} ({} UDP addresses)", args.target_api.as_deref().unwrap_or(""), r.instances),
        (None, _) => format!("target {}", args.target_api.as_deref().unwrap_or("")),
    };
    out.push_str(&format!(
        "loraflow bench: {} devices ({}, {} payload), {} gateways, dedup {} ms, server: {server}\n",
        r.devices,
        r.activation,
        args.payload.codec(),
        r.gateways,
        r.dedup_ms
    ));
    if r.inactive_devices > 0 {
        out.push_str(&format!("  {} devices could not join and sent nothing\n", r.inactive_devices));
    }
    out.push_str(&format!(
        "{:>10} {:>9} {:>9} {:>7} {:>6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>10} {:>9}\n",
        "rate/s", "sent", "received", "lost", "dups", "no object", "events/s", "p50 ms", "p99 ms", "max ms", "cpu s/1k", "rss MiB"
    ));
    let rows = r.warmup.iter().map(|w| ("warm-up ", w)).chain(r.steps.iter().map(|s| ("", s)));
    for (label, s) in rows {
        out.push_str(&format!(
            "{:>10} {:>9} {:>9} {:>7} {:>6} {:>9} {:>10.1} {:>8} {:>8} {:>8} {:>10} {:>9}\n",
            format!("{label}{:.1}", s.rate),
            s.sent,
            s.received,
            s.lost,
            s.duplicates,
            s.missing_object.map_or_else(|| "-".to_string(), |n| n.to_string()),
            s.achieved_events_per_sec,
            fmt_opt(s.latency_ms.p50, 1),
            fmt_opt(s.latency_ms.p99, 1),
            fmt_opt(s.latency_ms.max, 1),
            fmt_opt(s.server_cpu_seconds_per_1000_uplinks, 3),
            fmt_opt(s.server_peak_rss_mib, 1),
        ));
    }
    if r.instances > 1 && !r.last.instance_cpu_seconds_per_1000_uplinks.is_empty() {
        let each: Vec<String> = r.last.instance_cpu_seconds_per_1000_uplinks.iter().map(|c| format!("{c:.3}")).collect();
        out.push_str(&format!("cpu s/1k is summed over the instances; last step per instance: {}\n", each.join(" + ")));
    }
    if args.find_max {
        match r.knee {
            Some(k) => out.push_str(&format!(
                "knee: {k:.1} uplinks/s (highest step with no loss, no duplicate, no missing object and p99 <= {} ms)\n",
                args.max_p99_ms
            )),
            None => out.push_str(&format!(
                "knee: none (the first step, {:.1}/s, already lost events, duplicated or missed objects or exceeded p99 {} ms)\n",
                args.rate, args.max_p99_ms
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p99, l.max), (Some(50.0), Some(99.0), Some(100.0)));
        let l = percentiles(vec![3.0]);
        assert_eq!((l.p50, l.p99, l.max), (Some(3.0), Some(3.0), Some(3.0)));
        assert_eq!(percentiles(Vec::new()), Latency::default());
    }

    #[test]
    fn events_match_pending_uplinks_once_and_the_rest_is_lost() {
        let c = Collector::default();
        let t0 = Instant::now();
        let dev = Eui64::from_u64(1);
        c.expect(dev, 0, t0);
        c.expect(dev, 1, t0);
        c.event(dev, 0, false, t0 + Duration::from_millis(230));
        c.event(dev, 0, true, t0 + Duration::from_millis(240));
        c.event(dev, 9, true, t0 + Duration::from_millis(250));
        let f = c.finish(Duration::from_millis(200));
        assert_eq!((f.received, f.duplicates, f.unmatched, f.lost), (1, 1, 1, 1), "{f:?}");
        assert_eq!(c.missing_object.load(Ordering::Relaxed), 1, "the matched event lacked its values");
        assert!((f.latencies[0] - 30.0).abs() < 1e-6, "{f:?}");
        assert_eq!(c.pending_len(), 0);
        c.reset();
        c.expect(dev, 0, t0);
        c.event(dev, 0, true, t0);
        assert_eq!(c.finish(Duration::ZERO).duplicates, 0, "a new step forgets what the last one received");
    }

    #[test]
    fn up_events_give_dev_eui_and_fcnt() {
        let topic = "application/5d3c/device/4C46424E43440001/event/up";
        let dev_eui = Eui64::from_u64(0x4c46_424e_4344_0001);
        assert_eq!(parse_up_event(topic, br#"{"fCnt": 7, "data": "AA=="}"#), Some(UpEvent { dev_eui, f_cnt: 7, lpp_decoded: false }));
        let lpp = br#"{"fCnt": 8, "object": {"temperatureSensor": {"1": 21.5}, "humiditySensor": {"2": 48.0}}}"#;
        assert_eq!(parse_up_event(topic, lpp), Some(UpEvent { dev_eui, f_cnt: 8, lpp_decoded: true }));
        let half = br#"{"fCnt": 9, "object": {"temperatureSensor": {"1": 21.5}}}"#;
        assert_eq!(parse_up_event(topic, half).map(|u| u.lpp_decoded), Some(false));
        assert_eq!(parse_up_event(topic, b"{}"), None);
        assert_eq!(parse_up_event("application/x/event/up", br#"{"fCnt": 7}"#), None);
    }

    #[test]
    fn mqtt_urls_parse_with_and_without_credentials() {
        assert_eq!(
            MqttTarget::parse("mqtt://127.0.0.1:1883").unwrap(),
            MqttTarget { host: "127.0.0.1".into(), port: 1883, credentials: None }
        );
        assert_eq!(
            MqttTarget::parse("mqtt://u:p@broker").unwrap(),
            MqttTarget { host: "broker".into(), port: 1883, credentials: Some(("u".into(), "p".into())) }
        );
        assert!(MqttTarget::parse("mqtts://broker:8883").is_err());
        assert!(MqttTarget::parse("mqtt://broker:x").is_err());
    }

    #[test]
    fn the_child_server_gets_the_region_of_the_devices() {
        let env = server_region_env(&RadioPlan::default());
        assert_eq!(
            env,
            [
                ("LORAFLOW_NETWORK__REGION", "EU868".to_string()),
                ("LORAFLOW_NETWORK__EXTRA_CHANNELS", "867100000,867300000,867500000,867700000,867900000".to_string())
            ]
        );
        if let Ok(plan) = RadioPlan::from_id("us915_0") {
            let env = server_region_env(&plan);
            assert_eq!(env[0], ("LORAFLOW_NETWORK__REGION", "US915".to_string()));
            assert_eq!(env[1], ("LORAFLOW_NETWORK__EXTRA_CHANNELS", String::new()));
            assert_eq!(env[2], ("LORAFLOW_NETWORK__ENABLED_UPLINK_CHANNELS", "0,1,2,3,4,5,6,7,64".to_string()));
        }
    }

    #[test]
    fn a_target_needs_its_udp_address_and_token() {
        assert!(Cli::try_parse_from(["x", "--target-api", "http://h:8080"]).is_err());
        assert!(Cli::try_parse_from(["x", "--target-api", "http://h:8080", "--target-udp", "h:1700", "--token", "t"]).is_ok());
        let a = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!((a.devices, a.gateways, a.rate, a.dedup_ms, a.find_max), (100, None, 100.0, 200, false));
        assert_eq!((a.instances, gateway_count(&a, 1)), (1, 1));
    }

    /// `x` + the arguments, parsed.
    fn parse(args: &str) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.split_whitespace())).unwrap().args
    }

    const SHARED: &str = "--database postgres://u@h/db --mqtt mqtt://h:1883";

    #[test]
    fn several_instances_need_postgres_a_broker_and_a_gateway_each() {
        assert!(check_cluster_args(&parse("--instances 3")).is_err(), "SQLite cannot be shared");
        assert!(check_cluster_args(&parse("--instances 3 --database postgres://u@h/db")).is_err(), "no broker");
        let three = parse(&format!("{SHARED} --instances 3"));
        check_cluster_args(&three).unwrap();
        assert_eq!(gateway_count(&three, 3), 3, "one gateway per instance by default");
        assert!(check_cluster_args(&parse(&format!("{SHARED} --instances 3 --gateways 2"))).is_err());
        assert!(check_cluster_args(&parse("--redis redis://h")).is_err(), "cluster mode with one instance needs PostgreSQL too");
        assert!(Cli::try_parse_from(["x", "--instances", "2", "--target-api", "http://h", "--target-udp", "h:1", "--token", "t"]).is_err());
        let t = parse("--target-api http://h --target-udp a:1700,b:1700 --token t");
        assert_eq!(t.target_udp, ["a:1700", "b:1700"]);
        check_cluster_args(&t).unwrap();
        assert_eq!(gateway_count(&t, 2), 2);
    }

    #[test]
    fn each_instance_gets_its_own_id_and_mqtt_client_under_one_prefix() {
        assert_eq!(cluster_run(&parse(SHARED)), None, "one instance without --redis stays single");
        assert_eq!(cluster_run(&parse(&format!("{SHARED} --redis redis://r:1"))).map(|c| c.redis_url), Some("redis://r:1".to_string()));
        let args = parse(&format!("{SHARED} --instances 2"));
        let c = cluster_run(&args).unwrap();
        assert_eq!(c.redis_url, DEFAULT_REDIS);
        let (a, b) = (c.instance_env(0), c.instance_env(1));
        let get = |env: &[(&str, String)], k: &str| env.iter().find(|(ek, _)| *ek == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get(&a, "LORAFLOW_CLUSTER__KEY_PREFIX"), get(&b, "LORAFLOW_CLUSTER__KEY_PREFIX"));
        assert_ne!(get(&a, "LORAFLOW_CLUSTER__INSTANCE_ID"), get(&b, "LORAFLOW_CLUSTER__INSTANCE_ID"));
        assert_ne!(get(&a, "LORAFLOW_MQTT__CLIENT_ID"), get(&b, "LORAFLOW_MQTT__CLIENT_ID"));
        assert_ne!(cluster_run(&args).unwrap().prefix, c.prefix, "a prefix per run");
    }

    #[test]
    fn cpu_is_read_per_instance_and_missing_when_one_ended() {
        assert_eq!(cpu_per_1000(Some(&[1.0, 2.0]), Some(&[1.5, 3.0]), 500), [1.0, 2.0]);
        assert!(cpu_per_1000(Some(&[1.0]), None, 500).is_empty());
        assert!(cpu_per_1000(Some(&[1.0]), Some(&[2.0]), 0).is_empty());
    }
}
