//! Downlink commands in: `application/{applicationId}/device/{devEui}/command/down`
//! (DESIGN.md §4, the topic of ChirpStack v4's MQTT integration).

/// Subscription filter for downlink commands of every application and device.
pub(crate) const COMMAND_FILTER: &str = "application/+/device/+/command/down";

/// The command subscription: [`COMMAND_FILTER`], or in a cluster the shared subscription of
/// `share_group`, which the broker delivers to one of its subscribers per message — on the
/// real topic, without the `$share/<group>/` part.
pub(crate) fn command_subscription(share_group: Option<&str>) -> String {
    match share_group {
        Some(group) => format!("$share/{group}/{COMMAND_FILTER}"),
        None => COMMAND_FILTER.to_string(),
    }
}

/// One message received on a command topic. The topic parts are passed on as received:
/// the consumer validates them (and the JSON payload) and reports what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownlinkCommand {
    pub application_id: String,
    pub dev_eui: String,
    pub payload: Vec<u8>,
}

impl DownlinkCommand {
    /// `None` when the topic is not a command topic (a broker may deliver other topics
    /// to a session, e.g. ones subscribed earlier under the same client id).
    pub(crate) fn from_publish(topic: &str, payload: &[u8]) -> Option<Self> {
        let mut parts = topic.split('/');
        let (Some("application"), Some(app), Some("device"), Some(eui), Some("command"), Some("down"), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(DownlinkCommand { application_id: app.to_string(), dev_eui: eui.to_string(), payload: payload.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_shares_the_command_subscription() {
        assert_eq!(command_subscription(None), "application/+/device/+/command/down");
        assert_eq!(command_subscription(Some("loraflow")), "$share/loraflow/application/+/device/+/command/down");
    }

    #[test]
    fn a_command_topic_yields_application_and_device_as_given() {
        let c =
            DownlinkCommand::from_publish("application/7d6c5b1e-0000-4000-8000-000000000001/device/0102030405060708/command/down", b"{}")
                .unwrap();
        assert_eq!(c.application_id, "7d6c5b1e-0000-4000-8000-000000000001");
        assert_eq!(c.dev_eui, "0102030405060708");
        assert_eq!(c.payload, b"{}");
    }

    #[test]
    fn parts_are_not_validated_here() {
        let c = DownlinkCommand::from_publish("application/x/device/NOT-HEX/command/down", b"").unwrap();
        assert_eq!(c.dev_eui, "NOT-HEX");
    }

    #[test]
    fn other_topics_are_not_commands() {
        for topic in [
            "application/a/device/b/event/up",
            "application/a/device/b/command/down/extra",
            "application/a/device/b/command",
            "app/a/device/b/command/down",
            "",
        ] {
            assert_eq!(DownlinkCommand::from_publish(topic, b""), None, "{topic}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_topic_is_a_command_or_not(topic in prop_oneof![".{0,60}", "(application|device|command|down|[a-z0-9+#-]{0,4})(/(application|device|command|down|[a-z0-9+#-]{0,4})){0,7}"]) {
            if let Some(c) = DownlinkCommand::from_publish(&topic, b"x") {
                prop_assert_eq!(format!("application/{}/device/{}/command/down", c.application_id, c.dev_eui), topic);
            }
        }

        #[test]
        fn a_command_topic_gives_back_its_parts(app in "[^/]{0,40}", eui in "[^/]{0,20}", payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let topic = format!("application/{app}/device/{eui}/command/down");
            prop_assert_eq!(
                DownlinkCommand::from_publish(&topic, &payload),
                Some(DownlinkCommand { application_id: app, dev_eui: eui, payload })
            );
        }
    }
}
