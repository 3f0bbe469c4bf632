//! Canonical JSON (the RFC 8785 "JCS" rules for the subset records use: objects with keys
//! sorted by code unit, no whitespace, integers only, strings escaped minimally). Written here
//! rather than relying on serde_json's map order, which a feature flag elsewhere in the build
//! could change.

use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("non-integer number {0} (records carry integers only)")]
    Float(String),
}

/// Serialises `v` canonically.
pub fn to_vec(v: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.extend_from_slice(n.to_string().as_bytes());
            } else {
                return Err(CanonicalError::Float(n.to_string()));
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            // JCS sorts by UTF-16 code units; for the ASCII keys records use this equals byte
            // order, and for others UTF-16 order is computed explicitly.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(&m[k], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_no_whitespace_minimal_escapes() {
        let v = json!({"b": 1, "a": [true, null, "x\"y\n\u{1}é"], "A": {"z": -3, "y": 18446744073709551615u64}});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            r#"{"A":{"y":18446744073709551615,"z":-3},"a":[true,null,"x\"y\n\u0001é"],"b":1}"#
        );
    }

    #[test]
    fn floats_are_refused() {
        assert_eq!(
            to_vec(&json!({"x": 0.5})),
            Err(CanonicalError::Float("0.5".into()))
        );
    }

    #[test]
    fn utf16_order_differs_from_byte_order_where_jcs_says_so() {
        // U+E000 (one UTF-16 unit 0xE000) sorts after U+1F600 (surrogates 0xD83D...) in JCS,
        // although its UTF-8 bytes sort first.
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            "{\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }
}
