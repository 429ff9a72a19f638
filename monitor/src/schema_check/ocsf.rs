//! Validating one OCSF event (a `serde_json::Value`) against the resolved 1.8.0 schema.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{
    kind,
    ocsf_schema::{AttrType, Attribute, DataType, Item, Primitive, Schema, schema},
};

/// `timestamp_t` values outside this range are taken for seconds (below) or micro/nanoseconds
/// (above) rather than the epoch milliseconds OCSF wants: 1973-03-03 to 5138-11-16.
const PLAUSIBLE_EPOCH_MS: std::ops::Range<i64> = 100_000_000_000..100_000_000_000_000;

/// Checks `event` against the OCSF 1.8.0 class its `class_uid` names. Every problem found is
/// reported, each as `path: what is wrong` (`evidences[0].process.pid: expected integer ...`).
pub fn validate_ocsf(event: &Value) -> Result<(), Vec<String>> {
    let schema = schema();
    let Some(root) = event.as_object() else {
        return Err(vec![format!(
            "(event): expected an object, found {}",
            kind(event)
        )]);
    };
    let Some(uid) = root.get("class_uid") else {
        return Err(vec!["class_uid: required attribute missing".into()]);
    };
    let Some(class) = uid.as_i64().and_then(|u| schema.classes.get(&u)) else {
        let v = schema.version.as_str();
        return Err(vec![format!(
            "class_uid: {uid} is not an OCSF {v} event class"
        )]);
    };
    let mut walk = Walk {
        schema,
        profiles: Vec::new(),
        errors: Vec::new(),
    };
    walk.read_profiles(root);
    walk.item(&class.item, root, "");

    let int = |key: &str| root.get(key).and_then(Value::as_i64);
    if let Some(category) = int("category_uid")
        && category != class.category_uid
    {
        walk.error(
            "category_uid",
            &format!(
                "{category}, but class {} is in category {} ({})",
                class.name, class.category, class.category_uid
            ),
        );
    }
    if let (Some(activity), Some(type_uid)) = (int("activity_id"), int("type_uid")) {
        let expected = class.uid * 100 + activity;
        if type_uid != expected {
            walk.error(
                "type_uid",
                &format!("{type_uid}, expected class_uid * 100 + activity_id = {expected}"),
            );
        }
    }
    let version = root.get("metadata").and_then(|m| m.get("version"));
    if let Some(Value::String(v)) = version
        && *v != schema.version
    {
        walk.error(
            "metadata.version",
            &format!("{v:?}, but validated against OCSF {}", schema.version),
        );
    }
    if walk.errors.is_empty() {
        Ok(())
    } else {
        Err(walk.errors)
    }
}

struct Walk {
    schema: &'static Schema,
    /// `metadata.profiles` of the event: which profile attributes are allowed.
    profiles: Vec<String>,
    errors: Vec<String>,
}

impl Walk {
    fn error(&mut self, path: &str, message: &str) {
        let path = if path.is_empty() { "(event)" } else { path };
        self.errors.push(format!("{path}: {message}"));
    }

    fn read_profiles(&mut self, root: &Map<String, Value>) {
        let listed = root
            .get("metadata")
            .and_then(|m| m.get("profiles"))
            .and_then(Value::as_array);
        for (i, p) in listed.into_iter().flatten().enumerate() {
            let Some(p) = p.as_str() else { continue }; // the walk reports the type
            if !self.schema.profiles.contains(p) {
                self.error(
                    &format!("metadata.profiles[{i}]"),
                    &format!("unknown profile {p:?}"),
                );
            }
            self.profiles.push(p.to_owned());
        }
    }

    fn enabled(&self, attr: &Attribute) -> bool {
        attr.profiles.is_empty() || attr.profiles.iter().any(|p| self.profiles.contains(p))
    }

    fn item(&mut self, item: &Item, map: &Map<String, Value>, path: &str) {
        // An object without attributes (`object`, used by `unmapped`) takes anything.
        if item.attributes.is_empty() {
            return;
        }
        for (key, value) in map {
            let at = join(path, key);
            match item.attributes.get(key) {
                None => self.error(
                    &at,
                    &format!("unknown attribute ({} does not define it)", item.label),
                ),
                Some(attr) if !self.enabled(attr) => self.error(
                    &at,
                    &format!(
                        "attribute of the {} profile, which metadata.profiles does not list",
                        attr.profiles.join(" or ")
                    ),
                ),
                Some(attr) => self.value(attr, value, &at),
            }
        }
        for (name, attr) in &item.attributes {
            if attr.required && self.enabled(attr) && !map.contains_key(name) {
                self.error(&join(path, name), "required attribute missing");
            }
        }
        self.siblings(item, map, path);
        self.constraints(item, map, path);
    }

    /// `severity` must be the caption of `severity_id` (case aside), unless the id is 99
    /// (Other), where the caption is the source's own word.
    fn siblings(&mut self, item: &Item, map: &Map<String, Value>, path: &str) {
        for (name, attr) in &item.attributes {
            let (Some(enumeration), Some(sibling)) = (&attr.enumeration, &attr.sibling) else {
                continue;
            };
            let (Some(id), Some(Value::String(caption))) = (map.get(name), map.get(sibling)) else {
                continue;
            };
            let key = enum_key(id);
            if key == "99" || !item.attributes.contains_key(sibling) {
                continue;
            }
            if let Some(expected) = enumeration.get(&key)
                && !expected.eq_ignore_ascii_case(caption)
            {
                self.error(
                    &join(path, sibling),
                    &format!("{caption:?} is not the caption of {name} {key} ({expected:?})"),
                );
            }
        }
    }

    fn constraints(&mut self, item: &Item, map: &Map<String, Value>, path: &str) {
        for (kind, names) in &item.constraints {
            let present = names
                .iter()
                .filter(|n| map.get(*n).is_some_and(|v| !v.is_null()))
                .count();
            let ok = match kind.as_str() {
                "at_least_one" => present >= 1,
                "just_one" => present == 1,
                _ => {
                    self.error(
                        path,
                        &format!("schema constraint {kind} of {} not understood", item.label),
                    );
                    continue;
                }
            };
            if !ok {
                self.error(
                    path,
                    &format!(
                        "{} needs {} of [{}], found {present}",
                        item.label,
                        if kind == "just_one" {
                            "exactly one"
                        } else {
                            "at least one"
                        },
                        names.join(", ")
                    ),
                );
            }
        }
    }

    fn value(&mut self, attr: &Attribute, value: &Value, path: &str) {
        match (attr.is_array, value) {
            (_, Value::Null) => self.error(path, "null: omit the attribute instead"),
            (true, Value::Array(elements)) => {
                for (i, element) in elements.iter().enumerate() {
                    self.single(attr, element, &format!("{path}[{i}]"));
                }
            }
            (true, other) => {
                self.error(
                    path,
                    &format!("expected an array of {}, found {}", attr.ty, kind(other)),
                );
            }
            (false, Value::Array(_)) => {
                self.error(path, &format!("expected {}, found an array", attr.ty));
            }
            (false, other) => self.single(attr, other, path),
        }
    }

    fn single(&mut self, attr: &Attribute, value: &Value, path: &str) {
        match &attr.ty {
            AttrType::Object(name) => {
                let Some(object) = self.schema.objects.get(name) else {
                    return self.error(path, &format!("schema bug: object {name} undefined"));
                };
                match value.as_object() {
                    Some(map) => self.item(object, map, path),
                    None => self.error(
                        path,
                        &format!("expected object {name}, found {}", kind(value)),
                    ),
                }
            }
            AttrType::Data(name) => {
                let Some(ty) = self.schema.types.get(name) else {
                    return self.error(path, &format!("schema bug: type {name} undefined"));
                };
                if let Some(problem) = check_data(ty, value) {
                    return self.error(path, &problem);
                }
                if let Some(enumeration) = &attr.enumeration {
                    let key = enum_key(value);
                    if !enumeration.contains_key(&key) {
                        let allowed: Vec<&str> = enumeration.keys().map(String::as_str).collect();
                        self.error(
                            path,
                            &format!(
                                "{key} is not a value of this enum (one of {})",
                                allowed.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// What is wrong with `value` as a `ty`, if anything.
fn check_data(ty: &DataType, value: &Value) -> Option<String> {
    let expected = || {
        format!(
            "expected {} ({}), found {}",
            ty.primitive.word(),
            ty.name,
            kind(value)
        )
    };
    let fits = match ty.primitive {
        Primitive::Boolean => value.is_boolean(),
        Primitive::Float => value.is_f64(),
        Primitive::Integer => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        Primitive::Long => value.is_i64(),
        Primitive::String => value.is_string(),
        Primitive::Json => true,
    };
    if !fits {
        return Some(expected());
    }
    if let (Some((lo, hi)), Some(n)) = (ty.range, value.as_f64())
        && !(lo..=hi).contains(&n)
    {
        return Some(format!("{value} is outside {lo}..={hi} ({})", ty.name));
    }
    if let Some(values) = &ty.values
        && !values.contains(value)
    {
        return Some(format!("{value} is not one of the {} values", ty.name));
    }
    if ty.name == "timestamp_t"
        && let Some(ms) = value.as_i64()
        && !PLAUSIBLE_EPOCH_MS.contains(&ms)
    {
        return Some(format!(
            "{ms} does not look like epoch milliseconds (timestamp_t)"
        ));
    }
    let s = value.as_str()?;
    if let Some(max) = ty.max_len
        && s.len() > max
    {
        return Some(format!("longer than {max} bytes ({})", ty.name));
    }
    if let Some(re) = &ty.regex
        && !re.is_match(s)
    {
        return Some(format!("{s:?} does not match the {} pattern", ty.name));
    }
    // The ip_t pattern lets any character separate IPv4 octets: parse it as well.
    let bare = s.trim().split('%').next().unwrap_or_default();
    if ty.name == "ip_t" && bare.parse::<IpAddr>().is_err() {
        return Some(format!("{s:?} is not an IP address (ip_t)"));
    }
    None
}

/// An enum value as the schema's keys spell it: `2`, or the string itself.
fn enum_key(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
