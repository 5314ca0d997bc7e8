//! `/health` (liveness) and `/health/ready` (readiness).
//!
//! `/health` answers 200 as long as the process serves HTTP: a restart would not bring an
//! unreachable MQTT broker or database back, so neither may fail liveness. It still shows
//! the broker connection for people looking. `/health/ready` answers 503 with the reasons
//! while loraflow cannot do its work: the database does not answer a `SELECT 1` within
//! [`DATABASE_CHECK_TIMEOUT`], or events cannot be published (the MQTT broker is
//! unreachable, or the embedded broker is being restarted). That is what a load balancer or
//! an orchestrator's readiness check wants.

use std::time::{Duration, Instant};

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

/// How long the database may take to answer `SELECT 1` before the server is not ready.
/// Short: a readiness probe that hangs is worse than one that says no (the pool would
/// otherwise wait its whole acquire timeout for a connection to a dead server).
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let database = database_check(&state).await;
    let mut ok = database["status"] == "up";
    let mut checks = json!({ "database": database });
    if let Some(mqtt) = state.mqtt.as_ref().map(|m| m.health()) {
        ok &= mqtt.connected;
        checks["mqtt"] = mqtt_check(&mqtt);
    }
    let body = json!({ "status": if ok { "ready" } else { "unavailable" }, "checks": checks });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

async fn database_check(state: &ApiState) -> Value {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.storage.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", DATABASE_CHECK_TIMEOUT.as_millis())),
    };
    db_check(state.storage.backend_name(), started.elapsed(), outcome)
}

fn db_check(backend: &str, took: Duration, outcome: Result<(), String>) -> Value {
    let mut check = json!({
        "status": if outcome.is_ok() { "up" } else { "down" },
        "backend": backend,
        "latencyMs": took.as_millis() as u64,
    });
    if let Err(reason) = outcome {
        check["reason"] = json!(reason);
    }
    check
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
    fn a_down_database_check_gives_the_reason() {
        let c = db_check("postgres", Duration::from_millis(1000), Err("no answer within 1000 ms".into()));
        assert_eq!(c, json!({"status": "down", "backend": "postgres", "latencyMs": 1000, "reason": "no answer within 1000 ms"}));
        let c = db_check("sqlite", Duration::from_millis(2), Ok(()));
        assert_eq!(c["status"], "up");
        assert!(c.get("reason").is_none());
    }

    #[test]
    fn an_up_broker_check_has_no_reason() {
        let c = mqtt_check(&MqttHealth { broker: "b".into(), connected: true, for_secs: 0, reason: None });
        assert_eq!(c["status"], "up");
        assert!(c.get("reason").is_none());
    }
}
