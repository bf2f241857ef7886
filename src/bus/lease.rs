//! Which instance of a module reads which partition of a topic: leases held as PostgreSQL
//! advisory locks on a connection of the module's own database.
//!
//! Instances of a module meet in its database, so that is where they agree. Each instance of
//! a group (a consumer and a topic) holds one *member* lock, a slot among [`MEMBER_SLOTS`],
//! for as long as it lives, and one *lease* lock per partition it reads. A lock belongs to a
//! database session, so an instance that dies (SIGKILL, a lost machine) lets go of all of them
//! the moment PostgreSQL sees its connection close: no heartbeat, no expiry to wait out.
//!
//! Every [`ROUND`] an instance counts the members (the member locks held, as `pg_locks` shows
//! them), works out its share of the partitions (the first `P % N` members by slot read one
//! more than the rest), takes free partitions up to its share and gives up any beyond it.
//! A partition given up is released only once its reader has stopped and its last batch has
//! committed ([`Leases::release`]), and a partition taken is read from the position stored in
//! the module's database, so a partition changes hands at a commit boundary. Should two
//! instances ever read one partition at once (a lease lost with its connection while the old
//! reader still works), the inbox keeps every event applied once.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use sqlx::Connection;

use crate::db::advisory_key;

/// How often an instance looks at the members and its share: a dead instance's partitions are
/// read again within about this long (plus the reader's own start).
pub const ROUND: Duration = Duration::from_secs(1);

/// Most instances of one module reading one topic.
pub const MEMBER_SLOTS: u32 = 64;

/// Opens a connection of its own to the module's database (not one of a pool's: a lock lives
/// as long as the session that took it).
pub type Connect = Box<dyn Fn() -> BoxFuture<'static, anyhow::Result<AnyConnection>> + Send + Sync>;

/// One instance's leases on one topic's partitions for one consumer.
pub struct Leases {
    group: String,
    connect: Connect,
    session: Option<Session>,
    /// Partitions whose leases went with a connection given up outside a round, to report
    /// as lost in the next one.
    dropped: Vec<i32>,
}

/// The connection holding the locks, and what it holds.
struct Session {
    conn: AnyConnection,
    slot: u32,
    owned: BTreeSet<i32>,
}

/// What one round decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Locked now: start reading them.
    pub taken: Vec<i32>,
    /// Beyond this instance's share: stop reading them, then [`Leases::release`] them.
    pub give: Vec<i32>,
    /// The connection was lost, and every lease with it: stop reading these at once.
    pub lost: Vec<i32>,
    /// Members of the group, this one included (0 while its connection is down).
    pub members: u32,
}

impl Leases {
    pub fn new(consumer: &str, topic: &str, connect: Connect) -> Leases {
        Leases {
            group: format!("{consumer}/{topic}"),
            connect,
            session: None,
            dropped: Vec::new(),
        }
    }

    /// Joins (again, after a lost connection) and settles this instance's share of
    /// `partitions`.
    pub async fn round(&mut self, partitions: i32) -> Round {
        if !self.dropped.is_empty() {
            return Round {
                lost: std::mem::take(&mut self.dropped),
                ..Round::default()
            };
        }
        match self.settle(partitions).await {
            Ok(round) => round,
            Err(err) => {
                let lost: Vec<i32> = self
                    .session
                    .take()
                    .map(|s| s.owned.into_iter().collect())
                    .unwrap_or_default();
                tracing::warn!(group = %self.group, error = %format!("{err:#}"), ?lost,
                    "lost the partition leases' connection; joining again");
                Round {
                    lost,
                    ..Round::default()
                }
            }
        }
    }

    async fn settle(&mut self, partitions: i32) -> anyhow::Result<Round> {
        if self.session.is_none() {
            let mut conn = (self.connect)().await?;
            let slot = join(&mut conn, &self.group).await?;
            self.session = Some(Session {
                conn,
                slot,
                owned: BTreeSet::new(),
            });
        }
        let group = self.group.clone();
        let session = self.session.as_mut().expect("joined above");
        let members = held_member_slots(&mut session.conn, &group).await?;
        let rank = members.iter().position(|s| *s == session.slot).unwrap_or(0) as i32;
        let n = members.len().max(1) as i32;
        let share = (partitions / n + i32::from(rank < partitions % n)) as usize;
        let mut round = Round {
            members: n as u32,
            ..Round::default()
        };
        if session.owned.len() > share {
            // The highest first, so a share settles on the same partitions each time.
            round.give = session
                .owned
                .iter()
                .rev()
                .take(session.owned.len() - share)
                .copied()
                .collect();
        }
        for partition in 0..partitions {
            if session.owned.len() >= share {
                break;
            }
            if session.owned.contains(&partition) {
                continue;
            }
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lease_key(&group, partition))
                .fetch_one(&mut session.conn)
                .await?;
            if locked {
                session.owned.insert(partition);
                round.taken.push(partition);
            }
        }
        Ok(round)
    }

    /// Lets other instances take `partitions`, whose readers have stopped.
    pub async fn release(&mut self, partitions: &[i32]) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        for partition in partitions {
            let released = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
                .bind(lease_key(&self.group, *partition))
                .fetch_one(&mut session.conn)
                .await;
            match released {
                Ok(_) => {
                    session.owned.remove(partition);
                }
                Err(err) => {
                    // Closing the session lets go of every lease it held; the next round
                    // reports them lost and joins again.
                    tracing::warn!(group = %self.group, partition, error = %err,
                        "could not release a partition lease; leaving the group");
                    if let Some(session) = self.session.take() {
                        self.dropped = session.owned.into_iter().collect();
                        let _ = session.conn.close().await;
                    }
                    return;
                }
            }
        }
    }

    /// Leaves the group: every lock goes with the connection.
    pub async fn leave(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.conn.close().await;
        }
    }
}

/// Takes the first free member slot.
async fn join(conn: &mut AnyConnection, group: &str) -> anyhow::Result<u32> {
    for slot in 0..MEMBER_SLOTS {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(member_key(group, slot))
            .fetch_one(&mut *conn)
            .await?;
        if locked {
            return Ok(slot);
        }
    }
    anyhow::bail!("{} instances of {} already run", MEMBER_SLOTS, group)
}

/// The group's member slots held now, in order.
async fn held_member_slots(conn: &mut AnyConnection, group: &str) -> anyhow::Result<Vec<u32>> {
    // A `bigint` advisory key shows as its high half in `classid` and its low half in `objid`.
    let held: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT classid::int8, objid::int8 FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 1 AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut *conn)
    .await?;
    let held: BTreeSet<i64> = held
        .into_iter()
        .map(|(high, low)| ((high << 32) | low) as u64 as i64)
        .collect();
    Ok((0..MEMBER_SLOTS)
        .filter(|slot| held.contains(&member_key(group, *slot)))
        .collect())
}

fn member_key(group: &str, slot: u32) -> i64 {
    advisory_key(&format!("ekart.member/{group}/{slot}"))
}

fn lease_key(group: &str, partition: i32) -> i64 {
    advisory_key(&format!("ekart.lease/{group}/{partition}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_differ_by_group_slot_and_partition() {
        use super::{lease_key, member_key};
        assert_ne!(
            lease_key("order/ekart.stock", 0),
            lease_key("order/ekart.stock", 1)
        );
        assert_ne!(
            lease_key("order/ekart.stock", 0),
            lease_key("stock/ekart.stock", 0)
        );
        assert_ne!(
            member_key("order/ekart.stock", 0),
            lease_key("order/ekart.stock", 0)
        );
        assert_eq!(member_key("a/b", 3), member_key("a/b", 3));
    }
}
