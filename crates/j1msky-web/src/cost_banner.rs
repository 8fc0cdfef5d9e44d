//! The cost mode every admin page's banner shows: the gateway controls in force while
//! the page is served, set by `gateway::with_controls` and read by the renderer
//! (kept apart from both so the renderer need not depend on the gateway pages).

use j1msky_gateway::controls::Controls;
use j1msky_gateway::policy::Mode;

tokio::task_local! {
    /// The controls in force while an admin page is being served (for the banner).
    pub(crate) static CONTROLS: Controls;
}

/// The cost mode for the banner of the page being rendered, if known.
pub fn banner_mode() -> Option<(Mode, Option<String>)> {
    CONTROLS.try_with(|c| (c.mode, c.mode_set_by.clone())).ok()
}
