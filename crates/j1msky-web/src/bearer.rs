//! `Authorization: Bearer …` parsing, shared by the JSON API and the model API (a leaf
//! module, so neither surface depends on the other for it).

/// The credentials of an `Authorization: Bearer …` value; the scheme name is
/// case-insensitive (RFC 9110 §11.1) and may be followed by any run of spaces.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
