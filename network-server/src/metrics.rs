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
        let m = Self::register(registry);
        m.touch_known_labels();
        m
    }

    /// Creates every series whose label values are known up front, at 0, so that dashboards
    /// and `rate()` see zeros rather than missing series until the first event. Left out:
    /// the duty-cycle refusals by sub-band (the sub-bands depend on the regions configured).
    fn touch_known_labels(&self) {
        use crate::uplink::{data::Dropped, join, FRAME_REJECT_REASONS};
        for d in Dropped::REJECTED {
            self.uplinks_rejected.with_label_values(&[d.reason()]);
        }
        for r in FRAME_REJECT_REASONS {
            self.uplinks_rejected.with_label_values(&[r]);
        }
        for r in join::REJECT_REASONS {
            self.joins_rejected.with_label_values(&[r]);
        }
        for w in [crate::downlink_attempts::RxWindow::Rx1, crate::downlink_attempts::RxWindow::Rx2] {
            for s in loraflow_packet_forwarder::frame::TxAckStatus::ALL {
                self.downlinks.with_label_values(&[w.as_str(), s.as_str()]);
            }
        }
        {
            use crate::mac::engine::Outcome;
            for name in crate::mac::MacCommandName::ALL {
                self.mac_commands.with_label_values(&[name.as_str(), Outcome::Sent.as_str()]);
                if name.is_request() {
                    for o in [Outcome::Answered, Outcome::Nak, Outcome::Unanswered] {
                        self.mac_commands.with_label_values(&[name.as_str(), o.as_str()]);
                    }
                }
            }
        }
        for o in [crate::class_c::Outcome::Sent, crate::class_c::Outcome::NotSent, crate::class_c::Outcome::Expired] {
            self.class_c_downlinks.with_label_values(&[o.as_str()]);
        }
    }

    fn register(registry: &Registry) -> Metrics {
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
    fn rejections_downlinks_and_class_c_results_show_at_zero_from_the_start() {
        let registry = Registry::new();
        Metrics::new(&registry);
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        for series in [
            r#"loraflow_uplinks_rejected_total{reason="mic"} 0"#,
            r#"loraflow_uplinks_rejected_total{reason="parse_error"} 0"#,
            r#"loraflow_joins_rejected_total{reason="dev_nonce"} 0"#,
            r#"loraflow_downlinks_total{status="TOO_LATE",window="rx2"} 0"#,
            r#"loraflow_class_c_downlinks_total{result="expired"} 0"#,
            r#"loraflow_mac_commands_total{command="LinkADRReq",outcome="nak"} 0"#,
            r#"loraflow_mac_commands_total{command="DeviceTimeAns",outcome="sent"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing: {text}");
        }
    }

    #[test]
    fn duty_cycle_refusals_are_exported_by_sub_band() {
        let registry = Registry::new();
        let m = Metrics::new(&registry);
        m.downlinks_duty_cycle_refused.with_label_values(&[crate::region::SubBandId::EtsiP.as_str()]).inc();
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains("loraflow_downlinks_duty_cycle_refused_total{sub_band=\"P\"} 1"), "{text}");
    }
}
