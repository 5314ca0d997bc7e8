//! `/health` (liveness) and `/health/ready` (readiness).
//!
//! `/health` answers 200 as long as the process serves HTTP: a restart would not bring an
//! unreachable MQTT broker back, so it must not fail liveness. It still shows the broker
//! connection for people looking. `/health/ready` answers 503 with the reason while
//! loraflow cannot publish events (the MQTT broker is unreachable, or the embedded broker
//! is being restarted): what a load balancer or an orchestrator's readiness check wants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::mqtt::MqttHealth;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthJson {
    /// Always `ok`.
    status: &'static str,
    /// `connected` or `disconnected`; absent without an MQTT transport.
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyJson {
    /// `ready` or `unavailable`.
    status: &'static str,
    checks: ReadyChecks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<MqttCheck>,
}

#[derive(Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttCheck {
    /// `up` or `down`.
    status: &'static str,
    broker: String,
    /// Seconds in this state.
    for_secs: u64,
    /// Why the broker is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(operation_id = "health", get, path = "/health", tag = "meta", security(()), responses((status = 200, body = HealthJson)))]
pub async fn health(State(state): State<ApiState>) -> Json<HealthJson> {
    let mqtt = state.mqtt.as_ref().map(|m| if m.health().connected { "connected" } else { "disconnected" });
    Json(HealthJson { status: "ok", mqtt })
}

/// Readiness: 503 while events cannot be published.
#[utoipa::path(
    operation_id = "ready",
    get,
    path = "/health/ready",
    tag = "meta",
    security(()),
    responses((status = 200, body = ReadyJson), (status = 503, description = "The MQTT broker is unreachable", body = ReadyJson))
)]
pub async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<ReadyJson>) {
    let Some(mqtt) = state.mqtt.as_ref().map(|m| m.health()) else {
        return (StatusCode::OK, Json(ReadyJson { status: "ready", checks: ReadyChecks { mqtt: None } }));
    };
    let ok = mqtt.connected;
    let body = ReadyJson { status: if ok { "ready" } else { "unavailable" }, checks: ReadyChecks { mqtt: Some(mqtt_check(&mqtt)) } };
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

fn mqtt_check(h: &MqttHealth) -> MqttCheck {
    MqttCheck { status: if h.connected { "up" } else { "down" }, broker: h.broker.clone(), for_secs: h.for_secs, reason: h.reason.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_down_broker_check_names_the_broker_and_the_reason() {
        let c = mqtt_check(&MqttHealth {
            broker: "127.0.0.1:1883".into(),
            connected: false,
            for_secs: 3,
            reason: Some("Connection refused".into()),
        });
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            json!({"status": "down", "broker": "127.0.0.1:1883", "forSecs": 3, "reason": "Connection refused"})
        );
    }

    #[test]
    fn an_up_broker_check_has_no_reason() {
        let c = mqtt_check(&MqttHealth { broker: "b".into(), connected: true, for_secs: 0, reason: None });
        let c = serde_json::to_value(c).unwrap();
        assert_eq!(c["status"], "up");
        assert!(c.get("reason").is_none());
    }
}
