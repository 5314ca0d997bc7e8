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
use serde_json::{json, Value};

use super::ApiState;
use crate::mqtt::MqttHealth;

pub async fn health(State(state): State<ApiState>) -> Json<Value> {
    let mqtt = state.mqtt.as_ref().map(|m| if m.health().connected { "connected" } else { "disconnected" });
    let mut body = json!({ "status": "ok" });
    if let Some(mqtt) = mqtt {
        body["mqtt"] = json!(mqtt);
    }
    Json(body)
}

pub async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let Some(mqtt) = state.mqtt.as_ref().map(|m| m.health()) else {
        return (StatusCode::OK, Json(json!({ "status": "ready", "checks": {} })));
    };
    let ok = mqtt.connected;
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": { "mqtt": mqtt_check(&mqtt) },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

fn mqtt_check(h: &MqttHealth) -> Value {
    let mut check = json!({
        "status": if h.connected { "up" } else { "down" },
        "broker": h.broker,
        "forSecs": h.for_secs,
    });
    if let Some(reason) = &h.reason {
        check["reason"] = json!(reason);
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_broker_check_names_the_broker_and_the_reason() {
        let c = mqtt_check(&MqttHealth {
            broker: "127.0.0.1:1883".into(),
            connected: false,
            for_secs: 3,
            reason: Some("Connection refused".into()),
        });
        assert_eq!(c, json!({"status": "down", "broker": "127.0.0.1:1883", "forSecs": 3, "reason": "Connection refused"}));
    }

    #[test]
    fn an_up_broker_check_has_no_reason() {
        let c = mqtt_check(&MqttHealth { broker: "b".into(), connected: true, for_secs: 0, reason: None });
        assert_eq!(c["status"], "up");
        assert!(c.get("reason").is_none());
    }
}
