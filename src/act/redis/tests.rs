//! The Redis actuator against a real `redis-server` on a loopback port.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::IntCounter;
use redis::Commands;

use super::*;
use crate::act::config::RedisTargetConfig;
use crate::act::testing::peers::RedisServer;
use crate::act::Actuator;
use crate::duration::PromDuration;
use crate::knowledge::IntentReceipt;

fn target(url: String, batch_size: u32, max_keys: u64) -> RedisTargetConfig {
    RedisTargetConfig {
        url,
        username: None,
        password_file: None,
        password_env: None,
        db: None,
        batch_size,
        max_keys,
        timeout: PromDuration::from_secs(5),
        deadline: PromDuration::from_secs(60),
    }
}

fn actuator(targets: &[(&str, RedisTargetConfig)]) -> RedisActuator {
    let map: BTreeMap<String, RedisTargetConfig> = targets
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let retry = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    RedisActuator::new(&map, retry, IntCounter::new("r", "r").unwrap()).unwrap()
}

fn clear(target: &str, pattern: &str, db: Option<u32>, max_keys: u64) -> Approved {
    Approved::new(
        Action::ClearCache {
            target: target.into(),
            pattern: pattern.into(),
            db,
            max_keys,
        },
        IntentReceipt::for_test(7),
    )
}

fn seed(c: &mut redis::Connection, prefix: &str, n: usize) {
    for i in 0..n {
        let _: () = c.set(format!("{prefix}{i}"), "v").unwrap();
    }
}

fn count(c: &mut redis::Connection, pattern: &str) -> usize {
    let keys: Vec<String> = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(100_000)
        .query::<(u64, Vec<String>)>(c)
        .unwrap()
        .1;
    keys.len()
}

/// `INFO commandstats` of the server: which commands it was sent.
fn commands(c: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("commandstats").query(c).unwrap()
}

#[tokio::test]
async fn matching_keys_are_cleared_in_batches_and_others_remain() {
    let server = RedisServer::start();
    let mut db0 = server.connection(0);
    let mut db3 = server.connection(3);
    seed(&mut db0, "session:", 250);
    seed(&mut db0, "user:", 20);
    seed(&mut db3, "session:", 5);
    let a = actuator(&[("cache", target(server.url(), 50, 100_000))]);
    let e = a
        .execute(&clear("cache", "session:*", None, 10_000))
        .await
        .unwrap();
    assert_eq!(e.details["removed"], 250, "{e:?}");
    assert_eq!(e.details["complete"], true);
    assert!(
        e.details["batches"].as_u64().unwrap() >= 5,
        "batches of at most 50: {e:?}"
    );
    assert_eq!(e.undo, None);
    assert_eq!(count(&mut db0, "session:*"), 0);
    assert_eq!(count(&mut db0, "user:*"), 20, "unrelated keys remain");
    assert_eq!(count(&mut db3, "session:*"), 5, "other databases untouched");
    let stats = commands(&mut db0);
    assert!(
        stats.contains("cmdstat_scan") && stats.contains("cmdstat_unlink"),
        "{stats}"
    );
    for forbidden in [
        "cmdstat_keys",
        "cmdstat_flushall",
        "cmdstat_flushdb",
        "cmdstat_del:",
    ] {
        assert!(!stats.contains(forbidden), "{forbidden} was sent: {stats}");
    }
}

#[tokio::test]
async fn the_cap_is_respected_and_reported() {
    let server = RedisServer::start();
    let mut c = server.connection(0);
    seed(&mut c, "tmp:", 300);
    let a = actuator(&[
        ("cache", target(server.url(), 40, 100_000)),
        ("small", target(server.url(), 40, 30)),
    ]);
    let e = a
        .execute(&clear("cache", "tmp:*", None, 100))
        .await
        .unwrap();
    assert_eq!(e.details["removed"], 100);
    assert_eq!(e.details["capped"], true);
    assert_eq!(e.details["complete"], false);
    assert!(e.summary.contains("stopped at max_keys"), "{}", e.summary);
    assert_eq!(count(&mut c, "tmp:*"), 200);
    // The target's ceiling caps an action asking for more.
    let e = a
        .execute(&clear("small", "tmp:*", None, 1_000))
        .await
        .unwrap();
    assert_eq!(
        (e.details["removed"].clone(), e.details["max_keys"].clone()),
        (30.into(), 30.into())
    );
    assert_eq!(count(&mut c, "tmp:*"), 170);
}

#[tokio::test]
async fn the_db_index_is_honoured() {
    let server = RedisServer::start();
    let mut db0 = server.connection(0);
    let mut db3 = server.connection(3);
    seed(&mut db0, "k:", 10);
    seed(&mut db3, "k:", 7);
    let mut in_db2 = target(server.url(), 100, 1_000);
    in_db2.db = Some(2);
    let a = actuator(&[("cache", target(server.url(), 100, 1_000)), ("two", in_db2)]);
    let e = a
        .execute(&clear("cache", "k:*", Some(3), 1_000))
        .await
        .unwrap();
    assert_eq!(
        (e.details["removed"].clone(), e.details["db"].clone()),
        (7.into(), 3.into())
    );
    assert_eq!(count(&mut db3, "k:*"), 0);
    assert_eq!(count(&mut db0, "k:*"), 10);
    // The target's default DB when the action names none.
    let e = a.execute(&clear("two", "k:*", None, 1_000)).await.unwrap();
    assert_eq!(
        (e.details["removed"].clone(), e.details["db"].clone()),
        (0.into(), 2.into())
    );
    assert_eq!(count(&mut db0, "k:*"), 10);
}

#[tokio::test]
async fn observe_counts_matching_keys_without_removing_them() {
    let server = RedisServer::start();
    let mut c = server.connection(0);
    seed(&mut c, "s:", 12);
    seed(&mut c, "u:", 3);
    let a = actuator(&[("cache", target(server.url(), 5, 1_000))]);
    let action = clear("cache", "s:*", None, 1_000);
    let o = a.observe(action.action()).await.unwrap();
    assert_eq!(
        (o["matching_keys"].clone(), o["dbsize"].clone()),
        (12.into(), 15.into())
    );
    assert_eq!(count(&mut c, "s:*"), 12);
}

#[tokio::test]
async fn unknown_targets_and_unreachable_servers_are_errors() {
    let server = RedisServer::start();
    let url = server.url();
    let a = actuator(&[("cache", target(url, 10, 100))]);
    assert!(!a.handles(clear("other", "x*", None, 1).action()));
    assert!(a.handles(clear("cache", "x*", None, 1).action()));
    let r = a.execute(&clear("other", "x*", None, 1)).await;
    assert!(matches!(r, Err(ActError::NotConfigured(_))), "{r:?}");
    let r = a.execute(&clear("cache", "", None, 1)).await;
    assert!(matches!(r, Err(ActError::Invalid(_))), "{r:?}");
    drop(server);
    match a.execute(&clear("cache", "x*", None, 10)).await {
        Err(ActError::Unavailable { attempts, .. }) => assert_eq!(attempts, 2),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_password_comes_from_a_file() {
    let server = RedisServer::start();
    let mut c = server.connection(0);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query(&mut c)
        .unwrap();
    let pw = server.dir().join("redis-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let mut t = target(server.url(), 10, 100);
    t.password_file = Some(pw);
    let a = actuator(&[("cache", t)]);
    let e = a
        .execute(&clear("cache", "none:*", None, 10))
        .await
        .unwrap();
    assert_eq!(e.details["removed"], 0);
    // Without it the server refuses, and retrying would not help.
    let b = actuator(&[("cache", target(server.url(), 10, 100))]);
    let r = b.execute(&clear("cache", "none:*", None, 10)).await;
    assert!(matches!(r, Err(ActError::Refused(_))), "{r:?}");
}
