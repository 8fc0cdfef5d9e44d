//! The catalogue a running process serves, swapped in place when an operator applies a
//! new version (j1msky-ops `config_history`), so no reader restarts.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Catalogue;

/// One catalogue in force, with the stored version it came from (`None`: a file or a
/// test's catalogue that was never stored).
#[derive(Debug)]
struct Current {
    version: Option<i64>,
    catalogue: &'static Catalogue,
    /// The same catalogue, for readers that keep an `Arc<Catalogue>`.
    shared: Arc<Catalogue>,
}

/// A shared handle on the catalogue in force: cheap to clone (every clone sees the same
/// swaps) and read like a `&Catalogue` through `Deref`.
///
/// Each catalogue swapped in is kept alive for the rest of the process (leaked). That is
/// what lets `Deref` hand out a plain `&Catalogue` with no guard to hold, so the many
/// readers written against `Arc<Catalogue>` read the live one unchanged, even across
/// `.await`s. The cost is one catalogue (tens of kilobytes) per version an operator
/// applies while the process runs. A reader that needs one consistent view for a whole
/// operation takes [`LiveCatalogue::snapshot`] once.
#[derive(Clone)]
pub struct LiveCatalogue {
    inner: Arc<ArcSwap<Current>>,
}

impl LiveCatalogue {
    /// A handle on `catalogue`, of stored version `version` when it has one.
    pub fn new(catalogue: Catalogue, version: Option<i64>) -> LiveCatalogue {
        LiveCatalogue::from_arc(Arc::new(catalogue), version)
    }

    fn from_arc(catalogue: Arc<Catalogue>, version: Option<i64>) -> LiveCatalogue {
        let current = Current { version, catalogue: keep(catalogue.clone()), shared: catalogue };
        LiveCatalogue { inner: Arc::new(ArcSwap::from_pointee(current)) }
    }

    /// The catalogue in force now; later swaps do not change what it points to.
    pub fn snapshot(&self) -> &'static Catalogue {
        self.inner.load().catalogue
    }

    /// The catalogue in force now as an `Arc`, for contexts made per use that hold one.
    pub fn current(&self) -> Arc<Catalogue> {
        self.inner.load().shared.clone()
    }

    /// The stored version in force and its catalogue, read together (a swap between two
    /// separate reads could pair a version with another's catalogue).
    pub fn versioned(&self) -> (Option<i64>, &'static Catalogue) {
        let current = self.inner.load();
        (current.version, current.catalogue)
    }

    /// The stored version in force (`None`: not from the database).
    pub fn version(&self) -> Option<i64> {
        self.inner.load().version
    }

    /// Puts `catalogue` (stored version `version`) in force for every clone of this handle.
    pub fn swap(&self, catalogue: Catalogue, version: i64) {
        let shared = Arc::new(catalogue);
        let current = Current { version: Some(version), catalogue: keep(shared.clone()), shared };
        self.inner.store(Arc::new(current));
    }
}

/// Keeps a catalogue alive for the rest of the process (see [`LiveCatalogue`]).
fn keep(catalogue: Arc<Catalogue>) -> &'static Catalogue {
    let kept: &'static Arc<Catalogue> = Box::leak(Box::new(catalogue));
    kept
}

impl Deref for LiveCatalogue {
    type Target = Catalogue;

    fn deref(&self) -> &Catalogue {
        self.snapshot()
    }
}

impl AsRef<Catalogue> for LiveCatalogue {
    fn as_ref(&self) -> &Catalogue {
        self.snapshot()
    }
}

impl std::fmt::Debug for LiveCatalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCatalogue").field("version", &self.version()).finish_non_exhaustive()
    }
}

impl From<Catalogue> for LiveCatalogue {
    fn from(catalogue: Catalogue) -> Self {
        LiveCatalogue::new(catalogue, None)
    }
}

impl From<Arc<Catalogue>> for LiveCatalogue {
    fn from(catalogue: Arc<Catalogue>) -> Self {
        LiveCatalogue::from_arc(catalogue, None)
    }
}

impl From<&Arc<Catalogue>> for LiveCatalogue {
    fn from(catalogue: &Arc<Catalogue>) -> Self {
        LiveCatalogue::from_arc(catalogue.clone(), None)
    }
}

impl From<&LiveCatalogue> for LiveCatalogue {
    fn from(live: &LiveCatalogue) -> Self {
        live.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_a_swap_and_old_snapshots_stay_valid() {
        let first = Catalogue::from_json_str(super::super::SHIPPED).expect("shipped");
        let mut second = first.clone();
        second.business.name = "Swapped".into();
        let live = LiveCatalogue::new(first, Some(1));
        let other = live.clone();
        let before = live.snapshot();
        live.swap(second, 2);
        assert_eq!(other.business.name, "Swapped");
        assert_eq!(other.version(), Some(2));
        assert_ne!(before.business.name, "Swapped");
    }
}
