//! The rollout operations of [`Coordinator`] (create, read, pause, resume,
//! cancel, approve; each audited) and the scheduler's step that drives
//! rollouts, automatic install retries and install permits.

use crate::audit::{self, Note, Outcome};
use crate::auth::Caller;
use crate::error::Result;
use crate::rollouts::{self, NewRollout, Rollout, RolloutId, drive};
use crate::service::{Coordinator, Page, Paging, page_of, permits_cx};
use crate::tasks;

fn record(tx: &crate::db::sql::Transaction<'_>, events: &[drive::Event], now: i64) -> Result<()> {
    let scheduler = Caller::system("scheduler");
    for e in events {
        let mut note = Note::on(format!("rollout:{}", e.rollout));
        note.detail(e.detail.clone());
        audit::append(tx, &scheduler, e.action, &note, Outcome::Ok, 200, now)?;
    }
    Ok(())
}

impl Coordinator {
    /// A page of rollouts, newest first, optionally only those in `state`.
    pub async fn rollouts(&self, state: Option<String>, paging: Paging) -> Result<Page<Rollout>> {
        let (page, per) = paging.resolve()?;
        let (items, total) = self
            .read(move |c, _| rollouts::list(c, state.as_deref(), (page - 1) * per, per))
            .await?;
        Ok(page_of(items, total, page, per))
    }

    /// One rollout with its waves.
    pub async fn rollout(&self, id: RolloutId) -> Result<Rollout> {
        let id = id.0;
        self.read(move |c, _| rollouts::get(c, id)).await
    }

    /// Creates a rollout; unless a draft, its first wave starts now.
    pub async fn create_rollout(&self, input: NewRollout, by: &Caller) -> Result<Rollout> {
        let creator = by.actor.name.clone();
        let (zone, unreachable) = (self.default_zone(), self.unreachable_ms());
        self.change(
            by,
            "rollout.create",
            Note::default(),
            move |tx, now, note| {
                let id = rollouts::create(tx, &input, &creator, now)?;
                note.target(format!("rollout:{id}"));
                let events = drive::step_one(tx, id, now)?;
                record(tx, &events, now)?;
                tasks::permits::refresh_due(tx, now, &permits_cx(&zone, now, unreachable))?;
                let r = rollouts::get(tx, id)?;
                note.detail(format!(
                    "{} {} in {} waves",
                    r.package_name,
                    r.package_version,
                    r.waves.len()
                ));
                Ok(r)
            },
        )
        .await
    }

    /// Pauses a rollout (no install starts after this).
    pub async fn pause_rollout(&self, id: RolloutId, by: &Caller) -> Result<Rollout> {
        let id = id.0;
        let reason = format!("paused by {}", by.actor.name);
        self.change(
            by,
            "rollout.pause",
            Note::on(format!("rollout:{id}")),
            move |tx, _, _| {
                rollouts::pause(tx, id, &reason)?;
                rollouts::get(tx, id)
            },
        )
        .await
    }

    /// Starts a draft or resumes a paused rollout.
    pub async fn resume_rollout(&self, id: RolloutId, by: &Caller) -> Result<Rollout> {
        let id = id.0;
        self.change(
            by,
            "rollout.resume",
            Note::on(format!("rollout:{id}")),
            move |tx, now, _| {
                rollouts::resume(tx, id, now)?;
                let events = drive::step_one(tx, id, now)?;
                record(tx, &events, now)?;
                rollouts::get(tx, id)
            },
        )
        .await
    }

    /// Cancels a rollout.
    pub async fn cancel_rollout(&self, id: RolloutId, by: &Caller) -> Result<Rollout> {
        let id = id.0;
        self.change(
            by,
            "rollout.cancel",
            Note::on(format!("rollout:{id}")),
            move |tx, now, _| {
                rollouts::cancel(tx, id, now)?;
                rollouts::get(tx, id)
            },
        )
        .await
    }

    /// An approver lets the next wave start (audited with the approver's name).
    pub async fn approve_rollout(&self, id: RolloutId, by: &Caller) -> Result<Rollout> {
        let id = id.0;
        let approver = by.actor.name.clone();
        self.change(
            by,
            "rollout.approve",
            Note::on(format!("rollout:{id}")),
            move |tx, now, note| {
                let wave = rollouts::approve(tx, id, &approver, now)?;
                note.detail(format!("after wave {wave}"));
                let events = drive::step_one(tx, id, now)?;
                record(tx, &events, now)?;
                rollouts::get(tx, id)
            },
        )
        .await
    }

    /// The scheduler's step: automatic install retries due, every running
    /// rollout moved on (its events audited as the `scheduler`), then the
    /// install permits of tasks that are due.
    pub(crate) async fn drive_rollouts(&self) -> Result<()> {
        let (zone, unreachable) = (self.default_zone(), self.unreachable_ms());
        let spread = tasks::stagger::spread_ms(self.config().poll_interval_ms);
        // Announcing a large task store by store commits every tick for most
        // of a poll interval; it is all recomputable (a lost step is redone,
        // an extra revision bump is harmless), so it skips the fsync. A few
        // stores per transaction: heartbeats queued meanwhile go in between.
        loop {
            let announced = self
                .write_with(crate::db::Durability::Relaxed, move |tx, now| {
                    tasks::stagger::step(tx, now, spread, tasks::stagger::STORES_PER_STEP)
                })
                .await?;
            if !announced.more {
                break;
            }
        }
        let events = self
            .write(move |tx, now| {
                tasks::retry_due(tx, now)?;
                let events = drive::step_all(tx, now)?;
                record(tx, &events, now)?;
                tasks::permits::refresh_due(tx, now, &permits_cx(&zone, now, unreachable))?;
                Ok(events)
            })
            .await?;
        let moved: std::collections::BTreeSet<i64> = events.iter().map(|e| e.rollout).collect();
        for rollout_id in moved {
            self.publish(crate::events::Change::Rollout {
                rollout_id: tillswarm_protocol::operator::rollouts::RolloutId(rollout_id),
            });
        }
        Ok(())
    }
}
