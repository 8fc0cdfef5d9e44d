//! Shared kernel of j1msky: no I/O beyond reading the catalogue file.

pub mod catalogue;
pub mod clock;
pub mod events;
pub mod ids;
pub mod money;
pub mod vocab;
pub mod windows;

pub use clock::{Clock, ManualClock, SystemClock};
pub use money::Money;
