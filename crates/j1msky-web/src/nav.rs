//! Navigation entries: each area declares its own, the server collects them, and the
//! layout renders the list it is given, so a new area needs no template edit.

/// Who sees a navigation entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Operator,
    Customer,
}

/// One link of the top navigation.
#[derive(Debug, Clone, Copy)]
pub struct NavEntry {
    /// The `section` a page passes to mark this entry current.
    pub id: &'static str,
    pub label: &'static str,
    pub href: &'static str,
    pub audience: Audience,
}

impl NavEntry {
    pub const fn operator(id: &'static str, label: &'static str, href: &'static str) -> NavEntry {
        NavEntry { id, label, href, audience: Audience::Operator }
    }

    pub const fn customer(id: &'static str, label: &'static str, href: &'static str) -> NavEntry {
        NavEntry { id, label, href, audience: Audience::Customer }
    }
}
