//! The process's file-descriptor budget. Every REST and MQTT connection holds a descriptor; the
//! default soft limit (often 1024) is far below what the hard limit allows, so it is raised at
//! start, and the REST connection limit is kept within a share of it so that a flood of REST
//! connections always leaves room for the gateway UDP socket, the database pool and MQTT.

/// Descriptors kept for everything but REST and MQTT connections: UDP socket, listeners,
/// SQLite files and the WAL, the tokio runtime, log output.
const RESERVED: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most 2^20 when the hard limit is
/// unlimited, which Linux refuses as a soft limit) and returns the limit now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur >= target {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: target, rlim_max: lim.rlim_max };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, soft = lim.rlim_cur, hard = lim.rlim_max, "could not raise the file-descriptor limit");
        return Ok(lim.rlim_cur);
    }
    Ok(target)
}

/// How many REST connections fit: half of what is left after the database pool and the
/// fixed reserve, the other half staying for MQTT (embedded broker clients and our client).
pub fn rest_connection_budget(nofile: u64, database_pool: u32) -> usize {
    let left = nofile.saturating_sub(RESERVED + u64::from(database_pool));
    usize::try_from(left / 2).unwrap_or(usize::MAX).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_the_pool_and_mqtt() {
        assert_eq!(rest_connection_budget(1024, 8), (1024 - 64 - 8) / 2);
        assert_eq!(rest_connection_budget(1_048_576, 8), (1_048_576 - 72) / 2);
        // A tiny limit still lets the API answer.
        assert_eq!(rest_connection_budget(10, 8), 2);
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: reads into a local struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) }, 0);
        let now = raise_nofile_limit().unwrap();
        assert!(now >= before.rlim_cur && now <= before.rlim_max);
    }
}
