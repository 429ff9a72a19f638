//! Test-only validators: exported documents checked against the official schema files
//! vendored in `spec/` (see `spec/README.md`). Each returns every problem found, one string
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

mod ocsf;
mod ocsf_schema;
#[cfg(test)]
mod ocsf_tests;

pub(crate) use ocsf::validate_ocsf;
