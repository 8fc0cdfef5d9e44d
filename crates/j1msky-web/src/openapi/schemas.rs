//! The shapes of the JSON the API answers, for the OpenAPI document.
//!
//! The handlers answer the domain crates' types (`j1msky_tasks::Task`,
//! `j1msky_accounts::api_keys::ApiKey`…) wrapped in `json!` envelopes. Those crates stay
//! free of HTTP and documentation dependencies, so their shapes are described here, field
//! for field; `tests/openapi.rs` and the Schemathesis run (`scripts/schemathesis`) check
//! real answers against them, so a field added or renamed there fails until it is
//! described here too. Fields that are always present but may be null are `required`.

#![allow(dead_code)] // schema-only types: read by utoipa's derive, never built

use utoipa::ToSchema;

/// The error body of `/api/v1` and the webhook endpoint.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable `code` to act on and a message to show.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// e.g. `invalid`, `not_found`, `unauthorized`, `plan_limit`, `bad_signature`.
    pub code: String,
    pub message: String,
}

/// Where a customer is in the revenue workflow (`j1msky_core::vocab::Stage`).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Lead,
    Qualified,
    Trial,
    Active,
    Paused,
    Churned,
}

/// What a customer mainly hands to the agent teams (`j1msky_core::vocab::UseCase`).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UseCase {
    Code,
    Content,
    Research,
    Business,
}

/// What a user may do (`j1msky_core::vocab::UserRole`).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    Operator,
    Owner,
    Member,
}

/// A task's state (`j1msky_tasks::TaskState`).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A task's priority (`j1msky_tasks::Priority`).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// A customer (`j1msky_accounts::customers::Customer`). Times are unix microseconds.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    pub name: String,
    #[schema(required)]
    pub contact_email: Option<String>,
    pub stage: Stage,
    #[schema(required)]
    pub use_case: Option<UseCase>,
    #[schema(required)]
    pub plan: Option<String>,
    pub chosen_teams: Vec<String>,
    #[schema(required)]
    pub expected_monthly_tasks: Option<i64>,
    pub time_zone: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub stage_changed_at: i64,
    pub contract: Contract,
    #[schema(required)]
    pub stripe_customer_id: Option<String>,
    #[schema(required)]
    pub billing_status: Option<String>,
    #[schema(required)]
    pub billing_status_since: Option<i64>,
    pub payment_method_on_file: bool,
    /// Since when a disputed payment keeps the customer from the service; null: none does.
    #[schema(required)]
    pub disputed_since: Option<i64>,
}

/// Contract terms; null fields fall back to the plan's.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    #[schema(required)]
    pub tasks_per_month: Option<i64>,
    #[schema(required)]
    pub calls_per_hour: Option<i64>,
    /// An exact decimal string in USD (`"49.00"`), never a float.
    #[schema(required)]
    pub monthly_price: Option<String>,
}

/// A user, never with a password hash (`j1msky_accounts::users::User`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: UserRole,
    #[schema(required)]
    pub customer_id: Option<String>,
    pub created_at: i64,
    #[schema(required)]
    pub last_login_at: Option<i64>,
    #[schema(required)]
    pub disabled_at: Option<i64>,
}

/// How the caller authenticated.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    ApiKey,
    Session,
}

/// `GET /api/v1/me`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Me {
    pub auth: AuthKind,
    /// With an API key: its id.
    pub key_id: Option<String>,
    /// Null for an operator's session.
    #[schema(required)]
    pub customer: Option<Customer>,
    /// Null for an API key.
    #[schema(required)]
    pub user: Option<User>,
    /// With a session: the token its state-changing calls send in `X-CSRF-Token`.
    pub csrf_token: Option<String>,
}

/// An API key as listed, never with its secret (`j1msky_accounts::api_keys::ApiKey`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    #[schema(required)]
    pub created_by: Option<String>,
    pub created_at: i64,
    #[schema(required)]
    pub last_used_at: Option<i64>,
    #[schema(required)]
    pub revoked_at: Option<i64>,
}

/// `GET /api/v1/keys`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    pub data: Vec<ApiKey>,
}

/// `POST /api/v1/keys`: the secret is shown this once.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// `DELETE /api/v1/keys/{id}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyOnly {
    pub key: ApiKey,
}

/// A task (`j1msky_tasks::Task`). Money in integer micro-USD, times in unix microseconds.
#[derive(ToSchema)]
pub struct Task {
    pub id: String,
    pub customer_id: String,
    pub team: String,
    pub category: String,
    #[schema(required)]
    pub template: Option<String>,
    pub title: String,
    pub prompt: String,
    pub priority: Priority,
    pub state: TaskState,
    pub attempts: i64,
    pub not_before: i64,
    /// Why a queued task waits (a cap, a budget, an upstream rate limit).
    #[schema(required)]
    pub wait_reason: Option<String>,
    #[schema(required)]
    pub error: Option<String>,
    #[schema(required)]
    pub result: Option<String>,
    /// What its model calls cost, micro-USD.
    pub cost_micros: i64,
    #[schema(required)]
    pub tier: Option<String>,
    /// What the customer is charged (pay-per-task), micro-USD.
    #[schema(required)]
    pub charge_micros: Option<i64>,
    pub queued_at: i64,
    #[schema(required)]
    pub started_at: Option<i64>,
    #[schema(required)]
    pub finished_at: Option<i64>,
}

/// One completed step of a task (`j1msky_tasks::Step`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub step: i64,
    pub role: String,
    pub model: String,
    pub output: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub latency_micros: i64,
    pub created_at: i64,
    /// Present (true) when the output is held back from this caller; `output` is then empty.
    pub output_withheld: Option<bool>,
}

/// A task with its steps (`j1msky_tasks::TaskDetail`).
#[derive(ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub steps: Vec<Step>,
}

/// `GET /api/v1/tasks`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskList {
    pub data: Vec<Task>,
}

/// `POST /api/v1/tasks`: `replayed` when an earlier submit with the same
/// `Idempotency-Key` made the task (then the status is 200, not 201).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submitted {
    pub task: Task,
    pub replayed: bool,
}

/// `GET /api/v1/tasks/{id}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskShown {
    pub task: TaskDetail,
}

/// `POST /api/v1/tasks/{id}/cancel`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOnly {
    pub task: Task,
}

/// A team's task template: the fields to fill in, each required.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub team: String,
    pub id: String,
    pub title: String,
    pub fields: Vec<String>,
}

/// `GET /api/v1/templates`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateList {
    pub data: Vec<Template>,
}

/// `POST /webhooks/stripe`: stored (or already stored) under Stripe's event id.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceived {
    pub received: bool,
    /// True when the event id was already stored.
    pub duplicate: Option<bool>,
}
