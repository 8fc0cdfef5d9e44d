//! `Stripe-Signature` verification, exactly as Stripe specifies it: the header carries a
//! timestamp `t` and one or more `v1` signatures, each a hex HMAC-SHA256 of
//! `"{t}.{raw body}"` under an endpoint secret. Any `v1` matching any active secret
//! (several during a rotation) is accepted; other schemes (`v0`) are ignored; a
//! timestamp further than the tolerance from now is refused (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's own default tolerance.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused. None of these stores anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp `t=`")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1,
    #[error("the signature timestamp is {0} s away from now (at most {TOLERANCE_SECS} s allowed)")]
    Stale(i64),
    #[error("no v1 signature matches an active webhook secret")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// The hex `v1` signature of `body` at `t` under `secret`.
pub fn v1(secret: &str, t: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, t, body))
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Vec<u8> {
    // new_from_slice accepts keys of any length for HMAC; it cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// A complete header value for `body` signed at `t`, as Stripe sends it.
pub fn header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

/// Checks `header` against `body` with any of `secrets`, at `now_secs`.
pub fn verify(header: Option<&str>, body: &[u8], secrets: &[String], now_secs: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k {
            "t" => t = v.parse::<i64>().ok(),
            "v1" => {
                if let Ok(bytes) = hex::decode(v) {
                    sigs.push(bytes);
                }
            }
            _ => {} // v0 and future schemes are not ours to trust
        }
    }
    let t = t.ok_or(SignatureError::NoTimestamp)?;
    if sigs.is_empty() {
        return Err(SignatureError::NoV1);
    }
    // abs_diff: a timestamp near i64::MIN or MAX must be refused, not overflow.
    let skew = now_secs.abs_diff(t);
    if skew > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale(i64::try_from(skew).unwrap_or(i64::MAX)));
    }
    let mut ok = subtle::Choice::from(0);
    for secret in secrets {
        let expected = mac(secret, t, body);
        for sig in &sigs {
            ok |= expected.as_slice().ct_eq(sig.as_slice());
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    #[test]
    fn a_signature_from_any_active_secret_within_tolerance_is_accepted() {
        let secrets = vec!["whsec_old".to_string(), "whsec_new".to_string()];
        let t = 1_800_000_000;
        assert_eq!(verify(Some(&header("whsec_new", t, BODY)), BODY, &secrets, t + 299), Ok(()));
        assert_eq!(verify(Some(&header("whsec_old", t, BODY)), BODY, &secrets, t - 299), Ok(()));
        // Stripe sends one v1 per active secret during its own rotation; any may match.
        let two = format!("t={t},v1={},v1={},v0=abc", v1("whsec_other", t, BODY), v1("whsec_new", t, BODY));
        assert_eq!(verify(Some(&two), BODY, &secrets, t), Ok(()));
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        let secrets = vec!["whsec_a".to_string()];
        let t = 1_800_000_000;
        let good = header("whsec_a", t, BODY);
        assert_eq!(verify(None, BODY, &secrets, t), Err(SignatureError::Missing));
        assert_eq!(verify(Some(&good), BODY, &[], t), Err(SignatureError::NoSecret));
        assert_eq!(verify(Some(&good), BODY, &secrets, t + 301), Err(SignatureError::Stale(301)));
        assert_eq!(verify(Some(&good), BODY, &secrets, t - 301), Err(SignatureError::Stale(301)));
        assert_eq!(verify(Some(&good), b"{\"id\":\"evt_2\"}", &secrets, t), Err(SignatureError::Mismatch));
        assert_eq!(verify(Some(&header("whsec_b", t, BODY)), BODY, &secrets, t), Err(SignatureError::Mismatch));
        let v0_only = format!("t={t},v0={}", v1("whsec_a", t, BODY));
        assert_eq!(verify(Some(&v0_only), BODY, &secrets, t), Err(SignatureError::NoV1));
        assert_eq!(verify(Some("v1=00"), BODY, &secrets, t), Err(SignatureError::NoTimestamp));
        // The timestamp is part of what is signed: moving it breaks the signature.
        let moved = good.replace(&format!("t={t}"), &format!("t={}", t + 1));
        assert_eq!(verify(Some(&moved), BODY, &secrets, t), Err(SignatureError::Mismatch));
    }
}
