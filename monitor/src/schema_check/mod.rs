//! Test-only validators: exported documents checked against the official schema files
//! vendored in `spec/` (see `spec/README.md`), each schema loaded once per test binary. Each returns every problem found, one string
//! per problem, starting with the JSON path (`evidences[0].process.pid: expected integer ...`).
//!
//! # OCSF 1.8.0: [`validate_ocsf`]
//!
//! The uncompiled schema (`dictionary.json`, `categories.json`, `events/`, `objects/`,
//! `profiles/`) is resolved as the OCSF schema compiler does (`$include`, `extends`,
//! `"profile": null`, dictionary merge, `*_dt` datetime siblings; see [`ocsf_schema`]); the
//! result was compared with the compiler's output for every class and object (attributes,
//! types, arrays, requirements, profiles, enum values and captions, constraints): identical.
//!
//! Checked, recursively through objects and arrays of objects:
//! - the class, found by `class_uid` (`category uid * 1000 + class uid`);
//! - every `required` attribute present; every key defined by the class or object (unknown
//!   keys are errors); profile attributes allowed only when `metadata.profiles` lists their
//!   profile, and each listed profile exists;
//! - types: `boolean_t`, `integer_t` (32-bit), `long_t`, `float_t` (a JSON number with a
//!   fraction, as the OCSF server's validator wants), strings, objects, `is_array`; each type's
//!   own `range`, `max_len`, `values` and `regex` (`ip_t`, `uuid_t`, `datetime_t`, `mac_t`...);
//! - enums: the value must be a key; a caption sibling (`severity` for `severity_id`) must
//!   match the caption, ignoring case, unless the id is 99 (Other);
//! - `category_uid` is the class's category, `type_uid == class_uid * 100 + activity_id`,
//!   `metadata.version` is the schema's version;
//! - object and class `constraints` (`at_least_one`, `just_one`).
//!
//! Stricter than the schema, because each catches an exporter bug: JSON `null` is an error
//! (omit the attribute); `timestamp_t` must look like epoch milliseconds (1973 to 5138); `ip_t`
//! must also parse as an IP address (the official pattern lets any character separate IPv4
//! octets).
//!
//! Not checked: `recommended` attributes (absence is fine), `@deprecated` attributes, objects
//! and enum values (allowed, not reported), `observables` paths matching the event, the
//! string-pattern types without a `regex` (`hostname_t`, `url_t`...), extensions (none are
//! vendored), and the semantics (that `time` is the finding's creation time and so on).
//!
//! # ECS 9.4.0: [`validate_ecs`]
//!
//! From `ecs_flat.yml` (every field by dotted name). The document may be nested, dotted
//! (`"event.kind"`) or both; each leaf's dotted name must be an ECS field, except under a
//! top-level key of [`CUSTOM_NAMESPACES`] (or the list given to [`validate_ecs_with_custom`]),
//! which is not looked into. `labels` is ECS's own: free keys, keyword (string) values.
//!
//! Checked:
//! - `@timestamp` and `ecs.version` present (`required` in the file); `ecs.version` is
//!   [`ECS_VERSION`];
//! - types: `keyword`, `constant_keyword`, `wildcard`, `text`, `match_only_text` -> string;
//!   `long`, `integer`, `short`, `byte`, `unsigned_long` -> integer in range; `float`,
//!   `double`, `scaled_float`, `half_float` -> number; `boolean`; `date` -> RFC 3339 string or
//!   integer epoch milliseconds; `ip` -> a string that parses as an address; `geo_point` ->
//!   `{lat, lon}`, `"lat,lon"` or `[lon, lat]`;
//! - arrays only for fields whose `normalize` has `array` (and `nested` fields); a single
//!   value for an array field is fine, as in Elasticsearch;
//! - `object`/`nested` fields: an object (per element for arrays), walked further when ECS
//!   defines sub-fields (`threat.enrichments[0].indicator.ip`), values of `object_type` when
//!   it has one (`labels`), anything when it defines neither (`entity.raw`); `flattened`:
//!   anything;
//! - `allowed_values` (`event.kind`, `event.category`, `event.type`, ...), and
//!   `event.kind: "signal"`, which the file lists but reserves to Elastic's own alerts.
//!
//! Stricter than Elasticsearch, which coerces: numbers are not accepted for keywords nor
//! strings for numbers; JSON `null` is an error (omit the field); `expected_values`
//! (`network.direction`: ingress, egress, ...) are enforced like `allowed_values`; `pattern`
//! (MAC addresses, hashes) is enforced.
//!
//! Not checked: multi-fields (`process.command_line.text`) are not document fields and are
//! rejected as unknown; `ignore_above` lengths; `beta` status; field semantics (that
//! `event.duration` is in nanoseconds, that `source.bytes` counts source to destination).

mod ecs;
#[cfg(test)]
mod ecs_tests;
mod ocsf;
mod ocsf_schema;
#[cfg(test)]
mod ocsf_tests;

pub(crate) use ecs::{CUSTOM_NAMESPACES, ECS_VERSION, validate_ecs, validate_ecs_with_custom};
pub(crate) use ocsf::validate_ocsf;
use serde_json::Value;

/// A JSON value in a few words, for messages: `string "12"`, `an array`.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() > 40 => "a string".into(),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
