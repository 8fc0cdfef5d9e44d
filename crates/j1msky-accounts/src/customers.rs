//! Customers: who they are, where they stand in the revenue workflow, what they bought.

use j1msky_core::events::{ContractTerms, CustomerContractChanged, CustomerCreated, CustomerStageChanged};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::{AccountsError, Email};
use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::{Catalogue, TeamAllowance};
use j1msky_core::vocab::{Stage, UseCase};
use j1msky_db::{outbox, Db};

/// A customer as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub contact_email: Option<String>,
    pub stage: Stage,
    pub use_case: Option<UseCase>,
    pub plan: Option<String>,
    pub chosen_teams: Vec<String>,
    pub expected_monthly_tasks: Option<i64>,
    pub time_zone: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub stage_changed_at: i64,
    /// Limits agreed by contract, for plans with `custom_limits` (enterprise).
    pub contract: Contract,
    /// Stripe's customer id, once they have paid through Stripe.
    pub stripe_customer_id: Option<String>,
    /// A failed payment (`past_due`, `unpaid`) and since when; `None` when in good standing.
    pub billing_status: Option<String>,
    pub billing_status_since: Option<i64>,
    /// Whether Stripe holds a default payment method (pay-per-task without a plan needs one).
    pub payment_method_on_file: bool,
    /// Since when a disputed payment of theirs keeps them from the service (`None`: none
    /// does); billing sets it through [`crate::access::set_disputed`].
    pub disputed_since: Option<i64>,
}

/// A customer's contract terms; `None` fields fall back to the plan's.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Contract {
    pub tasks_per_month: Option<i64>,
    pub calls_per_hour: Option<i64>,
    pub monthly_price: Option<j1msky_core::Money>,
}

impl Contract {
    pub fn is_empty(&self) -> bool {
        self == &Contract::default()
    }

    /// The terms as events carry them.
    pub fn terms(&self) -> ContractTerms {
        ContractTerms {
            tasks_per_month: self.tasks_per_month,
            calls_per_hour: self.calls_per_hour,
            monthly_price: self.monthly_price,
        }
    }
}

impl Customer {
    /// The `customer.created` payload: the customer as first stored.
    pub fn created_event(&self) -> CustomerCreated {
        CustomerCreated {
            id: self.id.clone(),
            name: self.name.clone(),
            contact_email: self.contact_email.clone(),
            stage: self.stage,
            use_case: self.use_case,
            plan: self.plan.clone(),
            chosen_teams: self.chosen_teams.clone(),
            expected_monthly_tasks: self.expected_monthly_tasks,
            time_zone: self.time_zone.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            stage_changed_at: self.stage_changed_at,
            contract: self.contract.terms(),
            stripe_customer_id: self.stripe_customer_id.clone(),
            billing_status: self.billing_status.clone(),
            billing_status_since: self.billing_status_since,
            payment_method_on_file: self.payment_method_on_file,
            disputed_since: self.disputed_since,
        }
    }
}

/// A stage change, as kept in the history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageChange {
    pub from: Option<Stage>,
    pub to: Stage,
    pub actor: String,
    pub at: i64,
}

/// What it takes to add a customer (already read from the edge, not yet checked
/// against the catalogue).
#[derive(Debug, Clone, Default)]
pub struct NewCustomer {
    pub name: String,
    pub contact_email: Option<String>,
    pub stage: Option<Stage>,
    pub use_case: Option<UseCase>,
    pub plan: Option<String>,
    pub chosen_teams: Vec<String>,
    pub expected_monthly_tasks: Option<i64>,
    pub time_zone: Option<String>,
}

const COLUMNS: &str = "id, name, contact_email, stage, use_case, plan, chosen_teams, expected_monthly_tasks, \
                       time_zone, created_at, updated_at, stage_changed_at, contract_tasks_per_month, \
                       contract_calls_per_hour, contract_monthly_price_micros, stripe_customer_id, \
                       billing_status, billing_status_since, payment_method_on_file, disputed_since";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Customer, AccountsError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| AccountsError::Internal(format!("stored customer {what}: {e}"));
    let stage: String = r.try_get(3)?;
    let use_case: Option<String> = r.try_get(4)?;
    let teams: String = r.try_get(6)?;
    Ok(Customer {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        contact_email: r.try_get(2)?,
        stage: stage.parse().map_err(|e| corrupt("stage", &e))?,
        use_case: use_case.map(|u| u.parse()).transpose().map_err(|e| corrupt("use case", &e))?,
        plan: r.try_get(5)?,
        chosen_teams: serde_json::from_str(&teams).map_err(|e| corrupt("teams", &e))?,
        expected_monthly_tasks: r.try_get(7)?,
        time_zone: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        stage_changed_at: r.try_get(11)?,
        contract: Contract {
            tasks_per_month: r.try_get(12)?,
            calls_per_hour: r.try_get(13)?,
            monthly_price: r.try_get::<Option<i64>, _>(14)?.map(j1msky_core::Money::from_micros),
        },
        stripe_customer_id: r.try_get(15)?,
        billing_status: r.try_get(16)?,
        billing_status_since: r.try_get(17)?,
        payment_method_on_file: r.try_get::<i64, _>(18)? != 0,
        disputed_since: r.try_get(19)?,
    })
}

/// Checks a plan and team choice against the catalogue.
pub fn check_plan(catalogue: &Catalogue, plan: Option<&str>, teams: &[String]) -> Result<(), AccountsError> {
    for t in teams {
        if !catalogue.teams.contains_key(t) {
            let known: Vec<&str> = catalogue.teams.keys().map(String::as_str).collect();
            return Err(AccountsError::invalid(
                "teams",
                format!("unknown team `{t}`; teams are: {}", known.join(", ")),
            ));
        }
    }
    let mut unique = teams.to_vec();
    unique.sort();
    unique.dedup();
    if unique.len() != teams.len() {
        return Err(AccountsError::invalid("teams", "a team is listed twice"));
    }
    let Some(plan_id) = plan else {
        return if teams.is_empty() {
            Ok(())
        } else {
            Err(AccountsError::invalid("teams", "choose a plan before choosing teams"))
        };
    };
    let Some(plan) = catalogue.plans.get(plan_id) else {
        let known: Vec<&str> = catalogue.plans.keys().map(String::as_str).collect();
        return Err(AccountsError::invalid(
            "plan",
            format!("unknown plan `{plan_id}`; plans are: {}", known.join(", ")),
        ));
    };
    if let TeamAllowance::Choose(n) = plan.teams {
        if teams.len() > n as usize {
            return Err(AccountsError::invalid(
                "teams",
                format!("plan `{plan_id}` allows {n} chosen team(s), {} were given", teams.len()),
            ));
        }
    }
    Ok(())
}

/// Checks an IANA time zone name.
pub fn check_time_zone(tz: &str) -> Result<(), AccountsError> {
    tz.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| {
        AccountsError::invalid("time_zone", format!("`{tz}` is not an IANA time zone (e.g. Europe/Berlin, UTC)"))
    })
}

/// Adds a customer (stage `lead` unless given), audited, with a `customer.created` event.
pub async fn create(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    input: NewCustomer,
    now: i64,
) -> Result<Customer, AccountsError> {
    Ok(create_with_owner(db, catalogue, actor, input, None, now).await?.0)
}

/// Who owns a new customer: the first user, with the owner role.
#[derive(Debug, Clone)]
pub struct NewOwner {
    pub email: String,
    pub display_name: String,
    pub password: String,
}

/// Adds a customer and (when given) its owner in one transaction, so a refused owner
/// (a taken email, say) leaves no customer behind. The one path for the admin form, the
/// CLI and the demo.
pub async fn create_with_owner(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    input: NewCustomer,
    owner: Option<NewOwner>,
    now: i64,
) -> Result<(Customer, Option<crate::users::User>), AccountsError> {
    let customer = prepare(catalogue, input, now)?;
    let owner = owner
        .map(|o| {
            let new = crate::users::NewUser {
                email: o.email,
                display_name: o.display_name,
                password: o.password,
                role: j1msky_core::vocab::UserRole::Owner,
                customer_id: Some(customer.id.clone()),
            };
            crate::users::prepare(new, now)
        })
        .transpose()?;
    let mut tx = db.begin().await?;
    insert(&mut tx, db.backend(), actor, &customer, now).await?;
    let owner = match owner {
        Some(o) => Some(crate::users::insert(&mut tx, db.backend(), actor, o, now).await?),
        None => None,
    };
    tx.commit().await?;
    Ok((customer, owner))
}

/// Adds a customer inside the caller's transaction (a lead with its form details), audited,
/// with a `customer.created` event.
pub async fn create_in(
    conn: &mut AnyConnection,
    backend: j1msky_db::Backend,
    catalogue: &Catalogue,
    actor: &Actor,
    input: NewCustomer,
    now: i64,
) -> Result<Customer, AccountsError> {
    let customer = prepare(catalogue, input, now)?;
    insert(conn, backend, actor, &customer, now).await?;
    Ok(customer)
}

fn prepare(catalogue: &Catalogue, input: NewCustomer, now: i64) -> Result<Customer, AccountsError> {
    let name = input.name.trim().to_string();
    if name.is_empty() {
        return Err(AccountsError::invalid("name", "is required"));
    }
    if name.chars().count() > 200 {
        return Err(AccountsError::invalid("name", "must be at most 200 characters"));
    }
    let contact_email = match input.contact_email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) => Some(Email::parse(e)?.as_str().to_string()),
    };
    check_plan(catalogue, input.plan.as_deref(), &input.chosen_teams)?;
    let time_zone = input.time_zone.unwrap_or_else(|| "UTC".into());
    check_time_zone(&time_zone)?;
    if input.expected_monthly_tasks.is_some_and(|n| !(0..=10_000_000).contains(&n)) {
        return Err(AccountsError::invalid("expected_monthly_tasks", "must be between 0 and 10000000"));
    }
    let customer = Customer {
        id: j1msky_core::ids::new_id("cus"),
        name,
        contact_email,
        stage: input.stage.unwrap_or(Stage::Lead),
        use_case: input.use_case,
        plan: input.plan,
        chosen_teams: input.chosen_teams,
        expected_monthly_tasks: input.expected_monthly_tasks,
        time_zone,
        created_at: now,
        updated_at: now,
        stage_changed_at: now,
        contract: Contract::default(),
        stripe_customer_id: None,
        billing_status: None,
        billing_status_since: None,
        payment_method_on_file: false,
        disputed_since: None,
    };
    Ok(customer)
}

async fn insert(
    conn: &mut AnyConnection,
    backend: j1msky_db::Backend,
    actor: &Actor,
    customer: &Customer,
    now: i64,
) -> Result<(), AccountsError> {
    sqlx::query(&format!(
        "INSERT INTO customers ({COLUMNS}, search_name, search_email)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, $13, $14)"
    ))
    .bind(&customer.id)
    .bind(&customer.name)
    .bind(&customer.contact_email)
    .bind(customer.stage.as_str())
    .bind(customer.use_case.map(|u| u.as_str()))
    .bind(&customer.plan)
    .bind(serde_json::to_string(&customer.chosen_teams).unwrap_or_else(|_| "[]".into()))
    .bind(customer.expected_monthly_tasks)
    .bind(&customer.time_zone)
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(search_key(&customer.name))
    .bind(customer.contact_email.as_deref().map(search_key))
    .execute(&mut *conn)
    .await?;
    insert_stage_change(conn, &customer.id, None, customer.stage, actor, now).await?;
    let snapshot = serde_json::to_value(customer).unwrap_or_default();
    audit::record(conn, actor, "customer.created", &customer.id, Some(&customer.id), snapshot, now).await?;
    outbox::emit_typed(conn, backend, customer.created_event(), Some(&customer.id), now).await?;
    Ok(())
}

async fn insert_stage_change(
    conn: &mut AnyConnection,
    customer_id: &str,
    from: Option<Stage>,
    to: Stage,
    actor: &Actor,
    now: i64,
) -> Result<(), AccountsError> {
    sqlx::query("INSERT INTO customer_stage_changes (id, customer_id, from_stage, to_stage, actor, at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(j1msky_core::ids::new_id("stg"))
        .bind(customer_id)
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(actor.as_str())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// One customer by id.
pub async fn get(db: &Db, id: &str) -> Result<Customer, AccountsError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM customers WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(AccountsError::NotFound("customer")),
    }
}

/// One customer by id, read on the caller's connection (inside its transaction).
pub async fn get_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Customer, AccountsError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM customers WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(AccountsError::NotFound("customer")),
    }
}

/// Customers, newest first, optionally in one stage.
pub async fn list(db: &Db, stage: Option<Stage>, limit: i64) -> Result<Vec<Customer>, AccountsError> {
    list_after(db, stage, None, limit).await
}

/// Where a page of [`list_after`] ends: the last customer's creation time and id (the
/// list's order), so the next page starts right after it whatever was added meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    /// The cursor after `c`.
    pub fn after(c: &Customer) -> Cursor {
        Cursor { created_at: c.created_at, id: c.id.clone() }
    }

    /// As written in a link: `<created_at>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    /// Reads [`Cursor::encode`]'s form, named `field` in the error when it is not that.
    pub fn decode(field: &'static str, s: &str) -> Result<Cursor, AccountsError> {
        let bad = |m: String| AccountsError::invalid(field, m);
        let (at, id) = s.split_once('.').ok_or_else(|| bad(format!("`{s}` is not <created_at>.<customer id>")))?;
        let created_at = at.parse().map_err(|_| bad(format!("`{at}` is not a creation time in microseconds")))?;
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad(format!("`{id}` is not a customer id")));
        }
        Ok(Cursor { created_at, id: id.to_string() })
    }
}

/// Customers newest first (optionally in one stage), `limit` of them, starting after
/// `after`. Read through the `(stage, created_at, id)` and `(created_at, id)` indexes
/// (migration 0045): a page costs the same at any depth and any number of customers.
pub async fn list_after(
    db: &Db,
    stage: Option<Stage>,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Customer>, AccountsError> {
    // One statement per shape rather than `$n IS NULL OR …`, which SQLite cannot use an
    // index for.
    let mut sql = format!("SELECT {COLUMNS} FROM customers WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if stage.is_some() {
        sql.push_str(&format!(" AND stage = {}", next()));
    }
    if after.is_some() {
        sql.push_str(&format!(" AND (created_at, id) < ({}, {})", next(), next()));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {}", next()));
    let mut q = sqlx::query(&sql);
    if let Some(stage) = stage {
        q = q.bind(stage.as_str());
    }
    if let Some(c) = after {
        q = q.bind(c.created_at).bind(c.id.as_str());
    }
    let rows = q.bind(limit).fetch_all(db.pool()).await?;
    rows.iter().map(from_row).collect()
}

/// How many customers are in each stage, every stage listed (zero when empty).
pub async fn count_by_stage(db: &Db) -> Result<Vec<(Stage, i64)>, AccountsError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stage, COUNT(*) FROM customers GROUP BY stage").fetch_all(db.pool()).await?;
    let mut counts: Vec<(Stage, i64)> = Stage::ALL.iter().map(|s| (*s, 0)).collect();
    for (stage, n) in rows {
        let stage: Stage =
            stage.parse().map_err(|e| AccountsError::Internal(format!("stored customer stage `{stage}`: {e}")))?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == stage) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

/// The longest text [`search`] takes (a name or an email is shorter).
pub const SEARCH_MAX_CHARS: usize = 200;

/// Customers an operator looks for by what they know of one (optionally in one stage):
/// its id or Stripe customer id exactly, or the start of its name or contact email in any
/// case and with or without accents ([`search_key`]). By name, at most `limit`. Each way
/// is read through an index (the primary key, `customers_stripe_customer`, and migration
/// 0049's `customers_search_name` and `customers_search_email`), so it costs the same at
/// any number of customers; what was typed is compared as text, never as a pattern (`%`
/// and `_` are themselves).
pub async fn search(db: &Db, text: &str, stage: Option<Stage>, limit: i64) -> Result<Vec<Customer>, AccountsError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AccountsError::invalid("search", "say what to look for: a name, an email, or an id"));
    }
    if text.chars().count() > SEARCH_MAX_CHARS {
        return Err(AccountsError::invalid("search", format!("at most {SEARCH_MAX_CHARS} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(AccountsError::invalid("search", "control characters are not part of a name or an email"));
    }
    // A prefix as a range of the keys, compared byte by byte on both engines (UTF-8's
    // order is the code points'): from the folded text up to it followed by the last code
    // point. SQLite: the stage compared on each row found (`+`), so that the planner reads
    // the four indexes above rather than every customer of the stage through its index.
    let from = search_key(text);
    let to = format!("{from}{}", char::MAX);
    let in_stage = match db.backend() {
        j1msky_db::Backend::Sqlite => "+stage",
        j1msky_db::Backend::Postgres => "stage",
    };
    let mut sql = format!(
        "SELECT {COLUMNS} FROM customers
         WHERE (id = $1 OR stripe_customer_id = $1
                OR (search_name >= $3 AND search_name < $4)
                OR (search_email >= $3 AND search_email < $4))"
    );
    if stage.is_some() {
        sql.push_str(&format!(" AND {in_stage} = $5"));
    }
    sql.push_str(" ORDER BY name, id LIMIT $2");
    let mut q = sqlx::query(&sql).bind(text).bind(limit).bind(&from).bind(&to);
    if let Some(stage) = stage {
        q = q.bind(stage.as_str());
    }
    let rows = q.fetch_all(db.pool()).await?;
    rows.iter().map(from_row).collect()
}

/// What a name or an email is found by ([`search`]): its letters without their accents
/// (decomposed, the combining marks dropped, so `É`, `É` written as `E` and a combining
/// acute, and `E` are one), in Unicode lower case. Letters that are not a base letter and
/// a mark stay themselves (`ø`, `ß`, `æ`). ASCII text folds as SQL's lower() folds it,
/// which migration 0049 relies on.
pub fn search_key(text: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};
    text.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// Customers filled at a time by [`fill_search_keys`].
const FILL_CHUNK: i64 = 500;

/// Writes the search keys of every customer stored without them (migration 0049 leaves
/// them out for names and emails beyond ASCII, which SQL cannot fold as [`search_key`]
/// does; rows written by other means); returns how many. Run after the migrations: with
/// nothing to fill it is one look at an index.
pub async fn fill_search_keys(db: &Db) -> Result<u64, AccountsError> {
    let mut filled = 0;
    loop {
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, name, contact_email FROM customers WHERE search_name IS NULL LIMIT $1")
                .bind(FILL_CHUNK)
                .fetch_all(db.pool())
                .await?;
        if rows.is_empty() {
            return Ok(filled);
        }
        let mut tx = db.begin().await?;
        for (id, name, email) in &rows {
            // Only a row still without keys: a customer created meanwhile has its own.
            let done = sqlx::query(
                "UPDATE customers SET search_name = $1, search_email = $2 WHERE id = $3 AND search_name IS NULL",
            )
            .bind(search_key(name))
            .bind(email.as_deref().map(search_key))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            filled += done.rows_affected();
        }
        tx.commit().await?;
    }
}

/// Customers whose last payment failed (`billing_status` set: `past_due`, `unpaid`),
/// the longest-failing first.
pub async fn with_failed_payment(db: &Db, limit: i64) -> Result<Vec<Customer>, AccountsError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM customers WHERE billing_status IS NOT NULL
         ORDER BY billing_status_since, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Moves a customer to `to`, keeping the history, the audit log and a
/// `customer.stage_changed` event. Moving to the stage it is already in changes nothing.
pub async fn set_stage(db: &Db, actor: &Actor, id: &str, to: Stage, now: i64) -> Result<Customer, AccountsError> {
    let mut tx = db.begin().await?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM customers WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let mut customer = match row {
        Some(r) => from_row(&r)?,
        None => return Err(AccountsError::NotFound("customer")),
    };
    if change_stage(&mut tx, db.backend(), actor, id, customer.stage, to, now).await? {
        tx.commit().await?;
        customer.stage = to;
        customer.stage_changed_at = now;
        customer.updated_at = now;
    }
    Ok(customer)
}

/// Inside the caller's transaction: moves a customer whose stage is `from` to `to`, with
/// history, audit and event. Returns false (and writes nothing) when they are equal.
pub async fn change_stage(
    conn: &mut AnyConnection,
    backend: j1msky_db::Backend,
    actor: &Actor,
    id: &str,
    from: Stage,
    to: Stage,
    now: i64,
) -> Result<bool, AccountsError> {
    change_stage_at(conn, backend, actor, id, from, to, now, now).await
}

/// `change_stage` for a change that happened at `at`, earlier than `now` when it is
/// recorded (a Stripe event applied late): the stage and its history are dated `at`.
#[allow(clippy::too_many_arguments)]
pub async fn change_stage_at(
    conn: &mut AnyConnection,
    backend: j1msky_db::Backend,
    actor: &Actor,
    id: &str,
    from: Stage,
    to: Stage,
    at: i64,
    now: i64,
) -> Result<bool, AccountsError> {
    if from == to {
        return Ok(false);
    }
    sqlx::query("UPDATE customers SET stage = $1, stage_changed_at = $2, updated_at = $3 WHERE id = $4")
        .bind(to.as_str())
        .bind(at)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    insert_stage_change(conn, id, Some(from), to, actor, at).await?;
    let event = CustomerStageChanged { from, to };
    let detail = serde_json::json!({"from": from, "to": to});
    audit::record(conn, actor, "customer.stage_changed", id, Some(id), detail, now).await?;
    outbox::emit_typed(conn, backend, event, Some(id), now).await?;
    Ok(true)
}

/// The teams a customer's tasks may use under its plan in force: every team on a plan
/// with all of them (and without a plan: pay-per-task), none on one with none, else the
/// first `n` the customer chose (a customer who moved down from a plan with more keeps
/// the first ones chosen until it chooses again).
pub fn teams_in_force(catalogue: &Catalogue, customer: &Customer) -> Vec<String> {
    let plan = customer.plan.as_deref().and_then(|p| catalogue.plans.get(p));
    match plan.map(|p| p.teams) {
        None | Some(TeamAllowance::All) => catalogue.teams.keys().cloned().collect(),
        Some(TeamAllowance::Choose(n)) => customer.chosen_teams.iter().take(n as usize).cloned().collect(),
    }
}

/// Who chooses a customer's teams: its owner may only fill the slots its plan leaves
/// open (a team once chosen stays, so a month of one team cannot be swapped for another
/// mid-way); the operator may change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeamsBy {
    Owner,
    Operator,
}

/// Sets the teams a customer on a plan of chosen teams runs, audited.
pub async fn choose_teams(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    id: &str,
    teams: Vec<String>,
    by: TeamsBy,
    now: i64,
) -> Result<Customer, AccountsError> {
    let customer = get(db, id).await?;
    let plan_id = customer.plan.clone();
    let n = match plan_id.as_deref().and_then(|p| catalogue.plans.get(p)).map(|p| p.teams) {
        Some(TeamAllowance::Choose(n)) if n > 0 => n,
        _ => {
            return Err(AccountsError::invalid(
                "teams",
                format!(
                    "the plan `{}` has no teams to choose: it runs every team, or none",
                    plan_id.as_deref().unwrap_or("none")
                ),
            ))
        }
    };
    if teams.is_empty() {
        return Err(AccountsError::invalid("teams", format!("choose up to {n} team(s)")));
    }
    check_plan(catalogue, plan_id.as_deref(), &teams)?;
    let kept = teams_in_force(catalogue, &customer);
    if by == TeamsBy::Owner {
        if let Some(dropped) = kept.iter().find(|t| !teams.contains(t)) {
            return Err(AccountsError::invalid(
                "teams",
                format!("`{dropped}` is one of your chosen teams and stays chosen; ask us to change a chosen team"),
            ));
        }
    }
    let stored = serde_json::to_string(&customer.chosen_teams).unwrap_or_else(|_| "[]".into());
    let new = serde_json::to_string(&teams).unwrap_or_else(|_| "[]".into());
    let mut tx = db.begin().await?;
    // Only over what was read: two choices at once cannot both pass the checks above.
    let done =
        sqlx::query("UPDATE customers SET chosen_teams = $1, updated_at = $2 WHERE id = $3 AND chosen_teams = $4")
            .bind(&new)
            .bind(now)
            .bind(id)
            .bind(&stored)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if done != 1 {
        return Err(AccountsError::Conflict("the teams changed meanwhile; reload and choose again".into()));
    }
    let detail = serde_json::json!({"from": customer.chosen_teams, "to": teams});
    audit::record(&mut tx, actor, "customer.teams_chosen", id, Some(id), detail, now).await?;
    tx.commit().await?;
    Ok(Customer { chosen_teams: teams, updated_at: now, ..customer })
}

/// Sets a customer's contract limits, audited, with a `customer.contract_changed` event.
/// Only plans with custom limits (enterprise) take a contract; `None` fields go back to
/// the plan's own limits. A contract price below the plan's floor is refused.
pub async fn set_contract(
    db: &Db,
    catalogue: &Catalogue,
    actor: &Actor,
    id: &str,
    contract: Contract,
    now: i64,
) -> Result<Customer, AccountsError> {
    let customer = get(db, id).await?;
    let plan_id = customer.plan.as_deref().unwrap_or("none");
    let plan = catalogue.plans.get(plan_id).filter(|p| p.custom_limits);
    let Some(plan) = plan.or(if contract.is_empty() { catalogue.plans.get(plan_id) } else { None }) else {
        return Err(AccountsError::invalid(
            "plan",
            format!(
                "the customer's plan `{plan_id}` has no contract limits; move it to a plan with custom limits first"
            ),
        ));
    };
    if contract.tasks_per_month.is_some_and(|n| !(0..=100_000_000).contains(&n)) {
        return Err(AccountsError::invalid("tasks_per_month", "must be between 0 and 100000000"));
    }
    if contract.calls_per_hour.is_some_and(|n| !(1..=100_000_000).contains(&n)) {
        return Err(AccountsError::invalid("calls_per_hour", "must be between 1 and 100000000"));
    }
    if let Some(price) = contract.monthly_price {
        if price < plan.monthly_price {
            return Err(AccountsError::invalid(
                "monthly_price",
                format!("{price} is below the {} plan's minimum of {}", plan.name, plan.monthly_price),
            ));
        }
    }
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE customers SET contract_tasks_per_month = $1, contract_calls_per_hour = $2,
             contract_monthly_price_micros = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(contract.tasks_per_month)
    .bind(contract.calls_per_hour)
    .bind(contract.monthly_price.map(|m| m.micros()))
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"from": customer.contract, "to": contract});
    audit::record(&mut tx, actor, "customer.contract_changed", id, Some(id), detail, now).await?;
    let event = CustomerContractChanged { from: customer.contract.terms(), to: contract.terms() };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(id), now).await?;
    tx.commit().await?;
    Ok(Customer { contract, updated_at: now, ..customer })
}

/// Customers who moved to stage `churned` in `(after, until]` (by the change's own
/// time), with when; a customer created as churned is not a move, and a trial that
/// ended unconverted never paid, so it is a lost lead, not churn. Reads only that
/// window's churn rows (index `customer_stage_changes_to_stage`, migration 0028).
pub async fn churned_between(db: &Db, after: i64, until: i64) -> Result<Vec<(String, i64)>, AccountsError> {
    let rows = sqlx::query(
        "SELECT customer_id, at FROM customer_stage_changes
         WHERE to_stage = 'churned' AND at > $1 AND at <= $2 AND from_stage IS NOT NULL
           AND from_stage <> 'trial'
         ORDER BY at, id",
    )
    .bind(after)
    .bind(until)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The stage history, oldest first.
pub async fn stage_history(db: &Db, id: &str) -> Result<Vec<StageChange>, AccountsError> {
    let rows = sqlx::query(
        "SELECT from_stage, to_stage, actor, at FROM customer_stage_changes WHERE customer_id = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let from: Option<String> = r.try_get(0)?;
            let to: String = r.try_get(1)?;
            let bad = |e: j1msky_core::vocab::UnknownWord| AccountsError::Internal(e.to_string());
            Ok(StageChange {
                from: from.map(|f| f.parse()).transpose().map_err(bad)?,
                to: to.parse().map_err(bad)?,
                actor: r.try_get(2)?,
                at: r.try_get(3)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::search_key;

    #[test]
    fn ascii_folds_as_sql_lower_does_and_accents_fold_away() {
        // Migration 0049 fills ASCII keys with SQL's lower(): every ASCII character must
        // fold to exactly what lower() gives it.
        let ascii: String = (0u8..=127).map(char::from).collect();
        assert_eq!(search_key(&ascii), ascii.to_ascii_lowercase());
        assert_eq!(search_key("Élodie"), "elodie");
        assert_eq!(search_key("E\u{301}LODIE"), "elodie", "a letter and a combining mark");
        assert_eq!(search_key("Zoë MÜLLER"), "zoe muller");
        assert_eq!(search_key("Ørsted Straße"), "ørsted straße", "letters of their own stay");
    }
}
