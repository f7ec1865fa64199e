//! Account administration on a coordinator's data folder, for the command line
//! on the coordinator's machine (`tillswarm coordinator user ...`, `token ...`,
//! `enroll-token ...`, `device reset-key`).
//! It works whether the coordinator runs or not: it opens the database file
//! itself (SQLite keeps the two processes apart) and records each change in the
//! audit log as the OS user who ran it. Holding the data folder is the
//! credential, as it holds the signing key anyway.

use std::path::Path;

use crate::db::sql::Connection;

use crate::audit::{self, Note, Outcome};
use crate::auth::accounts::{self, NewToken, Token, User};
use crate::auth::{Caller, Role, password};
use crate::device_auth::{self, EnrollToken, NewEnrollToken};
use crate::error::{Error, Result};
use crate::service::access::MAX_TOKEN_DAYS;
use crate::service::node_ops::MAX_ENROLL_DAYS;
use tillswarm_protocol::DeviceId;

/// The database of one data folder, opened for administration.
pub struct Accounts {
    conn: Connection,
    by: Caller,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Accounts {
    /// Opens (creating and migrating if needed) the coordinator's database
    /// (`database`; SQLite: the file in `data_dir`), acting as OS user
    /// `os_user` running `command`.
    pub fn open(
        data_dir: &Path,
        database: &crate::db::Database,
        os_user: &str,
        command: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let conn = crate::db::open_connection_for(database, data_dir)?;
        Ok(Self {
            conn,
            by: Caller::cli(os_user, command),
        })
    }

    fn change<T>(
        &mut self,
        action: &'static str,
        mut note: Note,
        f: impl FnOnce(&crate::db::sql::Transaction<'_>, i64, &mut Note) -> Result<T>,
    ) -> Result<T> {
        let now = now_ms();
        // IMMEDIATE: take the write lock now, so a running coordinator's
        // commit between our read and write cannot fail this one.
        let tx = self
            .conn
            .transaction_with_behavior(crate::db::sql::TransactionBehavior::Immediate)?;
        let out = f(&tx, now, &mut note);
        match out {
            Ok(v) => {
                audit::append(&tx, &self.by, action, &note, Outcome::Ok, 0, now)?;
                tx.commit()?;
                Ok(v)
            }
            Err(e) => {
                drop(tx);
                note.detail.get_or_insert_with(|| e.code().to_owned());
                let row =
                    audit::append(&self.conn, &self.by, action, &note, Outcome::Failed, 0, now);
                if let Err(row) = row {
                    tracing::error!(error = %row, action, "could not write an audit row");
                }
                Err(e)
            }
        }
    }

    /// Number of users.
    pub fn user_count(&self) -> Result<u64> {
        accounts::user_count(&self.conn)
    }

    /// Adds a user; returns the password when it was generated (`None` given).
    pub fn add_user(
        &mut self,
        name: &str,
        role: Role,
        password: Option<String>,
    ) -> Result<Option<String>> {
        let (password, generated) = chosen_or_generated(password)?;
        let phc = password::hash(&password)?;
        self.change(
            "user.add",
            Note::on(format!("user:{name}")),
            |tx, now, note| {
                note.detail(format!("role {role}"));
                accounts::add_user(tx, name, role, &phc, now)
            },
        )?;
        Ok(generated.then_some(password))
    }

    /// Sets a user's password and ends their sessions; returns the password
    /// when it was generated.
    pub fn set_password(&mut self, name: &str, password: Option<String>) -> Result<Option<String>> {
        let (password, generated) = chosen_or_generated(password)?;
        let phc = password::hash(&password)?;
        self.change(
            "user.passwd",
            Note::on(format!("user:{name}")),
            |tx, now, _| accounts::set_password(tx, name, &phc, None, now),
        )?;
        Ok(generated.then_some(password))
    }

    /// Removes a user (never the last admin).
    pub fn remove_user(&mut self, name: &str) -> Result<()> {
        self.change(
            "user.remove",
            Note::on(format!("user:{name}")),
            |tx, _, _| accounts::remove_user(tx, name),
        )
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<User>> {
        let idle_ms = (crate::Config::default().session_idle_timeout_s * 1000) as i64;
        accounts::list_users(&self.conn, now_ms(), idle_ms)
    }

    /// Makes an API token valid for `expires_days` (or forever).
    pub fn create_token(
        &mut self,
        name: &str,
        role: Role,
        expires_days: Option<u32>,
    ) -> Result<NewToken> {
        if expires_days.is_some_and(|d| !(1..=MAX_TOKEN_DAYS).contains(&d)) {
            return Err(Error::bad(
                "invalid_expiry",
                format!("--expires-days is 1 to {MAX_TOKEN_DAYS}"),
            ));
        }
        let created_by = format!("cli:{}", self.by.actor.name);
        self.change(
            "token.create",
            Note::on(format!("token:{name}")),
            |tx, now, note| {
                note.detail(format!("role {role}"));
                let expires = expires_days.map(|d| now + i64::from(d) * 86_400_000);
                accounts::create_token(tx, name, role, expires, &created_by, now)
            },
        )
    }

    /// Every token.
    pub fn tokens(&self) -> Result<Vec<Token>> {
        accounts::list_tokens(&self.conn)
    }

    /// Revokes a live token.
    pub fn revoke_token(&mut self, name: &str) -> Result<()> {
        self.change(
            "token.revoke",
            Note::on(format!("token:{name}")),
            |tx, now, _| accounts::revoke_token(tx, name, now),
        )
    }
}

impl Accounts {
    /// Makes a store enrollment token valid for `expires_days`.
    pub fn create_enroll_token(
        &mut self,
        store: &str,
        expires_days: u64,
        max_uses: u32,
    ) -> Result<NewEnrollToken> {
        if !(1..=MAX_ENROLL_DAYS).contains(&expires_days) {
            return Err(Error::bad(
                "invalid_expiry",
                format!("--expires-days is 1 to {MAX_ENROLL_DAYS}"),
            ));
        }
        let created_by = format!("cli:{}", self.by.actor.name);
        self.change(
            "enroll_token.create",
            Note::on(format!("store:{store}")),
            |tx, now, note| {
                let expires = now + expires_days as i64 * 86_400_000;
                let made = device_auth::create_enroll_token(
                    tx,
                    store,
                    expires,
                    max_uses,
                    &created_by,
                    now,
                )?;
                note.detail(format!("token {} for {expires_days} days", made.token.id));
                Ok(made)
            },
        )
    }

    /// Every enrollment token.
    pub fn enroll_tokens(&self) -> Result<Vec<EnrollToken>> {
        device_auth::enroll_tokens(&self.conn)
    }

    /// Revokes an enrollment token.
    pub fn revoke_enroll_token(&mut self, id: i64) -> Result<()> {
        self.change(
            "enroll_token.revoke",
            Note::on(format!("enroll_token:{id}")),
            |tx, now, _| device_auth::revoke_enroll_token(tx, id, now),
        )
    }

    /// Forgets a device's key and ends its sessions.
    pub fn reset_device_key(&mut self, device: &DeviceId) -> Result<()> {
        self.change(
            "device.reset_key",
            Note::on(format!("device:{device}")),
            |tx, _, _| device_auth::reset_key(tx, device),
        )
    }
}

fn chosen_or_generated(password: Option<String>) -> Result<(String, bool)> {
    match password {
        Some(p) => {
            password::check_chosen(&p)?;
            Ok((p, false))
        }
        None => Ok((password::generate()?, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_manages_accounts_and_audits_each_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = Accounts::open(
            dir.path(),
            &crate::db::Database::Default,
            "root",
            "coordinator user add",
        )
        .expect("open");
        assert_eq!(a.user_count().expect("count"), 0);
        let generated = a.add_user("anna", Role::Admin, None).expect("add");
        assert!(generated.is_some_and(|p| p.len() == password::GENERATED_LEN));
        assert_eq!(
            a.add_user("boris", Role::Viewer, Some("a chosen password".into()))
                .expect("add"),
            None
        );
        assert!(
            a.add_user("clara", Role::Viewer, Some("short".into()))
                .is_err()
        );
        assert!(a.add_user("anna", Role::Viewer, None).is_err(), "exists");
        let token = a
            .create_token("ci", Role::Operator, Some(30))
            .expect("token");
        assert!(a.create_token("x", Role::Operator, Some(0)).is_err());
        a.revoke_token(&token.token.name).expect("revoke");
        assert!(a.remove_user("anna").is_err(), "last admin");
        a.remove_user("boris").expect("remove");
        let (rows, _) = audit::list(&a.conn, &audit::Filter::default(), 0, 100).expect("audit");
        let actions: Vec<(&str, &str)> = rows
            .iter()
            .rev()
            .map(|r| (r.action.as_str(), r.outcome.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("user.add", "ok"),
                ("user.add", "ok"),
                ("user.add", "failed"),
                ("token.create", "ok"),
                ("token.revoke", "ok"),
                ("user.remove", "failed"),
                ("user.remove", "ok"),
            ],
            "a password too short is refused before anything is written"
        );
        assert!(
            rows.iter()
                .all(|r| r.actor == "root" && r.actor_kind == crate::auth::ActorKind::Cli)
        );
    }
}
