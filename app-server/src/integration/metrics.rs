//! Metrics of the integration pipeline, registered once per registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The `kind` values of `loraflow_events_published_total`.
pub const EVENT_KINDS: [&str; 6] = ["up", "join", "ack", "txack", "status", "log"];
/// The `reason` values of `loraflow_history_dropped_total`.
pub const HISTORY_DROP_REASONS: [&str; 3] = ["buffer_full", "rejected", "shutdown"];
/// The `outcome` values of `loraflow_downlink_commands_total`.
pub const DOWNLINK_COMMAND_OUTCOMES: [&str; 3] = ["queued", "invalid", "error"];

#[derive(Clone)]
pub struct IntegrationMetrics {
    pub uplinks_published: IntCounter,
    /// Per event kind: up, join, ack, txack, status, log.
    pub events_published: IntCounterVec,
    pub codec_errors: IntCounter,
    pub codec_seconds: Histogram,
    pub history_batch_size: Histogram,
    pub history_write_seconds: Histogram,
    /// Rows accepted and not yet written (buffered or in the batch being written).
    pub history_buffer_depth: IntGauge,
    /// Rows never written, by reason: buffer_full, rejected (the database refused the
    /// row itself), shutdown (flush timeout at shutdown).
    pub history_dropped: IntCounterVec,
    /// Downlink commands from MQTT by outcome: queued, invalid, error.
    pub downlink_commands: IntCounterVec,
}

impl IntegrationMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = IntegrationMetrics {
            uplinks_published: IntCounter::new("loraflow_uplinks_published_total", "Uplink events accepted by the MQTT transport")?,
            events_published: IntCounterVec::new(
                Opts::new("loraflow_events_published_total", "Integration events accepted by the MQTT transport"),
                &["kind"],
            )?,
            codec_errors: IntCounter::new("loraflow_codec_errors_total", "Uplinks whose payload codec failed")?,
            codec_seconds: Histogram::with_opts(
                HistogramOpts::new("loraflow_codec_seconds", "Time spent decoding one uplink payload")
                    .buckets(vec![0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            )?,
            history_batch_size: Histogram::with_opts(
                HistogramOpts::new("loraflow_history_batch_size", "Rows per history write")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
            )?,
            history_write_seconds: Histogram::with_opts(
                HistogramOpts::new("loraflow_history_write_seconds", "Time of one history write (one batch)")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            )?,
            history_buffer_depth: IntGauge::new(
                "loraflow_history_buffer_depth",
                "Uplink and event rows waiting to be written to the database",
            )?,
            history_dropped: IntCounterVec::new(
                Opts::new("loraflow_history_dropped_total", "Uplink and event rows never written to the database"),
                &["reason"],
            )?,
            downlink_commands: IntCounterVec::new(
                Opts::new("loraflow_downlink_commands_total", "Downlink commands received over MQTT"),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.uplinks_published.clone()))?;
        registry.register(Box::new(m.events_published.clone()))?;
        registry.register(Box::new(m.codec_errors.clone()))?;
        registry.register(Box::new(m.codec_seconds.clone()))?;
        registry.register(Box::new(m.history_batch_size.clone()))?;
        registry.register(Box::new(m.history_write_seconds.clone()))?;
        registry.register(Box::new(m.history_buffer_depth.clone()))?;
        registry.register(Box::new(m.history_dropped.clone()))?;
        registry.register(Box::new(m.downlink_commands.clone()))?;
        // Every known series from the start, at 0 (dashboards and rate() need no first event).
        for kind in EVENT_KINDS {
            m.events_published.with_label_values(&[kind]);
        }
        for reason in HISTORY_DROP_REASONS {
            m.history_dropped.with_label_values(&[reason]);
        }
        for outcome in DOWNLINK_COMMAND_OUTCOMES {
            m.downlink_commands.with_label_values(&[outcome]);
        }
        Ok(m)
    }
}
