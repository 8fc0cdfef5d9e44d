use std::fmt;

use crate::AccountsError;

/// An email address, trimmed; compared case-insensitively through [`Email::key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@`, non-empty local part, a dotted domain, no spaces, and
    /// none of the characters that make a string more than a bare address (`<>"(),;:[]\`):
    /// `x<ann@acme.test>` would be a mailbox to the mail library, delivered to an
    /// address other than the one limits and suppressions are counted by.
    pub fn parse(input: &str) -> Result<Email, AccountsError> {
        let s = input.trim();
        let bad = |why: &str| AccountsError::invalid("email", format!("`{input}` is not an email address ({why})"));
        if s.is_empty() {
            return Err(AccountsError::invalid("email", "is required"));
        }
        if s.len() > 254 {
            return Err(bad("longer than 254 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains spaces"));
        }
        if let Some(c) = s.chars().find(|c| "<>\"(),;:[]\\".contains(*c)) {
            return Err(bad(&format!("`{c}` is not allowed in an address")));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(bad("no @"));
        };
        if local.is_empty() || domain.contains('@') {
            return Err(bad("needs exactly one @ with a name before it"));
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(bad("the domain needs a dot, e.g. example.com"));
        }
        Ok(Email(s.to_string()))
    }

    /// As typed (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unique, case-insensitive key.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    /// The mailbox the address reaches: [`Email::key`] without a `+tag` in its local part
    /// (`Ann+2@Acme.test` reaches `ann@acme.test`). Limits per recipient and the
    /// operator's view of earlier trials count by it.
    pub fn mailbox(&self) -> String {
        let key = self.key();
        match key.split_once('@') {
            Some((local, domain)) => {
                let local = local.split_once('+').map_or(local, |(base, _)| base);
                if local.is_empty() {
                    key.clone()
                } else {
                    format!("{local}@{domain}")
                }
            }
            None => key,
        }
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mailbox_drops_a_plus_tag_and_case() {
        let mailbox = |s: &str| Email::parse(s).map(|e| e.mailbox()).ok();
        assert_eq!(mailbox("Ann+trial2@Acme.test"), Some("ann@acme.test".into()));
        assert_eq!(mailbox("ann@acme.test"), Some("ann@acme.test".into()));
        assert_eq!(mailbox("+only@acme.test"), Some("+only@acme.test".into()), "no name before the tag: as is");
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Email::parse(" Ann@Example.com ").map(|e| e.key()).ok(), Some("ann@example.com".into()));
        for bad in ["", "ann", "ann@", "@x.com", "a b@x.com", "a@b@c.com", "a@localhost", "a@x."] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn a_display_name_or_a_list_is_not_an_address() {
        for bad in
            ["x1<victim@corp.test>", "\"Ann\"ann@x.com", "ann@x.com,bob@y.com", "ann@x.com;bob@y.com", "(c)ann@x.com"]
        {
            let err = Email::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("is not allowed in an address"), "{bad}: {err}");
        }
    }
}
