//! Canonical JSON: RFC 8785 (JCS) for the values a certificate holds.
//!
//! * Objects: members sorted by their names' UTF-16 code units, no whitespace.
//! * Strings: `"` and `\` escaped, `\b \f \n \r \t` for those controls, `\u00xx` (lowercase
//!   hex) for the other controls below U+0020, everything else as raw UTF-8.
//! * Numbers: integers only, with magnitude below 2^53 (so JCS's ECMAScript number form is
//!   the plain decimal); fractions and larger integers are refused rather than rounded.
//! * `null`, `true`, `false` as such.
//!
//! For such values this is byte-identical to RFC 8785, so any JCS library reproduces it (the
//! test vectors are made by Python's `json.dumps(sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)`, which agrees with JCS on them).

use serde_json::Value;

/// Largest integer magnitude allowed: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("a number is not an integer of magnitude below 2^53")]
    Number,
}

/// The canonical bytes of `value`.
pub fn to_canonical(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(1024);
    write(value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            let text = if let Some(u) = n.as_u64() {
                (u <= MAX_SAFE_INTEGER).then(|| u.to_string())
            } else if let Some(i) = n.as_i64() {
                (i.unsigned_abs() <= MAX_SAFE_INTEGER).then(|| i.to_string())
            } else {
                None
            };
            out.extend_from_slice(text.ok_or(CanonicalError::Number)?.as_bytes());
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            // Bytes of multi-byte UTF-8 sequences pass through unchanged.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_canonical(&v).unwrap()).unwrap()
    }

    #[test]
    fn members_are_sorted_and_whitespace_dropped() {
        assert_eq!(
            canon(json!({"b": [1, true, null], "a": {"z": "x", "y": -2}})),
            r#"{"a":{"y":-2,"z":"x"},"b":[1,true,null]}"#
        );
    }

    #[test]
    fn strings_are_escaped_as_jcs_does() {
        assert_eq!(
            canon(json!("q\"b\\s/\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é€😀")),
            "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é€😀\""
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF61 sorts after U+1F600 in UTF-16 (0xD83D...), before it in UTF-8 and code points.
        assert_eq!(
            canon(json!({"\u{ff61}": 1, "\u{1f600}": 2})),
            "{\"\u{1f600}\":2,\"\u{ff61}\":1}"
        );
    }

    #[test]
    fn numbers_must_be_safe_integers() {
        assert_eq!(canon(json!(MAX_SAFE_INTEGER)), "9007199254740991");
        assert_eq!(canon(json!(-9007199254740991i64)), "-9007199254740991");
        assert!(to_canonical(&json!(MAX_SAFE_INTEGER + 1)).is_err());
        assert!(to_canonical(&json!(1.5)).is_err());
        assert!(to_canonical(&json!([{"a": 1.0}])).is_err());
    }
}
