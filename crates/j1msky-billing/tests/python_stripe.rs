//! Our signatures and Stripe's are the same scheme: the official `stripe` Python package
//! (its own signing routine and `Webhook.construct_event`) checks what we and the fake
//! Stripe sign, and we verify what it signs. The virtualenv is made by
//! `scripts/python-sdk-env` (run by `scripts/test`).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Command;

use j1msky_billing::signature::{self, SignatureError};

const SCRIPT: &str = r#"
import sys, stripe
mode, secret, t, payload_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
payload = open(payload_file, encoding="utf-8").read()
if mode == "sign":
    print("t=%s,v1=%s" % (t, stripe.WebhookSignature._compute_signature("%s.%s" % (t, payload), secret)))
else:
    try:
        event = stripe.Webhook.construct_event(payload, sys.argv[5], secret)
        print("accepted", event["id"])
    except stripe.SignatureVerificationError as e:
        print("rejected", e)
        sys.exit(3)
"#;

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv/bin/python");
    assert!(p.exists(), "missing {}: run scripts/python-sdk-env (scripts/test does)", p.display());
    p
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(python()).arg("-c").arg(SCRIPT).args(args).output().expect("python");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.code().unwrap_or(-1), format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

#[test]
fn stripe_s_own_package_and_j1msky_accept_each_other_s_signatures() {
    let dir = tempfile::tempdir().expect("dir");
    let payload = r#"{"id":"evt_1Compat","object":"event","type":"invoice.paid","created":1800000000,"data":{"object":{"id":"in_1","amount_paid":4900,"note":"café ☕"}}}"#;
    let file = dir.path().join("payload.json");
    std::fs::write(&file, payload).expect("write");
    let file = file.to_str().expect("path");
    let secret = "whsec_compat_secret";
    let t = now().to_string();

    // What Stripe's package signs, j1msky verifies; a changed body is refused.
    let (code, header) = run(&["sign", secret, &t, file]);
    assert_eq!(code, 0, "{header}");
    let secrets = vec![secret.to_string()];
    assert_eq!(signature::verify(Some(&header), payload.as_bytes(), &secrets, now()), Ok(()));
    let tampered = payload.replace("4900", "1");
    assert_eq!(signature::verify(Some(&header), tampered.as_bytes(), &secrets, now()), Err(SignatureError::Mismatch));

    // What j1msky's and the fake Stripe's signers produce, Stripe's package accepts.
    let ours = signature::header(secret, now(), payload.as_bytes());
    let fake = j1msky_sim::stripe::sign(secret, now(), payload);
    for header in [&ours, &fake] {
        let (code, out) = run(&["verify", secret, &t, file, header]);
        assert_eq!((code, out.starts_with("accepted evt_1Compat")), (0, true), "{out}");
    }
    // And refuses them under another secret, or stale.
    let (code, out) = run(&["verify", "whsec_other", &t, file, &ours]);
    assert_eq!(code, 3, "{out}");
    let stale = signature::header(secret, now() - 600, payload.as_bytes());
    let (code, out) = run(&["verify", secret, &t, file, &stale]);
    assert_eq!(code, 3, "{out}");
}
