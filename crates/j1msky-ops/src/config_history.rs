//! Configuration history: every change of the catalogue, caps, budgets and modes with
//! who, when, old and new value and a reason; diff, rollback, apply without restart.
