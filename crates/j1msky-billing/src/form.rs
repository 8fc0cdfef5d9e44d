//! Stripe's form encoding with bracket syntax (`metadata[plan]=pro`,
//! `line_items[0][price]=price_…`), from a JSON value. Written here rather than taken
//! from serde_qs because the client builds its parameters as JSON values (the shape
//! Stripe documents) and needs only this one direction, in Stripe's exact spelling.

use serde_json::Value;

/// `params` (an object) as an `application/x-www-form-urlencoded` body.
pub fn encode(params: &Value) -> String {
    let mut pairs = Vec::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            flatten(k.clone(), v, &mut pairs);
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&escape(k));
        out.push('=');
        out.push_str(&escape(v));
    }
    out
}

fn flatten(key: String, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push((key, b.to_string())),
        Value::Number(n) => out.push((key, n.to_string())),
        Value::String(s) => out.push((key, s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(format!("{key}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                flatten(format!("{key}[{k}]"), item, out);
            }
        }
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_and_arrays_use_brackets_and_values_are_escaped() {
        let v = serde_json::json!({
            "mode": "subscription",
            "line_items": [{"price": "price_1", "quantity": 1}],
            "metadata": {"customer": "cus_01 & co"},
            "skip": null,
            "allow_promotion_codes": true
        });
        assert_eq!(
            encode(&v),
            "allow_promotion_codes=true&line_items%5B0%5D%5Bprice%5D=price_1&line_items%5B0%5D%5Bquantity%5D=1\
             &metadata%5Bcustomer%5D=cus_01+%26+co&mode=subscription"
        );
    }
}
