//! CBOR diagnostic notation (RFC 8949 §8), for printing CBOR payloads to people.
//!
//! Written here rather than with the `cbor-diag` crate (0.1.12, checked): that one prints
//! every head's encoding width (`1000_1`, `-100_0`) and leaves control characters in
//! text strings unescaped, so a newline inside a value would break the one-line output.

use ciborium::Value;
use std::fmt::Write;

/// Renders a CBOR item in diagnostic notation, or `None` if `bytes` is not one
/// well-formed CBOR item.
pub fn cbor_to_diagnostic(bytes: &[u8]) -> Option<String> {
    let mut reader = bytes;
    let value: Value = ciborium::from_reader(&mut reader).ok()?;
    if !reader.is_empty() {
        return None;
    }
    let mut out = String::new();
    write_value(&mut out, &value);
    Some(out)
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Integer(i) => {
            let _ = write!(out, "{}", i128::from(*i));
        }
        Value::Bytes(b) => {
            out.push_str("h'");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\'');
        }
        Value::Float(f) if f.is_nan() => out.push_str("NaN"),
        Value::Float(f) if f.is_infinite() => {
            out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        // JSON's string escapes, as RFC 8949 §8 says.
        Value::Text(t) => out.push_str(&serde_json::to_string(t).expect("a string serializes")),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Null => out.push_str("null"),
        Value::Tag(tag, inner) => {
            let _ = write!(out, "{tag}(");
            write_value(out, inner);
            out.push(')');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
        _ => out.push_str("undefined"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc8949_diagnostic_notation() {
        let bytes = hex("a3616101616282f5f66163430102ff");
        assert_eq!(
            cbor_to_diagnostic(&bytes).unwrap(),
            r#"{"a": 1, "b": [true, null], "c": h'0102ff'}"#
        );
        assert_eq!(cbor_to_diagnostic(&hex("3863")).unwrap(), "-100");
        assert_eq!(
            cbor_to_diagnostic(&hex("84f97e00f97c00f9fc00f93e00")).unwrap(),
            "[NaN, Infinity, -Infinity, 1.5]"
        );
        assert_eq!(
            cbor_to_diagnostic(&hex("6661e282ac0a01")).unwrap(),
            r#""a€\n\u0001""#,
            "JSON escapes, not Rust's"
        );
        assert_eq!(cbor_to_diagnostic(&hex("a1")), None, "truncated");
        assert_eq!(cbor_to_diagnostic(&hex("0101")), None, "trailing bytes");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
