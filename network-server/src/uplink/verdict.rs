//! What the server decided about a deduplicated uplink, as the decision steps return it. One
//! place ([`super::handle`]) turns it into the live frame feed and the traffic counts, so the
//! steps themselves publish nothing.

use super::data::Dropped;

/// The fate of one deduplicated uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A data uplink whose MIC and frame counter are valid.
    AcceptedData,
    /// A join-request that was answered with a join-accept.
    AcceptedJoin,
    Rejected(Rejection),
}

/// Why an uplink was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Decided before the message type is known (`uplink::FRAME_REJECT_REASONS`).
    Frame(FrameRejection),
    /// A data uplink (`data::Dropped`).
    Data(Dropped),
    /// A join-request: one of `join::REJECT_REASONS`.
    Join(&'static str),
    /// A copy from a gateway of another region configuration than the best copy's: it was
    /// left out of the uplink (`uplink::select_region`).
    OtherRegionConfig,
}

/// Rejections decided from the frame alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRejection {
    ChannelNotEnabled,
    UnsupportedType,
    ParseError,
}

impl FrameRejection {
    pub fn reason(self) -> &'static str {
        match self {
            FrameRejection::ChannelNotEnabled => "channel_not_enabled",
            FrameRejection::UnsupportedType => "unsupported_type",
            FrameRejection::ParseError => "parse_error",
        }
    }
}

impl Rejection {
    /// The word of `loraflow_uplinks_rejected_total` / `loraflow_joins_rejected_total` (and
    /// `nb_trans_repeat` for an expected repetition, counted in `loraflow_uplink_repeats_total`).
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Frame(f) => f.reason(),
            Rejection::Data(d) => d.reason(),
            Rejection::Join(reason) => reason,
            Rejection::OtherRegionConfig => Dropped::RegionMismatch.reason(),
        }
    }
}

impl Verdict {
    pub fn accepted(self) -> bool {
        !matches!(self, Verdict::Rejected(_))
    }

    /// `None` when accepted.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verdict::Rejected(r) => Some(r.reason()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_maps_to_the_word_of_its_metric() {
        assert_eq!(Verdict::AcceptedData.reason(), None);
        assert_eq!(Verdict::AcceptedJoin.reason(), None);
        assert!(Verdict::AcceptedJoin.accepted());
        let cases = [
            (Rejection::Frame(FrameRejection::ChannelNotEnabled), "channel_not_enabled"),
            (Rejection::Frame(FrameRejection::UnsupportedType), "unsupported_type"),
            (Rejection::Frame(FrameRejection::ParseError), "parse_error"),
            (Rejection::Data(Dropped::UnknownDevAddr), "unknown_dev_addr"),
            (Rejection::Data(Dropped::Mic), "mic"),
            (Rejection::Data(Dropped::Replay), "replay"),
            (Rejection::Data(Dropped::NbTransRepeat), "nb_trans_repeat"),
            (Rejection::Join("dev_nonce"), "dev_nonce"),
            (Rejection::OtherRegionConfig, "region_mismatch"),
        ];
        for (r, word) in cases {
            assert_eq!(Verdict::Rejected(r).reason(), Some(word), "{r:?}");
            assert!(!Verdict::Rejected(r).accepted());
        }
        // The frame-level words are exactly the pre-registered metric labels.
        let frame: Vec<&str> = [FrameRejection::ChannelNotEnabled, FrameRejection::UnsupportedType, FrameRejection::ParseError]
            .map(FrameRejection::reason)
            .to_vec();
        assert_eq!(frame, super::super::FRAME_REJECT_REASONS);
        for d in Dropped::REJECTED {
            assert!(!d.reason().is_empty());
        }
    }
}
