//! Fuzzing what a Stripe webhook goes through: the `Stripe-Signature` check, the event
//! envelope and the snapshot amounts (`webhook::envelope`, `history::amounts`), and the
//! whole path (verify, store, apply) on the engine the run selects. Seeds are events
//! recorded from the fake Stripe (`bench/fuzz/corpus/stripe_events`). Properties: no
//! input panics; a valid signature over any body verifies and any single-byte change of
//! the body, the signature or the timestamp is refused; a timestamp outside the
//! tolerance is refused; every acknowledged delivery is stored and ends applied or with
//! its error recorded.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::mutate;

use j1msky_billing::signature::{self, SignatureError, TOLERANCE_SECS};
use j1msky_billing::{apply, history, webhook, BillingError};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_db::testing::TestDb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

const SECRET: &str = "whsec_fuzz";

fn seeds() -> Vec<Value> {
    mutate::corpus("stripe_events")
        .into_iter()
        .map(|(name, bytes)| serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

fn seed_bodies() -> Vec<Vec<u8>> {
    mutate::corpus("stripe_events").into_iter().map(|(_, b)| b).collect()
}

// Findings of the first run, kept as regression tests: each panicked on the old code.

#[test]
fn a_timestamp_at_the_ends_of_i64_is_refused_not_overflowed() {
    // `(now - t).abs()` overflowed for t = i64::MIN (and now - t for t near i64::MAX).
    let body = b"{}";
    let secrets = vec![SECRET.to_string()];
    for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
        let h = format!("t={t},v1={}", signature::v1(SECRET, t, body));
        assert!(matches!(signature::verify(Some(&h), body, &secrets, 1_800_000_000), Err(SignatureError::Stale(_))));
    }
    let h = signature::header(SECRET, 0, body);
    assert!(matches!(signature::verify(Some(&h), body, &secrets, i64::MIN), Err(SignatureError::Stale(_))));
}

#[test]
fn hostile_interval_counts_and_amounts_do_not_overflow_the_monthly_amount() {
    // `12 * interval_count` and the running sums overflowed.
    let obj = serde_json::json!({"items": {"data": [
        {"price": {"unit_amount": i64::MAX, "recurring": {"interval": "year", "interval_count": i64::MAX}}, "quantity": i64::MAX},
        {"price": {"unit_amount": i64::MAX, "recurring": {"interval": "week", "interval_count": i64::MAX / 2}}, "quantity": 2},
        {"price": {"unit_amount": i64::MAX}, "quantity": i64::MAX},
        {"price": {"unit_amount": i64::MAX}, "quantity": i64::MAX},
    ]}});
    let a = history::amounts(&obj);
    assert_eq!(a.quantity, i64::MAX);
    assert_eq!(a.amount_cents, i64::MAX);
}

#[test]
fn an_event_created_outside_0_to_9999_is_malformed() {
    // Its `created` is scaled to micros (`created * 1_000_000` overflowed) and ordered
    // as 12 digits; both only hold for years 1970..=9999.
    for created in [-1, i64::MIN, 253_402_300_800, i64::MAX] {
        let v = serde_json::json!({"id": "evt_1", "type": "invoice.paid", "created": created, "data": {"object": {}}});
        assert!(matches!(webhook::envelope(&v), Err(BillingError::Malformed(_))), "{created}");
    }
    let ok = serde_json::json!({"id": "evt_1", "type": "invoice.paid", "created": 253_402_300_799i64, "data": {"object": {}}});
    assert_eq!(webhook::envelope(&ok).expect("last second of 9999").created, 253_402_300_799);
}

#[test]
fn a_refund_of_i64_min_is_applied_without_overflow() {
    // `-amount_refunded` overflowed for i64::MIN.
    run_deliveries(&[serde_json::json!({
        "id": "evt_refund_min", "object": "event", "type": "charge.refunded", "created": 1_800_000_000, "livemode": false,
        "data": {"object": {"id": "ch_1", "object": "charge", "customer": "cus_x", "amount_refunded": i64::MIN}}
    })]);
}

/// Delivers each event signed, then applies everything: every acknowledged delivery is
/// stored, and ends applied, or pending/failed with its error recorded.
fn run_deliveries(events: &[Value]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let t = TestDb::new().await;
        deliver(&t, events).await;
    });
}

async fn deliver(t: &TestDb, events: &[Value]) {
    let catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    let ctx = apply::Ctx { catalogue: &catalogue };
    let now_secs = 1_800_000_000;
    let now = now_secs * 1_000_000;
    let secrets = vec![SECRET.to_string()];
    let mut stored = Vec::new();
    for ev in events {
        let body = ev.to_string().into_bytes();
        let h = signature::header(SECRET, now_secs, &body);
        match webhook::receive(&t.db, &secrets, false, Some(&h), &body, now).await {
            Ok(webhook::Received::Stored { id, .. }) => stored.push(id),
            Ok(webhook::Received::Duplicate { .. }) => {}
            Err(BillingError::Malformed(_)) => {}
            Err(e) => panic!("a signed delivery failed otherwise than as malformed: {e}"),
        }
    }
    // A few rounds: a failing event is retried after its back-off, by then expired.
    for round in 0..3 {
        webhook::apply_pending(&t.db, &ctx, 100, now + round * 60_000_000).await.expect("apply");
    }
    for id in stored {
        let (state, error): (String, Option<String>) =
            sqlx::query_as("SELECT state, error FROM stripe_events WHERE id = $1")
                .bind(&id)
                .fetch_one(t.db.pool())
                .await
                .expect("an acknowledged delivery is stored");
        assert!(state == "applied" || error.is_some(), "{id}: {state} without an error");
    }
}

proptest! {
    #![proptest_config(Config { cases: mutate::cases(256), ..Config::default() })]

    /// Any header, body, secrets and clock: an answer, never a panic; and an `Ok` only
    /// for a v1 that is the HMAC of the body at a timestamp within the tolerance.
    #[test]
    fn verify_never_panics_and_accepts_only_a_real_signature(
        t in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>(), 1_799_999_000i64..1_800_001_000],
        junk in "[tv01=, a-f]{0,40}",
        with_real in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>(), Just(1_800_000_000i64)],
    ) {
        let secrets = vec![SECRET.to_string()];
        let real = signature::v1(SECRET, t, &body);
        let header = if with_real { format!("t={t},{junk},v1={real}") } else { format!("t={t},{junk}") };
        let got = signature::verify(Some(&header), &body, &secrets, now);
        if got.is_ok() {
            prop_assert!(with_real || junk.contains(&real));
            prop_assert!(now.abs_diff(t) <= TOLERANCE_SECS as u64);
        }
        let _ = signature::verify(Some(&junk), &body, &secrets, now);
    }

    /// A valid signature over any body (a recorded event or random bytes) verifies at
    /// any moment within the tolerance, with the secret among others.
    #[test]
    fn a_valid_signature_over_any_body_verifies(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            any::<prop::sample::Index>().prop_map(|i| { let s = seed_bodies(); s[i.index(s.len())].clone() }),
        ],
        t in 0i64..4_000_000_000,
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        secret in "whsec_[A-Za-z0-9]{1,40}",
    ) {
        let secrets = vec!["whsec_other".to_string(), secret.clone()];
        prop_assert_eq!(signature::verify(Some(&signature::header(&secret, t, &body)), &body, &secrets, t + skew), Ok(()));
    }

    /// One byte changed anywhere (body, signature hex, timestamp digits) is refused.
    #[test]
    fn any_single_byte_change_is_refused(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
        where_ in 0..3u8,
        t in 1_000_000_000i64..4_000_000_000,
    ) {
        let secrets = vec![SECRET.to_string()];
        let header = signature::header(SECRET, t, &body);
        let (mut body2, mut header2) = (body.clone(), header.clone().into_bytes());
        match where_ {
            0 => { let i = at.index(body2.len()); body2[i] ^= mask; }
            1 => {
                // A hex digit of the signature, replaced by another hex digit.
                let start = header2.len() - 64;
                let i = start + at.index(64);
                let digits = b"0123456789abcdef";
                let pos = digits.iter().position(|d| *d == header2[i]).expect("hex");
                header2[i] = digits[(pos + 1 + usize::from(mask) % 15) % 16];
            }
            _ => {
                // A digit of the timestamp, replaced by another digit.
                let i = 2 + at.index(10);
                header2[i] = b'0' + (header2[i] - b'0' + 1 + mask % 9) % 10;
            }
        }
        let header2 = String::from_utf8(header2).expect("ascii");
        let got = signature::verify(Some(&header2), &body2, &secrets, t);
        prop_assert!(matches!(got, Err(SignatureError::Mismatch) | Err(SignatureError::Stale(_))), "{:?}", got);
    }

    /// A timestamp further than the tolerance from now is refused, even correctly signed.
    #[test]
    fn a_timestamp_outside_the_tolerance_is_refused(
        t in 0i64..4_000_000_000,
        off in (TOLERANCE_SECS + 1)..1_000_000_000,
        late in any::<bool>(),
    ) {
        let body = b"{\"id\":\"evt_1\"}";
        let now = if late { t + off } else { t - off };
        let got = signature::verify(Some(&signature::header(SECRET, t, body)), body, &[SECRET.to_string()], now);
        prop_assert_eq!(got, Err(SignatureError::Stale(off)));
    }

    /// Recorded events, mutated: the envelope and the snapshot amounts never panic; an
    /// unmutated one reads back what it says.
    #[test]
    fn mutated_events_parse_or_are_malformed(seed in any::<prop::sample::Index>(), ms in mutate::json_mutations(8)) {
        let seeds = seeds();
        let mut ev = seeds[seed.index(seeds.len())].clone();
        if ms.is_empty() {
            let e = webhook::envelope(&ev).expect("a recorded event is well-formed");
            prop_assert_eq!(Some(e.id.as_str()), ev["id"].as_str());
            prop_assert_eq!(Some(e.kind.as_str()), ev["type"].as_str());
            prop_assert_eq!(Some(e.created), ev["created"].as_i64());
        }
        for m in &ms {
            mutate::apply(&mut ev, m);
        }
        let _ = webhook::envelope(&ev);
        let a = history::amounts(&ev["data"]["object"]);
        prop_assert!(a.quantity >= 0);
    }
}

/// Mutated recorded events, signed and delivered to a real database and applied: no
/// panic, every acknowledged delivery stored and applied or with its error. Fewer cases
/// (each is a round trip to the engine): `PROPTEST_CASES` / 8.
#[test]
fn mutated_events_delivered_and_applied_never_panic() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let t = rt.block_on(TestDb::new());
    let seeds = seeds();
    let mut runner = TestRunner::new(Config { cases: (mutate::cases(256) / 8).max(8), ..Config::default() });
    let case = std::cell::Cell::new(0u64);
    runner
        .run(&(any::<prop::sample::Index>(), mutate::json_mutations(6), any::<bool>()), |(seed, ms, twice)| {
            case.set(case.get() + 1);
            let mut ev = seeds[seed.index(seeds.len())].clone();
            // A fresh id per case so each is a new delivery (a mutation may still change it).
            ev["id"] = Value::String(format!("evt_fuzz{:06}", case.get()));
            for m in &ms {
                mutate::apply(&mut ev, m);
            }
            let events = if twice { vec![ev.clone(), ev] } else { vec![ev] };
            rt.block_on(deliver(&t, &events));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_event_type_or_id_with_a_nul_is_malformed() {
    // PostgreSQL cannot store a NUL in text: the insert failed (a 500, retried forever).
    for (id, kind) in [("evt_1\u{0}", "invoice.paid"), ("evt_1", "invoice.paid\u{0}"), ("evt_1", "Invoice Paid")] {
        let v = serde_json::json!({"id": id, "type": kind, "created": 1, "data": {"object": {}}});
        assert!(matches!(webhook::envelope(&v), Err(BillingError::Malformed(_))), "{id:?} {kind:?}");
    }
}
