//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::AccountsError;

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;

/// Checks the password policy.
pub fn check_policy(password: &str) -> Result<(), AccountsError> {
    if password.chars().count() < MIN_LEN {
        return Err(AccountsError::invalid("password", format!("must be at least {MIN_LEN} characters")));
    }
    if password.len() > 1024 {
        return Err(AccountsError::invalid("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// Hashes a password into a PHC string.
pub fn hash(password: &str) -> Result<String, AccountsError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountsError::Internal(format!("password hash: {e}")))
}

/// True when `password` matches the stored PHC string.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the account does not exist, so that a wrong
/// email costs as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy-password-never-matches").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_argon2id_and_verifies() {
        let h = hash("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong horse battery", &h));
        assert!(!verify("x", "not a hash"));
        assert!(check_policy("short").is_err());
        assert!(check_policy("long enough pass").is_ok());
    }
}
