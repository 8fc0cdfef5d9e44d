//! The business's words: customer stages, use cases and user roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word that is not one of the allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {allowed}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub value: String,
    pub allowed: String,
}

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and displayed word.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        what: $what,
                        value: s.to_string(),
                        allowed: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

word_enum!(
    /// Where a customer is in the revenue workflow.
    Stage, "stage", {
        Lead => "lead",
        Qualified => "qualified",
        Trial => "trial",
        Active => "active",
        Paused => "paused",
        Churned => "churned",
    }
);

word_enum!(
    /// What a customer mainly hands to the agent teams.
    UseCase, "use case", {
        Code => "code",
        Content => "content",
        Research => "research",
        Business => "business",
    }
);

word_enum!(
    /// What a user may do: operators run the business, owners and members belong to one customer.
    UserRole, "role", {
        Operator => "operator",
        Owner => "owner",
        Member => "member",
    }
);

impl UserRole {
    /// Owners and members act for exactly one customer; operators for none.
    pub const fn belongs_to_customer(self) -> bool {
        !matches!(self, UserRole::Operator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_reject_unknowns() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(*s));
        }
        assert_eq!("Trial".parse::<Stage>(), Ok(Stage::Trial));
        let err = "vip".parse::<Stage>().unwrap_err();
        assert!(err.to_string().contains("lead, qualified, trial"), "{err}");
        assert!(UserRole::Owner.belongs_to_customer());
        assert!(!UserRole::Operator.belongs_to_customer());
    }
}
