//! `[integration]` section: the event pipeline and its history writer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Uplink/event rows waiting for the database; beyond this new rows are dropped and
    /// counted (`loraflow_history_dropped_total{reason="buffer_full"}`); their events are
    /// still published.
    pub history_buffer: usize,
    /// Most rows written in one database transaction (group commit: a batch is whatever
    /// arrived while the previous one was written).
    pub history_batch_size: usize,
    /// After a fast commit, how long (ms) after the previous write STARTED the next batch
    /// may wait to gather more rows; 0 = start at once. Measured on a release build
    /// (docs/benchmarks.md, 2026-11-30): 5 ms added ~5 ms to the p50 at 200 uplinks/s on
    /// PostgreSQL for no measurable CPU saving, so the default is 0. Raise it only where
    /// the database, not loraflow, pays per transaction.
    pub history_gather_ms: u64,
    /// Events are published once their rows are committed; this is the longest they wait
    /// for that commit. A slower write is treated like a database outage: its events are
    /// published anyway and their rows kept for retry.
    pub history_batch_interval_ms: u64,
    /// At shutdown, how long the writer keeps trying to write what is buffered.
    pub history_flush_timeout_ms: u64,
    /// Events in flight at once, their codecs running at the same time (each device's
    /// events still leave in arrival order); 0 = twice the number of CPUs.
    pub codec_concurrency: usize,
}

impl Default for IntegrationConfig {
    fn default() -> Self {
        IntegrationConfig {
            history_buffer: 100_000,
            history_batch_size: 500,
            history_gather_ms: 0,
            history_batch_interval_ms: 1_000,
            history_flush_timeout_ms: 2_000,
            codec_concurrency: 0,
        }
    }
}

impl IntegrationConfig {
    pub(crate) fn codec_concurrency(&self) -> usize {
        match self.codec_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(2).clamp(2, 64),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_their_defaults_and_unknown_keys_are_rejected() {
        let c: IntegrationConfig = serde_json::from_str(r#"{"history_buffer": 10}"#).unwrap();
        assert_eq!(c.history_buffer, 10);
        assert_eq!(c.history_batch_size, 500);
        assert_eq!(c.history_flush_timeout_ms, 2_000);
        assert!(serde_json::from_str::<IntegrationConfig>(r#"{"buffer": 1}"#).is_err());
    }

    #[test]
    fn automatic_codec_concurrency_is_at_least_two() {
        assert!(IntegrationConfig::default().codec_concurrency() >= 2);
        let c = IntegrationConfig { codec_concurrency: 1, ..IntegrationConfig::default() };
        assert_eq!(c.codec_concurrency(), 1);
    }
}
