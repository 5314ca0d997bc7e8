//! Metrics about the process itself: `loraflow_build_info` (which build is running) and the
//! standard `process_*` series (CPU seconds, resident and virtual memory, open and maximum
//! file descriptors, start time) read from `/proc` by the `prometheus` crate.

use prometheus::{IntGaugeVec, Opts, Registry};

/// The git commit the binary was built from (`build.rs`), `unknown` without one.
pub const GIT_COMMIT: &str = env!("LORAFLOW_GIT_COMMIT");

pub fn register(registry: &Registry) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new("loraflow_build_info", "Always 1; the labels name the running build (version, git commit)"),
        &["version", "git"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT]).set(1);
    registry.register(Box::new(info))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_series_are_exported() {
        let registry = Registry::new();
        register(&registry).unwrap();
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("loraflow_build_info{{git=\"{GIT_COMMIT}\",version=\"{version}\"}} 1")), "{text}");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing: {text}");
        }
    }
}
