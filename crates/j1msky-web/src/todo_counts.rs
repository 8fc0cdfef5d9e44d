//! The staff to-do counts every operator admin page shows in its header: set by
//! `lifecycle::with_todo_counts` while the page is served and read by the renderer
//! (kept apart from both so the renderer need not depend on the lifecycle pages).

use j1msky_lifecycle::todos::Counts;

tokio::task_local! {
    /// The to-do counts while an operator's admin page is served (for the header).
    pub(crate) static COUNTS: Counts;
}

/// The to-do counts for the header of the page being rendered, if known.
pub fn header_counts() -> Option<Counts> {
    COUNTS.try_with(|c| *c).ok()
}
