//! JSON without the members whose value is `null`, for documents that are
//! stored to be read back by serde (absent `Option` fields read as `None`):
//! a stored user document is about half its size without them. The API
//! still renders every field.
//!
//! A `serde_json` formatter that holds each object member back until its
//! value begins, and drops it if that value is `null` — no `Value` tree.

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use std::io::{self, Write};

/// `value` as compact JSON, members with a `null` value left out.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, SkipNulls::default());
    value.serialize(&mut ser)?;
    // serde_json writes only UTF-8.
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

#[derive(Default)]
struct SkipNulls {
    /// A member's key (with its comma and colon), held until its value
    /// starts.
    pending: Vec<u8>,
    /// Whether the key being written goes to `pending`.
    in_key: bool,
    /// Per open object: whether a member has been written.
    written: Vec<bool>,
}

impl SkipNulls {
    /// A value starts: a held member is written first.
    fn flush<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        if !self.pending.is_empty() {
            w.write_all(&self.pending)?;
            self.pending.clear();
            if let Some(written) = self.written.last_mut() {
                *written = true;
            }
        }
        Ok(())
    }
}

impl Formatter for SkipNulls {
    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        if !self.pending.is_empty() {
            // A member whose value is null: dropped with its key.
            self.pending.clear();
            return Ok(());
        }
        CompactFormatter.write_null(w)
    }

    fn write_bool<W: ?Sized + Write>(&mut self, w: &mut W, value: bool) -> io::Result<()> {
        self.flush(w)?;
        CompactFormatter.write_bool(w, value)
    }

    fn write_i64<W: ?Sized + Write>(&mut self, w: &mut W, value: i64) -> io::Result<()> {
        if self.in_key {
            return CompactFormatter.write_i64(&mut self.pending, value);
        }
        self.flush(w)?;
        CompactFormatter.write_i64(w, value)
    }

    fn write_u64<W: ?Sized + Write>(&mut self, w: &mut W, value: u64) -> io::Result<()> {
        if self.in_key {
            return CompactFormatter.write_u64(&mut self.pending, value);
        }
        self.flush(w)?;
        CompactFormatter.write_u64(w, value)
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        if self.in_key {
            return CompactFormatter.write_f64(&mut self.pending, value);
        }
        self.flush(w)?;
        CompactFormatter.write_f64(w, value)
    }

    fn write_number_str<W: ?Sized + Write>(&mut self, w: &mut W, value: &str) -> io::Result<()> {
        self.flush(w)?;
        CompactFormatter.write_number_str(w, value)
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.in_key {
            self.pending.push(b'"');
            return Ok(());
        }
        self.flush(w)?;
        w.write_all(b"\"")
    }

    fn end_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.in_key {
            self.pending.push(b'"');
            return Ok(());
        }
        w.write_all(b"\"")
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if self.in_key {
            self.pending.extend_from_slice(fragment.as_bytes());
            return Ok(());
        }
        w.write_all(fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        if self.in_key {
            return CompactFormatter.write_char_escape(&mut self.pending, escape);
        }
        CompactFormatter.write_char_escape(w, escape)
    }

    fn write_raw_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        self.flush(w)?;
        w.write_all(fragment.as_bytes())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.flush(w)?;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b",")
        }
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.flush(w)?;
        self.written.push(false);
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.written.pop();
        w.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, _: &mut W, _first: bool) -> io::Result<()> {
        self.pending.clear();
        if self.written.last().copied().unwrap_or(false) {
            self.pending.push(b',');
        }
        self.in_key = true;
        Ok(())
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.in_key = false;
        Ok(())
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.pending.push(b':');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn without_nulls(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, without_nulls(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
            v => v,
        }
    }

    #[test]
    fn members_with_null_values_are_left_out_anywhere() {
        let v = json!({"a": null, "b": 1, "c": {"d": null, "e": [null, {"f": null}], "g": "x\"y"}, "h": null});
        let text = to_string(&v).expect("json");
        assert_eq!(text, r#"{"b":1,"c":{"e":[null,{}],"g":"x\"y"}}"#);
        assert_eq!(to_string(&json!({"a": null})).expect("json"), "{}");
        assert_eq!(to_string(&json!(null)).expect("json"), "null");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z\\\\\"\\n ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\\\\"]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn reads_back_as_the_value_without_its_null_members(v in json_value()) {
            let text = to_string(&v).expect("json");
            let back: Value = serde_json::from_str(&text).expect("valid JSON");
            prop_assert_eq!(back, without_nulls(v));
        }
    }
}
