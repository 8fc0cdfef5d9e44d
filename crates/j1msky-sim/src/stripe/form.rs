//! Decoding Stripe's bracket form syntax (`line_items[0][price]=p`) into JSON, the way
//! Stripe's API reads it: nested keys make objects, numeric keys make arrays; every
//! leaf stays a string, as on the wire.

use serde_json::{Map, Value};

/// Parses a form body or query string.
pub fn decode(body: &str) -> Value {
    let mut root = Value::Object(Map::new());
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (unescape(k), unescape(v));
        let mut path = Vec::new();
        let (head, mut rest) = match k.find('[') {
            Some(i) => (k[..i].to_string(), &k[i..]),
            None => (k.clone(), ""),
        };
        path.push(head);
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            path.push(stripped[..end].to_string());
            rest = &stripped[end + 1..];
        }
        insert(&mut root, &path, v);
    }
    arrays(root)
}

fn insert(node: &mut Value, path: &[String], v: String) {
    let Value::Object(map) = node else { return };
    let key = if path[0].is_empty() { map.len().to_string() } else { path[0].clone() };
    if path.len() == 1 {
        map.insert(key, Value::String(v));
        return;
    }
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    insert(child, &path[1..], v);
}

/// Objects whose keys are all 0..n become arrays.
fn arrays(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let n = map.len();
            let numeric = n > 0 && (0..n).all(|i| map.contains_key(&i.to_string()));
            if numeric {
                let mut map = map;
                Value::Array((0..n).map(|i| arrays(map.remove(&i.to_string()).unwrap_or(Value::Null))).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_make_objects_and_arrays() {
        let v = decode("mode=subscription&line_items%5B0%5D%5Bprice%5D=price_1&line_items%5B0%5D%5Bquantity%5D=1&metadata%5Ba%5D=x+y%26z&lookup_keys[]=k1&lookup_keys[]=k2");
        assert_eq!(v["mode"], "subscription");
        assert_eq!(v["line_items"][0]["price"], "price_1");
        assert_eq!(v["line_items"][0]["quantity"], "1");
        assert_eq!(v["metadata"]["a"], "x y&z");
        assert_eq!(v["lookup_keys"], serde_json::json!(["k1", "k2"]));
    }
}
