//! Agent teams run customers' tasks. A task is submitted (checked against the team, the
//! plan and its monthly limit, idempotently), waits in the durable queue (the `tasks`
//! table itself, claimed with fenced leases), and is worked by the team's roles in
//! order through the model gateway. Each completed step is stored, so a task whose
//! worker died resumes after its last step; success, its cost, its pay-per-task charge
//! and its event commit together.

pub mod api_usage;
pub mod charges;
mod error;
pub mod pipeline;
pub mod reactions;
pub mod reclaim;
pub mod submit;
pub mod summary;
pub mod tier;
pub mod worker;

pub use error::TaskError;
pub use submit::{
    cancel, get, list, queue_view, retry, sla_lanes, submit, Depth, NewTask, Priority, QueueView, SlaLane, Submitted,
    Task, TaskDetail, TaskState,
};
pub use worker::{Worker, WorkerConfig};

/// Largest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 100 * 1024;
