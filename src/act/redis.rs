//! Redis actuator: clear the keys matching a pattern with `SCAN … MATCH … COUNT`
//! and `UNLINK`, in batches of the target's `batch_size`, at most `max_keys` keys
//! (the action's, capped by the target's ceiling), in the action's DB or the
//! target's, within the target's deadline. Reports what it removed.
//!
//! Must never: send `KEYS`, `FLUSHDB` or `FLUSHALL`; remove more than `max_keys`
//! keys; run without a deadline. `SCAN` and `UNLINK` are idempotent, so both are
//! retried after connection errors and timeouts (on a fresh connection).
//!
//! The Redis user needs `scan`, `unlink`, `select` and `dbsize` (ACL
//! `+scan +unlink +select +dbsize`) on the keys it may clear.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::IntCounter;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use serde_json::{json, Value};

use super::config::{timeout, RedisTargetConfig};
use super::retry::{with_retries, Attempt, RetryPolicy};
use super::{ActError, Action, Approved, Effect};

/// One configured Redis server.
struct Target {
    client: redis::Client,
    default_db: i64,
    batch_size: u32,
    max_keys: u64,
    timeout: Duration,
    deadline: Duration,
}

/// Clears keys by pattern on the configured Redis servers.
pub struct RedisActuator {
    targets: BTreeMap<String, Target>,
    retry: RetryPolicy,
    retries: IntCounter,
}

/// What one clear did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClearReport {
    /// Keys `UNLINK` reported removed.
    pub removed: u64,
    /// Keys `SCAN` returned (some may have expired before `UNLINK`).
    pub matched: u64,
    /// `UNLINK` commands sent.
    pub batches: u64,
    /// The scan went through the whole keyspace.
    pub complete: bool,
    /// Stopped because `max_keys` keys were matched.
    pub capped: bool,
    /// Stopped at the deadline.
    pub timed_out: bool,
}

fn classify(what: &str, e: redis::RedisError) -> Attempt {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        Attempt::Transient(format!("{what}: {e}"))
    } else {
        Attempt::Final(ActError::Refused(format!("{what}: {e}")))
    }
}

/// A connection that is made on first use and made again after a failure.
struct Connection<'a> {
    target: &'a Target,
    db: i64,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl Connection<'_> {
    async fn get(&self) -> Result<MultiplexedConnection, Attempt> {
        if let Some(c) = self.current.lock().clone() {
            return Ok(c);
        }
        let info = self.target.client.get_connection_info().clone();
        let settings = info.redis_settings().clone().set_db(self.db);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| classify("connecting", e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.target.timeout))
            .set_response_timeout(Some(self.target.timeout));
        let c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify("connecting", e))?;
        *self.current.lock() = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmd` with retries; a failed connection is dropped and made anew.
    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
        retry: &RetryPolicy,
        retries: &IntCounter,
    ) -> Result<T, ActError> {
        with_retries(
            retry,
            || retries.inc(),
            |_| async {
                let mut c = self.get().await?;
                match cmd.query_async::<T>(&mut c).await {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        let a = classify(what, e);
                        if matches!(a, Attempt::Transient(_)) {
                            *self.current.lock() = None;
                        }
                        Err(a)
                    }
                }
            },
        )
        .await
    }
}

impl RedisActuator {
    /// Builds the targets; passwords are read from their files or variables now.
    pub fn new(
        targets: &BTreeMap<String, RedisTargetConfig>,
        retry: RetryPolicy,
        retries: IntCounter,
    ) -> Result<Self, (String, String)> {
        let mut built = BTreeMap::new();
        for (name, t) in targets {
            let key = format!("actuators.redis.{name}");
            let info = t
                .url
                .as_str()
                .into_connection_info()
                .map_err(|e| (format!("{key}.url"), e.to_string()))?;
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &t.username {
                settings = settings.set_username(user);
            }
            if let Some(pw) = t.password(&key).map_err(|e| (key.clone(), e))? {
                settings = settings.set_password(pw.expose());
            }
            let default_db = t.db.map(i64::from).unwrap_or(settings.db());
            let client = redis::Client::open(info.set_redis_settings(settings))
                .map_err(|e| (format!("{key}.url"), e.to_string()))?;
            built.insert(
                name.clone(),
                Target {
                    client,
                    default_db,
                    batch_size: t.batch_size,
                    max_keys: t.max_keys,
                    timeout: timeout(&t.timeout),
                    deadline: timeout(&t.deadline),
                },
            );
        }
        Ok(RedisActuator {
            targets: built,
            retry,
            retries,
        })
    }

    fn target(&self, name: &str) -> Result<&Target, ActError> {
        self.targets
            .get(name)
            .ok_or_else(|| ActError::NotConfigured(format!("redis target {name:?}")))
    }

    /// SCAN from the start for keys matching `pattern` (at most `limit` in all),
    /// UNLINKing each batch when `unlink`; stops at the end of the keyspace, the
    /// limit or the deadline.
    async fn scan(
        &self,
        conn: &Connection<'_>,
        pattern: &str,
        limit: u64,
        unlink: bool,
    ) -> Result<ClearReport, ActError> {
        let t = conn.target;
        let deadline = Instant::now() + t.deadline;
        let mut report = ClearReport::default();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(t.batch_size);
            let (next, mut keys): (u64, Vec<String>) =
                conn.query("SCAN", &cmd, &self.retry, &self.retries).await?;
            let room = limit - report.matched;
            if keys.len() as u64 > room {
                keys.truncate(room as usize);
            }
            report.matched += keys.len() as u64;
            // SCAN may return more than COUNT keys: unlink in batches of batch_size.
            for chunk in keys.chunks(t.batch_size as usize).filter(|_| unlink) {
                let mut cmd = redis::cmd("UNLINK");
                cmd.arg(chunk);
                let n: u64 = conn
                    .query("UNLINK", &cmd, &self.retry, &self.retries)
                    .await?;
                report.removed += n;
                report.batches += 1;
            }
            cursor = next;
            if cursor == 0 {
                report.complete = true;
                return Ok(report);
            }
            if report.matched >= limit {
                report.capped = true;
                return Ok(report);
            }
            if Instant::now() >= deadline {
                report.timed_out = true;
                return Ok(report);
            }
        }
    }

    /// Clears the keys matching `pattern`: the whole job of a `clear_cache` action.
    pub async fn clear(
        &self,
        target: &str,
        pattern: &str,
        db: Option<u32>,
        max_keys: u64,
    ) -> Result<(ClearReport, i64, u64), ActError> {
        let t = self.target(target)?;
        if pattern.is_empty() {
            return Err(ActError::Invalid("empty key pattern".into()));
        }
        let limit = max_keys.min(t.max_keys);
        if limit == 0 {
            return Err(ActError::Invalid("max_keys is 0".into()));
        }
        let db = db.map(i64::from).unwrap_or(t.default_db);
        let conn = Connection {
            target: t,
            db,
            current: Mutex::new(None),
        };
        let report = self.scan(&conn, pattern, limit, true).await?;
        Ok((report, db, limit))
    }
}

#[async_trait::async_trait]
impl super::Actuator for RedisActuator {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn handles(&self, action: &Action) -> bool {
        matches!(action, Action::ClearCache { target, .. } if self.targets.contains_key(target))
    }

    async fn execute(&self, approved: &Approved) -> Result<Effect, ActError> {
        let Action::ClearCache {
            target,
            pattern,
            db,
            max_keys,
        } = approved.action()
        else {
            return Err(ActError::NotConfigured(
                approved.action().kind().to_string(),
            ));
        };
        let (r, db, limit) = self.clear(target, pattern, *db, *max_keys).await?;
        let stop = if r.complete {
            ""
        } else if r.capped {
            " (stopped at max_keys)"
        } else {
            " (stopped at the deadline)"
        };
        Ok(Effect {
            summary: format!(
                "removed {} keys matching {pattern:?} from redis {target} db {db} in {} batches{stop}",
                r.removed, r.batches
            ),
            details: json!({
                "removed": r.removed,
                "matched": r.matched,
                "batches": r.batches,
                "db": db,
                "max_keys": limit,
                "complete": r.complete,
                "capped": r.capped,
                "timed_out": r.timed_out,
            }),
            undo: None,
        })
    }

    async fn observe(&self, action: &Action) -> Result<Value, ActError> {
        let Action::ClearCache {
            target,
            pattern,
            db,
            max_keys,
        } = action
        else {
            return Err(ActError::NotConfigured(action.kind().to_string()));
        };
        let t = self.target(target)?;
        let db = db.map(i64::from).unwrap_or(t.default_db);
        let conn = Connection {
            target: t,
            db,
            current: Mutex::new(None),
        };
        let size: u64 = conn
            .query("DBSIZE", &redis::cmd("DBSIZE"), &self.retry, &self.retries)
            .await?;
        let limit = (*max_keys).min(t.max_keys).max(1);
        let r = self.scan(&conn, pattern, limit, false).await?;
        Ok(json!({
            "db": db,
            "dbsize": size,
            "matching_keys": r.matched,
            "complete": r.complete,
        }))
    }
}

#[cfg(test)]
mod tests;
