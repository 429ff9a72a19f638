//! Validating one ECS document (a `serde_json::Value`, nested or with dotted keys) against
//! ECS 9.4.0's `ecs_flat.yml`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    net::IpAddr,
    sync::OnceLock,
};

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::kind;

/// The ECS version documents must declare in `ecs.version`.
pub const ECS_VERSION: &str = "9.4.0";

/// Top-level keys that are ours, not ECS's: anything under them is accepted unchecked. ECS
/// reserves its own top-level names, so custom fields go under a name of the producer's.
/// (`labels.*` needs no entry: ECS defines `labels` as an object of keyword values.)
pub const CUSTOM_NAMESPACES: &[&str] = &["egress_monitor"];

/// Values that `allowed_values` lists but whose description forbids to producers:
/// `event.kind: signal` is "reserved, and data ingestion pipelines must not populate" it.
const RESERVED_VALUES: &[(&str, &str)] = &[("event.kind", "signal")];

const ECS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../spec/ecs-9.4.0/ecs_flat.yml"
);

#[derive(Deserialize)]
struct Field {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    normalize: Vec<String>,
    #[serde(default)]
    allowed_values: Vec<AllowedValue>,
    #[serde(default)]
    expected_values: Vec<String>,
    pattern: Option<String>,
    #[serde(default)]
    required: bool,
    object_type: Option<String>,
}

#[derive(Deserialize)]
struct AllowedValue {
    name: String,
}

impl Field {
    fn is_array(&self) -> bool {
        self.normalize.iter().any(|n| n == "array")
    }
}

struct Ecs {
    fields: BTreeMap<String, Field>,
    /// Every proper prefix of a field name (`threat`, `threat.tactic`): an object level.
    prefixes: HashSet<String>,
    patterns: HashMap<String, Regex>,
}

fn ecs() -> &'static Ecs {
    static ECS: OnceLock<Ecs> = OnceLock::new();
    ECS.get_or_init(|| {
        let text =
            fs::read_to_string(ECS_FILE).unwrap_or_else(|e| panic!("reading {ECS_FILE}: {e}"));
        let fields: BTreeMap<String, Field> =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {ECS_FILE}: {e}"));
        let mut prefixes = HashSet::new();
        for name in fields.keys() {
            for (i, _) in name.match_indices('.') {
                prefixes.insert(name[..i].to_owned());
            }
        }
        let patterns = fields
            .iter()
            .filter_map(|(name, f)| Some((name, f.pattern.as_deref()?)))
            .map(|(name, p)| {
                let re = Regex::new(p).unwrap_or_else(|e| panic!("ECS {name}: pattern {p:?}: {e}"));
                (name.clone(), re)
            })
            .collect();
        Ecs {
            fields,
            prefixes,
            patterns,
        }
    })
}

/// Checks `doc` against ECS 9.4.0, with [`CUSTOM_NAMESPACES`] as the custom top-level keys.
pub fn validate_ecs(doc: &Value) -> Result<(), Vec<String>> {
    validate_ecs_with_custom(doc, CUSTOM_NAMESPACES)
}

/// Checks `doc` against ECS 9.4.0; anything under a top-level key in `custom` is accepted.
pub fn validate_ecs_with_custom(doc: &Value, custom: &[&str]) -> Result<(), Vec<String>> {
    let Some(root) = doc.as_object() else {
        return Err(vec![format!(
            "(document): expected an object, found {}",
            kind(doc)
        )]);
    };
    let mut walk = Walk {
        ecs: ecs(),
        custom,
        seen: HashSet::new(),
        errors: Vec::new(),
    };
    for (key, value) in root {
        walk.value(key, key, value);
    }
    for (name, field) in &walk.ecs.fields {
        if field.required && !walk.seen.contains(name.as_str()) {
            walk.errors.push(format!("{name}: required field missing"));
        }
    }
    if walk.errors.is_empty() {
        Ok(())
    } else {
        Err(walk.errors)
    }
}

struct Walk<'a> {
    ecs: &'static Ecs,
    custom: &'a [&'a str],
    /// ECS field names present.
    seen: HashSet<&'static str>,
    errors: Vec<String>,
}

impl Walk<'_> {
    fn error(&mut self, at: &str, message: &str) {
        self.errors.push(format!("{at}: {message}"));
    }

    /// `name` is the dotted ECS field name, `at` the JSON path (with array indices).
    fn value(&mut self, name: &str, at: &str, value: &Value) {
        if value.is_null() {
            return self.error(at, "null: omit the field instead");
        }
        if let Some((key, field)) = self.ecs.fields.get_key_value(name) {
            self.seen.insert(key.as_str());
            return self.field(name, at, field, value);
        }
        if self.ecs.prefixes.contains(name) {
            return match value {
                Value::Object(map) => self.children(name, at, map),
                other => self.error(
                    at,
                    &format!(
                        "expected an object (ECS has fields {name}.*), found {}",
                        kind(other)
                    ),
                ),
            };
        }
        let top = name.split('.').next().unwrap_or_default();
        if !self.custom.contains(&top) {
            self.error(at, &format!("not an ECS {ECS_VERSION} field"));
        }
    }

    fn children(&mut self, name: &str, at: &str, map: &serde_json::Map<String, Value>) {
        for (key, v) in map {
            self.value(&format!("{name}.{key}"), &format!("{at}.{key}"), v);
        }
    }

    fn field(&mut self, name: &str, at: &str, field: &Field, value: &Value) {
        let container = matches!(field.ty.as_str(), "object" | "nested" | "flattened");
        match value {
            _ if field.ty == "geo_point" => self.element(name, at, field, value),
            Value::Array(elements) if field.is_array() || field.ty == "nested" => {
                for (i, element) in elements.iter().enumerate() {
                    self.element(name, &format!("{at}[{i}]"), field, element);
                }
            }
            Value::Array(_) if field.ty == "flattened" => {}
            Value::Array(_) => self.error(
                at,
                &format!(
                    "an array, but {name} is not an array field (its normalize has no \"array\")"
                ),
            ),
            _ if container => self.element(name, at, field, value),
            _ => self.leaf(name, at, field, value),
        }
    }

    /// One value of `field` (an array's element, or the value itself).
    fn element(&mut self, name: &str, at: &str, field: &Field, value: &Value) {
        match (field.ty.as_str(), value) {
            (_, Value::Null) => self.error(at, "null: omit the field instead"),
            ("object" | "nested", Value::Object(map)) => match &field.object_type {
                // `labels`: free keys, each value of object_type.
                Some(object_type) => {
                    for (key, v) in map {
                        let at = format!("{at}.{key}");
                        if let Some(problem) = check_type(object_type, v) {
                            self.error(&at, &problem);
                        }
                    }
                }
                // An object ECS details further (`process.io`), or an open one (`entity.raw`).
                None if self.ecs.prefixes.contains(name) => self.children(name, at, map),
                None => {}
            },
            ("object" | "nested", other) => {
                self.error(at, &format!("expected an object, found {}", kind(other)));
            }
            ("flattened", _) => {}
            ("geo_point", v) => {
                if !is_geo_point(v) {
                    self.error(at, &format!(
                        "expected a geo_point ({{\"lat\": .., \"lon\": ..}}, \"lat,lon\" or [lon, lat]), found {}",
                        kind(v)
                    ));
                }
            }
            _ => self.leaf(name, at, field, value),
        }
    }

    fn leaf(&mut self, name: &str, at: &str, field: &Field, value: &Value) {
        if let Some(problem) = check_type(&field.ty, value) {
            return self.error(at, &problem);
        }
        let Some(s) = value.as_str() else { return };
        if RESERVED_VALUES.contains(&(name, s)) {
            return self.error(at, &format!("{s:?} is reserved for Elastic's own alerts"));
        }
        let allowed: Vec<&str> = field
            .allowed_values
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        let expected: Vec<&str> = field.expected_values.iter().map(String::as_str).collect();
        for (list, what) in [(allowed, "allowed"), (expected, "expected")] {
            if !list.is_empty() && !list.contains(&s) {
                self.error(
                    at,
                    &format!(
                        "{s:?} is not one of the {what} values ({})",
                        list.join(", ")
                    ),
                );
            }
        }
        if let Some(re) = self.ecs.patterns.get(name)
            && !re.is_match(s)
        {
            self.error(
                at,
                &format!("{s:?} does not match the pattern {}", re.as_str()),
            );
        }
        if name == "ecs.version" && s != ECS_VERSION {
            self.error(
                at,
                &format!("{s:?}, but validated against ECS {ECS_VERSION}"),
            );
        }
    }
}

/// What is wrong with `value` as an ECS `ty` (an Elasticsearch field type), if anything.
fn check_type(ty: &str, value: &Value) -> Option<String> {
    let fits = match ty {
        "keyword" | "constant_keyword" | "wildcard" | "text" | "match_only_text" => {
            value.is_string()
        }
        "long" => value.is_i64(),
        "integer" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "short" => value.as_i64().is_some_and(|n| i16::try_from(n).is_ok()),
        "byte" => value.as_i64().is_some_and(|n| i8::try_from(n).is_ok()),
        "unsigned_long" => value.is_u64(),
        "float" | "double" | "scaled_float" | "half_float" => value.is_number(),
        "boolean" => value.is_boolean(),
        "date" => match value {
            Value::String(s) => s.parse::<jiff::Timestamp>().is_ok(),
            Value::Number(n) => n.is_i64(),
            _ => false,
        },
        "ip" => value.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
        other => {
            return Some(format!(
                "field type {other} not understood by this validator"
            ));
        }
    };
    if fits {
        return None;
    }
    let want = match ty {
        "keyword" | "constant_keyword" | "wildcard" | "text" | "match_only_text" => "a string",
        "long" | "integer" | "short" | "byte" | "unsigned_long" => "an integer",
        "float" | "double" | "scaled_float" | "half_float" => "a number",
        "boolean" => "a boolean",
        "date" => "an RFC 3339 date string or epoch milliseconds",
        _ => "an IP address string",
    };
    Some(format!("expected {want} ({ty}), found {}", kind(value)))
}

fn is_geo_point(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.len() == 2
                && m.get("lat").is_some_and(Value::is_number)
                && m.get("lon").is_some_and(Value::is_number)
        }
        Value::String(s) => {
            s.split(',')
                .filter_map(|p| p.trim().parse::<f64>().ok())
                .count()
                == 2
        }
        Value::Array(a) => a.len() == 2 && a.iter().all(Value::is_number),
        _ => false,
    }
}
