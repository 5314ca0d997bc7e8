//! Sending a device's queued downlinks once in a cluster.
//!
//! Two things decide who sends:
//! - The Class C owner, `{prefix}:classc:{dev_eui}` = the instance that handled the device's
//!   last uplink. Only it knows the gateways that heard the device last (kept in memory, as
//!   in one process), so a queue change announced to every instance is acted on by the owner
//!   alone; another instance that heard the device earlier forgets it.
//! - The device claim, `{prefix}:claim:{dev_eui}`, taken (`SET NX PX`) around reading the
//!   queue and sending an item, Class A or C, and released afterwards: even when two instances
//!   both think they should send (an owner change in flight, a Class A answer on one instance
//!   and a Class C send on another), only the one holding the claim reads and sends the item;
//!   the queue it reads afterwards no longer has it.
//!
//! Without Redis an instance works alone: it sends what it knows of, as one process does.

use std::time::Duration;

use uuid::Uuid;

use super::Cluster;
use crate::types::Eui64;

/// How long a Class C owner is remembered without uplinks: the device's downlinks go through
/// the gateways of its last uplink, however old.
pub const OWNER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Every claim and owner operation is on the way to a downlink: without an answer by then,
/// the instance goes on alone.
const TIMEOUT: Duration = Duration::from_millis(100);

/// The outcome of asking for a device's claim.
pub enum Claimed {
    /// This instance holds it until [`Claim::release`] (or its expiry, if this instance dies).
    Held(Claim),
    /// Another instance is reading or sending the device's queue right now.
    Taken,
    /// Redis did not answer: go on alone.
    Unavailable,
}

/// A device's claim held by this instance.
pub struct Claim {
    cluster: Cluster,
    key: String,
    token: String,
}

/// Deletes the claim only if it is still ours: after an expiry another instance may hold it.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// Takes the claim on `dev_eui`'s queue for at most `hold`.
pub async fn claim(cluster: &Cluster, dev_eui: Eui64, hold: Duration) -> Claimed {
    let key = cluster.key(&["claim", &dev_eui.to_string()]);
    let token = format!("{}:{}", cluster.instance_id(), Uuid::new_v4().simple());
    let set = redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(hold.as_millis().max(1) as u64).clone();
    let result = super::bounded(TIMEOUT, async { set.query_async::<Option<String>>(&mut cluster.conn()).await }).await;
    cluster.report(&result);
    match result {
        Ok(Some(_)) => Claimed::Held(Claim { cluster: cluster.clone(), key, token }),
        Ok(None) => Claimed::Taken,
        Err(e) => {
            tracing::debug!(error = %e, "device claim unavailable; going on alone");
            Claimed::Unavailable
        }
    }
}

impl Claim {
    /// Gives the claim back (it would expire by itself otherwise).
    pub async fn release(self) {
        let eval = redis::cmd("EVAL").arg(RELEASE).arg(1).arg(&self.key).arg(&self.token).clone();
        let result = super::bounded(TIMEOUT, async { eval.query_async::<i64>(&mut self.cluster.conn()).await }).await;
        self.cluster.report(&result);
    }
}

fn owner_key(cluster: &Cluster, dev_eui: Eui64) -> String {
    cluster.key(&["classc", &dev_eui.to_string()])
}

/// This instance handled the device's last uplink: it does the device's Class C downlinks.
pub async fn own_class_c(cluster: &Cluster, dev_eui: Eui64) {
    let set =
        redis::cmd("SET").arg(owner_key(cluster, dev_eui)).arg(cluster.instance_id()).arg("PX").arg(OWNER_TTL.as_millis() as u64).clone();
    let result = super::bounded(TIMEOUT, async { set.query_async::<()>(&mut cluster.conn()).await }).await;
    cluster.report(&result);
}

/// The instance doing the device's Class C downlinks; `None` when unknown or Redis is unavailable.
pub async fn class_c_owner(cluster: &Cluster, dev_eui: Eui64) -> Option<String> {
    let get = redis::cmd("GET").arg(owner_key(cluster, dev_eui)).clone();
    let result = super::bounded(TIMEOUT, async { get.query_async::<Option<String>>(&mut cluster.conn()).await }).await;
    cluster.report(&result);
    result.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::test_cluster;

    #[tokio::test]
    async fn one_instance_holds_a_device_claim_until_it_releases_it_or_it_expires() {
        let prefix = format!("lfunit-{}", Uuid::new_v4().simple());
        let (a, b) = (test_cluster(&prefix, "a").await, test_cluster(&prefix, "b").await);
        let dev = Eui64([1; 8]);
        let Claimed::Held(held) = claim(&a, dev, Duration::from_secs(5)).await else { panic!("a should get the claim") };
        assert!(matches!(claim(&b, dev, Duration::from_secs(5)).await, Claimed::Taken));
        // Another device is not affected.
        assert!(matches!(claim(&b, Eui64([2; 8]), Duration::from_secs(5)).await, Claimed::Held(_)));
        held.release().await;
        let Claimed::Held(by_b) = claim(&b, dev, Duration::from_millis(100)).await else { panic!("released claim") };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Expired: a takes it; b's late release must not free a's claim.
        let Claimed::Held(_by_a) = claim(&a, dev, Duration::from_secs(5)).await else { panic!("expired claim") };
        by_b.release().await;
        assert!(matches!(claim(&b, dev, Duration::from_secs(5)).await, Claimed::Taken));
    }

    #[tokio::test]
    async fn the_class_c_owner_is_the_last_instance_that_claimed_it() {
        let prefix = format!("lfunit-{}", Uuid::new_v4().simple());
        let (a, b) = (test_cluster(&prefix, "a").await, test_cluster(&prefix, "b").await);
        let dev = Eui64([3; 8]);
        assert_eq!(class_c_owner(&a, dev).await, None);
        own_class_c(&a, dev).await;
        assert_eq!(class_c_owner(&b, dev).await.as_deref(), Some("a"));
        own_class_c(&b, dev).await;
        assert_eq!(class_c_owner(&a, dev).await.as_deref(), Some("b"));
        // Owners live for days: leave nothing behind in the shared Redis.
        let _: () = redis::cmd("DEL").arg(owner_key(&a, dev)).query_async(&mut a.conn()).await.unwrap();
    }
}
