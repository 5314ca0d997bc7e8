//! `/health` (liveness) and `/health/ready` (readiness).
//!
//! `/health` answers 200 as long as the process serves HTTP: a restart would not bring an
//! unreachable MQTT broker or database back, so neither may fail liveness. It still shows
//! the broker connection for people looking. `/health/ready` answers 503 with the reasons
//! while loraflow cannot do its work: the database does not answer a `SELECT 1` within
//! [`DATABASE_CHECK_TIMEOUT`], or events cannot be published (the MQTT broker is
//! unreachable, or the embedded broker is being restarted). That is what a load balancer or
//! an orchestrator's readiness check wants.
//!
//! In a cluster, `/health/ready` also PINGs Redis. Redis down does *not* make an instance
//! unready: it keeps working alone (local deduplication and gateways, caches re-validated
//! against the database), and since every instance shares the one Redis, answering 503 would
//! take the whole cluster out of its UDP load balancer at once — an outage made of a
//! degradation. The answer stays 200 with `status: "degraded"` and `checks.redis.status:
//! "down"`, for people and alerts (as does `loraflow_cluster_redis_up`).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::mqtt::MqttHealth;

/// How long the database may take to answer `SELECT 1` before the server is not ready.
/// Short: a readiness probe that hangs is worse than one that says no (the pool would
/// otherwise wait its whole acquire timeout for a connection to a dead server).
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long Redis may take to answer `PING` before the cluster counts as degraded.
pub const REDIS_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

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
    /// `ready`, `degraded` (in a cluster whose Redis does not answer: this instance works
    /// alone, still 200) or `unavailable` (503).
    status: &'static str,
    checks: ReadyChecks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    database: DatabaseCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<MqttCheck>,
    /// Only in cluster mode (`cluster.redis_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<RedisCheck>,
}

#[derive(Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseCheck {
    /// `up` or `down`.
    status: &'static str,
    /// `sqlite` or `postgres`.
    backend: String,
    /// How long the check took.
    latency_ms: u64,
    /// Why the database is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
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

#[derive(Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCheck {
    /// `up`, or `down`: this instance works alone (not a reason to be unready).
    status: &'static str,
    /// This instance's `cluster.instance_id`.
    instance_id: String,
    /// How long the check took.
    latency_ms: u64,
    /// Why Redis is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(operation_id = "health", get, path = "/health", tag = "meta", security(()), responses((status = 200, body = HealthJson)))]
pub async fn health(State(state): State<ApiState>) -> Json<HealthJson> {
    let mqtt = state.mqtt.as_ref().map(|m| if m.health().connected { "connected" } else { "disconnected" });
    Json(HealthJson { status: "ok", mqtt })
}

/// Readiness: 503 while the database does not answer or events cannot be published; 200
/// `degraded` while a cluster's Redis does not answer.
#[utoipa::path(
    operation_id = "ready",
    get,
    path = "/health/ready",
    tag = "meta",
    security(()),
    responses((status = 200, body = ReadyJson), (status = 503, description = "The database or the MQTT broker is unreachable", body = ReadyJson))
)]
pub async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<ReadyJson>) {
    let (database, redis) = tokio::join!(database_check(&state), redis_check(&state));
    let mqtt = state.mqtt.as_ref().map(|m| mqtt_check(&m.health()));
    let ok = database.status == "up" && mqtt.as_ref().is_none_or(|m| m.status == "up");
    let alone = redis.as_ref().is_some_and(|r| r.status != "up");
    let status = match (ok, alone) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body = ReadyJson { status, checks: ReadyChecks { database, mqtt, redis } };
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

async fn redis_check(state: &ApiState) -> Option<RedisCheck> {
    let cluster = state.cluster.as_ref()?;
    let started = Instant::now();
    let outcome = cluster.ping(REDIS_CHECK_TIMEOUT).await;
    Some(RedisCheck {
        status: if outcome.is_ok() { "up" } else { "down" },
        instance_id: cluster.instance_id().to_string(),
        latency_ms: started.elapsed().as_millis() as u64,
        reason: outcome.err(),
    })
}

async fn database_check(state: &ApiState) -> DatabaseCheck {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.storage.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", DATABASE_CHECK_TIMEOUT.as_millis())),
    };
    db_check(state.storage.backend_name(), started.elapsed(), outcome)
}

fn db_check(backend: &str, took: Duration, outcome: Result<(), String>) -> DatabaseCheck {
    DatabaseCheck {
        status: if outcome.is_ok() { "up" } else { "down" },
        backend: backend.to_string(),
        latency_ms: took.as_millis() as u64,
        reason: outcome.err(),
    }
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
    fn a_down_database_check_gives_the_reason() {
        let c = db_check("postgres", Duration::from_millis(1000), Err("no answer within 1000 ms".into()));
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            json!({"status": "down", "backend": "postgres", "latencyMs": 1000, "reason": "no answer within 1000 ms"})
        );
        let c = serde_json::to_value(db_check("sqlite", Duration::from_millis(2), Ok(()))).unwrap();
        assert_eq!(c["status"], "up");
        assert!(c.get("reason").is_none());
    }

    #[test]
    fn an_up_broker_check_has_no_reason() {
        let c = serde_json::to_value(mqtt_check(&MqttHealth { broker: "b".into(), connected: true, for_secs: 0, reason: None })).unwrap();
        assert_eq!(c["status"], "up");
        assert!(c.get("reason").is_none());
    }
}
