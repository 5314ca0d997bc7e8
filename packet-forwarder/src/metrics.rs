//! Prometheus metrics of the Semtech UDP server, registered into the registry the caller
//! passes (never the global one: several servers run in one test process).
//! Every label comes from a closed set defined in this crate.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::frame::{GatewayStats, Modulation, TxAckStatus};

/// Why a datagram, or one rxpk inside it, was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    TooShort,
    WrongVersion,
    UnknownType,
    BadJson,
    BadBase64,
    BadRxpk,
    CrcError,
    Oversized,
    UnknownGateway,
    ChannelFull,
    /// A registered gateway's datagram from outside its `allowedNetworks`.
    SourceNotAllowed,
    /// Over `gateway.push_data_rate_per_gateway`.
    RateLimitedGateway,
    /// Over `gateway.push_data_rate_global`.
    RateLimitedGlobal,
    /// A `stat` that cannot be read or reports values no gateway reports.
    BadStat,
    /// A `stat` from another IP address than the gateway's PULL_DATA.
    StatSourceMismatch,
    /// A TX_ACK from another address than the one its PULL_RESP went to.
    TxAckWrongAddress,
}

impl DropReason {
    pub const ALL: [DropReason; 16] = [
        DropReason::TooShort,
        DropReason::WrongVersion,
        DropReason::UnknownType,
        DropReason::BadJson,
        DropReason::BadBase64,
        DropReason::BadRxpk,
        DropReason::CrcError,
        DropReason::Oversized,
        DropReason::UnknownGateway,
        DropReason::ChannelFull,
        DropReason::SourceNotAllowed,
        DropReason::RateLimitedGateway,
        DropReason::RateLimitedGlobal,
        DropReason::BadStat,
        DropReason::StatSourceMismatch,
        DropReason::TxAckWrongAddress,
    ];

    /// The `reason` label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::WrongVersion => "wrong_version",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadJson => "bad_json",
            DropReason::BadBase64 => "bad_base64",
            DropReason::BadRxpk => "bad_rxpk",
            DropReason::CrcError => "crc_error",
            DropReason::Oversized => "oversized",
            DropReason::UnknownGateway => "unknown_gateway",
            DropReason::ChannelFull => "channel_full",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::RateLimitedGateway => "rate_limited_gateway",
            DropReason::RateLimitedGlobal => "rate_limited_global",
            DropReason::BadStat => "bad_stat",
            DropReason::StatSourceMismatch => "stat_source_mismatch",
            DropReason::TxAckWrongAddress => "tx_ack_wrong_address",
        }
    }

    pub(crate) fn index(&self) -> usize {
        DropReason::ALL.iter().position(|r| r == self).unwrap_or(0)
    }
}

/// The `packet_type` label values of `loraflow_gateway_udp_received_total`.
/// `invalid` counts datagrams whose header could not be read.
pub const PACKET_TYPES: [&str; 7] = ["push_data", "push_ack", "pull_data", "pull_resp", "pull_ack", "tx_ack", "invalid"];

/// The `result` label values of `loraflow_gateway_address_changes_total`: a PULL_DATA from
/// another address than the gateway's downlink address either left the downlink path where it
/// was (`pending`: a first one, possibly forged) or moved it (`moved`: confirmed).
pub const ADDRESS_CHANGE_RESULTS: [&str; 2] = ["pending", "moved"];

/// The `modulation` label values of `loraflow_gateway_uplinks_total`.
pub const MODULATIONS: [&str; 3] = ["lora", "fsk", "lr_fhss"];

#[derive(Clone)]
pub(crate) struct Metrics {
    received: IntCounterVec,
    dropped: Vec<IntCounter>,
    uplinks: IntCounterVec,
    tx_ack: IntCounterVec,
    address_changes: IntCounterVec,
    pub(crate) online: IntGauge,
    stat_rx_received: IntCounter,
    stat_rx_ok: IntCounter,
    stat_rx_forwarded: IntCounter,
    stat_tx_received: IntCounter,
    stat_tx_emitted: IntCounter,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let received = IntCounterVec::new(
            Opts::new("loraflow_gateway_udp_received_total", "Semtech UDP datagrams received, by packet type"),
            &["packet_type"],
        )?;
        let dropped_vec = IntCounterVec::new(
            Opts::new("loraflow_gateway_udp_dropped_total", "Semtech UDP datagrams or rxpk entries dropped, by reason"),
            &["reason"],
        )?;
        let uplinks = IntCounterVec::new(
            Opts::new("loraflow_gateway_uplinks_total", "Uplink frames forwarded to the network server, by modulation"),
            &["modulation"],
        )?;
        let tx_ack =
            IntCounterVec::new(Opts::new("loraflow_gateway_tx_ack_total", "Downlink outcomes (TX_ACK status), by status"), &["status"])?;
        let address_changes = IntCounterVec::new(
            Opts::new(
                "loraflow_gateway_address_changes_total",
                "PULL_DATA from another address than the gateway's downlink address, by result (pending or moved)",
            ),
            &["result"],
        )?;
        let online = IntGauge::new("loraflow_gateway_online", "Gateways that sent PULL_DATA recently")?;
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let stat_rx_received = counter(
            "loraflow_gateway_stat_rx_received_total",
            "Radio packets received, as reported by gateway stat (rxnb), summed over gateways",
        )?;
        let stat_rx_ok = counter(
            "loraflow_gateway_stat_rx_ok_total",
            "Radio packets received with a valid CRC, as reported by gateway stat (rxok), summed over gateways",
        )?;
        let stat_rx_forwarded = counter(
            "loraflow_gateway_stat_rx_forwarded_total",
            "Radio packets forwarded, as reported by gateway stat (rxfw), summed over gateways",
        )?;
        let stat_tx_received = counter(
            "loraflow_gateway_stat_tx_received_total",
            "Downlink datagrams received, as reported by gateway stat (dwnb), summed over gateways",
        )?;
        let stat_tx_emitted =
            counter("loraflow_gateway_stat_tx_emitted_total", "Packets emitted, as reported by gateway stat (txnb), summed over gateways")?;

        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(dropped_vec.clone()))?;
        registry.register(Box::new(uplinks.clone()))?;
        registry.register(Box::new(tx_ack.clone()))?;
        registry.register(Box::new(address_changes.clone()))?;
        registry.register(Box::new(online.clone()))?;
        for c in [&stat_rx_received, &stat_rx_ok, &stat_rx_forwarded, &stat_tx_received, &stat_tx_emitted] {
            registry.register(Box::new(c.clone()))?;
        }

        // Touch every label value so that dashboards see zeros instead of missing series.
        for t in PACKET_TYPES {
            received.with_label_values(&[t]);
        }
        for m in MODULATIONS {
            uplinks.with_label_values(&[m]);
        }
        for r in ADDRESS_CHANGE_RESULTS {
            address_changes.with_label_values(&[r]);
        }
        for s in TxAckStatus::ALL {
            tx_ack.with_label_values(&[s.as_str()]);
        }
        let dropped = DropReason::ALL.iter().map(|r| dropped_vec.with_label_values(&[r.as_str()])).collect();

        Ok(Metrics {
            received,
            dropped,
            uplinks,
            tx_ack,
            address_changes,
            online,
            stat_rx_received,
            stat_rx_ok,
            stat_rx_forwarded,
            stat_tx_received,
            stat_tx_emitted,
        })
    }

    pub(crate) fn received(&self, packet_type: &'static str) {
        self.received.with_label_values(&[packet_type]).inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped[reason.index()].inc();
    }

    pub(crate) fn uplink(&self, modulation: &Modulation) {
        let label = match modulation {
            Modulation::Lora { .. } => "lora",
            Modulation::Fsk { .. } => "fsk",
            Modulation::LrFhss { .. } => "lr_fhss",
        };
        self.uplinks.with_label_values(&[label]).inc();
    }

    pub(crate) fn tx_ack(&self, status: TxAckStatus) {
        self.tx_ack.with_label_values(&[status.as_str()]).inc();
    }

    /// `moved`: the downlink path followed the new address; otherwise it stayed.
    pub(crate) fn address_change(&self, moved: bool) {
        self.address_changes.with_label_values(&[ADDRESS_CHANGE_RESULTS[usize::from(moved)]]).inc();
    }

    pub(crate) fn stats(&self, s: &GatewayStats) {
        self.stat_rx_received.inc_by(u64::from(s.rx_received));
        self.stat_rx_ok.inc_by(u64::from(s.rx_ok));
        self.stat_rx_forwarded.inc_by(u64::from(s.rx_forwarded));
        self.stat_tx_received.inc_by(u64::from(s.tx_received));
        self.stat_tx_emitted.inc_by(u64::from(s.tx_emitted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_is_exported_from_the_start() {
        let registry = Registry::new();
        let _m = Metrics::register(&registry).unwrap();
        let families = registry.gather();
        let dropped = families.iter().find(|f| f.name() == "loraflow_gateway_udp_dropped_total").unwrap();
        assert_eq!(dropped.get_metric().len(), DropReason::ALL.len());
    }

    #[test]
    fn registering_twice_in_one_registry_fails_instead_of_panicking() {
        let registry = Registry::new();
        let _m = Metrics::register(&registry).unwrap();
        assert!(Metrics::register(&registry).is_err());
        // A second registry is independent.
        assert!(Metrics::register(&Registry::new()).is_ok());
    }

    #[test]
    fn drop_reason_labels_are_distinct() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
