//! Live changes for the operator panel: the coordinator publishes a
//! [`Change`] whenever a task, a till's progress on it, a till's state, a
//! rollout, a package or a group changes, and `GET /api/v1/events` streams
//! them as server-sent events.
//!
//! A change names what changed, not its new contents: the panel re-reads
//! the rows it shows through the ordinary API, so the stream carries no
//! data a viewer could not read anyway and losing an event costs a reload,
//! never a wrong row. The bus is a bounded broadcast channel: a subscriber
//! that falls behind is told to reload everything (`resync`) instead of
//! slowing the coordinator down.

use std::sync::Arc;

use tillswarm_protocol::TaskId;
pub use tillswarm_protocol::operator::events::Change;
use tillswarm_protocol::operator::groups::GroupId;
use tillswarm_protocol::operator::rollouts::RolloutId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, broadcast, watch};

/// Changes kept for a slow subscriber before it must resync.
pub const BUS_CAPACITY: usize = 1024;
/// Event streams open at once; more are refused with 503.
pub const MAX_STREAMS: usize = 64;

/// The change an audited operator action made, from its action name
/// (`task.pause`) and audit target (`task:12`); `None` for actions the
/// panel does not show live (accounts, tokens, logins).
pub fn change_of_action(action: &str, target: Option<&str>) -> Option<Change> {
    let family = action.split('.').next().unwrap_or_default();
    let id = target
        .and_then(|t| t.split_once(':'))
        .map(|(_, id)| id.trim());
    Some(match family {
        "task" => Change::Task {
            task_id: TaskId(id?.parse().ok()?),
        },
        "rollout" => Change::Rollout {
            rollout_id: RolloutId(id?.parse().ok()?),
        },
        "device" => Change::Device {
            guid: id?.parse().ok()?,
        },
        "package" => Change::Package {
            package_id: id.and_then(|id| id.parse().ok()),
        },
        "group" => Change::Group {
            group_id: id.and_then(|id| id.parse().ok()).map(GroupId),
        },
        "till_type" => Change::TillType,
        _ => return None,
    })
}

/// The coordinator's change bus and the count of open streams.
#[derive(Debug)]
pub struct Bus {
    tx: broadcast::Sender<Change>,
    streams: Arc<Semaphore>,
    closed: watch::Sender<bool>,
}

impl Default for Bus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUS_CAPACITY).0,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closed: watch::channel(false).0,
        }
    }
}

impl Bus {
    /// Publishes a change to every open stream (none open: dropped).
    pub fn publish(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    /// A new subscription, holding its place among the [`MAX_STREAMS`] open
    /// streams until dropped; `None` when all places are taken.
    pub fn subscribe(&self) -> Option<Subscription> {
        match self.streams.clone().try_acquire_owned() {
            Ok(permit) => Some(Subscription {
                rx: self.tx.subscribe(),
                closed: self.closed.subscribe(),
                _permit: permit,
            }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// Ends every stream (the server is shutting down: open streams would
    /// otherwise hold its drain until they time out).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// What one open stream receives.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Change>,
    closed: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

/// What a subscription yields next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A change.
    Change(Change),
    /// Changes were dropped for this subscriber: it must reload everything.
    Resync,
}

impl Subscription {
    /// The next change; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Next> {
        if *self.closed.borrow() {
            return None;
        }
        tokio::select! {
            got = self.rx.recv() => match got {
                Ok(change) => Some(Next::Change(change)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some(Next::Resync),
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = self.closed.wait_for(|closed| *closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillswarm_protocol::api::TargetState;

    #[test]
    fn audited_actions_map_to_changes() {
        assert_eq!(
            change_of_action("task.pause", Some("task:12")),
            Some(Change::Task {
                task_id: TaskId(12)
            })
        );
        assert_eq!(
            change_of_action("rollout.approve", Some("rollout:3")),
            Some(Change::Rollout {
                rollout_id: RolloutId(3)
            })
        );
        assert_eq!(
            change_of_action("group.delete", Some("group:x")),
            Some(Change::Group { group_id: None })
        );
        assert_eq!(change_of_action("task.create", None), None);
        assert_eq!(change_of_action("user.create", Some("user:bob")), None);
        assert_eq!(change_of_action("session.login", None), None);
        let json = serde_json::to_string(&Change::Target {
            task_id: TaskId(4),
            guid: "6f1c2a0e-3b7d-4c9a-8e21-5d4f0b9a7c13"
                .parse()
                .expect("guid"),
            state: TargetState::Installed,
        })
        .expect("json");
        assert_eq!(
            json,
            r#"{"kind":"target","task_id":4,"guid":"6f1c2a0e-3b7d-4c9a-8e21-5d4f0b9a7c13","state":"installed"}"#
        );
    }

    #[test]
    fn streams_are_capped_and_released() {
        let bus = Bus::default();
        let held: Vec<_> = (0..MAX_STREAMS)
            .map(|_| bus.subscribe().expect("under the cap"))
            .collect();
        assert!(bus.subscribe().is_none(), "one more than the cap");
        drop(held);
        let mut sub = bus.subscribe().expect("released");
        bus.publish(Change::TillType);
        let next = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(sub.next());
        assert_eq!(next, Some(Next::Change(Change::TillType)));
    }

    #[tokio::test]
    async fn a_slow_subscriber_resyncs_and_close_ends_streams() {
        let bus = Bus::default();
        let mut sub = bus.subscribe().expect("subscribe");
        for task_id in 0..(BUS_CAPACITY as u64 + 5) {
            bus.publish(Change::Task {
                task_id: TaskId(task_id),
            });
        }
        assert_eq!(sub.next().await, Some(Next::Resync));
        assert_eq!(
            sub.next().await,
            Some(Next::Change(Change::Task { task_id: TaskId(5) }))
        );
        bus.close();
        assert_eq!(sub.next().await, None);
        let mut late = bus.subscribe().expect("subscribe");
        assert_eq!(
            late.next().await,
            None,
            "a stream opened after close ends at once"
        );
    }
}
