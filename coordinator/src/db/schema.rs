//! Schema migrations, keyed on `PRAGMA user_version`: migration `i` moves the
//! database from version `i` to `i + 1`, inside one transaction.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE stores (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        address     TEXT NOT NULL DEFAULT '',
        time_zone   TEXT NOT NULL DEFAULT ''
    );

    -- Per till type settings (the seed's update.conf). '*' holds the default.
    CREATE TABLE till_types (
        name                        TEXT PRIMARY KEY,
        auto_update_timeout_minutes INTEGER
    );
    INSERT INTO till_types (name, auto_update_timeout_minutes) VALUES ('*', 15);

    CREATE TABLE devices (
        guid          TEXT PRIMARY KEY,
        -- Registry fields (from the store's till server); NULL for unknown tills.
        name          TEXT,
        number        INTEGER,
        store_id      TEXT REFERENCES stores(id),
        till_type     TEXT,
        in_registry   INTEGER NOT NULL DEFAULT 0,
        approved      INTEGER NOT NULL DEFAULT 0,
        -- Reported by the till itself.
        version       TEXT,
        version_key   TEXT,
        state         TEXT,
        ip            TEXT,
        peer_id       TEXT,
        free_disk     INTEGER,
        last_seen_ms  INTEGER,
        first_seen_ms INTEGER,
        -- Bumped whenever this till's assignments or settings change, so an
        -- unchanged poll is answered without the assignment list.
        assign_rev    INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX devices_store ON devices(store_id, number);

    CREATE TABLE groups (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
        description TEXT NOT NULL DEFAULT '',
        -- 'all', 'even', 'odd' are computed from the registry; 'custom' lists members.
        kind        TEXT NOT NULL CHECK (kind IN ('all', 'even', 'odd', 'custom')),
        created_ms  INTEGER NOT NULL
    );
    INSERT INTO groups (id, name, description, kind, created_ms) VALUES
        (1, 'All', 'Every approved till', 'all', 0),
        (2, 'Even', 'Approved tills with an even number in their store', 'even', 0),
        (3, 'Odd', 'Approved tills with an odd number in their store', 'odd', 0);

    CREATE TABLE group_members (
        group_id  INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        device    TEXT NOT NULL REFERENCES devices(guid) ON DELETE CASCADE,
        PRIMARY KEY (group_id, device)
    );

    CREATE TABLE packages (
        package_id   TEXT PRIMARY KEY,      -- blake3 of the file, hex
        name         TEXT NOT NULL,
        version      TEXT NOT NULL,
        version_key  TEXT NOT NULL,         -- sortable form of version
        size         INTEGER NOT NULL,
        chunk_count  INTEGER NOT NULL,
        manifest     BLOB NOT NULL,         -- signed manifest bytes, served as is
        created_ms   INTEGER NOT NULL,
        UNIQUE (name, version_key)
    );

    CREATE TABLE package_chunks (
        package_id TEXT NOT NULL REFERENCES packages(package_id) ON DELETE CASCADE,
        idx        INTEGER NOT NULL,
        hash       TEXT NOT NULL,
        length     INTEGER NOT NULL,
        PRIMARY KEY (package_id, idx)
    );
    CREATE INDEX package_chunks_hash ON package_chunks(hash);

    CREATE TABLE tasks (
        id            INTEGER PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('download', 'update', 'forced_update')),
        -- No foreign key: a completed task keeps its history after its package
        -- is deleted (deleting a package in use by an unfinished task is refused).
        package_id    TEXT NOT NULL,
        package_name  TEXT NOT NULL,
        package_version TEXT NOT NULL,
        package_version_key TEXT NOT NULL,
        package_size  INTEGER NOT NULL,
        group_id      INTEGER REFERENCES groups(id) ON DELETE SET NULL,
        group_name    TEXT NOT NULL,        -- kept for display after the group is gone
        status        TEXT NOT NULL CHECK (status IN ('scheduled', 'running', 'paused', 'completed')),
        activate_at_ms INTEGER,             -- NULL: immediately
        activated_ms  INTEGER,              -- when targets were taken from the group
        completed_ms  INTEGER,
        rollback      INTEGER NOT NULL DEFAULT 0,
        attempt       INTEGER NOT NULL DEFAULT 1,
        created_ms    INTEGER NOT NULL,
        rollout_id    INTEGER
    );
    CREATE INDEX tasks_status ON tasks(status, activate_at_ms);

    CREATE TABLE task_targets (
        task_id     INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        device      TEXT NOT NULL REFERENCES devices(guid) ON DELETE CASCADE,
        state       TEXT NOT NULL,
        attempt     INTEGER NOT NULL DEFAULT 1,
        seq         INTEGER NOT NULL DEFAULT 0,
        bytes_done  INTEGER NOT NULL DEFAULT 0,
        wan_bytes   INTEGER NOT NULL DEFAULT 0,
        lan_bytes   INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        log_tail    TEXT,
        started_ms  INTEGER,
        updated_ms  INTEGER NOT NULL,
        finished_ms INTEGER,
        PRIMARY KEY (task_id, device)
    );
    CREATE INDEX task_targets_device ON task_targets(device);
    "#,
    // 2: operator accounts, sessions, API tokens and the audit log.
    r#"
    CREATE TABLE users (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role                TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
        password_hash       TEXT NOT NULL,      -- argon2id PHC string
        created_ms          INTEGER NOT NULL,
        password_changed_ms INTEGER NOT NULL
    );

    -- Server-side sessions; the cookie holds a random id, stored here only as
    -- its blake3 hash, so a copy of the database opens no session.
    CREATE TABLE sessions (
        id_hash      TEXT PRIMARY KEY,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,          -- absolute expiry
        client       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_user ON sessions(user_id);

    -- API tokens, stored only as the blake3 hash of the token. A revoked token
    -- keeps its row (the audit log names it); only one live token per name.
    CREATE TABLE api_tokens (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT NOT NULL COLLATE NOCASE,
        token_hash   TEXT NOT NULL UNIQUE,
        role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
        created_ms   INTEGER NOT NULL,
        created_by   TEXT NOT NULL,
        expires_ms   INTEGER,                   -- NULL: never
        revoked_ms   INTEGER,
        last_used_ms INTEGER
    );
    CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens(name) WHERE revoked_ms IS NULL;

    -- Who did what. Append-only: rows are never changed, only purged by age.
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms      INTEGER NOT NULL,
        actor      TEXT NOT NULL,               -- user or token name, or the CLI's OS user
        actor_kind TEXT NOT NULL CHECK (actor_kind IN ('user', 'token', 'cli', 'system', 'anonymous')),
        role       TEXT,
        client     TEXT NOT NULL,               -- client address, or 'local'
        method     TEXT NOT NULL,
        route      TEXT NOT NULL,
        action     TEXT NOT NULL,               -- e.g. task.create, session.login
        target     TEXT,                        -- e.g. task:12, device:<guid>
        outcome    TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'denied')),
        status     INTEGER NOT NULL,
        detail     TEXT
    );
    CREATE INDEX audit_at ON audit(at_ms);
    CREATE INDEX audit_actor ON audit(actor, at_ms);
    CREATE INDEX audit_action ON audit(action, at_ms);
    CREATE INDEX audit_target ON audit(target, at_ms);
    CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only');
    END;
    "#,
    // 3: task ids are never reused (AUTOINCREMENT): a till that still holds a
    // deleted task must never mistake a new task for it. SQLite adds
    // AUTOINCREMENT only by rebuilding the table (foreign keys are off while
    // migrations run, so task_targets keeps its rows and references).
    r#"
    CREATE TABLE tasks_v3 (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT NOT NULL CHECK (kind IN ('download', 'update', 'forced_update')),
        package_id    TEXT NOT NULL,
        package_name  TEXT NOT NULL,
        package_version TEXT NOT NULL,
        package_version_key TEXT NOT NULL,
        package_size  INTEGER NOT NULL,
        group_id      INTEGER REFERENCES groups(id) ON DELETE SET NULL,
        group_name    TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('scheduled', 'running', 'paused', 'completed')),
        activate_at_ms INTEGER,
        activated_ms  INTEGER,
        completed_ms  INTEGER,
        rollback      INTEGER NOT NULL DEFAULT 0,
        attempt       INTEGER NOT NULL DEFAULT 1,
        created_ms    INTEGER NOT NULL,
        rollout_id    INTEGER
    );
    INSERT INTO tasks_v3 SELECT id, kind, package_id, package_name, package_version,
        package_version_key, package_size, group_id, group_name, status, activate_at_ms,
        activated_ms, completed_ms, rollback, attempt, created_ms, rollout_id FROM tasks;
    DROP TABLE tasks;
    ALTER TABLE tasks_v3 RENAME TO tasks;
    CREATE INDEX tasks_status ON tasks(status, activate_at_ms);

    -- A version a till reports above every published package is not trusted
    -- for skipping it ('unknown_version'); NULL: nothing to say.
    ALTER TABLE devices ADD COLUMN version_flag TEXT;
    -- What the till last wanted operators to know (JSON array of strings).
    ALTER TABLE devices ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
    "#,
    // 4: device identity. A till's ed25519 key, bound at its first login; the
    // short-lived tokens its logins earn; store enrollment tokens for tills
    // the registry does not list yet. Secrets are stored as blake3 hashes.
    r#"
    ALTER TABLE devices ADD COLUMN public_key TEXT;
    ALTER TABLE devices ADD COLUMN key_bound_ms INTEGER;

    CREATE TABLE device_tokens (
        hash        TEXT PRIMARY KEY,
        device      TEXT NOT NULL REFERENCES devices(guid) ON DELETE CASCADE,
        expires_ms  INTEGER NOT NULL
    );
    CREATE INDEX device_tokens_device ON device_tokens(device);

    CREATE TABLE enroll_tokens (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        hash        TEXT NOT NULL UNIQUE,
        store_id    TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        created_ms  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        expires_ms  INTEGER NOT NULL,
        revoked_ms  INTEGER,
        max_uses    INTEGER NOT NULL,
        uses        INTEGER NOT NULL DEFAULT 0
    );

    -- Tills appear in the audit log as actors (a key bound, an enrollment).
    CREATE TABLE audit_v4 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms      INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        actor_kind TEXT NOT NULL
                   CHECK (actor_kind IN ('user', 'token', 'cli', 'system', 'anonymous', 'device')),
        role       TEXT,
        client     TEXT NOT NULL,
        method     TEXT NOT NULL,
        route      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT,
        outcome    TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'denied')),
        status     INTEGER NOT NULL,
        detail     TEXT
    );
    INSERT INTO audit_v4 SELECT id, at_ms, actor, actor_kind, role, client, method, route,
        action, target, outcome, status, detail FROM audit;
    DROP TABLE audit;
    ALTER TABLE audit_v4 RENAME TO audit;
    CREATE INDEX audit_at ON audit(at_ms);
    CREATE INDEX audit_actor ON audit(actor, at_ms);
    CREATE INDEX audit_action ON audit(action, at_ms);
    CREATE INDEX audit_target ON audit(target, at_ms);
    CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only');
    END;
    "#,
    // 5: a task whose every target is final but some failed ends as
    // 'completed_with_failures', never a plain 'completed'. The status CHECK
    // changes only by rebuilding the table (as in step 3).
    r#"
    CREATE TABLE tasks_v5 (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT NOT NULL CHECK (kind IN ('download', 'update', 'forced_update')),
        package_id    TEXT NOT NULL,
        package_name  TEXT NOT NULL,
        package_version TEXT NOT NULL,
        package_version_key TEXT NOT NULL,
        package_size  INTEGER NOT NULL,
        group_id      INTEGER REFERENCES groups(id) ON DELETE SET NULL,
        group_name    TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN
                          ('scheduled', 'running', 'paused', 'completed', 'completed_with_failures')),
        activate_at_ms INTEGER,
        activated_ms  INTEGER,
        completed_ms  INTEGER,
        rollback      INTEGER NOT NULL DEFAULT 0,
        attempt       INTEGER NOT NULL DEFAULT 1,
        created_ms    INTEGER NOT NULL,
        rollout_id    INTEGER
    );
    INSERT INTO tasks_v5 SELECT id, kind, package_id, package_name, package_version,
        package_version_key, package_size, group_id, group_name, status, activate_at_ms,
        activated_ms, completed_ms, rollback, attempt, created_ms, rollout_id FROM tasks;
    UPDATE tasks_v5 SET status = 'completed_with_failures'
        WHERE status = 'completed'
          AND EXISTS (SELECT 1 FROM task_targets tt WHERE tt.task_id = tasks_v5.id AND tt.state = 'failed');
    DROP TABLE tasks;
    ALTER TABLE tasks_v5 RENAME TO tasks;
    CREATE INDEX tasks_status ON tasks(status, activate_at_ms);
    "#,
    // 6: when a till's last install failed (cleared by a later success): its
    // state reads `install_failed` while it idles, so the filter finds it.
    r#"
    ALTER TABLE devices ADD COLUMN install_failed_ms INTEGER;
    "#,
    // 7: rollouts (waves with gates), store-local windows, install permits (at
    // most K tills of a store install at once), automatic install retries, and
    // each till's version history.
    r#"
    CREATE TABLE rollouts (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL,
        package_id      TEXT NOT NULL,
        package_name    TEXT NOT NULL,
        package_version TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('draft', 'running', 'waiting_for_approval',
                            'paused', 'completed', 'completed_with_failures', 'cancelled')),
        reason          TEXT,               -- why it is paused or waiting
        current_wave    INTEGER NOT NULL DEFAULT 0,
        window_json     TEXT,               -- the store-local maintenance window
        store_failure_limit INTEGER NOT NULL,
        created_by      TEXT NOT NULL,
        created_ms      INTEGER NOT NULL,
        started_ms      INTEGER,
        finished_ms     INTEGER
    );
    CREATE INDEX rollouts_state ON rollouts(state);

    CREATE TABLE rollout_waves (
        rollout_id  INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        name        TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('download', 'update', 'forced_update')),
        spec_json   TEXT NOT NULL,          -- targets, activation and gate, checked at creation
        task_id     INTEGER,                -- the wave's task, once started
        started_ms  INTEGER,
        passed_ms   INTEGER,                -- success threshold first met (soak starts)
        finished_ms INTEGER,                -- gate passed: the next wave may start
        failed_base INTEGER NOT NULL DEFAULT 0,  -- failures accepted by a resume
        approved_by TEXT,
        approved_ms INTEGER,
        PRIMARY KEY (rollout_id, idx)
    );

    -- Stores whose failures stopped their part of a rollout.
    CREATE TABLE rollout_paused_stores (
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        store_id   TEXT NOT NULL,
        reason     TEXT NOT NULL,
        at_ms      INTEGER NOT NULL,
        PRIMARY KEY (rollout_id, store_id)
    );

    ALTER TABLE tasks ADD COLUMN rollout_wave INTEGER;
    ALTER TABLE tasks ADD COLUMN window_json TEXT;
    ALTER TABLE tasks ADD COLUMN store_limit INTEGER;       -- NULL: half the store's tills
    ALTER TABLE tasks ADD COLUMN install_retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN permits_due_ms INTEGER NOT NULL DEFAULT 0;
    -- A large task's tills learn of it store by store over most of a poll
    -- interval (not all at once); notified_ms: how far that has gone.
    ALTER TABLE tasks ADD COLUMN staggered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN notified_ms INTEGER;
    CREATE INDEX tasks_rollout ON tasks(rollout_id);

    ALTER TABLE task_targets ADD COLUMN permit_ms INTEGER;  -- may install since
    ALTER TABLE task_targets ADD COLUMN permit_until_ms INTEGER;  -- ... until (window end)
    ALTER TABLE task_targets ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE task_targets ADD COLUMN install_started_ms INTEGER;  -- first report of installing
    ALTER TABLE task_targets ADD COLUMN retry_at_ms INTEGER;
    CREATE INDEX task_targets_task_state ON task_targets(task_id, state);
    CREATE INDEX task_targets_retry ON task_targets(retry_at_ms) WHERE retry_at_ms IS NOT NULL;

    -- Each attempt of a target that was retried, with its log.
    CREATE TABLE target_attempts (
        task_id     INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        device      TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        state       TEXT NOT NULL,
        error       TEXT,
        log_tail    TEXT,
        finished_ms INTEGER NOT NULL,
        PRIMARY KEY (task_id, device, attempt)
    );

    CREATE TABLE device_versions (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        device   TEXT NOT NULL REFERENCES devices(guid) ON DELETE CASCADE,
        version  TEXT NOT NULL,
        task_id  INTEGER,
        at_ms    INTEGER NOT NULL
    );
    CREATE INDEX device_versions_device ON device_versions(device, id);
    "#,
    // 8: where each till's store swarm listens (JSON array of socket
    // addresses from its heartbeats), passed to its store's other tills.
    r#"
    ALTER TABLE devices ADD COLUMN swarm_addrs TEXT;
    "#,
    // 9: WAN diagnostics. Each chunk served to a till over the node API (one
    // row per response, kept 30 days and at most `wan::MAX_ROWS` rows), and
    // how many store peers each till's swarm was connected to at its last
    // heartbeat (NULL: not reported).
    r#"
    CREATE TABLE chunk_fetches (
        id       INTEGER PRIMARY KEY,
        device   TEXT NOT NULL REFERENCES devices(guid) ON DELETE CASCADE,
        hash     TEXT NOT NULL,
        bytes    INTEGER NOT NULL,
        -- 1: a Range starting past byte 0, the rest of an interrupted fetch
        -- (its bytes count, not as another fetch).
        resumed  INTEGER NOT NULL DEFAULT 0,
        at_ms    INTEGER NOT NULL
    );
    CREATE INDEX chunk_fetches_device ON chunk_fetches(device, at_ms);

    ALTER TABLE devices ADD COLUMN connected_peers INTEGER;
    "#,
    // 10: content chunking (manifest format 3). A package's id and size are
    // its content's (the uncompressed tar); the upload it came from is kept
    // for operators (NULL before: the upload was the content), with the
    // bytes its chunks take as stored and sent, and each chunk's zstd frame
    // length (0: kept raw).
    r#"
    ALTER TABLE packages ADD COLUMN upload_id TEXT;
    ALTER TABLE packages ADD COLUMN upload_size INTEGER;
    ALTER TABLE packages ADD COLUMN upload_format TEXT;
    ALTER TABLE packages ADD COLUMN wire_size INTEGER;
    ALTER TABLE package_chunks ADD COLUMN zstd_len INTEGER NOT NULL DEFAULT 0;
    "#,
    // 11: who uploaded each package (the user or token name), for the panel;
    // earlier uploads take it from their audit row while that is kept.
    r#"
    ALTER TABLE packages ADD COLUMN uploaded_by TEXT;
    UPDATE packages SET uploaded_by = (
        SELECT a.actor FROM audit a
        WHERE a.action = 'package.upload' AND a.outcome = 'ok'
          AND a.target = 'package:' || packages.package_id
        ORDER BY a.id DESC LIMIT 1);
    "#,
    // 12: the coordinator's own remembered settings (the chunk base URL tills
    // were last told, so a change reaches every till at its next poll).
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT
    );
    "#,
];

/// Brings the schema up to date. Foreign keys are off while steps run (a step
/// may rebuild a table others refer to, as SQLite's ALTER TABLE guide does)
/// and every reference is checked before the last step commits.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    let enforced: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = (|| {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            let broken: i64 =
                tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })?;
            if broken > 0 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                    Some(format!(
                        "migration {} left {broken} broken references",
                        i + 1
                    )),
                ));
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "database migrated");
        }
        Ok(())
    })();
    if enforced {
        conn.pragma_update(None, "foreign_keys", "ON")?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_never_reused_and_targets_survive_the_rebuild() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
        // A database at version 2 with a task and a target.
        conn.pragma_update(None, "user_version", 0).expect("v0");
        let tx = conn.transaction().expect("tx");
        for sql in &MIGRATIONS[..2] {
            tx.execute_batch(sql).expect("old migration");
        }
        tx.pragma_update(None, "user_version", 2).expect("v2");
        tx.commit().expect("commit");
        conn.execute_batch(
            "INSERT INTO devices (guid) VALUES ('g');
             INSERT INTO tasks (id, kind, package_id, package_name, package_version,
                 package_version_key, package_size, group_name, status, created_ms)
             VALUES (19, 'update', 'p', 'demo', '60.0.0', 'k', 1, 'All', 'running', 0);
             INSERT INTO task_targets (task_id, device, state, updated_ms) VALUES (19, 'g', 'pending', 0);",
        )
        .expect("rows");
        migrate(&mut conn).expect("migrate");
        let targets: i64 = conn
            .query_row(
                "SELECT count(*) FROM task_targets WHERE task_id = 19",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(targets, 1, "the rebuild kept the targets");
        conn.execute("DELETE FROM tasks WHERE id = 19", [])
            .expect("delete");
        conn.execute(
            "INSERT INTO tasks (kind, package_id, package_name, package_version,
                 package_version_key, package_size, group_name, status, created_ms)
             VALUES ('download', 'q', 'demo', '61.0.0', 'k', 1, 'All', 'running', 0)",
            [],
        )
        .expect("insert");
        let id: i64 = conn
            .query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))
            .expect("id");
        assert_eq!(id, 20, "id 19 is not handed out again");
        let orphans: i64 = conn
            .query_row(
                "SELECT count(*) FROM task_targets WHERE task_id = 19",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(
            orphans, 0,
            "deleting the task still cascades to its targets"
        );
    }

    #[test]
    fn the_upgrade_names_each_packages_uploader_from_its_audit_row() {
        let mut conn = Connection::open_in_memory().expect("open");
        let tx = conn.transaction().expect("tx");
        for sql in &MIGRATIONS[..10] {
            tx.execute_batch(sql).expect("old migration");
        }
        tx.pragma_update(None, "user_version", 10).expect("v10");
        tx.commit().expect("commit");
        conn.execute_batch(
            "INSERT INTO packages (package_id, name, version, version_key, size, chunk_count,
                                   manifest, created_ms)
             VALUES ('aa', 'demo', '1.0', 'k1', 1, 1, x'00', 0),
                    ('bb', 'demo', '1.1', 'k2', 1, 1, x'00', 0);
             INSERT INTO audit (at_ms, actor, actor_kind, client, method, route, action,
                                target, outcome, status)
             VALUES (1, 'mallory', 'user', 'local', 'POST', '/api/v1/packages',
                     'package.upload', 'package:aa', 'failed', 409),
                    (2, 'alice', 'user', 'local', 'POST', '/api/v1/packages',
                     'package.upload', 'package:aa', 'ok', 201);",
        )
        .expect("rows");
        migrate(&mut conn).expect("migrate");
        let by = |id: &str| -> Option<String> {
            conn.query_row(
                "SELECT uploaded_by FROM packages WHERE package_id = ?1",
                [id],
                |r| r.get(0),
            )
            .expect("row")
        };
        assert_eq!(
            by("aa").as_deref(),
            Some("alice"),
            "the successful upload's actor"
        );
        assert_eq!(by("bb"), None, "no audit row: unknown");
    }

    #[test]
    fn a_completed_task_with_failed_tills_is_marked_so_by_the_upgrade() {
        let mut conn = Connection::open_in_memory().expect("open");
        let tx = conn.transaction().expect("tx");
        for sql in &MIGRATIONS[..4] {
            tx.execute_batch(sql).expect("old migration");
        }
        tx.pragma_update(None, "user_version", 4).expect("v4");
        tx.commit().expect("commit");
        conn.execute_batch(
            "INSERT INTO devices (guid) VALUES ('a'), ('b');
             INSERT INTO tasks (id, kind, package_id, package_name, package_version,
                 package_version_key, package_size, group_name, status, created_ms)
             VALUES (1, 'update', 'p', 'demo', '2.0', 'k', 1, 'All', 'completed', 0),
                    (2, 'update', 'p', 'demo', '2.0', 'k', 1, 'All', 'completed', 0);
             INSERT INTO task_targets (task_id, device, state, updated_ms)
             VALUES (1, 'a', 'installed', 0), (1, 'b', 'failed', 0), (2, 'a', 'installed', 0);",
        )
        .expect("rows");
        migrate(&mut conn).expect("migrate");
        let status = |id: i64| -> String {
            conn.query_row("SELECT status FROM tasks WHERE id = ?1", [id], |r| r.get(0))
                .expect("status")
        };
        assert_eq!(status(1), "completed_with_failures");
        assert_eq!(status(2), "completed");
    }

    #[test]
    fn migrations_apply_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        migrate(&mut conn).expect("second run is a no-op");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(v as usize, MIGRATIONS.len());
        let groups: i64 = conn
            .query_row("SELECT count(*) FROM groups", [], |r| r.get(0))
            .expect("count");
        assert_eq!(groups, 3);
    }
}
