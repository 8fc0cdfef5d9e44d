//! Staff to-dos: due date, customer, reason, assignee, done. Opening and closing one
//! emits `todo.opened` / `todo.done`; every operator action is in the audit log.

use j1msky_audit::Actor;
use j1msky_core::events::{TodoChanged, Typed};
use j1msky_core::vocab::UserRole;
use j1msky_db::{outbox, Backend, Db};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::LifecycleError;

/// A to-do to open.
#[derive(Debug, Clone)]
pub struct NewTodo<'a> {
    pub customer_id: Option<&'a str>,
    pub reason: &'a str,
    /// Opening the same key twice opens one to-do (`<enrollment>:<step>`, `trigger:<id>:<customer>:<day>`).
    pub dedupe_key: &'a str,
    pub due_at: i64,
}

/// Longest reason kept.
pub const MAX_REASON: usize = 500;

/// Opens a to-do inside the caller's transaction; `Ok(None)` when one with this key exists.
pub async fn create(
    conn: &mut AnyConnection,
    backend: Backend,
    todo: &NewTodo<'_>,
    now: i64,
) -> Result<Option<String>, LifecycleError> {
    let reason = todo.reason.trim();
    if reason.is_empty() {
        return Err(LifecycleError::invalid("reason", "a to-do needs a reason"));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(LifecycleError::invalid("reason", format!("at most {MAX_REASON} characters")));
    }
    let id = j1msky_core::ids::new_id("todo");
    let inserted = sqlx::query(
        "INSERT INTO lifecycle_todos (id, customer_id, reason, dedupe_key, due_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&id)
    .bind(todo.customer_id)
    .bind(reason)
    .bind(todo.dedupe_key)
    .bind(todo.due_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() != 1 {
        return Ok(None);
    }
    let payload = TodoChanged { todo: id.clone(), reason: reason.to_string(), by: None };
    outbox::emit_typed(conn, backend, Typed::TodoOpened(payload), todo.customer_id, now).await?;
    Ok(Some(id))
}

/// Which to-dos to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Not done (overdue ones included).
    Open,
    /// Not done and past due.
    Overdue,
    Done,
    All,
}

impl Filter {
    pub fn parse(s: &str) -> Option<Filter> {
        match s {
            "open" => Some(Filter::Open),
            "overdue" => Some(Filter::Overdue),
            "done" => Some(Filter::Done),
            "all" => Some(Filter::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Filter::Open => "open",
            Filter::Overdue => "overdue",
            Filter::Done => "done",
            Filter::All => "all",
        }
    }
}

/// A to-do as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Todo {
    pub id: String,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub reason: String,
    pub due_at: i64,
    pub overdue: bool,
    pub assignee: Option<String>,
    pub assignee_email: Option<String>,
    pub done_at: Option<i64>,
    pub done_by: Option<String>,
    pub done_by_email: Option<String>,
    pub created_at: i64,
}

const SELECT: &str = "SELECT t.id, t.customer_id, c.name, t.reason, t.due_at, t.assignee, a.email, t.done_at,
        t.done_by, d.email, t.created_at
    FROM lifecycle_todos t
    LEFT JOIN customers c ON c.id = t.customer_id
    LEFT JOIN users a ON a.id = t.assignee
    LEFT JOIN users d ON d.id = t.done_by";

fn from_row(r: &sqlx::any::AnyRow, now: i64) -> Result<Todo, sqlx::Error> {
    let due_at: i64 = r.try_get(4)?;
    let done_at: Option<i64> = r.try_get(7)?;
    Ok(Todo {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        customer_name: r.try_get(2)?,
        reason: r.try_get(3)?,
        due_at,
        overdue: done_at.is_none() && due_at < now,
        assignee: r.try_get(5)?,
        assignee_email: r.try_get(6)?,
        done_at,
        done_by: r.try_get(8)?,
        done_by_email: r.try_get(9)?,
        created_at: r.try_get(10)?,
    })
}

/// To-dos matching `filter` (optionally one customer's), open ones by due date first.
pub async fn list(
    db: &Db,
    filter: Filter,
    customer_id: Option<&str>,
    now: i64,
    limit: i64,
) -> Result<Vec<Todo>, LifecycleError> {
    let (cond, order) = match filter {
        Filter::Open => ("t.done_at IS NULL", "t.due_at, t.id"),
        Filter::Overdue => ("t.done_at IS NULL AND t.due_at < $2", "t.due_at, t.id"),
        Filter::Done => ("t.done_at IS NOT NULL", "t.done_at DESC, t.id"),
        Filter::All => ("1 = 1", "t.done_at IS NOT NULL, t.due_at, t.id"),
    };
    // $2 is bound in every shape so the placeholders stay numbered alike.
    let sql =
        format!("{SELECT} WHERE {cond} AND ($1 IS NULL OR t.customer_id = $1) AND $2 = $2 ORDER BY {order} LIMIT $3");
    let rows = sqlx::query(&sql).bind(customer_id).bind(now).bind(limit).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(|r| from_row(r, now)).collect::<Result<_, _>>()?)
}

/// One to-do.
pub async fn get(db: &Db, id: &str, now: i64) -> Result<Todo, LifecycleError> {
    let row = sqlx::query(&format!("{SELECT} WHERE t.id = $1")).bind(id).fetch_optional(db.pool()).await?;
    match row {
        Some(r) => Ok(from_row(&r, now)?),
        None => Err(LifecycleError::NotFound(format!("to-do {id}"))),
    }
}

/// Open and overdue counts (one indexed query; every admin page shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub open: i64,
    pub overdue: i64,
}

pub async fn counts(db: &Db, now: i64) -> Result<Counts, LifecycleError> {
    let row = sqlx::query(
        "SELECT COUNT(*), COUNT(CASE WHEN due_at < $1 THEN 1 END) FROM lifecycle_todos WHERE done_at IS NULL",
    )
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    Ok(Counts { open: row.try_get(0)?, overdue: row.try_get(1)? })
}

/// When a to-do opened by hand is due: by the end of `day` (`YYYY-MM-DD` in the
/// business time zone), or after the catalogue's delay when `day` is empty.
pub fn due_at(catalogue: &j1msky_core::catalogue::Catalogue, day: &str, now: i64) -> Result<i64, LifecycleError> {
    if day.trim().is_empty() {
        return Ok(now + i64::from(catalogue.lifecycle.engagement.todo_due_days) * 86_400_000_000);
    }
    let tz = catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
    match j1msky_core::windows::parse_day(tz, day) {
        Some((_, end)) => Ok(end - 1),
        None => Err(LifecycleError::invalid("due", format!("`{}` is not a date (YYYY-MM-DD)", day.trim()))),
    }
}

/// Opens a to-do by hand (an operator, from the page or the CLI); due in `due_at`.
pub async fn open_manual(
    db: &Db,
    actor: &Actor,
    customer_id: Option<&str>,
    reason: &str,
    due_at: i64,
    now: i64,
) -> Result<String, LifecycleError> {
    if let Some(c) = customer_id {
        j1msky_accounts::customers::get(db, c).await.map_err(|e| match e {
            j1msky_accounts::AccountsError::NotFound(_) => {
                LifecycleError::invalid("customer", format!("no customer {c}"))
            }
            other => other.into(),
        })?;
    }
    let key = format!("manual:{}", j1msky_core::ids::new_id("k"));
    let mut tx = db.begin().await?;
    let todo = NewTodo { customer_id, reason, dedupe_key: &key, due_at };
    let id = create(&mut tx, db.backend(), &todo, now)
        .await?
        .ok_or_else(|| LifecycleError::Conflict("a fresh to-do key was taken".into()))?;
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "todo.open",
        &id,
        customer_id,
        serde_json::json!({"reason": reason.trim()}),
        now,
    )
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(id)
}

/// Assigns a to-do to an operator (by email); the previous assignee is in the audit entry.
pub async fn assign(db: &Db, actor: &Actor, id: &str, email: &str, now: i64) -> Result<Todo, LifecycleError> {
    let email = email.trim();
    if email.is_empty() {
        return Err(LifecycleError::invalid("to", "give the operator's email"));
    }
    let user = match j1msky_accounts::users::find_by_email(db, email).await {
        Ok(u) => u,
        Err(j1msky_accounts::AccountsError::NotFound(_)) => {
            return Err(LifecycleError::invalid("to", format!("no user {email}")));
        }
        Err(e) => return Err(e.into()),
    };
    if user.role != UserRole::Operator || user.disabled_at.is_some() {
        return Err(LifecycleError::invalid("to", format!("{email} is not an active operator")));
    }
    let before = get(db, id, now).await?;
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE lifecycle_todos SET assignee = $1 WHERE id = $2")
        .bind(&user.id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "todo.assign",
        id,
        before.customer_id.as_deref(),
        serde_json::json!({"to": user.email, "from": before.assignee_email}),
        now,
    )
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, id, now).await
}

/// Marks a to-do done by `user_id` (an operator); a second "done" is refused.
pub async fn done(db: &Db, actor: &Actor, id: &str, user_id: Option<&str>, now: i64) -> Result<Todo, LifecycleError> {
    let before = get(db, id, now).await?;
    let mut tx = db.begin().await?;
    let changed =
        sqlx::query("UPDATE lifecycle_todos SET done_at = $1, done_by = $2 WHERE id = $3 AND done_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if changed.rows_affected() != 1 {
        return Err(LifecycleError::Conflict(format!("to-do {id} is already done")));
    }
    let payload =
        TodoChanged { todo: id.to_string(), reason: before.reason.clone(), by: Some(actor.as_str().to_string()) };
    outbox::emit_typed(&mut tx, db.backend(), Typed::TodoDone(payload), before.customer_id.as_deref(), now).await?;
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "todo.done",
        id,
        before.customer_id.as_deref(),
        serde_json::json!({}),
        now,
    )
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, id, now).await
}

/// Reopens a done to-do (due again at `due_at`).
pub async fn reopen(db: &Db, actor: &Actor, id: &str, due_at: i64, now: i64) -> Result<Todo, LifecycleError> {
    let before = get(db, id, now).await?;
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE lifecycle_todos SET done_at = NULL, done_by = NULL, due_at = $1 WHERE id = $2 AND done_at IS NOT NULL",
    )
    .bind(due_at)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(LifecycleError::Conflict(format!("to-do {id} is open already")));
    }
    let payload = TodoChanged { todo: id.to_string(), reason: before.reason.clone(), by: None };
    outbox::emit_typed(&mut tx, db.backend(), Typed::TodoOpened(payload), before.customer_id.as_deref(), now).await?;
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "todo.reopen",
        id,
        before.customer_id.as_deref(),
        serde_json::json!({"was_done_at": before.done_at, "due_at": due_at}),
        now,
    )
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, id, now).await
}
