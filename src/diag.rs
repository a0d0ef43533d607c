//! CBOR diagnostic notation (RFC 8949 §8), for printing CBOR payloads to people.

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
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Text(t) => {
            let _ = write!(out, "{t:?}");
        }
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
