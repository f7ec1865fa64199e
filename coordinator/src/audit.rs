//! The audit log: who did what, when, from where, and how it ended.
//!
//! Rows are appended in the same transaction as the change they record (a
//! change is never committed without its row), or on their own for refused and
//! failed attempts and logins. The table is append-only (a trigger refuses
//! updates); the scheduler purges rows older than the retention setting.

use crate::db::sql::{Connection, params_from_iter, types::Value};
use serde::Deserialize;

use crate::auth::Caller;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::db::{get_parsed, get_parsed_opt};
use crate::error::{Error, Result};

/// Longest free text kept in a row's detail or target.
const MAX_TEXT: usize = 500;
/// Most rows in one CSV export (the newest matching ones; narrow the time
/// range for more). Bounds the memory an export takes.
pub const MAX_CSV_ROWS: u64 = 20_000;

pub use tillswarm_protocol::operator::audit::{
    ActorKind, AuditId, AuditOutcome as Outcome, AuditRecord as Record,
};

/// What an audited change says about itself besides who and how.
#[derive(Debug, Clone, Default)]
pub struct Note {
    /// What it acted on, e.g. `task:12` or `device:<guid>`.
    pub target: Option<String>,
    /// A short free text (a package's name and version, an error code...).
    pub detail: Option<String>,
}

impl Note {
    /// A note naming its target.
    pub fn on(target: impl Into<String>) -> Self {
        Self {
            target: Some(target.into()),
            detail: None,
        }
    }

    /// Sets the target.
    pub fn target(&mut self, target: impl Into<String>) {
        self.target = Some(target.into());
    }

    /// Sets the detail.
    pub fn detail(&mut self, detail: impl Into<String>) {
        self.detail = Some(detail.into());
    }
}

fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT)
        .collect();
    out.truncate(out.trim_end().len());
    out
}

/// Appends a row.
pub fn append(
    conn: &Connection,
    by: &Caller,
    action: &str,
    note: &Note,
    outcome: Outcome,
    status: u16,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, actor, actor_kind, role, client, method, route, action,
                            target, outcome, status, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(crate::db::sql::params![
        now,
        clip(&by.actor.name),
        by.actor.kind.as_str(),
        by.actor.role.map(|r| r.as_str()),
        clip(&by.client),
        clip(&by.method),
        clip(&by.route),
        action,
        note.target.as_deref().map(clip),
        outcome.as_str(),
        status,
        note.detail.as_deref().map(clip),
    ])?;
    Ok(())
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only this actor (user or token name, any case).
    pub user: Option<String>,
    /// Only this action, or a family: `task` matches `task.create`, `task.pause`...
    pub action: Option<String>,
    /// Only this target, e.g. `task:12`.
    pub target: Option<String>,
    /// Only rows at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only rows before this time (RFC 3339).
    pub until: Option<String>,
    /// Only this outcome: `ok`, `failed` or `denied`.
    pub outcome: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Paging, as elsewhere.
    pub page: Option<u64>,
    /// Paging, as elsewhere.
    pub per_page: Option<u64>,
}

fn time(text: &Option<String>, what: &str) -> Result<Option<i64>> {
    text.as_deref()
        .map(|t| {
            parse_rfc3339(t).ok_or_else(|| {
                Error::bad(
                    "invalid_time",
                    format!("{what} must be an RFC 3339 time such as 2026-12-01T02:00:00Z"),
                )
            })
        })
        .transpose()
}

/// A page of rows matching `filter`, newest first, and the number matching.
pub fn list(
    conn: &Connection,
    filter: &Filter,
    offset: u64,
    limit: u64,
) -> Result<(Vec<Record>, u64)> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(u) = &filter.user {
        clauses.push("actor = ? COLLATE NOCASE");
        args.push(Value::Text(u.clone()));
    }
    if let Some(a) = &filter.action {
        clauses.push("(action = ? OR action LIKE ? ESCAPE '\\')");
        args.push(Value::Text(a.clone()));
        let escaped = a
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(Value::Text(format!("{escaped}.%")));
    }
    if let Some(t) = &filter.target {
        clauses.push("target = ?");
        args.push(Value::Text(t.clone()));
    }
    if let Some(o) = &filter.outcome {
        if !matches!(o.as_str(), "ok" | "failed" | "denied") {
            return Err(Error::bad(
                "invalid_outcome",
                "outcome is one of ok, failed, denied",
            ));
        }
        clauses.push("outcome = ?");
        args.push(Value::Text(o.clone()));
    }
    if let Some(since) = time(&filter.since, "since")? {
        clauses.push("at_ms >= ?");
        args.push(Value::Integer(since));
    }
    if let Some(until) = time(&filter.until, "until")? {
        clauses.push("at_ms < ?");
        args.push(Value::Integer(until));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM audit {filter_sql}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    args.push(Value::Integer(limit as i64));
    args.push(Value::Integer(offset as i64));
    let mut stmt = conn.prepare(&format!(
        "SELECT id, at_ms, actor, actor_kind, role, client, method, route, action, target,
                outcome, status, detail
         FROM audit {filter_sql} ORDER BY id DESC LIMIT ? OFFSET ?"
    ))?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
        Ok(Record {
            id: AuditId(r.get(0)?),
            at: rfc3339(r.get(1)?),
            actor: r.get(2)?,
            actor_kind: get_parsed(r, 3)?,
            role: get_parsed_opt(r, 4)?,
            client: r.get(5)?,
            method: r.get(6)?,
            route: r.get(7)?,
            action: r.get(8)?,
            target: r.get(9)?,
            outcome: get_parsed(r, 10)?,
            status: r.get::<_, i64>(11)?.clamp(0, 999) as u16,
            detail: r.get(12)?,
        })
    })?;
    let records = rows.collect::<crate::db::sql::Result<Vec<_>>>()?;
    Ok((records, total as u64))
}

/// Rows as CSV with a header row. Cells that a spreadsheet would run as a
/// formula (`= + - @`) are prefixed with `'`.
pub fn to_csv(records: &[Record]) -> Result<String> {
    fn cell(s: &str) -> String {
        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_owned()
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::Internal(format!("writing CSV: {e}"));
    w.write_record([
        "id",
        "at",
        "actor",
        "actor_kind",
        "role",
        "client",
        "method",
        "route",
        "action",
        "target",
        "outcome",
        "status",
        "detail",
    ])
    .map_err(csv_err)?;
    for r in records {
        w.write_record([
            r.id.to_string(),
            r.at.clone(),
            cell(&r.actor),
            r.actor_kind.as_str().to_owned(),
            r.role
                .map(|role| role.as_str())
                .unwrap_or_default()
                .to_owned(),
            cell(&r.client),
            r.method.clone(),
            cell(&r.route),
            r.action.clone(),
            cell(r.target.as_deref().unwrap_or("")),
            r.outcome.as_str().to_owned(),
            r.status.to_string(),
            cell(r.detail.as_deref().unwrap_or("")),
        ])
        .map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Internal(e.to_string()))
}

/// Deletes rows older than `before_ms`; returns how many.
pub fn purge(conn: &Connection, before_ms: i64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM audit WHERE at_ms < ?1", [before_ms])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;

    fn db() -> Connection {
        crate::db::test_connection()
    }

    #[test]
    fn rows_are_filtered_paged_and_never_updated() {
        let conn = db();
        let by = Caller::cli("ops", "coordinator user add");
        for (i, action) in ["task.create", "task.pause", "group.create", "tasks.other"]
            .iter()
            .enumerate()
        {
            append(
                &conn,
                &by,
                action,
                &Note::on(format!("x:{i}")),
                Outcome::Ok,
                200,
                i as i64 * 1000,
            )
            .expect("append");
        }
        let f = Filter {
            action: Some("task".into()),
            ..Default::default()
        };
        let (rows, total) = list(&conn, &f, 0, 10).expect("list");
        assert_eq!(total, 2, "task.* only, not tasks.other");
        assert_eq!(rows[0].action, "task.pause", "newest first");
        let f = Filter {
            since: Some("1970-01-01T00:00:01Z".into()),
            until: Some("1970-01-01T00:00:03Z".into()),
            ..Default::default()
        };
        assert_eq!(list(&conn, &f, 0, 10).expect("list").1, 2);
        assert!(
            conn.execute("UPDATE audit SET actor = 'someone else'", [])
                .is_err(),
            "append-only"
        );
        assert_eq!(purge(&conn, 2000).expect("purge"), 2);
        assert_eq!(list(&conn, &Filter::default(), 0, 10).expect("list").1, 2);
        let bad = Filter {
            since: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(list(&conn, &bad, 0, 10).is_err());
    }

    #[test]
    fn csv_defuses_formulas_and_control_characters_are_clipped() {
        let conn = db();
        let by = Caller::anonymous(
            "=HYPERLINK(\"x\")\n",
            "1.2.3.4".into(),
            "POST",
            "/api/v1/session",
        );
        append(
            &conn,
            &by,
            "session.login",
            &Note::default(),
            Outcome::Denied,
            401,
            0,
        )
        .expect("append");
        let (rows, _) = list(&conn, &Filter::default(), 0, 10).expect("list");
        assert_eq!(rows[0].actor, "=HYPERLINK(\"x\")", "newline clipped");
        let csv = to_csv(&rows).expect("csv");
        assert!(csv.contains("'=HYPERLINK"), "{csv}");
        assert!(csv.starts_with("id,at,actor,"));
    }
}
