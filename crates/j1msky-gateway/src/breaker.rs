//! A circuit breaker per provider: after `THRESHOLD` failures in a row the provider is
//! skipped for `OPEN_FOR`, then one probe request is let through; a success closes it.

use std::collections::HashMap;
use std::sync::Mutex;

use j1msky_core::clock::SECOND;

/// Consecutive failures that open the circuit.
pub const THRESHOLD: u32 = 5;
/// How long an open circuit rejects calls before probing.
pub const OPEN_FOR: i64 = 30 * SECOND;

#[derive(Debug, Default, Clone, Copy)]
struct State {
    failures: u32,
    open_until: Option<i64>,
    probing: bool,
}

/// Breakers by provider id.
#[derive(Debug, Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// May a call go to `provider` now? When the open period is over, one probe may.
    pub fn allow(&self, provider: &str, now: i64) -> bool {
        let Ok(mut states) = self.states.lock() else { return true };
        let s = states.entry(provider.to_string()).or_default();
        match s.open_until {
            None => true,
            Some(until) if now >= until && !s.probing => {
                s.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// A call succeeded: close the circuit.
    pub fn success(&self, provider: &str) {
        if let Ok(mut states) = self.states.lock() {
            states.insert(provider.to_string(), State::default());
        }
    }

    /// A call failed in a way that says the provider is unwell; true when this failure
    /// opened a closed circuit (a failed probe re-opens it without counting again).
    pub fn failure(&self, provider: &str, now: i64) -> bool {
        if let Ok(mut states) = self.states.lock() {
            let s = states.entry(provider.to_string()).or_default();
            s.failures += 1;
            if s.probing || s.failures >= THRESHOLD {
                let opened = s.open_until.is_none();
                s.open_until = Some(now + OPEN_FOR);
                s.probing = false;
                return opened;
            }
        }
        false
    }

    /// Whether the circuit of `provider` is open (for the admin page).
    pub fn is_open(&self, provider: &str, now: i64) -> bool {
        self.states
            .lock()
            .ok()
            .and_then(|s| s.get(provider).and_then(|st| st.open_until))
            .is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_probes_then_closes() {
        let b = Breakers::default();
        for _ in 0..THRESHOLD {
            assert!(b.allow("p", 0));
            b.failure("p", 0);
        }
        assert!(!b.allow("p", 1), "open");
        assert!(b.allow("p", OPEN_FOR), "one probe after the open period");
        assert!(!b.allow("p", OPEN_FOR), "only one probe at a time");
        b.failure("p", OPEN_FOR);
        assert!(!b.allow("p", OPEN_FOR + 1), "a failed probe reopens");
        assert!(b.allow("p", 2 * OPEN_FOR + 1));
        b.success("p");
        assert!(b.allow("p", 2 * OPEN_FOR + 2) && b.allow("p", 2 * OPEN_FOR + 2), "closed again");
    }
}
