//! Reading request JSON into typed requests, strictly and completely.
//!
//! serde's derived structs also accept a JSON array (fields by position),
//! and stop at the first error. Requests here are read through [`Strict`],
//! which takes a struct only from an object, and by [`parse_all`], which
//! records an error, puts a stand-in value in the bad field's place and
//! reads again, so that every bad field is reported once, whatever else is
//! wrong. The stand-ins are also the reason to drop the validation errors
//! of those fields afterwards ([`Parsed::keep`]).

use roster_command::validate::FieldError;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// A request read with every structural error: `value` is `None` only when
/// no stand-in could make it readable.
pub struct Parsed<T> {
    pub value: Option<T>,
    pub errors: Vec<FieldError>,
}

impl<T> Parsed<T> {
    /// Whether a validation error of `field` is worth reporting: not one
    /// about a field that is already reported (and holds a stand-in).
    pub fn keep(&self, field: &str) -> bool {
        keep(&self.errors, field)
    }

    /// The request, validated by `validate`; every error of both steps.
    pub fn validate<V>(self, validate: impl FnOnce(T) -> Result<V, Vec<FieldError>>) -> Result<V, Vec<FieldError>> {
        let Parsed { value, mut errors } = self;
        let Some(value) = value else { return Err(errors) };
        match validate(value) {
            Ok(v) if errors.is_empty() => Ok(v),
            Ok(_) => Err(errors),
            Err(more) => {
                let kept: Vec<FieldError> = more.into_iter().filter(|e| keep(&errors, &e.field)).collect();
                errors.extend(kept);
                Err(errors)
            }
        }
    }
}

fn keep(reported: &[FieldError], field: &str) -> bool {
    !reported.iter().any(|e| {
        field == e.field
            || field
                .strip_prefix(e.field.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

/// At most this many errors are collected per request.
const MAX_ERRORS: usize = 50;

/// Reads `value` as a `T`, reporting every unknown field, wrong type and
/// missing field (paths as `address.city`, `questions[1].code`).
pub fn parse_all<T: DeserializeOwned>(mut value: Value) -> Parsed<T> {
    let mut errors: Vec<FieldError> = Vec::new();
    // Per bad field: how many stand-ins were tried.
    let mut tried: Vec<(String, usize)> = Vec::new();
    for _ in 0..MAX_ERRORS * STAND_INS {
        let e = match serde_path_to_error::deserialize::<_, T>(Strict(&value)) {
            Ok(t) => return Parsed { value: Some(t), errors },
            Err(e) => e,
        };
        let message = e.inner().to_string();
        let mut path: Vec<Segment> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                _ => None,
            })
            .collect();
        if let Some(name) = quoted_after(&message, "unknown field ") {
            // Reported at the parent or at the field itself.
            if path.last() != Some(&Segment::Key(name.clone())) {
                path.push(Segment::Key(name.clone()));
            }
            record(&mut errors, &path, "is not a known field");
            let Some(Segment::Key(key)) = path.pop() else { break };
            match slot(&mut value, &path) {
                Some(Value::Object(parent)) => {
                    parent.remove(&key);
                }
                _ => break,
            }
            if errors.len() >= MAX_ERRORS {
                break;
            }
            continue;
        }
        if let Some(name) = quoted_after(&message, "missing field ") {
            if path.last() != Some(&Segment::Key(name.clone())) {
                path.push(Segment::Key(name));
            }
            record(&mut errors, &path, "is required");
        } else {
            record(&mut errors, &path, &message);
        }
        // The next stand-in for this field.
        let field = render(&path);
        let n = match tried.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                tried.push((field, 0));
                0
            }
        };
        let Some(stand_in) = stand_in(n, &message) else { break };
        match slot(&mut value, &path) {
            Some(v) => *v = stand_in,
            None => break,
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    Parsed { value: None, errors }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push_str("body");
    }
    out
}

/// Records an error for the field, once.
fn record(errors: &mut Vec<FieldError>, path: &[Segment], message: &str) {
    let field = render(path);
    if !errors.iter().any(|e| e.field == field) {
        errors.push(FieldError {
            field,
            message: message.to_string(),
        });
    }
}

/// The `…` after `prefix` in a serde message.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split_once(prefix)?.1.strip_prefix('`')?;
    Some(rest.split('`').next()?.to_string())
}

const STAND_INS: usize = 10;

/// The `n`th value to try in a bad field's place: absent-like first, then
/// one of each JSON type, then the forms some types parse from text (the
/// first variant an enum's error names, a UUID, a date).
fn stand_in(n: usize, message: &str) -> Option<Value> {
    let variant = quoted_after(message, "expected one of ").or_else(|| quoted_after(message, "expected "));
    [
        Some(Value::Null),
        Some(Value::String(String::new())),
        variant.map(Value::String),
        Some(Value::from(0)),
        Some(Value::Bool(false)),
        Some(Value::Object(Map::new())),
        Some(Value::Array(Vec::new())),
        Some(Value::String("00000000-0000-0000-0000-000000000000".into())),
        Some(Value::String("1970-01-01".into())),
    ]
    .into_iter()
    .flatten()
    .nth(n)
}

/// The value at `path`, creating a missing object member on the way.
fn slot<'v>(value: &'v mut Value, path: &[Segment]) -> Option<&'v mut Value> {
    let mut here = value;
    for s in path {
        here = match (s, here) {
            (Segment::Key(k), Value::Object(m)) => m.entry(k.clone()).or_insert(Value::Null),
            (Segment::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(here)
}

/// A `serde_json::Value` deserializer that reads structs and maps only
/// from objects (serde's derive also takes an array, by position).
pub struct Strict<'de>(pub &'de Value);

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(m) => visitor.visit_map(Members {
                iter: m.iter(),
                value: None,
            }),
            Value::Array(a) => visitor.visit_seq(Elements { iter: a.iter() }),
            other => de::Deserializer::deserialize_any(other, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &"an object")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct identifier ignored_any
    }
}

struct Members<'de> {
    iter: serde_json::map::Iter<'de>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Members<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(de::value::BorrowedStrDeserializer::new(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <serde_json::Error as de::Error>::custom("a value without its key"))?;
        seed.deserialize(Strict(value))
    }
}

struct Elements<'de> {
    iter: std::slice::Iter<'de, Value>,
}

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Self::Error> {
        self.iter.next().map(|v| seed.deserialize(Strict(v))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        id: String,
        #[serde(rename = "type")]
        kind: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: Option<String>,
        inner: Option<Inner>,
        list: Option<Vec<Inner>>,
        count: Option<u32>,
        kind: Option<Kind>,
        required: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Physical,
        Virtual,
    }

    fn fields<T>(p: &Parsed<T>) -> Vec<&str> {
        p.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn an_array_is_not_an_object() {
        let p = parse_all::<Outer>(json!({"inner": ["X", "Y"], "required": "r"}));
        assert_eq!(fields(&p), vec!["inner"]);
        assert!(p.value.is_some(), "read with a stand-in");
    }

    #[test]
    fn every_bad_field_is_reported_once() {
        let p = parse_all::<Outer>(json!({
            "nope": 1, "name": 5, "inner": {"id": 7, "extra": true}, "list": [{"id": "a"}],
            "count": "many", "kind": "paper"
        }));
        let mut got = fields(&p);
        got.sort();
        assert_eq!(
            got,
            vec![
                "count",
                "inner.extra",
                "inner.id",
                "inner.type",
                "kind",
                "list[0].type",
                "name",
                "nope",
                "required"
            ]
        );
        assert!(p.value.is_some());
        assert!(p.keep("inner2") && !p.keep("inner.id") && !p.keep("list[0].type") && p.keep("list[1].type"));
    }

    #[test]
    fn a_valid_request_has_no_errors() {
        let p = parse_all::<Outer>(json!({"inner": {"id": "1", "type": "T"}, "kind": "virtual", "required": "r"}));
        assert!(p.errors.is_empty() && p.value.is_some());
    }
}
