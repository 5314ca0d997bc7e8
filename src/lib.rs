//! loraflow: a LoRaWAN network server and application server in one binary.
//!
//! # Layout
//! - `config`: the typed configuration (TOML + `LORAFLOW_<SECTION>__<KEY>` overrides).
//! - `log_format`: text-log field formatting that escapes control characters.
//! - `fd_limit`: the file-descriptor limit and the share REST connections may use.
//! - `process_metrics`: `loraflow_build_info` and the `process_*` metrics.
//! - `server`: start-up, wiring of the components, graceful shutdown.
//! - `sim`: virtual gateways and devices; `simulate` and `bench` are the CLI tools built on them.
//! - `bench_query`: `loraflow bench-query`, the measurement queries timed over a day of values.
//! - `child_server`: a `loraflow serve` child process for the tools that measure a server.
//!
//! The components live in their own crates: `loraflow-packet-forwarder` (Semtech UDP),
//! `loraflow-network-server` (LoRaWAN MAC, storage) and `loraflow-app-server` (payloads,
//! MQTT, REST).

pub mod bench;
pub mod bench_query;
pub mod child_server;
pub mod config;
pub mod fd_limit;
pub mod log_format;
pub mod process_metrics;
pub mod server;
pub mod sim;
pub mod simulate;
