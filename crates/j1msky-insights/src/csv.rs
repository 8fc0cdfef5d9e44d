//! CSV as the board's downloads and `j1msky kpi --csv` write it: RFC 4180 quoting, and
//! text cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR
//! first) neutralised with a leading `'` (a customer's name is typed by the customer).
//! Plain integers are left as they are (`-1250` is a number, not a formula).

/// One cell as it goes into the file.
pub fn cell(value: &str) -> String {
    let is_number = {
        let digits = value.strip_prefix('-').unwrap_or(value);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let risky = value.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_number;
    let text = if risky { format!("'{value}") } else { value.to_string() };
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The whole file: a header line, then one line per row, CRLF line ends.
pub fn body(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>| cells.collect::<Vec<_>>().join(",") + "\r\n";
    out.push_str(&line(&mut header.iter().map(|h| cell(h))));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(|c| cell(c))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_neutralises() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("-1250"), "-1250");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1 555"), "'+1 555");
        assert_eq!(cell("-2+3"), "'-2+3");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(body(&["a", "b"], &[vec!["1".into(), "x\"y".into()]]), "a,b\r\n1,\"x\"\"y\"\r\n");
    }
}
