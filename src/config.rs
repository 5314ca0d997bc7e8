//! The one typed configuration: a TOML file (`--config`, default `loraflow.toml` when it
//! exists) with every key overridable by `LORAFLOW_<SECTION>__<KEY>`. Defaults give the
//! embedded set-up (SQLite file + embedded MQTT broker).

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use loraflow_app_server::api::ApiConfig;
use loraflow_app_server::codec::CodecConfig;
use loraflow_app_server::integration::IntegrationConfig;
use loraflow_app_server::mqtt::MqttConfig;
use loraflow_network_server::cluster::ClusterConfig;
use loraflow_network_server::config::NetworkConfig;
use loraflow_network_server::region_config::{RegionEntry, Regions};
use loraflow_network_server::storage::DatabaseConfig;
use loraflow_packet_forwarder::GatewayConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub api: ApiConfig,
    pub mqtt: MqttConfig,
    pub database: DatabaseConfig,
    pub network: NetworkConfig,
    /// Region configurations for a server of several regions (`[[regions]]`); none = one
    /// from `network.region`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionEntry>,
    pub codec: CodecConfig,
    pub integration: IntegrationConfig,
    /// Several instances on PostgreSQL + Redis + an external broker (`cluster.redis_url`).
    pub cluster: ClusterConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `loraflow_network_server=debug,info`.
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

/// A configuration that cannot be used. Its text is one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub const ENV_PREFIX: &str = "LORAFLOW_";

impl Config {
    /// Loads `file` (or `loraflow.toml` when present and no file is given), then the
    /// environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    pub fn load_from(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::File { path: p.display().to_string(), reason: "does not exist".into() });
                }
                fig = fig.merge(Toml::file(p));
            }
            None if Path::new("loraflow.toml").exists() => fig = fig.merge(Toml::file("loraflow.toml")),
            None => {}
        }
        fig = fig.merge(Serialized::globals(env_overrides(env)));
        // Env values are strings; `extract_lossy` turns "1883" or "true" into the number or
        // bool a key wants while "000000" stays a string for string keys.
        let config: Config = fig.extract_lossy().map_err(|e| {
            let key = e.path.join(".");
            let reason = e.kind.to_string();
            if key.is_empty() {
                ConfigError::File {
                    path: file.map(|p| p.display().to_string()).unwrap_or_else(|| "loraflow.toml".into()),
                    reason: e.to_string(),
                }
            } else {
                ConfigError::Invalid { key, reason }
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The region configurations, checked.
    pub fn regions(&self) -> Result<Regions, ConfigError> {
        Regions::from_config(&self.network, &self.regions).map_err(|e| ConfigError::Invalid { key: e.key, reason: e.reason })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gateway.validate().map_err(|e| ConfigError::Invalid { key: format!("gateway.{}", e.key), reason: e.message })?;
        self.api.validate().map_err(|e| ConfigError::Invalid { key: format!("api.{}", e.key), reason: e.reason })?;
        self.network.validate().map_err(|e| ConfigError::Invalid { key: e.key, reason: e.reason })?;
        self.regions()?;
        self.codec.validate().map_err(|e| ConfigError::Invalid { key: format!("codec.{}", e.key), reason: e.reason })?;
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                key: "database.url".into(),
                reason: format!("expected sqlite://… or postgres://…, got {url:?}"),
            });
        }
        let mqtt = &self.mqtt.url;
        if !mqtt.is_empty() && !["mqtt://", "mqtts://", "tcp://", "ssl://"].iter().any(|s| mqtt.starts_with(s)) {
            return Err(ConfigError::Invalid {
                key: "mqtt.url".into(),
                reason: format!("expected mqtt://host:port or mqtts://host:port, got {mqtt:?}"),
            });
        }
        if self.mqtt.queue_size == 0 {
            return Err(ConfigError::Invalid { key: "mqtt.queue_size".into(), reason: "must be at least 1".into() });
        }
        if !(1..=100_000).contains(&self.mqtt.embedded_max_connections) {
            return Err(ConfigError::Invalid { key: "mqtt.embedded_max_connections".into(), reason: "must be 1..=100000".into() });
        }
        self.cluster.validate().map_err(|e| ConfigError::Invalid { key: format!("cluster.{}", e.key), reason: e.reason })?;
        if self.cluster.enabled() {
            // Instances share their state through the database and the broker: a SQLite file or
            // an embedded broker per instance would split the network silently.
            if url.starts_with("sqlite:") {
                return Err(ConfigError::Invalid {
                    key: "database.url".into(),
                    reason: "cluster mode (cluster.redis_url) needs a PostgreSQL database shared by every instance".into(),
                });
            }
            if mqtt.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "mqtt.url".into(),
                    reason: "cluster mode (cluster.redis_url) needs an external MQTT broker shared by every instance".into(),
                });
            }
        }
        validate_log_level(&self.log.level).map_err(|reason| ConfigError::Invalid { key: "log.level".into(), reason })?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid { key: "log.format".into(), reason: "expected text or json".into() });
        }
        Ok(())
    }
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A `log.level` the filter accepts, stricter than `EnvFilter` itself: there a bare word
/// is a target name, so a typo such as `level = "verbose"` would silence every log line
/// instead of failing. Bare directives must be a level; targets take `target=level`.
fn validate_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err(format!("expected a level ({}) or target=level directives", LOG_LEVELS.join(", ")));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?} is not a level ({}); a target takes target=level", LOG_LEVELS.join(", ")));
        }
    }
    tracing_subscriber::EnvFilter::builder().parse(level).map(|_| ()).map_err(|e| format!("{level:?}: {e}"))
}

/// `LORAFLOW_API__BIND=…` → `{"api": {"bind": "…"}}`. Unknown sections/keys are kept so
/// that `deny_unknown_fields` reports them by name instead of silently ignoring a typo.
fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else { continue };
        let Some((section, key)) = rest.split_once("__") else { continue };
        out.entry(section.to_ascii_lowercase()).or_default().insert(key.to_ascii_lowercase(), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn no_file() -> Option<&'static Path> {
        None
    }

    #[test]
    fn defaults_give_the_embedded_setup() {
        let c = Config::default();
        assert_eq!(c.database.url, "sqlite://loraflow.db");
        assert!(c.mqtt.url.is_empty());
        assert_eq!(c.gateway.bind.to_string(), "0.0.0.0:1700");
        assert_eq!(c.api.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.network.dedup_window_ms, 200);
        c.validate().unwrap();
    }

    #[test]
    fn env_overrides_every_section_with_typed_values() {
        let c = Config::load_from(
            no_file(),
            env(&[
                ("LORAFLOW_API__BIND", "127.0.0.1:9999"),
                ("LORAFLOW_NETWORK__NET_ID", "000013"),
                ("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50"),
                ("LORAFLOW_NETWORK__ALLOW_UNKNOWN_GATEWAYS", "true"),
                ("LORAFLOW_API__ADMIN_TOKEN", "0123"),
                ("OTHER_THING", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api.bind.port(), 9999);
        assert_eq!(c.network.net_id, "000013");
        assert_eq!(c.network.dedup_window_ms, 50);
        assert!(c.network.allow_unknown_gateways);
        assert_eq!(c.api.admin_token, "0123");
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__BIND", "not-an-address")])).unwrap_err();
        assert!(e.to_string().contains("`api.bind`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "soon")])).unwrap_err();
        assert!(e.to_string().contains("`network.dedup_window_ms`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__NET_ID", "zz")])).unwrap_err();
        assert!(e.to_string().contains("`network.net_id`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_DATABASE__URL", "mysql://x")])).unwrap_err();
        assert!(e.to_string().contains("`database.url`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_CODEC__JS_MAX_RESULT_DEPTH", "0")])).unwrap_err();
        assert!(e.to_string().contains("`codec.js_max_result_depth`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_CODEC__JS_CACHED_RUNTIMES", "100000")])).unwrap_err();
        assert!(e.to_string().contains("`codec.js_memory_ceiling_bytes`"), "{e}");
    }

    #[test]
    fn api_limits_are_typed_and_checked() {
        let c = Config::load_from(
            no_file(),
            env(&[
                ("LORAFLOW_API__MAX_CONNECTIONS", "500"),
                ("LORAFLOW_API__IDLE_TIMEOUT_SECS", "2"),
                ("LORAFLOW_API__HEADER_READ_TIMEOUT_SECS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!((c.api.max_connections, c.api.idle_timeout_secs, c.api.header_read_timeout_secs), (500, 2, 3));
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__MAX_CONNECTIONS", "1")])).unwrap_err();
        assert!(e.to_string().contains("`api.max_connections`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__IDLE_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(e.to_string().contains("`api.idle_timeout_secs`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__REQUEST_TIMEOUT_SECS", "86400")])).unwrap_err();
        assert!(e.to_string().contains("`api.request_timeout_secs`"), "{e}");
    }

    #[test]
    fn api_hardening_keys_are_checked() {
        let c = Config::load_from(
            no_file(),
            env(&[("LORAFLOW_API__MAX_BODY_BYTES", "65536"), ("LORAFLOW_API__AUTH_FAILURES_PER_MINUTE", "0")]),
        )
        .unwrap();
        assert_eq!((c.api.max_body_bytes, c.api.auth_failures_per_minute), (65536, 0));
        // A 408 or 503 must come before the connection's own deadline closes it.
        for (key, name) in
            [("LORAFLOW_API__HANDLER_TIMEOUT_SECS", "handler_timeout_secs"), ("LORAFLOW_API__BODY_TIMEOUT_SECS", "body_timeout_secs")]
        {
            let e = Config::load_from(no_file(), env(&[(key, "60")])).unwrap_err();
            assert!(e.to_string().contains(&format!("`api.{name}`")), "{e}");
            assert!(Config::load_from(no_file(), env(&[(key, "20"), ("LORAFLOW_API__REQUEST_TIMEOUT_SECS", "40")])).is_ok());
        }
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__MAX_BODY_BYTES", "10")])).unwrap_err();
        assert!(e.to_string().contains("`api.max_body_bytes`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__TLS_CERT", "/etc/loraflow/api.pem")])).unwrap_err();
        assert!(e.to_string().contains("`api.tls_key`"), "{e}");
        let c = Config::load_from(
            no_file(),
            env(&[("LORAFLOW_API__TLS_CERT", "/etc/loraflow/api.pem"), ("LORAFLOW_API__TLS_KEY", "/etc/loraflow/api.key")]),
        )
        .unwrap();
        assert_eq!(c.api.tls_key.as_deref(), Some(std::path::Path::new("/etc/loraflow/api.key")));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_API__BINDD", "x")])).unwrap_err();
        assert!(e.to_string().contains("bindd"), "{e}");
    }

    #[test]
    fn toml_file_is_read_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[network]\ndedup_window_ms = 300\nnet_id = \"000001\"\n[gateway]\nbind = \"127.0.0.1:1701\"\n").unwrap();
        let c = Config::load_from(Some(&p), env(&[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "10")])).unwrap();
        assert_eq!(c.network.dedup_window_ms, 10);
        assert_eq!(c.network.net_id, "000001");
        assert_eq!(c.gateway.bind.port(), 1701);
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let e = Config::load_from(Some(Path::new("/nonexistent/loraflow.toml")), env(&[])).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn toml_type_error_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[mqtt]\nqueue_size = \"lots\"\n").unwrap();
        let e = Config::load_from(Some(&p), env(&[])).unwrap_err();
        assert!(e.to_string().contains("`mqtt.queue_size`"), "{e}");
    }

    #[test]
    fn a_us915_server_is_one_key_and_takes_sub_band_2() {
        let c = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__REGION", "EU868")])).unwrap();
        assert_eq!(&*c.regions().unwrap().first().id, "eu868");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__REGION", "XX999")])).unwrap_err();
        assert!(e.to_string().contains("`network.region`"), "{e}");
        let c = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__ENABLED_UPLINK_CHANNELS", "0,1")])).unwrap();
        assert_eq!(c.regions().unwrap().first().enabled_uplink_channels, vec![0, 1]);
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__ENABLED_UPLINK_CHANNELS", "0,5")])).unwrap_err();
        assert!(e.to_string().contains("`network.enabled_uplink_channels`"), "{e}");
        let e = Config::load_from(no_file(), env(&[("LORAFLOW_NETWORK__EXTRA_CHANNELS", "915000000")])).unwrap_err();
        assert!(e.to_string().contains("`network.extra_channels`"), "{e}");
    }

    #[test]
    fn regions_entries_are_read_from_toml_and_bad_ones_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[[regions]]\nid = \"eu_main\"\ncommonName = \"EU868\"\n\n[[regions]]\nid = \"eu_two\"\ncommon_name = \"eu868\"\nextra_channels = []\nrx2_dr = 3\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&p), env(&[])).unwrap();
        let r = c.regions().unwrap();
        let ids: Vec<&str> = r.iter().map(|r| &*r.id).collect();
        assert_eq!(ids, ["eu_main", "eu_two"]);
        assert_eq!(r.get("eu_two").unwrap().desired_rx.rx2_dr, 3);
        assert!(r.get("eu_two").unwrap().extra_channels.is_empty());

        std::fs::write(&p, "[[regions]]\nid = \"a\"\ncommon_name = \"EU868\"\n[[regions]]\nid = \"a\"\ncommon_name = \"EU868\"\n").unwrap();
        let e = Config::load_from(Some(&p), env(&[])).unwrap_err();
        assert!(e.to_string().contains("`regions[1].id`"), "{e}");
        std::fs::write(&p, "[[regions]]\nid = \"a\"\ncommon_name = \"EU868\"\nenabled_uplink_channels = [0, 1, 7]\n").unwrap();
        let e = Config::load_from(Some(&p), env(&[])).unwrap_err();
        assert!(e.to_string().contains("`regions[0].enabled_uplink_channels`"), "{e}");
        std::fs::write(&p, "[[regions]]\nid = \"a\"\ncommon_name = \"Mars\"\n").unwrap();
        let e = Config::load_from(Some(&p), env(&[])).unwrap_err();
        assert!(e.to_string().contains("`regions[0].common_name`"), "{e}");
    }

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/loraflow.example.toml");

    /// `section.key` (and `regions[].key`) for every key of a TOML document.
    fn key_paths(doc: &toml::Table) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (section, value) in doc {
            match value {
                toml::Value::Table(t) => out.extend(t.keys().map(|k| format!("{section}.{k}"))),
                toml::Value::Array(entries) => {
                    for e in entries.iter().filter_map(toml::Value::as_table) {
                        out.extend(e.keys().map(|k| format!("{section}[].{k}")));
                    }
                }
                _ => {
                    out.insert(section.clone());
                }
            }
        }
        out
    }

    /// The example with its commented-out settings (`# key = …`, `# [[regions]]`) enabled.
    fn uncommented(example: &str) -> String {
        example
            .lines()
            .map(|line| {
                let rest = line.strip_prefix("# ").unwrap_or("");
                let is_setting = rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
                if is_setting {
                    rest
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_config_states_exactly_the_defaults() {
        // Loaded as a config file: unknown keys and bad values fail as they would at start.
        let c = Config::load_from(Some(Path::new(EXAMPLE)), env(&[])).unwrap();
        assert_eq!(c, Config::default(), "a value in deploy/loraflow.example.toml is not the default");
    }

    #[test]
    fn the_example_config_documents_every_key() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let example: toml::Table = toml::from_str(&uncommented(&text)).unwrap();
        let documented = key_paths(&example);
        let defaults = key_paths(&toml::Table::try_from(Config::default()).unwrap());
        let missing: Vec<_> = defaults.difference(&documented).collect();
        assert!(missing.is_empty(), "config keys missing from deploy/loraflow.example.toml: {missing:?}");
        assert!(documented.contains("regions[].common_name") && documented.contains("network.max_duty_cycle"), "{documented:?}");
    }

    #[test]
    fn the_example_configs_commented_out_settings_are_real_and_valid() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("all.toml");
        std::fs::write(&p, uncommented(&text)).unwrap();
        let c = Config::load_from(Some(&p), env(&[])).unwrap_or_else(|e| panic!("uncommented example: {e}"));
        c.regions().unwrap();
        assert_eq!(c.network.max_duty_cycle, Some(0));
        assert_eq!(c.regions.len(), 1);
        // Every setting written in the file is one the typed config keeps (none ignored).
        let example: toml::Table = toml::from_str(&uncommented(&text)).unwrap();
        let kept = key_paths(&toml::Table::try_from(&c).unwrap());
        let dropped: Vec<_> = key_paths(&example).into_iter().filter(|k| !kept.contains(k)).collect();
        assert!(dropped.is_empty(), "{dropped:?}");
    }

    #[test]
    fn cluster_mode_needs_postgres_and_an_external_broker() {
        let redis = ("LORAFLOW_CLUSTER__REDIS_URL", "redis://127.0.0.1:6379/0");
        let pg = ("LORAFLOW_DATABASE__URL", "postgres://postgres@127.0.0.1/loraflow");
        let broker = ("LORAFLOW_MQTT__URL", "mqtt://127.0.0.1:1883");
        let key = |vars: &[(&str, &str)]| match Config::load_from(no_file(), env(vars)) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(&[redis, broker]), "database.url");
        assert_eq!(key(&[redis, pg]), "mqtt.url");
        assert_eq!(key(&[("LORAFLOW_CLUSTER__REDIS_URL", "127.0.0.1:6379"), pg, broker]), "cluster.redis_url");
        let c = Config::load_from(no_file(), env(&[redis, pg, broker, ("LORAFLOW_CLUSTER__KEY_PREFIX", "site1")])).unwrap();
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.key_prefix, "site1");
    }

    #[test]
    fn log_level_is_checked_naming_the_key() {
        for good in ["info", "WARN", "loraflow_network_server=debug,info", "off", "warn,sqlx=error"] {
            Config::load_from(no_file(), env(&[("LORAFLOW_LOG__LEVEL", good)])).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["verbose", "", "info,loud", "x=notalevel"] {
            let e = Config::load_from(no_file(), env(&[("LORAFLOW_LOG__LEVEL", bad)])).unwrap_err();
            assert!(e.to_string().contains("`log.level`"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_zero_embedded_connection_limit_is_refused_naming_the_key() {
        let e = Config::load_from(None, env(&[("LORAFLOW_MQTT__EMBEDDED_MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(e.to_string().contains("mqtt.embedded_max_connections"), "{e}");
    }
}
