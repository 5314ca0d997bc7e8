//! Network-server metrics; labels come from bounded sets only (reasons, outcomes).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub uplinks_accepted: IntCounter,
    pub uplinks_rejected: IntCounterVec,
    pub joins_accepted: IntCounter,
    pub joins_rejected: IntCounterVec,
    pub downlinks: IntCounterVec,
    pub mac_commands: IntCounterVec,
    pub uplink_repeats: IntCounter,
    pub processing_seconds: Histogram,
    pub fcnt_batch_size: Histogram,
    pub fcnt_unpersisted: prometheus::IntGauge,
    /// ADR decisions by [`AdrDirection`](crate::mac::adr::AdrDirection) label.
    pub adr_decisions: IntCounterVec,
    /// Downlinks no gateway could send without breaking a duty cycle, by the sub-band that
    /// blocked the best gateway's first window (`SubBandId::as_str`).
    pub downlinks_duty_cycle_refused: IntCounterVec,
    /// Class C downlinks by result (`class_c::Outcome::as_str`).
    pub class_c_downlinks: IntCounterVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
    // A second server in the same process (tests) registers into its own registry; a
    // duplicate here would be a programming error, so it is only logged.
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::debug!(error = %e, "metric registered twice");
    }
    c
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        Metrics {
            uplinks_accepted: reg(
                registry,
                IntCounter::new("loraflow_uplinks_accepted_total", "Deduplicated data uplinks accepted (MIC and frame counter valid)")
                    .unwrap(),
            ),
            uplinks_rejected: reg(
                registry,
                IntCounterVec::new(Opts::new("loraflow_uplinks_rejected_total", "Deduplicated uplinks rejected, by reason"), &["reason"])
                    .unwrap(),
            ),
            joins_accepted: reg(registry, IntCounter::new("loraflow_joins_accepted_total", "OTAA join requests accepted").unwrap()),
            joins_rejected: reg(
                registry,
                IntCounterVec::new(Opts::new("loraflow_joins_rejected_total", "OTAA join requests rejected, by reason"), &["reason"])
                    .unwrap(),
            ),
            downlinks: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("loraflow_downlinks_total", "Downlink attempts by window (Class C: rx2) and gateway verdict"),
                    &["window", "status"],
                )
                .unwrap(),
            ),
            mac_commands: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "loraflow_mac_commands_total",
                        "MAC commands of the network server by command and outcome (sent, answered, nak, unanswered)",
                    ),
                    &["command", "outcome"],
                )
                .unwrap(),
            ),
            uplink_repeats: reg(
                registry,
                IntCounter::new(
                    "loraflow_uplink_repeats_total",
                    "Uplinks repeated by a device with NbTrans > 1, dropped as repeats of an accepted frame",
                )
                .unwrap(),
            ),
            processing_seconds: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "loraflow_uplink_processing_seconds",
                        "Time from the end of the deduplication window to the uplink being handed to the application side",
                    )
                    .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]),
                )
                .unwrap(),
            ),
            fcnt_unpersisted: reg(
                registry,
                prometheus::IntGauge::new(
                    "loraflow_fcnt_unpersisted_devices",
                    "Devices whose accepted frame counter waits in memory for the database to return",
                )
                .unwrap(),
            ),
            fcnt_batch_size: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new("loraflow_fcnt_batch_size", "Frame-counter compare-and-sets per database transaction")
                        .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]),
                )
                .unwrap(),
            ),
            adr_decisions: {
                let c = reg(
                    registry,
                    IntCounterVec::new(
                        Opts::new("loraflow_adr_decisions_total", "ADR decisions for devices with ADR on, by which way they move the link"),
                        &["direction"],
                    )
                    .unwrap(),
                );
                // Every direction shows from the start, at 0, so rates work before the first one.
                for d in crate::mac::adr::AdrDirection::ALL {
                    c.with_label_values(&[d.as_str()]);
                }
                c
            },
            downlinks_duty_cycle_refused: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "loraflow_downlinks_duty_cycle_refused_total",
                        "Downlinks kept queued because every gateway that heard the uplink was at its duty-cycle limit, by sub-band",
                    ),
                    &["sub_band"],
                )
                .unwrap(),
            ),
            class_c_downlinks: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "loraflow_class_c_downlinks_total",
                        "Class C downlinks: sent, not_sent (no gateway, duty cycle, refused) or expired (confirmed, never acknowledged)",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_cycle_refusals_are_exported_by_sub_band() {
        let registry = Registry::new();
        let m = Metrics::new(&registry);
        m.downlinks_duty_cycle_refused.with_label_values(&[crate::region::SubBandId::EtsiP.as_str()]).inc();
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains("loraflow_downlinks_duty_cycle_refused_total{sub_band=\"P\"} 1"), "{text}");
    }
}
