//! Money as integer micro-USD. Never a float.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-USD per USD.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// An amount of US dollars held as an integer count of micro-dollars (1e-6 USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

/// Why a money string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("empty amount")]
    Empty,
    #[error("`{0}` is not a decimal USD amount (expected e.g. \"49.00\" or \"0.60\")")]
    Syntax(String),
    #[error("`{0}` has more than 6 decimal places (the smallest unit is one micro-dollar)")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl Money {
    pub const ZERO: Money = Money(0);

    /// From a whole number of micro-USD.
    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// From whole US cents.
    pub const fn from_cents(cents: i64) -> Self {
        Money(cents * 10_000)
    }

    /// The amount in micro-USD.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// True when below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Sum that reports overflow instead of wrapping.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Cents, rounded half away from zero (Stripe's minor units for USD).
    pub fn to_cents_rounded(self) -> i64 {
        let q = self.0 / 10_000;
        let r = self.0 % 10_000;
        if r >= 5_000 {
            q + 1
        } else if r <= -5_000 {
            q - 1
        } else {
            q
        }
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses a decimal USD amount such as `49`, `49.00`, `$0.60` or `-1.5` exactly.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let (neg, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let rest = rest.strip_prefix('$').unwrap_or(rest);
        let (whole, frac) = match rest.split_once('.') {
            Some((w, f)) => (w, f),
            None => (rest, ""),
        };
        let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_ok(whole) || !digits_ok(frac) || (rest.contains('.') && frac.is_empty()) {
            return Err(MoneyError::Syntax(input.to_string()));
        }
        if frac.len() > 6 {
            return Err(MoneyError::TooPrecise(input.to_string()));
        }
        let overflow = || MoneyError::Overflow(input.to_string());
        let whole: i64 = whole.parse().map_err(|_| overflow())?;
        let mut frac_micros: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        let total = whole.checked_mul(MICROS_PER_USD).and_then(|w| w.checked_add(frac_micros)).ok_or_else(overflow)?;
        Ok(Money(if neg { -total } else { total }))
    }
}

impl fmt::Display for Money {
    /// `$49.00`, `$0.60`, `$0.000123`: two decimals at least, more only when needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_USD as u64;
        let frac = abs % MICROS_PER_USD as u64;
        let mut frac_s = format!("{frac:06}");
        while frac_s.len() > 2 && frac_s.ends_with('0') {
            frac_s.pop();
        }
        write!(f, "{sign}${whole}.{frac_s}")
    }
}

impl Money {
    /// The amount as a plain decimal string (`49.00`, `0.000123`), exact.
    pub fn to_decimal_string(self) -> String {
        self.to_string().replacen('$', "", 1)
    }
}

/// Money travels in JSON as an exact decimal string (`"49.00"`), never as a float.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_decimal_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MoneyVisitor;
        impl serde::de::Visitor<'_> for MoneyVisitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a USD amount as a decimal string, e.g. \"49.00\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
                Err(E::custom(format!("write the amount as a string, e.g. \"{v}.00\", so it stays exact")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
                Err(E::custom(format!("write the amount as a string, e.g. \"{v}.00\", so it stays exact")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
                Err(E::custom(format!("write the amount as a string, e.g. \"{v}\", so it stays exact")))
            }
        }
        d.deserialize_any(MoneyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimal_amounts() {
        assert_eq!("49".parse::<Money>(), Ok(Money(49_000_000)));
        assert_eq!("$0.60".parse::<Money>(), Ok(Money(600_000)));
        assert_eq!("0.000001".parse::<Money>(), Ok(Money(1)));
        assert_eq!("-1.5".parse::<Money>(), Ok(Money(-1_500_000)));
        assert!(matches!("1.".parse::<Money>(), Err(MoneyError::Syntax(_))));
        assert!(matches!("abc".parse::<Money>(), Err(MoneyError::Syntax(_))));
        assert!(matches!("0.0000001".parse::<Money>(), Err(MoneyError::TooPrecise(_))));
        assert!(matches!("99999999999999999".parse::<Money>(), Err(MoneyError::Overflow(_))));
    }

    #[test]
    fn displays_and_rounds_to_cents() {
        assert_eq!(Money(49_000_000).to_string(), "$49.00");
        assert_eq!(Money(600_000).to_string(), "$0.60");
        assert_eq!(Money(123).to_string(), "$0.000123");
        assert_eq!(Money(-2_500_000).to_string(), "-$2.50");
        assert_eq!(Money(4_999).to_cents_rounded(), 0);
        assert_eq!(Money(5_000).to_cents_rounded(), 1);
        assert_eq!(Money(-5_000).to_cents_rounded(), -1);
    }

    #[test]
    fn travels_in_json_as_exact_decimal_strings() {
        let m: Money = serde_json::from_str("\"0.60\"").expect("decimal string");
        assert_eq!(m, Money(600_000));
        assert_eq!(serde_json::to_string(&Money(49_000_000)).expect("serialise"), "\"49.00\"");
        let err = serde_json::from_str::<Money>("0.6").expect_err("float refused");
        assert!(err.to_string().contains("as a string"), "{err}");
        assert!(serde_json::from_str::<Money>("49").is_err());
    }
}
