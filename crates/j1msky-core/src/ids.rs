//! Prefixed, time-sortable ids (`cus_01j…`): a ULID in lower case behind a type prefix.

/// Makes a new id such as `cus_01hv…` whose lexical order follows creation time.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_ascii_lowercase())
}

/// True when `id` has the given prefix and a well-formed ULID body.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|body| body.len() == 26 && ulid::Ulid::from_string(&body.to_ascii_uppercase()).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_sortable() {
        let a = new_id("cus");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("cus");
        assert!(a < b, "{a} should sort before {b}");
        assert!(has_prefix(&a, "cus"));
        assert!(!has_prefix(&a, "usr"));
        assert!(!has_prefix("cus_nope", "cus"));
    }
}
