//! `loraflow simulate`: virtual gateways and OTAA devices against a running server, over its
//! real interfaces only (Semtech UDP and REST). For demos, soak tests and trying codecs.
//!
//! Gateways and devices get EUIs from fixed prefixes, so a rerun reuses what the last run
//! registered: an existing device gets a new AppKey and its DevNonces are cleared so that it
//! can join again from nonce 1.
//!
//! Devices answer the server's MAC commands (see `sim::mac`). With `--adr` they set the ADR
//! bit, start at DR0 and follow LinkADRReq, so ADR can be watched converging: the progress line
//! shows how many devices use each data rate, `--verbose` a per-device table, `--json` the
//! final state of every device.
//!
//! `--existing-device DEVEUI:APPKEY` simulates one device registered beforehand (through the
//! console or the REST API, LoRaWAN 1.0.x OTAA with that AppKey) instead of registering its
//! own: the application, the device profile, the device and its keys stay as they are; only
//! its used DevNonces are cleared, since the simulator joins from DevNonce 1.
//!
//! `--region` picks the region and channel plan (`eu868`, `us915_1` = US915 sub-band 2, …, see
//! `sim::plan`): devices send on its channels and data rates, follow the join-accept's CFList,
//! and hear a downlink only on the frequency and data rate of a window they have open, so a
//! downlink the server sends elsewhere shows up as refused. `--class-c` devices also listen on
//! RX2 all the time.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use loraflow_network_server::types::{AesKey, Eui64};

use crate::sim::board::{dr_distribution, table, DeviceRow, DeviceSlot};
use crate::sim::device::{random_key, VirtualDevice};
use crate::sim::gateway::{Gateways, DEFAULT_SNR};
use crate::sim::mac::{MacConfig, RxWindow};
use crate::sim::payload::PayloadKind;
use crate::sim::plan::RadioPlan;
use crate::sim::provision::{Api, ProfileSpec};
use crate::sim::router::Router;
use crate::sim::{join_at, Radio, Snapshot, Stats};

/// "LFSIMG" + index: the simulator's gateways.
pub const GATEWAY_EUI_PREFIX: u64 = 0x4c46_5349_4d47_0000;
/// "LFSIMD" + index: the simulator's devices.
pub const DEVICE_EUI_PREFIX: u64 = 0x4c46_5349_4d44_0000;
/// Name of the application and device profile the simulator creates.
pub const NAME: &str = "loraflow-simulator";
/// REST calls in flight while registering devices.
const PROVISION_CONCURRENCY: usize = 8;
/// How often `--verbose` prints the device table while running.
const TABLE_PERIOD: Duration = Duration::from_secs(10);
/// How long a run with `--uplinks` waits after the last uplink for late downlinks: RX2 opens
/// 2 s after an uplink with the default RX1 delay (RP002-1.0.4 §2.4.7), plus the server's
/// dedup window.
const LAST_DOWNLINK_GRACE: Duration = Duration::from_millis(2500);

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
    /// Region and channel plan: a region config id as ChirpStack names them (`eu868`,
    /// `us915_1` = US915 sub-band 2 = channels 8-15 and 65, `au915_0`, `as923_2`, …) or a
    /// common name (`US915`: the region's usual gateway plan).
    #[arg(long, default_value = "eu868", value_name = "ID")]
    pub region: String,
    /// Class C devices: they listen on RX2 whenever they do not send, so the server can send
    /// them downlinks at any time; the device profile says supportsClassC.
    #[arg(long)]
    pub class_c: bool,
    /// Number of virtual gateways; every device is heard by all of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub gateways: u32,
    /// Number of virtual OTAA devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub devices: u32,
    /// Simulate this device, already registered on the server as a LoRaWAN 1.0.x OTAA device
    /// with this AppKey, instead of registering devices; its profile is left as it is (with
    /// --lpp only the payload changes). Its used DevNonces are cleared.
    #[arg(long, value_name = "DEVEUI:APPKEY", value_parser = parse_existing_device)]
    pub existing_device: Option<ExistingDevice>,
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
    /// Each device stops after this many uplinks; the run ends when all have (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub uplinks: u64,
    /// Devices set the ADR bit, follow LinkADRReq and back off without downlinks (LoRaWAN
    /// 1.0.4 §4.3.1.1); they start at DR0 unless --dr says otherwise, and the device profile
    /// allows ADR.
    #[arg(long)]
    pub adr: bool,
    /// Data rate after the join, in the region's numbering (EU868 DR0 = SF12BW125 … DR5 =
    /// SF7BW125; US915 DR0 = SF10BW125 … DR3 = SF7BW125, DR4 = SF8BW500). Default: 0 with
    /// --adr, else the fastest 125 kHz LoRa rate (EU868 5, US915 3).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=15))]
    pub dr: Option<u8>,
    /// Highest data rate the devices support, from the fastest 125 kHz LoRa rate up to the
    /// region's fastest LoRa/FSK one (EU868 5-7: 6 = SF7BW250, 7 = FSK; US915 3-4). Default:
    /// the fastest 125 kHz LoRa rate.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=15))]
    pub max_dr: Option<u8>,
    /// TXPower index after the join: 0 is the maximum, each step 2 dB less (EU868 0..=7,
    /// US915 0..=14).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=15))]
    pub tx_power: u8,
    /// SNR in dB at the nearest gateway of a device sending at maximum power; each further
    /// gateway hears 3 dB less, each TXPower step costs 2 dB.
    #[arg(long, default_value_t = DEFAULT_SNR, allow_negative_numbers = true)]
    pub snr: f32,
    /// Battery level the devices report in DevStatusAns: 0 external power, 1..=254, 255 unknown.
    #[arg(long, default_value_t = 254)]
    pub battery: u8,
    /// Print a table of every device (DevEUI, DR, TX power, NbTrans, uplinks, downlinks)
    /// every 10 s and at the end.
    #[arg(long)]
    pub verbose: bool,
    /// Print the final report as one JSON object on stdout; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
}

/// The final report `--json` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The `--region` id.
    pub region: String,
    pub sent: u64,
    pub joined: u64,
    /// PULL_RESPs the gateways received (join-accepts included).
    pub downlinks: u64,
    pub errors: u64,
    pub join_retries: u64,
    pub devices: Vec<DeviceRow>,
}

/// `--existing-device`: a registered device and its AppKey.
#[derive(Clone, PartialEq, Eq)]
pub struct ExistingDevice {
    pub dev_eui: Eui64,
    pub app_key: AesKey,
}

/// Never prints the key.
impl std::fmt::Debug for ExistingDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistingDevice").field("dev_eui", &self.dev_eui).finish_non_exhaustive()
    }
}

/// `DEVEUI:APPKEY`, 16 and 32 hex characters, any case.
fn parse_existing_device(s: &str) -> Result<ExistingDevice, String> {
    let (eui, key) = s.trim().split_once(':').ok_or("expected DEVEUI:APPKEY (16 and 32 hex characters)")?;
    let dev_eui = eui.to_ascii_lowercase().parse::<Eui64>().map_err(|_| format!("DevEUI {eui:?}: expected 16 hex characters"))?;
    // The key is not echoed back: it is a secret.
    let app_key =
        key.to_ascii_lowercase().parse::<AesKey>().map_err(|_| format!("AppKey: expected 32 hex characters ({} given)", key.len()))?;
    Ok(ExistingDevice { dev_eui, app_key })
}

impl SimulateArgs {
    /// The region and channel plan of `--region`.
    pub fn plan(&self) -> anyhow::Result<Arc<RadioPlan>> {
        RadioPlan::from_id(&self.region).map(Arc::new).map_err(|e| anyhow::anyhow!("--region: {e}"))
    }

    fn payload_kind(&self, plan: &RadioPlan) -> anyhow::Result<PayloadKind> {
        if self.lpp {
            return Ok(PayloadKind::Lpp);
        }
        match &self.payload {
            None => Ok(PayloadKind::Counter),
            Some(h) => {
                let bytes = hex::decode(h.trim()).context("--payload: expected hex bytes, e.g. 0102ff")?;
                // ADR devices may back off to the slowest data rate, where less fits.
                let floor_dr = if self.adr { slowest_dr(plan) } else { self.initial_dr(plan) };
                let max = uplink_payload(plan, floor_dr);
                if bytes.len() > max {
                    bail!("--payload: {} bytes do not fit {} DR{floor_dr} (at most {max})", bytes.len(), plan.region.common_name());
                }
                Ok(PayloadKind::Fixed(bytes))
            }
        }
    }

    fn initial_dr(&self, plan: &RadioPlan) -> u8 {
        self.dr.unwrap_or(if self.adr { slowest_dr(plan) } else { plan.region.max_adr_dr() })
    }

    /// What every simulated device is, from the flags and the region.
    pub fn mac_config(&self, plan: &RadioPlan) -> anyhow::Result<MacConfig> {
        let region = plan.common_name();
        let (low, high) = (plan.region.max_adr_dr(), plan.max_uplink_dr());
        let max_dr = self.max_dr.unwrap_or(low);
        if !(low..=high).contains(&max_dr) {
            bail!("--max-dr {max_dr}: {region} devices support DR{low} to DR{high} at most");
        }
        let initial_dr = self.initial_dr(plan);
        if !plan.is_uplink_dr(initial_dr) {
            bail!("--dr {initial_dr} is not a LoRa or FSK uplink data rate of {region}");
        }
        if uplink_payload(plan, initial_dr) == 0 {
            bail!("--dr {initial_dr}: {region} devices cannot send at DR{initial_dr} under the uplink dwell time");
        }
        if initial_dr > max_dr {
            bail!("--dr {initial_dr} is above --max-dr {max_dr}");
        }
        let top_power = plan.region.max_tx_power_index();
        if self.tx_power > top_power {
            bail!("--tx-power {}: {region} defines TXPower 0 to {top_power}", self.tx_power);
        }
        if !self.snr.is_finite() {
            bail!("--snr: expected dB, got {}", self.snr);
        }
        Ok(MacConfig { adr: self.adr, max_dr, initial_dr, initial_tx_power: self.tx_power, battery: self.battery, class_c: self.class_c })
    }
}

/// Bytes of FOpts + FRMPayload at `dr` for a device just activated (with the region's default
/// uplink dwell time).
fn uplink_payload(plan: &RadioPlan, dr: u8) -> usize {
    plan.region.max_payload_size_for(dr, plan.region.default_dwell_time().uplink).map_or(0, |m| m.n)
}

/// The slowest data rate a device just activated can send at: DR0, or AS923 DR2 under dwell time.
fn slowest_dr(plan: &RadioPlan) -> u8 {
    (0..=15).find(|&dr| plan.is_uplink_dr(dr) && uplink_payload(plan, dr) > 0).unwrap_or(0)
}

/// Runs the simulation until Ctrl-C, `--seconds` or every device's `--uplinks`; prints a line
/// per second and a final `simulate done: sent=… joined=… downlinks=… errors=…` (on stderr
/// with `--json`, which prints the [`Report`] on stdout instead).
pub async fn run(args: SimulateArgs) -> anyhow::Result<Snapshot> {
    let plan = args.plan()?;
    let payload = args.payload_kind(&plan)?;
    let mac_config = args.mac_config(&plan)?;
    if !(args.interval.is_finite() && args.interval >= 0.01) {
        bail!("--interval: expected seconds >= 0.01, got {}", args.interval);
    }
    let server = tokio::net::lookup_host(&args.server)
        .await
        .with_context(|| format!("--server {}: cannot resolve", args.server))?
        .next()
        .with_context(|| format!("--server {}: no address", args.server))?;
    let api = Api::new(&args.api, &args.token);

    if args.existing_device.is_some() && args.devices > 1 {
        bail!("--existing-device simulates one device: --devices must be 1, got {}", args.devices);
    }
    let gateways = Gateways::bind(GATEWAY_EUI_PREFIX, args.gateways as usize, server).await.context("binding gateway sockets")?;
    let devices = match &args.existing_device {
        Some(existing) => vec![existing_device(&api, existing).await?.with_plan(plan.clone()).with_mac(mac_config)],
        None => provision_devices(&api, &args, &plan, mac_config).await?,
    };
    let region_config = gateway_region_config(&api, &plan).await?;
    for (i, eui) in gateways.euis().into_iter().enumerate() {
        api.ensure_gateway_in(eui, &format!("sim-gw-{i}"), region_config.as_deref()).await.context("registering gateways")?;
    }

    let stats = Arc::new(Stats::default());
    let radio = Radio { gateways: gateways.clone(), router: Arc::new(Router::default()), stats: stats.clone() };
    let shutdown = CancellationToken::new();
    let mut tasks = gateways.spawn(&radio.router, &stats, &shutdown);
    if !gateways.wait_pull_acks(Duration::from_secs(3)).await {
        tracing::warn!("not every gateway got a PULL_ACK; downlinks may not arrive");
    }

    let interval = Duration::from_secs_f64(args.interval);
    let count = devices.len();
    let slots: Arc<Vec<DeviceSlot>> = Arc::new(devices.iter().map(|d| DeviceSlot::new(d.dev_eui)).collect());
    for (i, dev) in devices.into_iter().enumerate() {
        let stagger = interval.mul_f64(i as f64 / count as f64);
        // Joins are spread over the first second, not one burst.
        let join_delay = Duration::from_secs(1).mul_f64(i as f64 / count as f64);
        let ctx = DeviceCtx {
            index: i,
            radio: radio.clone(),
            payload: payload.clone(),
            f_port: args.f_port,
            interval,
            stagger,
            join_delay,
            link_snr: args.snr,
            max_uplinks: args.uplinks,
            slots: slots.clone(),
        };
        tasks.push(tokio::spawn(run_device(dev, ctx, shutdown.clone())));
    }

    let out = Output { adr: args.adr, verbose: args.verbose, json: args.json };
    report_until_done(&stats, &slots, args.devices, args.seconds, args.uplinks > 0, out, &shutdown).await;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let s = stats.snapshot();
    let rows: Vec<DeviceRow> = slots.iter().map(DeviceSlot::row).collect();
    if out.verbose {
        out.say(table(&rows).trim_end());
    }
    let mut done = format!(
        "simulate done: sent={} joined={} downlinks={} errors={} join_retries={}",
        s.uplinks_sent, s.joined, s.downlinks, s.errors, s.join_retries
    );
    if out.adr {
        done = format!("{done} {}", dr_distribution(&rows));
    }
    out.say(&done);
    if out.json {
        let report = Report {
            region: plan.id.clone(),
            sent: s.uplinks_sent,
            joined: s.joined,
            downlinks: s.downlinks,
            errors: s.errors,
            join_retries: s.join_retries,
            devices: rows,
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(s)
}

/// Registers the simulator's application, profile and `--devices` devices (or finds them from
/// an earlier run), each with a new AppKey and its DevNonces cleared.
async fn provision_devices(
    api: &Api,
    args: &SimulateArgs,
    plan: &Arc<RadioPlan>,
    mac_config: MacConfig,
) -> anyhow::Result<Vec<VirtualDevice>> {
    let codec = if args.lpp { "CAYENNE_LPP" } else { "NONE" };
    let application_id = api.ensure_application(NAME).await.context("creating the application")?;
    let spec = ProfileSpec { codec, adr: args.adr, class_c: args.class_c, region: plan.region.common_name() };
    let profile_id = api.ensure_device_profile_spec(NAME, &spec).await.context("creating the device profile")?;
    stream::iter(0..args.devices)
        .map(|i| {
            let api = api.clone();
            let plan = plan.clone();
            let (application_id, profile_id) = (application_id.clone(), profile_id.clone());
            async move {
                let dev_eui = Eui64::from_u64(DEVICE_EUI_PREFIX + u64::from(i));
                let app_key = random_key();
                let existed = api.ensure_device(dev_eui, &format!("sim-dev-{i}"), &application_id, &profile_id).await?;
                api.set_app_key(dev_eui, &app_key).await?;
                if existed {
                    api.clear_dev_nonces(dev_eui).await?;
                }
                anyhow::Ok(VirtualDevice::otaa(dev_eui, app_key).with_plan(plan).with_mac(mac_config))
            }
        })
        .buffered(PROVISION_CONCURRENCY)
        .try_collect()
        .await
        .context("registering devices")
}

/// The `--existing-device`, as registered: its JoinEUI from the server, its DevNonces cleared
/// so that it can join from DevNonce 1 however often it joined before.
async fn existing_device(api: &Api, existing: &ExistingDevice) -> anyhow::Result<VirtualDevice> {
    let dev_eui = existing.dev_eui;
    let join_eui = api
        .device_join_eui(dev_eui)
        .await
        .context("reading the --existing-device")?
        .with_context(|| format!("--existing-device: the server has no device {dev_eui}"))?;
    api.clear_dev_nonces(dev_eui).await.context("clearing the --existing-device's DevNonces")?;
    let mut device = VirtualDevice::otaa(dev_eui, existing.app_key);
    device.join_eui = join_eui;
    Ok(device)
}

/// The server region config the gateways belong to, when the server has region configs.
pub async fn gateway_region_config(api: &Api, plan: &RadioPlan) -> anyhow::Result<Option<String>> {
    let Some(configs) = api.region_configs().await.context("reading the server's region configs")? else { return Ok(None) };
    crate::sim::provision::region_config_for(plan, &configs).map(Some).map_err(|e| anyhow::anyhow!("--region {}: {e}", plan.id))
}

/// Where and what the simulator prints.
#[derive(Debug, Clone, Copy)]
struct Output {
    adr: bool,
    verbose: bool,
    json: bool,
}

impl Output {
    /// A human line: stdout, or stderr when stdout carries the JSON report.
    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

struct DeviceCtx {
    index: usize,
    radio: Radio,
    payload: PayloadKind,
    f_port: u8,
    interval: Duration,
    stagger: Duration,
    join_delay: Duration,
    /// SNR at the nearest gateway at maximum power (`--snr`).
    link_snr: f32,
    /// `--uplinks` (0: no limit).
    max_uplinks: u64,
    slots: Arc<Vec<DeviceSlot>>,
}

/// NbTrans repetitions of the last frame still to send (LoRaWAN 1.0.4 §5.2).
struct Repeat {
    phy: Vec<u8>,
    left: u8,
    gap: Duration,
    at: Instant,
}

async fn run_device(mut dev: VirtualDevice, ctx: DeviceCtx, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(ctx.join_delay) => {}
    }
    let slot = &ctx.slots[ctx.index];
    match join_at(&mut dev, &ctx.radio, ctx.link_snr, &tx, &mut rx, 0, &shutdown).await {
        Ok(session) => slot.joined(session.dev_addr, &dev.mac),
        Err(_) => return,
    }
    let stats = &ctx.radio.stats;
    // Not `thread_rng`: the task moves between threads at every await.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut tick = tokio::time::interval_at(Instant::now() + ctx.stagger, ctx.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    let mut repeat: Option<Repeat> = None;
    let mut finished = false;
    loop {
        let repeat_at = repeat.as_ref().map(|r| r.at);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick(), if !finished => {
                let payload = ctx.payload.payload(ctx.index, n);
                match dev.next_uplink(ctx.f_port, &payload, &mut rng) {
                    Ok(up) => {
                        if let Some(snr) = ctx.radio.transmit_as(&up.phy, &up.tx, ctx.link_snr).await {
                            dev.mac.set_link_snr(snr);
                            stats.uplinks_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        slot.uplink(up.adr_ack_req);
                        slot.radio(&dev.mac);
                        if ctx.max_uplinks > 0 && slot.uplinks() >= ctx.max_uplinks {
                            // Still listening: late downlinks and repetitions go on.
                            finished = true;
                            slot.finish();
                        }
                        if up.app_payload_sent {
                            n = n.wrapping_add(1);
                        }
                        // Repetitions are spread over the interval; a new frame ends them.
                        repeat = (up.nb_trans > 1).then(|| {
                            let gap = ctx.interval / u32::from(up.nb_trans);
                            Repeat { phy: up.phy, left: up.nb_trans - 1, gap, at: Instant::now() + gap }
                        });
                    }
                    Err(e) => {
                        stats.error();
                        tracing::warn!(dev_eui = %dev.dev_eui, error = %e, "uplink not built");
                    }
                }
            }
            _ = sleep_until_opt(repeat_at) => {
                if let Some(r) = repeat.as_mut() {
                    // Frequency hopping for every transmission (LoRaWAN 1.0.4 §5.2).
                    let tx = dev.repeat_tx(&mut rng);
                    if ctx.radio.transmit_as(&r.phy, &tx, ctx.link_snr).await.is_some() {
                        slot.repeat();
                    }
                    r.left -= 1;
                    r.at += r.gap;
                    if r.left == 0 {
                        repeat = None;
                    }
                }
            }
            msg = rx.recv() => {
                let Some(down) = msg else { return };
                // A radio hears only the windows it has open; elsewhere the frame is lost.
                let window = match dev.hears(&down.radio, false) {
                    Ok(w) => w,
                    Err(e) => {
                        stats.error();
                        stats.refused_downlinks.fetch_add(1, Ordering::Relaxed);
                        slot.refused();
                        tracing::warn!(dev_eui = %dev.dev_eui, error = %e, "downlink outside the receive windows");
                        continue;
                    }
                };
                match dev.read_downlink(&down.phy) {
                    Ok(d) => {
                        stats.device_downlinks.fetch_add(1, Ordering::Relaxed);
                        slot.downlink(window == RxWindow::ClassC);
                        tracing::debug!(dev_eui = %dev.dev_eui, ?window, f_cnt = d.f_cnt, "downlink received");
                        slot.radio(&dev.mac);
                        // A downlink ends the repetitions of the frame it answers (§5.2).
                        repeat = None;
                        if let Some(e) = d.mac.error {
                            tracing::debug!(dev_eui = %dev.dev_eui, error = %e, "MAC commands cut short");
                        }
                    }
                    Err(e) => {
                        stats.error();
                        tracing::warn!(dev_eui = %dev.dev_eui, error = %e, "downlink refused");
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The progress line; `dr` is the data-rate distribution, shown with `--adr`.
fn status_line(elapsed: u64, s: &Snapshot, devices: u32, dr: Option<&str>) -> String {
    let line = format!(
        "[{elapsed:>5}s] sent={} joined={}/{devices} downlinks={} errors={} join_retries={}",
        s.uplinks_sent, s.joined, s.downlinks, s.errors, s.join_retries
    );
    match dr {
        Some(dr) if !dr.is_empty() => format!("{line} {dr}"),
        _ => line,
    }
}

/// Prints a line per second until Ctrl-C, `seconds` (0 = no limit) or, with `until_uplinks`,
/// shortly after every device has sent its uplinks.
#[allow(clippy::too_many_arguments)]
async fn report_until_done(
    stats: &Stats,
    slots: &[DeviceSlot],
    devices: u32,
    seconds: u64,
    until_uplinks: bool,
    out: Output,
    shutdown: &CancellationToken,
) {
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
    // With --json the lines go to stderr as plain lines; the bar would interleave with them.
    if out.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let to_stdout = !std::io::stdout().is_terminal();
    let start = tokio::time::Instant::now();
    let mut next_table = start + TABLE_PERIOD;
    let mut all_done_at: Option<Instant> = None;
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
                let rows: Vec<DeviceRow> = if out.adr || out.verbose { slots.iter().map(DeviceSlot::row).collect() } else { Vec::new() };
                let dist = out.adr.then(|| dr_distribution(&rows));
                let line = status_line(elapsed, &s, devices, dist.as_deref());
                bar.set_position(elapsed.min(seconds.max(1)));
                bar.set_message(format!("sent={} joined={}/{devices} errors={}", s.uplinks_sent, s.joined, s.errors));
                let now = Instant::now();
                let show_table = out.verbose && now >= next_table;
                if show_table {
                    next_table = now + TABLE_PERIOD;
                }
                if out.json {
                    eprintln!("{line}");
                    if show_table {
                        eprint!("{}", table(&rows));
                    }
                } else if to_stdout || bar.is_hidden() {
                    bar.suspend(|| {
                        println!("{line}");
                        if show_table {
                            print!("{}", table(&rows));
                        }
                    });
                } else {
                    bar.println(line);
                    if show_table {
                        bar.println(table(&rows).trim_end());
                    }
                }
                if until_uplinks && slots.iter().all(DeviceSlot::is_done) {
                    let since = *all_done_at.get_or_insert(now);
                    if now >= since + LAST_DOWNLINK_GRACE {
                        break;
                    }
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

    /// The flags resolved against their `--region`, as `run` does.
    trait Resolved {
        fn pk(&self) -> anyhow::Result<PayloadKind>;
        fn mc(&self) -> anyhow::Result<MacConfig>;
    }

    impl Resolved for SimulateArgs {
        fn pk(&self) -> anyhow::Result<PayloadKind> {
            self.payload_kind(&*self.plan()?)
        }
        fn mc(&self) -> anyhow::Result<MacConfig> {
            self.mac_config(&*self.plan()?)
        }
    }

    #[test]
    fn defaults_are_one_gateway_one_device_every_five_seconds_forever() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.gateways, a.devices, a.interval, a.seconds, a.f_port), (1, 1, 5.0, 0, 1));
        assert_eq!(a.pk().unwrap(), PayloadKind::Counter);
    }

    #[test]
    fn payload_and_lpp_exclude_each_other() {
        assert!(parse(&["--payload", "01", "--lpp"]).is_err());
        assert_eq!(parse(&["--lpp"]).unwrap().pk().unwrap(), PayloadKind::Lpp);
        assert_eq!(parse(&["--payload", "01ff"]).unwrap().pk().unwrap(), PayloadKind::Fixed(vec![1, 0xff]));
    }

    #[test]
    fn bad_payload_hex_and_zero_gateways_are_refused() {
        assert!(parse(&["--payload", "zz"]).unwrap().pk().is_err());
        assert!(parse(&["--payload", &"00".repeat(243)]).unwrap().pk().is_err());
        assert!(parse(&["--gateways", "0"]).is_err());
    }

    #[test]
    fn the_status_line_names_every_counter() {
        let s = Snapshot { uplinks_sent: 4, joined: 2, downlinks: 2, errors: 0, join_retries: 1, ..Default::default() };
        assert_eq!(status_line(3, &s, 3, None), "[    3s] sent=4 joined=2/3 downlinks=2 errors=0 join_retries=1");
        assert_eq!(status_line(3, &s, 3, Some("")), "[    3s] sent=4 joined=2/3 downlinks=2 errors=0 join_retries=1");
        assert_eq!(
            status_line(3, &s, 3, Some("DR0:1 DR5:1")),
            "[    3s] sent=4 joined=2/3 downlinks=2 errors=0 join_retries=1 DR0:1 DR5:1"
        );
    }

    #[test]
    fn adr_devices_start_at_dr0_and_others_at_dr5_unless_told() {
        // (flags, expected initial DR, ADR)
        let table: [(&[&str], u8, bool); 4] =
            [(&[], 5, false), (&["--adr"], 0, true), (&["--adr", "--dr", "3"], 3, true), (&["--dr", "2"], 2, false)];
        for (flags, dr, adr) in table {
            let c = parse(flags).unwrap().mc().unwrap();
            assert_eq!((c.initial_dr, c.adr, c.max_dr, c.initial_tx_power, c.battery), (dr, adr, 5, 0, 254), "{flags:?}");
        }
        let c = parse(&["--max-dr", "7", "--dr", "7", "--tx-power", "3", "--battery", "0", "--snr", "-12.5"]).unwrap();
        assert_eq!(c.snr, -12.5);
        let c = c.mc().unwrap();
        assert_eq!((c.initial_dr, c.max_dr, c.initial_tx_power, c.battery), (7, 7, 3, 0));
    }

    #[test]
    fn radio_flags_out_of_range_are_refused() {
        assert!(parse(&["--dr", "16"]).is_err());
        assert!(parse(&["--dr", "8"]).unwrap().mc().is_err(), "EU868 DR8 is LR-FHSS");
        assert!(parse(&["--max-dr", "4"]).unwrap().mc().is_err());
        assert!(parse(&["--max-dr", "8"]).unwrap().mc().is_err());
        assert!(parse(&["--tx-power", "8"]).unwrap().mc().is_err(), "EU868 TXPower 8 is RFU");
        assert!(parse(&["--battery", "256"]).is_err());
        assert!(parse(&["--dr", "6"]).unwrap().mc().is_err(), "DR6 needs --max-dr 6");
        assert!(parse(&["--snr", "NaN"]).unwrap().mc().is_err());
    }

    #[test]
    fn an_adr_payload_must_fit_dr0() {
        assert!(parse(&["--payload", &"00".repeat(242)]).unwrap().pk().is_ok());
        assert!(parse(&["--adr", "--payload", &"00".repeat(51)]).unwrap().pk().is_ok());
        assert!(parse(&["--adr", "--payload", &"00".repeat(52)]).unwrap().pk().is_err());
        assert!(parse(&["--dr", "3", "--payload", &"00".repeat(116)]).unwrap().pk().is_err());
    }

    #[test]
    fn the_region_flag_takes_ids_and_names_and_class_c_reaches_the_devices() {
        assert_eq!(parse(&[]).unwrap().plan().unwrap().id, "eu868");
        let err = parse(&["--region", "mars433"]).unwrap().plan().unwrap_err().to_string();
        assert!(err.starts_with("--region: unknown region \"mars433\""), "{err}");
        assert!(parse(&["--region", "EU868"]).unwrap().mc().is_ok());
        assert!(!parse(&[]).unwrap().mc().unwrap().class_c);
        assert!(parse(&["--class-c"]).unwrap().mc().unwrap().class_c);
    }

    /// Runs once the US915 table exists in the network server (branch regions-fixed).
    #[test]
    fn us915_devices_default_to_dr3_and_know_dr4_and_fourteen_power_steps() {
        if loraflow_network_server::region::region_by_name("US915").is_none() {
            return;
        }
        let c = parse(&["--region", "us915_1"]).unwrap().mc().unwrap();
        assert_eq!((c.initial_dr, c.max_dr), (3, 3), "DR3 = SF7BW125 is the fastest 125 kHz rate");
        assert_eq!(parse(&["--region", "us915_1", "--adr"]).unwrap().mc().unwrap().initial_dr, 0);
        let c = parse(&["--region", "us915_1", "--max-dr", "4", "--dr", "4", "--tx-power", "14"]).unwrap().mc().unwrap();
        assert_eq!((c.initial_dr, c.max_dr, c.initial_tx_power), (4, 4, 14));
        assert!(parse(&["--region", "us915_1", "--dr", "5"]).unwrap().mc().is_err(), "US915 DR5 is LR-FHSS");
        // 11 bytes fit DR0 (SF10BW125), 12 do not.
        assert!(parse(&["--region", "us915_1", "--adr", "--payload", &"00".repeat(11)]).unwrap().pk().is_ok());
        assert!(parse(&["--region", "us915_1", "--adr", "--payload", &"00".repeat(12)]).unwrap().pk().is_err());
    }

    #[test]
    fn as923_adr_devices_start_at_dr2_under_the_default_uplink_dwell_time() {
        let c = parse(&["--region", "as923", "--adr"]).unwrap().mc().unwrap();
        assert_eq!((c.initial_dr, c.max_dr), (2, 5), "DR0-1 carry nothing with dwell time (RP002-1.0.4 §2.10.6)");
        assert!(parse(&["--region", "as923", "--dr", "1"]).unwrap().mc().is_err());
        // DR2 under dwell time carries 11 bytes.
        assert!(parse(&["--region", "as923", "--adr", "--payload", &"00".repeat(11)]).unwrap().pk().is_ok());
        assert!(parse(&["--region", "as923", "--adr", "--payload", &"00".repeat(12)]).unwrap().pk().is_err());
    }
}
