//! JSON Patch (RFC 6902) documents aimed at an org, without I/O: what is
//! malformed (400), what is well formed but cannot apply to an org (422),
//! and whether the `test` operations hold against the org's current values
//! (409 when not).
//!
//! The document a patch addresses is the org as `GET /v1/orgs/{id}` returns
//! it, so the paths are its member names. Two of them can be replaced,
//! `/display_name` and `/allow_custom_sso`; the kebab-case spellings
//! `/display-name` and `/allow-custom-sso` are accepted too, as the API's
//! first callers were written against them. Only `replace` and `test`
//! apply: the members always exist and are scalars, so `add`, `remove`,
//! `move` and `copy` have no meaning here.
//!
//! Every member can be tested, the read-only ones (`/id`, `/etag`,
//! `/member_count`, `/create_time`, `/update_time`) included, with RFC 6902
//! section 4.6's JSON equality: a value of another JSON type than the
//! member's (`"false"` for `/allow_custom_sso`) is a test that does not
//! hold (409), not a malformed patch. A test of `/etag` with a string
//! becomes UpdateOrg's etag precondition, checked in the write's own
//! transaction.

use serde_json::{Map, Value};

/// Paths a patch may replace, for messages.
const UPDATABLE: &str = "/allow_custom_sso and /display_name";

/// What one operation of a patch does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `replace` of `/display_name`.
    SetDisplayName(String),
    /// `replace` of `/allow_custom_sso`.
    SetAllowCustomSso(bool),
    /// `test` of `/etag` with a string: the etag the org must have before
    /// the patch.
    TestEtag(String),
    /// Any other `test`: the org's member `member` (as GET shows it) must
    /// equal `value`.
    Test { member: &'static str, value: Value },
}

/// One operation of a patch that can apply to an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub step: Step,
    /// The path as the caller wrote it, for messages.
    pub path: String,
    /// Where the operation is in the request body, as a JSON Pointer: ""
    /// for a lone operation object, "/2" for the third of an array. Errors
    /// name locations relative to it.
    pub at: String,
}

/// Why a patch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchErrorKind {
    /// The body is not JSON.
    NotJson,
    /// JSON, but not a JSON Patch: a missing or ill-typed member, an
    /// unknown op, a path that is not a JSON Pointer, a `replace` value of
    /// the wrong type for its path.
    Malformed,
    /// A well-formed op that cannot apply to an org (add, remove, move,
    /// copy).
    UnsupportedOp,
    /// A path that is not a member of the org, or a `replace` of a member
    /// that is not updatable.
    UnsupportedPath,
    /// A `test` did not hold.
    TestFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    pub kind: PatchErrorKind,
    /// Where in the request body, as a JSON Pointer ("" is the whole body).
    pub field: String,
    pub message: String,
}

impl PatchError {
    fn new(kind: PatchErrorKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        PatchError {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }
}

fn malformed(field: impl Into<String>, message: impl Into<String>) -> PatchError {
    PatchError::new(PatchErrorKind::Malformed, field, message)
}

/// Parses a patch: an array of operation objects, or one operation object
/// on its own (the form the API's first callers send). An empty array is a
/// valid patch that changes nothing.
pub fn parse(body: &[u8]) -> Result<Vec<Operation>, PatchError> {
    let document: Value = serde_json::from_slice(body).map_err(|err| {
        PatchError::new(
            PatchErrorKind::NotJson,
            "",
            format!("the body is not JSON: {err}"),
        )
    })?;
    match &document {
        Value::Array(ops) => ops
            .iter()
            .enumerate()
            .map(|(i, op)| operation(op, format!("/{i}")))
            .collect(),
        Value::Object(_) => Ok(vec![operation(&document, String::new())?]),
        _ => Err(malformed(
            "",
            "a JSON Patch is an array of operation objects (or a single operation object)",
        )),
    }
}

/// The two ops that apply to an org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replace,
    Test,
}

fn operation(op: &Value, at: String) -> Result<Operation, PatchError> {
    let Value::Object(members) = op else {
        return Err(malformed(at, "each operation must be a JSON object"));
    };
    let name = string_member(members, "op", &at)?;
    let path = string_member(members, "path", &at)?;
    if !matches!(
        name,
        "add" | "remove" | "replace" | "move" | "copy" | "test"
    ) {
        return Err(malformed(
            format!("{at}/op"),
            format!(
                "unknown op {:?}: JSON Patch ops are add, remove, replace, move, copy and test",
                shorten(name)
            ),
        ));
    }
    check_pointer(path, &format!("{at}/path"))?;
    // Well-formedness comes first (RFC 6902 section 4): a move without
    // "from" is malformed whether or not moves could apply.
    if matches!(name, "move" | "copy") {
        check_pointer(string_member(members, "from", &at)?, &format!("{at}/from"))?;
    }
    let value = match name {
        "add" | "replace" | "test" => Some(members.get("value").ok_or_else(|| {
            malformed(format!("{at}/value"), format!("required for op {name:?}"))
        })?),
        _ => None,
    };
    let action = match name {
        "replace" => Action::Replace,
        "test" => Action::Test,
        _ => {
            return Err(PatchError::new(
                PatchErrorKind::UnsupportedOp,
                format!("{at}/op"),
                format!(
                    "op {name:?} does not apply to an org, whose members always exist and are \
                     scalars: use \"replace\" (and \"test\" for conditions)"
                ),
            ));
        }
    };
    // `replace` and `test` always carry a value (checked above).
    let step = step(path, action, value.unwrap_or(&Value::Null), &at)?;
    Ok(Operation {
        step,
        path: path.to_owned(),
        at,
    })
}

fn string_member<'a>(
    members: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<&'a str, PatchError> {
    match members.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(malformed(format!("{at}/{name}"), "must be a string")),
        None => Err(malformed(format!("{at}/{name}"), "required")),
    }
}

/// A JSON Pointer (RFC 6901) is "" or "/"-prefixed tokens in which `~`
/// only starts the escapes `~0` and `~1`.
fn check_pointer(pointer: &str, field: &str) -> Result<(), PatchError> {
    let escapes_ok = pointer
        .split('~')
        .skip(1)
        .all(|after| after.starts_with(['0', '1']));
    if (pointer.is_empty() || pointer.starts_with('/')) && escapes_ok {
        Ok(())
    } else {
        Err(malformed(
            field,
            format!(
                "{:?} is not a JSON Pointer (such as \"/allow_custom_sso\")",
                shorten(pointer)
            ),
        ))
    }
}

/// The org's member a path names, as GET's JSON spells it.
fn member(path: &str) -> Option<&'static str> {
    Some(match path {
        "/display_name" | "/display-name" => "display_name",
        "/allow_custom_sso" | "/allow-custom-sso" => "allow_custom_sso",
        "/etag" => "etag",
        "/id" => "id",
        "/member_count" => "member_count",
        "/create_time" => "create_time",
        "/update_time" => "update_time",
        _ => return None,
    })
}

fn step(path: &str, action: Action, value: &Value, at: &str) -> Result<Step, PatchError> {
    let unsupported = |message: String| {
        Err(PatchError::new(
            PatchErrorKind::UnsupportedPath,
            format!("{at}/path"),
            message,
        ))
    };
    let Some(member) = member(path) else {
        return if path.is_empty() {
            unsupported(format!(
                "a patch cannot replace or test the whole org; name one of its members, \
                 such as {UPDATABLE}"
            ))
        } else {
            unsupported(format!(
                "unknown path {:?}; the paths a patch may replace are {UPDATABLE}",
                shorten(path)
            ))
        };
    };
    let value_field = format!("{at}/value");
    match (action, member, value) {
        (Action::Replace, "display_name", Value::String(name)) => {
            Ok(Step::SetDisplayName(name.clone()))
        }
        (Action::Replace, "display_name", _) => Err(malformed(value_field, "must be a string")),
        (Action::Replace, "allow_custom_sso", Value::Bool(allow)) => {
            Ok(Step::SetAllowCustomSso(*allow))
        }
        (Action::Replace, "allow_custom_sso", _) => {
            Err(malformed(value_field, "must be true or false"))
        }
        (Action::Replace, "etag", _) => unsupported(
            "/etag is set by the server: it can be tested (op \"test\"), not replaced".into(),
        ),
        (Action::Replace, _, _) => unsupported(format!(
            "{path} is read-only: it can be tested (op \"test\"), not replaced; the paths a \
             patch may replace are {UPDATABLE}"
        )),
        (Action::Test, "etag", Value::String(etag)) => Ok(Step::TestEtag(etag.clone())),
        // A value of any type is a well-formed test (RFC 6902 section
        // 4.6); one of the wrong type simply never holds.
        (Action::Test, member, value) => Ok(Step::Test {
            member,
            value: value.clone(),
        }),
    }
}

/// The org as a patch sees it: its JSON document, as GET returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    document: Map<String, Value>,
}

impl Current {
    /// `document` is the org's JSON object; anything else has no members.
    pub fn new(document: Value) -> Current {
        Current {
            document: match document {
                Value::Object(members) => members,
                _ => Map::new(),
            },
        }
    }

    fn etag(&self) -> Option<&str> {
        self.document.get("etag").and_then(Value::as_str)
    }
}

/// What a patch whose tests held amounts to: one UpdateOrg.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    /// The last display name replaced, and where its value was in the body.
    pub display_name: Option<(String, String)>,
    pub allow_custom_sso: Option<bool>,
    /// The etag the org must still have when the change is written.
    pub expected_etag: Option<String>,
}

impl Change {
    /// True when the patch replaces nothing (only tests, or no operation).
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.allow_custom_sso.is_none()
    }
}

/// Whether [`evaluate`] needs the org's current values: to test a member,
/// or to answer a patch that changes nothing. A patch of replaces (and
/// `/etag` tests) needs no read: the write itself checks the etag.
pub fn needs_current(ops: &[Operation]) -> bool {
    let tests_a_member = ops.iter().any(|op| matches!(op.step, Step::Test { .. }));
    let replaces = ops.iter().any(|op| {
        matches!(
            op.step,
            Step::SetDisplayName(_) | Step::SetAllowCustomSso(_)
        )
    });
    tests_a_member || !replaces
}

/// Applies `ops` in order to a working copy of `current`, as RFC 6902
/// asks (a test sees the replaces before it), and sums them up as one
/// change. Member tests are checked against `current` as read before the
/// write, so the change then carries `current`'s etag: if the org changes
/// between that read and the write, the write fails (409) instead of
/// applying a patch whose tests no longer hold. `/etag` tests compare with
/// the org as it was before the patch, and so do tests of the other
/// members the server sets (`/update_time`, ...).
///
/// `current` must be given when [`needs_current`] says so; without it a
/// member test cannot hold.
pub fn evaluate(ops: &[Operation], current: Option<&Current>) -> Result<Change, PatchError> {
    let mut doc = current.map(|c| c.document.clone());
    let mut change = Change::default();
    let mut tested_a_member = false;
    for op in ops {
        let failed = |message: String| {
            Err(PatchError::new(
                PatchErrorKind::TestFailed,
                op.at.clone(),
                format!("test failed: {message}"),
            ))
        };
        match &op.step {
            Step::TestEtag(etag) => {
                // UpdateOrg reads an empty etag as "no precondition": a test
                // that can never hold must not turn into no test at all.
                if etag.is_empty() {
                    return failed("an org's etag is never empty".into());
                }
                let before = change
                    .expected_etag
                    .as_deref()
                    .or(current.and_then(Current::etag));
                if let Some(before) = before
                    && before != etag
                {
                    return failed(format!("the org's etag is {before:?}, not {etag:?}"));
                }
                change.expected_etag = Some(etag.clone());
            }
            Step::Test { member, value } => {
                tested_a_member = true;
                let Some(actual) = doc.as_ref().and_then(|doc| doc.get(*member)) else {
                    return failed(format!("{} could not be read", op.path));
                };
                if !json_equal(actual, value) {
                    return failed(format!(
                        "{} is {}, not {}",
                        op.path,
                        shorten(&actual.to_string()),
                        shorten(&value.to_string())
                    ));
                }
            }
            Step::SetDisplayName(name) => {
                if let Some(doc) = &mut doc {
                    doc.insert("display_name".into(), Value::String(name.clone()));
                }
                change.display_name = Some((name.clone(), format!("{}/value", op.at)));
            }
            Step::SetAllowCustomSso(allow) => {
                if let Some(doc) = &mut doc {
                    doc.insert("allow_custom_sso".into(), Value::Bool(*allow));
                }
                change.allow_custom_sso = Some(*allow);
            }
        }
    }
    if tested_a_member && change.expected_etag.is_none() {
        change.expected_etag = current.and_then(Current::etag).map(str::to_owned);
    }
    Ok(change)
}

/// JSON equality as RFC 6902 section 4.6 defines it for `test`: the same
/// type, numbers numerically equal (`2` and `2.0`), strings code point by
/// code point, arrays element by element, objects member by member
/// whatever their order.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                // One is not an integer (or they are integers of opposite
                // signs beyond i64): compare their values.
                _ => x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

/// Keeps messages short when a caller sends a huge string.
fn shorten(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.chars().count() <= SHOWN {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(SHOWN).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PatchErrorKind::*;

    fn err(body: &str) -> (PatchErrorKind, String) {
        let e = parse(body.as_bytes()).unwrap_err();
        (e.kind, e.field)
    }

    /// The org as GET shows it.
    fn current(allow: bool) -> Current {
        Current::new(serde_json::json!({
            "id": "acme",
            "display_name": "Acme",
            "allow_custom_sso": allow,
            "etag": "r3",
            "member_count": 12,
            "create_time": "2023-11-14T22:13:20.000000Z",
            "update_time": "2023-11-14T22:13:21.500000Z",
        }))
    }

    #[test]
    fn a_lone_object_and_an_array_parse_alike() {
        let lone =
            parse(br#"{"op": "replace", "path": "/allow-custom-sso", "value": false}"#).unwrap();
        assert_eq!(
            lone,
            vec![Operation {
                step: Step::SetAllowCustomSso(false),
                path: "/allow-custom-sso".into(),
                at: String::new(),
            }]
        );
        let array = parse(
            br#"[{"op": "test", "path": "/etag", "value": "r3"},
                 {"op": "replace", "path": "/display_name", "value": "Acme", "extra": 1}]"#,
        )
        .unwrap();
        assert_eq!(array[0].step, Step::TestEtag("r3".into()));
        assert_eq!(array[1].step, Step::SetDisplayName("Acme".into()));
        assert_eq!(array[1].at, "/1");
        assert_eq!(parse(b"[]").unwrap(), vec![]);
        for path in [
            "/allow_custom_sso",
            "/allow-custom-sso",
            "/display_name",
            "/display-name",
        ] {
            let value = if path.contains("sso") {
                "true"
            } else {
                "\"x\""
            };
            let body = format!(r#"{{"op":"replace","path":"{path}","value":{value}}}"#);
            parse(body.as_bytes()).unwrap();
        }
    }

    #[test]
    fn malformed_patches_are_400_naming_the_member() {
        for (body, kind, field) in [
            ("", NotJson, ""),
            ("{", NotJson, ""),
            (r#"{"op": "replace", "path": "/etag""#, NotJson, ""),
            ("42", Malformed, ""),
            (r#""replace""#, Malformed, ""),
            ("[1]", Malformed, "/0"),
            (
                r#"{"path": "/display_name", "value": "x"}"#,
                Malformed,
                "/op",
            ),
            (
                r#"{"op": 1, "path": "/display_name", "value": "x"}"#,
                Malformed,
                "/op",
            ),
            (
                r#"{"op": "frobnicate", "path": "/display_name", "value": "x"}"#,
                Malformed,
                "/op",
            ),
            (
                r#"{"op": "Replace", "path": "/display_name", "value": "x"}"#,
                Malformed,
                "/op",
            ),
            (r#"{"op": "replace", "value": "x"}"#, Malformed, "/path"),
            (
                r#"{"op": "replace", "path": 7, "value": "x"}"#,
                Malformed,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "display_name", "value": "x"}"#,
                Malformed,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "/a~2b", "value": "x"}"#,
                Malformed,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "/display_name"}"#,
                Malformed,
                "/value",
            ),
            (
                r#"{"op": "replace", "path": "/allow_custom_sso", "value": "false"}"#,
                Malformed,
                "/value",
            ),
            (
                r#"{"op": "replace", "path": "/allow-custom-sso", "value": null}"#,
                Malformed,
                "/value",
            ),
            (
                r#"{"op": "replace", "path": "/display_name", "value": 5}"#,
                Malformed,
                "/value",
            ),
            (
                r#"{"op": "move", "path": "/display_name"}"#,
                Malformed,
                "/from",
            ),
            (
                r#"[{"op": "test", "path": "/etag", "value": "r1"}, {"op": "replace", "path": "/allow_custom_sso", "value": 0}]"#,
                Malformed,
                "/1/value",
            ),
        ] {
            assert_eq!(err(body), (kind, field.to_owned()), "{body}");
        }
    }

    #[test]
    fn well_formed_patches_that_cannot_apply_are_422() {
        for (body, kind, field) in [
            (
                r#"{"op": "add", "path": "/display_name", "value": "x"}"#,
                UnsupportedOp,
                "/op",
            ),
            (
                r#"{"op": "remove", "path": "/display_name"}"#,
                UnsupportedOp,
                "/op",
            ),
            (
                r#"{"op": "move", "from": "/display_name", "path": "/x"}"#,
                UnsupportedOp,
                "/op",
            ),
            (
                r#"{"op": "copy", "from": "/display_name", "path": "/x"}"#,
                UnsupportedOp,
                "/op",
            ),
            (
                r#"{"op": "replace", "path": "/owner", "value": "x"}"#,
                UnsupportedPath,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "/Allow-Custom-SSO", "value": true}"#,
                UnsupportedPath,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "/allow_custom_sso/0", "value": true}"#,
                UnsupportedPath,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "/id", "value": "x"}"#,
                UnsupportedPath,
                "/path",
            ),
            (
                r#"{"op": "replace", "path": "/etag", "value": "r9"}"#,
                UnsupportedPath,
                "/path",
            ),
            (
                r#"{"op": "test", "path": "", "value": {}}"#,
                UnsupportedPath,
                "/path",
            ),
            (
                r#"[{"op": "replace", "path": "/display_name", "value": "x"}, {"op": "remove", "path": "/etag"}]"#,
                UnsupportedOp,
                "/1/op",
            ),
        ] {
            assert_eq!(err(body), (kind, field.to_owned()), "{body}");
        }
    }

    #[test]
    fn huge_strings_are_not_echoed_whole() {
        let path = "x".repeat(10_000);
        let body = format!(r#"{{"op": "replace", "path": "/{path}", "value": 1}}"#);
        let e = parse(body.as_bytes()).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
    }

    #[test]
    fn replaces_need_no_read_but_field_tests_and_empty_patches_do() {
        let ops = |body: &str| parse(body.as_bytes()).unwrap();
        assert!(!needs_current(&ops(
            r#"{"op": "replace", "path": "/allow_custom_sso", "value": false}"#
        )));
        assert!(!needs_current(&ops(
            r#"[{"op": "test", "path": "/etag", "value": "r3"}, {"op": "replace", "path": "/display_name", "value": "x"}]"#
        )));
        assert!(needs_current(&ops(
            r#"[{"op": "test", "path": "/allow_custom_sso", "value": true}, {"op": "replace", "path": "/allow_custom_sso", "value": false}]"#
        )));
        assert!(needs_current(&ops(
            r#"{"op": "test", "path": "/etag", "value": "r3"}"#
        )));
        assert!(needs_current(&[]));
    }

    #[test]
    fn tests_hold_or_fail_against_the_working_copy() {
        let ops = |body: &str| parse(body.as_bytes()).unwrap();
        // The optimistic flip: only if still allowed; pinned to the read.
        let change = evaluate(
            &ops(
                r#"[{"op": "test", "path": "/allow-custom-sso", "value": true},
                    {"op": "replace", "path": "/allow-custom-sso", "value": false}]"#,
            ),
            Some(&current(true)),
        )
        .unwrap();
        assert_eq!(
            change,
            Change {
                display_name: None,
                allow_custom_sso: Some(false),
                expected_etag: Some("r3".into()),
            }
        );
        let failed = evaluate(
            &ops(
                r#"[{"op": "test", "path": "/allow-custom-sso", "value": true},
                    {"op": "replace", "path": "/allow-custom-sso", "value": false}]"#,
            ),
            Some(&current(false)),
        )
        .unwrap_err();
        assert_eq!((failed.kind, failed.field.as_str()), (TestFailed, "/0"));
        // A test sees the replaces before it (RFC 6902 section 3).
        let after = evaluate(
            &ops(
                r#"[{"op": "replace", "path": "/display_name", "value": "New"},
                    {"op": "test", "path": "/display_name", "value": "New"}]"#,
            ),
            Some(&current(true)),
        )
        .unwrap();
        assert_eq!(
            after.display_name,
            Some(("New".to_owned(), "/0/value".to_owned()))
        );
        let test_name = evaluate(
            &ops(r#"{"op": "test", "path": "/display_name", "value": "Other"}"#),
            Some(&current(true)),
        )
        .unwrap_err();
        assert_eq!(test_name.kind, TestFailed);
        // A field test without the org read never holds.
        assert_eq!(
            evaluate(
                &ops(r#"{"op": "test", "path": "/display_name", "value": "Acme"}"#),
                None
            )
            .unwrap_err()
            .kind,
            TestFailed
        );
    }

    #[test]
    fn a_test_value_of_the_wrong_type_is_a_failed_test_not_a_malformed_patch() {
        for (body, at) in [
            (
                r#"{"op": "test", "path": "/allow_custom_sso", "value": "false"}"#,
                "",
            ),
            (
                r#"{"op": "test", "path": "/allow-custom-sso", "value": 1}"#,
                "",
            ),
            (r#"{"op": "test", "path": "/display_name", "value": 5}"#, ""),
            (
                r#"{"op": "test", "path": "/display_name", "value": ["Acme"]}"#,
                "",
            ),
            (r#"{"op": "test", "path": "/etag", "value": 3}"#, ""),
            (r#"{"op": "test", "path": "/id", "value": null}"#, ""),
            (
                r#"{"op": "test", "path": "/member_count", "value": "12"}"#,
                "",
            ),
            (
                r#"[{"op": "test", "path": "/allow_custom_sso", "value": true},
                    {"op": "test", "path": "/allow_custom_sso", "value": "true"},
                    {"op": "replace", "path": "/allow_custom_sso", "value": false}]"#,
                "/1",
            ),
        ] {
            let ops = parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert!(needs_current(&ops), "{body}: compared with the org as read");
            let failed = evaluate(&ops, Some(&current(true))).unwrap_err();
            assert_eq!(
                (failed.kind, failed.field.as_str()),
                (TestFailed, at),
                "{body}"
            );
        }
        // A replace with a value of the wrong type is still malformed.
        assert_eq!(
            err(r#"{"op": "replace", "path": "/allow_custom_sso", "value": "false"}"#),
            (Malformed, "/value".to_owned())
        );
    }

    #[test]
    fn read_only_members_can_be_tested_but_not_changed() {
        let ops = |body: &str| parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        for body in [
            r#"{"op": "test", "path": "/id", "value": "acme"}"#,
            r#"{"op": "test", "path": "/etag", "value": "r3"}"#,
            r#"{"op": "test", "path": "/member_count", "value": 12}"#,
            r#"{"op": "test", "path": "/member_count", "value": 12.0}"#,
            r#"{"op": "test", "path": "/create_time", "value": "2023-11-14T22:13:20.000000Z"}"#,
            r#"{"op": "test", "path": "/update_time", "value": "2023-11-14T22:13:21.500000Z"}"#,
        ] {
            let change = evaluate(&ops(body), Some(&current(true)))
                .unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert!(change.is_empty(), "{body}");
        }
        for (body, at) in [
            (r#"{"op": "test", "path": "/id", "value": "globex"}"#, ""),
            (r#"{"op": "test", "path": "/etag", "value": "r2"}"#, ""),
            (
                r#"{"op": "test", "path": "/member_count", "value": 13}"#,
                "",
            ),
            (
                r#"{"op": "test", "path": "/member_count", "value": -12}"#,
                "",
            ),
            (
                r#"{"op": "test", "path": "/create_time", "value": "2023-11-14T22:13:20Z"}"#,
                "",
            ),
            (
                r#"[{"op": "test", "path": "/update_time", "value": "2023-11-14T22:13:21.500000Z"},
                    {"op": "test", "path": "/update_time", "value": "2024-01-01T00:00:00.000000Z"}]"#,
                "/1",
            ),
        ] {
            let failed = evaluate(&ops(body), Some(&current(true))).unwrap_err();
            assert_eq!(
                (failed.kind, failed.field.as_str()),
                (TestFailed, at),
                "{body}"
            );
        }
        // A held test of a read-only member pins the write to the read.
        let pinned = evaluate(
            &ops(r#"[{"op": "test", "path": "/member_count", "value": 12},
                    {"op": "replace", "path": "/allow_custom_sso", "value": false}]"#),
            Some(&current(true)),
        )
        .unwrap();
        assert_eq!(pinned.expected_etag.as_deref(), Some("r3"));
        assert_eq!(pinned.allow_custom_sso, Some(false));
        for path in [
            "/id",
            "/etag",
            "/member_count",
            "/create_time",
            "/update_time",
        ] {
            let replace = format!(r#"{{"op": "replace", "path": "{path}", "value": "x"}}"#);
            assert_eq!(
                err(&replace),
                (UnsupportedPath, "/path".to_owned()),
                "{replace}"
            );
            let add = format!(r#"{{"op": "add", "path": "{path}", "value": "x"}}"#);
            assert_eq!(err(&add), (UnsupportedOp, "/op".to_owned()), "{add}");
            let remove = format!(r#"{{"op": "remove", "path": "{path}"}}"#);
            assert_eq!(err(&remove), (UnsupportedOp, "/op".to_owned()), "{remove}");
        }
        // Paths that are not members stay unsupported, tested or not.
        for body in [
            r#"{"op": "test", "path": "/owner", "value": "x"}"#,
            r#"{"op": "test", "path": "/member-count", "value": 12}"#,
            r#"{"op": "test", "path": "/id/0", "value": "a"}"#,
        ] {
            assert_eq!(err(body), (UnsupportedPath, "/path".to_owned()), "{body}");
        }
    }

    #[test]
    fn json_equality_is_rfc_6902s() {
        use serde_json::json;
        for (a, b) in [
            (json!(2), json!(2.0)),
            (json!(-3), json!(-3.0)),
            (json!(u64::MAX), json!(u64::MAX)),
            (json!("é"), json!("\u{e9}")),
            (json!([1, "a"]), json!([1.0, "a"])),
            (json!({"a": 1, "b": [true]}), json!({"b": [true], "a": 1.0})),
            (json!(null), json!(null)),
        ] {
            assert!(json_equal(&a, &b), "{a} == {b}");
        }
        for (a, b) in [
            (json!(2), json!("2")),
            (json!(false), json!("false")),
            (json!(0), json!(false)),
            (json!(null), json!(false)),
            (json!(-1), json!(u64::MAX)),
            (json!(2), json!(2.5)),
            (json!([1, 2]), json!([2, 1])),
            (json!({"a": 1}), json!({"a": 1, "b": 2})),
            (json!("e\u{301}"), json!("é")),
        ] {
            assert!(!json_equal(&a, &b), "{a} != {b}");
        }
    }

    #[test]
    fn etag_tests_become_the_write_precondition() {
        let ops = |body: &str| parse(body.as_bytes()).unwrap();
        let change = evaluate(
            &ops(r#"[{"op": "test", "path": "/etag", "value": "r3"},
                    {"op": "replace", "path": "/allow_custom_sso", "value": false},
                    {"op": "replace", "path": "/allow_custom_sso", "value": true}]"#),
            None,
        )
        .unwrap();
        assert_eq!(change.expected_etag.as_deref(), Some("r3"));
        assert_eq!(change.allow_custom_sso, Some(true), "the last replace wins");
        let stale = evaluate(
            &ops(r#"{"op": "test", "path": "/etag", "value": "r2"}"#),
            Some(&current(true)),
        )
        .unwrap_err();
        assert_eq!(stale.kind, TestFailed);
        let contradicting = evaluate(
            &ops(r#"[{"op": "test", "path": "/etag", "value": "r3"},
                    {"op": "test", "path": "/etag", "value": "r4"}]"#),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (contradicting.kind, contradicting.field.as_str()),
            (TestFailed, "/1")
        );
        let empty = evaluate(
            &ops(r#"[{"op": "test", "path": "/etag", "value": ""},
                    {"op": "replace", "path": "/allow_custom_sso", "value": false}]"#),
            None,
        )
        .unwrap_err();
        assert_eq!(empty.kind, TestFailed);
        let only_tests = evaluate(
            &ops(r#"{"op": "test", "path": "/allow_custom_sso", "value": true}"#),
            Some(&current(true)),
        )
        .unwrap();
        assert!(only_tests.is_empty());
    }
}
