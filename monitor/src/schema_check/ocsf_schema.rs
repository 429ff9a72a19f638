//! Loading the uncompiled OCSF 1.8.0 schema (`spec/ocsf-1.8.0`) into resolved classes and
//! objects, the way the OCSF schema compiler does it:
//!
//! 1. Each class or object file: an attribute's `"profile": "x"` means "only with profile x",
//!    `"profile": null` means "not affected by any profile". `"$include": ["profiles/p.json"]`
//!    in `attributes` copies the profile's attributes (each marked as belonging to profile `p`)
//!    and merges the file's own attributes on top: so a class that lists a profile attribute
//!    with `"profile": null` (e.g. `device` in `finding`) makes it an ordinary attribute.
//! 2. `extends`: the parent, resolved first, with the child's attributes merged on top (maps
//!    merged deeply, so enums are unions); other top-level keys (`constraints`, `category`,
//!    `uid`) are replaced by the child's.
//! 3. Each attribute is merged on top of its `dictionary.json` entry (type, `is_array`,
//!    `enum`, `sibling`), and each `timestamp_t` attribute `x` gets an `x_dt` sibling
//!    (`datetime_t`) that only the `datetime` profile allows.
//!
//! A class's `class_uid` is `category uid * 1000 + uid`; only files with their own `uid` are
//! classes that events can name (`finding`, `network`, `base_event` are not).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use regex::Regex;
use serde_json::{Map, Value};

/// The vendored schema directory.
pub(super) const OCSF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/ocsf-1.8.0");

/// The resolved schema: what the validator walks.
pub(super) struct Schema {
    /// `version.json`: what `metadata.version` must say.
    pub(super) version: String,
    pub(super) types: HashMap<String, DataType>,
    /// Event classes by `class_uid`.
    pub(super) classes: HashMap<i64, Class>,
    /// Objects by name.
    pub(super) objects: HashMap<String, Item>,
    /// Profile names (`profiles/*.json`), which `metadata.profiles` may list.
    pub(super) profiles: HashSet<String>,
}

/// The JSON representation a data type needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Primitive {
    Boolean,
    /// `float_t`: a JSON number written with a fraction or exponent (as the OCSF server's
    /// validator demands: `1` is not a float, `1.0` is).
    Float,
    /// 32-bit signed.
    Integer,
    /// 64-bit signed.
    Long,
    String,
    /// `json_t`: anything.
    Json,
}

impl Primitive {
    pub(super) fn word(self) -> &'static str {
        match self {
            Self::Boolean => "boolean",
            Self::Float => "float",
            Self::Integer => "integer",
            Self::Long => "integer (64-bit)",
            Self::String => "string",
            Self::Json => "JSON value",
        }
    }
}

/// A `dictionary.json` type (`types.attributes`), with the limits of its own definition.
pub(super) struct DataType {
    pub(super) name: String,
    pub(super) primitive: Primitive,
    pub(super) regex: Option<Regex>,
    pub(super) max_len: Option<usize>,
    pub(super) range: Option<(f64, f64)>,
    pub(super) values: Option<Vec<Value>>,
}

/// A resolved class or object.
pub(super) struct Item {
    /// `class detection_finding` or `object network_endpoint`, for messages.
    pub(super) label: String,
    pub(super) attributes: BTreeMap<String, Attribute>,
    /// `(kind, attribute names)`: `at_least_one` or `just_one` (or anything newer, reported).
    pub(super) constraints: Vec<(String, Vec<String>)>,
}

pub(super) struct Class {
    pub(super) item: Item,
    pub(super) name: String,
    pub(super) uid: i64,
    pub(super) category: String,
    pub(super) category_uid: i64,
}

pub(super) struct Attribute {
    pub(super) ty: AttrType,
    pub(super) is_array: bool,
    pub(super) required: bool,
    /// Empty: always allowed; otherwise allowed when `metadata.profiles` lists one of these.
    pub(super) profiles: Vec<String>,
    /// Enum value (as written in the schema: `"2"`, `"GET"`) -> caption.
    pub(super) enumeration: Option<BTreeMap<String, String>>,
    /// The attribute holding this enum's caption (`severity` for `severity_id`).
    pub(super) sibling: Option<String>,
}

pub(super) enum AttrType {
    /// A dictionary type name (`string_t`, `port_t`, ...).
    Data(String),
    /// An object name (`network_endpoint`, ...).
    Object(String),
}

impl std::fmt::Display for AttrType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(t) => f.write_str(t),
            Self::Object(o) => write!(f, "object {o}"),
        }
    }
}

/// The schema, loaded once per test binary.
pub(super) fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| load(Path::new(OCSF_DIR)))
}

fn load(dir: &Path) -> Schema {
    let dictionary = read_json(&dir.join("dictionary.json"));
    let dict_attrs = member_map(&dictionary, "attributes", "dictionary.json");
    let types = load_types(member_map(
        dictionary.get("types").unwrap_or(&Value::Null),
        "attributes",
        "dictionary.json types",
    ));
    let categories = read_json(&dir.join("categories.json"));
    let categories = member_map(&categories, "attributes", "categories.json");
    let version = read_json(&dir.join("version.json"))
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}/version.json: no version", dir.display()))
        .to_owned();
    let profiles = json_files(&dir.join("profiles"))
        .iter()
        .map(|p| name_of(&read_json(p), p))
        .collect();

    let raw_objects = read_items(dir, &json_files(&dir.join("objects")));
    let raw_classes = read_items(dir, &json_files(&dir.join("events")));
    let object_names: HashSet<String> = raw_objects.keys().cloned().collect();
    let finish = |raw: &BTreeMap<String, Map<String, Value>>, name: &str, label: String| {
        let resolved = resolve_extends(raw, name, &mut Vec::new());
        finish_item(&resolved, label, dict_attrs, &types, &object_names)
    };

    let mut objects: HashMap<String, Item> = raw_objects
        .keys()
        .map(|name| {
            (
                name.clone(),
                finish(&raw_objects, name, format!("object {name}")),
            )
        })
        .collect();
    let observable_type = objects
        .get_mut("observable")
        .and_then(|o| o.attributes.get_mut("type_id"))
        .and_then(|a| a.enumeration.as_mut())
        .unwrap_or_else(|| panic!("OCSF: no enum observable.type_id"));
    observable_type.extend(observable_type_ids(&dictionary, &raw_objects, &raw_classes));

    let mut classes = HashMap::new();
    for (name, raw) in &raw_classes {
        // Only a file with its own uid is a class an event can name, and base_event (uid 0,
        // category "other", which categories.json does not define: category_uid 0).
        let uid = match raw.get("uid").and_then(Value::as_i64) {
            Some(uid) => uid,
            None if name == "base_event" => 0,
            None => continue,
        };
        let resolved = resolve_extends(&raw_classes, name, &mut Vec::new());
        let category = resolved
            .get("category")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("OCSF class {name}: no category"))
            .to_owned();
        let category_uid = match categories.get(&category).and_then(|c| c.get("uid")) {
            Some(uid) => uid
                .as_i64()
                .unwrap_or_else(|| panic!("category {category}: uid {uid}")),
            None if name == "base_event" => 0,
            None => panic!("OCSF class {name}: unknown category {category}"),
        };
        let class_uid = category_uid * 1000 + uid;
        let mut item = finish_item(
            &resolved,
            format!("class {name} ({class_uid})"),
            dict_attrs,
            &types,
            &object_names,
        );
        // The compiler replaces these enums with the class's own values; the validator checks
        // them directly (class found by class_uid, category_uid, type_uid arithmetic).
        for computed in ["class_uid", "category_uid", "type_uid"] {
            if let Some(a) = item.attributes.get_mut(computed) {
                a.enumeration = None;
            }
        }
        let class = Class {
            item,
            name: name.clone(),
            uid: class_uid,
            category,
            category_uid,
        };
        if let Some(other) = classes.insert(class_uid, class) {
            panic!(
                "OCSF class_uid {class_uid} defined twice ({name}, {})",
                other.name
            );
        }
    }
    Schema {
        version,
        types,
        classes,
        objects,
        profiles,
    }
}

/// The values of `observable.type_id`, which the compiler gathers from every `observable`
/// number in the schema (types, dictionary attributes, objects, class and object attributes,
/// class `observables`), with captions as it makes them.
fn observable_type_ids(
    dictionary: &Value,
    raw_objects: &BTreeMap<String, Map<String, Value>>,
    raw_classes: &BTreeMap<String, Map<String, Value>>,
) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    let caption = |v: &Value| {
        v.get("caption")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for section in [
        dictionary.get("types").and_then(|t| t.get("attributes")),
        dictionary.get("attributes"),
    ] {
        for def in section
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(Map::values)
        {
            if let Some(id) = def.get("observable") {
                ids.insert(id.to_string(), caption(def));
            }
        }
    }
    for (kind, items) in [("Object", raw_objects), ("Class", raw_classes)] {
        for item in items.values() {
            let item_caption = caption(&Value::Object(item.clone()));
            if let Some(id) = item.get("observable") {
                ids.insert(id.to_string(), item_caption.clone());
            }
            let attrs = item
                .get("attributes")
                .and_then(Value::as_object)
                .into_iter()
                .flatten();
            let paths = item
                .get("observables")
                .and_then(Value::as_object)
                .into_iter()
                .flatten();
            for (name, id) in attrs
                .filter_map(|(n, a)| Some((n, a.get("observable")?)))
                .chain(paths)
            {
                ids.insert(id.to_string(), format!("{item_caption} {kind}: {name}"));
            }
        }
    }
    ids
}

fn load_types(defs: &Map<String, Value>) -> HashMap<String, DataType> {
    let primitive_of = |name: &str| match name {
        "boolean_t" => Some(Primitive::Boolean),
        "float_t" => Some(Primitive::Float),
        "integer_t" => Some(Primitive::Integer),
        "long_t" => Some(Primitive::Long),
        "string_t" => Some(Primitive::String),
        "json_t" => Some(Primitive::Json),
        _ => None,
    };
    defs.iter()
        .map(|(name, def)| {
            let base = def.get("type").and_then(Value::as_str).unwrap_or(name);
            let primitive = primitive_of(base)
                .unwrap_or_else(|| panic!("OCSF type {name}: base type {base} is not primitive"));
            let regex = def.get("regex").and_then(Value::as_str).map(|r| {
                Regex::new(r).unwrap_or_else(|e| panic!("OCSF type {name}: regex {r:?}: {e}"))
            });
            let range = def
                .get("range")
                .and_then(Value::as_array)
                .and_then(|r| Some((r.first()?.as_f64()?, r.get(1)?.as_f64()?)));
            let dt = DataType {
                name: name.clone(),
                primitive,
                regex,
                max_len: def
                    .get("max_len")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
                range,
                values: def.get("values").and_then(Value::as_array).cloned(),
            };
            (name.clone(), dt)
        })
        .collect()
}

/// Class or object files by `name`, with `profile` upgraded and `$include`s resolved.
fn read_items(dir: &Path, files: &[PathBuf]) -> BTreeMap<String, Map<String, Value>> {
    let mut items = BTreeMap::new();
    for path in files {
        let Value::Object(mut item) = read_json(path) else {
            panic!("{}: not a JSON object", path.display());
        };
        let name = name_of(&Value::Object(item.clone()), path);
        let mut attrs = match item.remove("attributes") {
            Some(Value::Object(a)) => a,
            _ => Map::new(),
        };
        upgrade_profiles(&mut attrs);
        attrs = resolve_includes(dir, attrs, path);
        item.insert("attributes".into(), Value::Object(attrs));
        let first = items.insert(name.clone(), item).is_none();
        assert!(
            first,
            "OCSF: two definitions named {name} (second in {})",
            path.display()
        );
    }
    items
}

/// `"profile": "x"` -> `"profiles": ["x"]`, `"profile": null` -> `"profiles": null`.
fn upgrade_profiles(attrs: &mut Map<String, Value>) {
    for attr in attrs.values_mut() {
        if let Value::Object(a) = attr
            && let Some(p) = a.remove("profile")
        {
            let profiles = if p.is_null() {
                Value::Null
            } else {
                Value::Array(vec![p])
            };
            a.insert("profiles".into(), profiles);
        }
    }
}

fn resolve_includes(dir: &Path, mut attrs: Map<String, Value>, from: &Path) -> Map<String, Value> {
    let includes = match attrs.remove("$include") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(other) => panic!("{}: $include is {other}", from.display()),
    };
    for file in includes {
        let included = read_json(&dir.join(&file));
        let mut merged = member_map(&included, "attributes", &file).clone();
        if included.get("meta").and_then(Value::as_str) == Some("profile") {
            let profile = name_of(&included, &dir.join(&file));
            for attr in merged.values_mut() {
                if let Value::Object(a) = attr {
                    a.insert(
                        "profiles".into(),
                        Value::Array(vec![Value::String(profile.clone())]),
                    );
                }
            }
        }
        merge_attributes(&mut merged, &attrs);
        attrs = merged;
    }
    // An attribute-level `$include` (an enum file) is merged under the attribute.
    for attr in attrs.values_mut() {
        if let Value::Object(a) = attr
            && let Some(Value::String(file)) = a.remove("$include")
        {
            let mut base = read_json(&dir.join(&file));
            deep_merge(&mut base, &Value::Object(a.clone()));
            *attr = base;
        }
    }
    attrs
}

/// The class or object `name`, its `extends` chain resolved.
fn resolve_extends(
    raw: &BTreeMap<String, Map<String, Value>>,
    name: &str,
    chain: &mut Vec<String>,
) -> Map<String, Value> {
    assert!(
        !chain.iter().any(|c| c == name),
        "OCSF: extends cycle {chain:?} -> {name}"
    );
    let item = raw
        .get(name)
        .unwrap_or_else(|| panic!("OCSF: {chain:?} extends undefined {name}"));
    let Some(parent) = item.get("extends").and_then(Value::as_str) else {
        return item.clone();
    };
    chain.push(name.to_owned());
    let mut resolved = resolve_extends(raw, parent, chain);
    chain.pop();
    for (key, value) in item {
        match (key.as_str(), value) {
            ("attributes", Value::Object(attrs)) => {
                let Some(Value::Object(base)) = resolved.get_mut("attributes") else {
                    resolved.insert(key.clone(), value.clone());
                    continue;
                };
                merge_attributes(base, attrs);
            }
            ("profiles", _) => {
                let base = resolved.remove("profiles").unwrap_or(Value::Null);
                resolved.insert(key.clone(), union(&base, value));
            }
            _ => {
                resolved.insert(key.clone(), value.clone());
            }
        }
    }
    resolved
}

/// Merges `src`'s attributes on top of `dest`'s: details deep-merged, `profiles` unioned
/// unless the source says `null` (not affected by profiles).
fn merge_attributes(dest: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (name, s) in src {
        match (dest.get_mut(name), s) {
            (Some(Value::Object(d)), Value::Object(s)) => {
                for (key, v) in s {
                    let merged = match (key.as_str(), d.get_mut(key)) {
                        ("profiles", Some(old)) if !old.is_null() && !v.is_null() => union(old, v),
                        (_, Some(old)) => {
                            deep_merge(old, v);
                            continue;
                        }
                        (_, None) => v.clone(),
                    };
                    d.insert(key.clone(), merged);
                }
            }
            _ => {
                dest.insert(name.clone(), s.clone());
            }
        }
    }
}

fn union(a: &Value, b: &Value) -> Value {
    let mut all: Vec<Value> = [a, b]
        .iter()
        .filter_map(|v| v.as_array())
        .flatten()
        .cloned()
        .collect();
    all.sort_by_key(ToString::to_string);
    all.dedup();
    Value::Array(all)
}

/// Maps merged key by key, recursively; anything else replaced by `src`.
fn deep_merge(dest: &mut Value, src: &Value) {
    match (dest, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(old) => deep_merge(old, v),
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (dest, src) => *dest = src.clone(),
    }
}

fn finish_item(
    item: &Map<String, Value>,
    label: String,
    dictionary: &Map<String, Value>,
    types: &HashMap<String, DataType>,
    objects: &HashSet<String>,
) -> Item {
    let mut attributes = BTreeMap::new();
    let empty = Map::new();
    let attrs = item
        .get("attributes")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, attr) in attrs {
        let mut merged = dictionary
            .get(name)
            .unwrap_or_else(|| panic!("OCSF {label}: attribute {name} not in the dictionary"))
            .clone();
        deep_merge(&mut merged, attr);
        let ty = merged
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ty = if types.contains_key(ty) {
            AttrType::Data(ty.to_owned())
        } else if objects.contains(ty) {
            AttrType::Object(ty.to_owned())
        } else {
            panic!("OCSF {label}: attribute {name} has unknown type {ty:?}")
        };
        let is_array = merged
            .get("is_array")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if matches!(&ty, AttrType::Data(t) if t == "timestamp_t") {
            attributes.entry(format!("{name}_dt")).or_insert(Attribute {
                ty: AttrType::Data("datetime_t".into()),
                is_array,
                required: false,
                profiles: vec!["datetime".into()],
                enumeration: None,
                sibling: None,
            });
        }
        let enumeration = merged.get("enum").and_then(Value::as_object).map(|e| {
            e.iter()
                .map(|(k, v)| {
                    let caption = v.get("caption").and_then(Value::as_str).unwrap_or_default();
                    (k.clone(), caption.to_owned())
                })
                .collect()
        });
        let profiles = merged
            .get("profiles")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        attributes.insert(
            name.clone(),
            Attribute {
                ty,
                is_array,
                required: merged.get("requirement").and_then(Value::as_str) == Some("required"),
                profiles,
                enumeration,
                sibling: merged
                    .get("sibling")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
        );
    }
    let constraints = item
        .get("constraints")
        .and_then(Value::as_object)
        .map(|c| {
            c.iter()
                .map(|(kind, names)| {
                    let names = names.as_array().map(Vec::as_slice).unwrap_or_default();
                    let names = names.iter().filter_map(Value::as_str).map(str::to_owned);
                    (kind.clone(), names.collect())
                })
                .collect()
        })
        .unwrap_or_default();
    Item {
        label,
        attributes,
        constraints,
    }
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading the OCSF schema file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn member_map<'a>(v: &'a Value, key: &str, what: &str) -> &'a Map<String, Value> {
    v.get(key)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("OCSF {what}: no {key} object"))
}

fn name_of(item: &Value, path: &Path) -> String {
    item.get("name")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}: no name", path.display()))
        .to_owned()
}

/// `*.json` under `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("listing {}: {e}", d.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
