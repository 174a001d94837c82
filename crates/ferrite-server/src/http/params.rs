//! Parsing and validating `/v1/shape` requests into a shape definition plus read position.
//!
//! Unknown parameters are ignored (clients add cache busters). Every problem is collected into an
//! `errors` map keyed by parameter, the body of Electric's 400 response.

use ferrite_core::shape::{parse_columns_param, LogMode, Replica, ShapeDefinition};
use ferrite_protocol::offset::RequestOffset;
use ferrite_protocol::relation::QualifiedName;
use std::collections::BTreeMap;

/// Validation errors by parameter name.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// A parsed shape request.
#[derive(Debug, Clone)]
pub struct ShapeRequest {
    /// What shape.
    pub definition: ShapeDefinition,
    /// Where to read from.
    pub offset: RequestOffset,
    /// Offset as the client spelled it (ETags echo it).
    pub offset_raw: String,
    /// Handle the client holds (ignored for `-1`/`now`).
    pub handle: Option<String>,
    /// Long-poll / SSE.
    pub live: bool,
    /// Server-sent events.
    pub live_sse: bool,
    /// Client's previous cursor.
    pub cursor: Option<u64>,
    /// Subset (progressive loading) part, if any.
    pub subset: Option<SubsetParams>,
}

/// `subset__*` parameters (or a POST body).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubsetParams {
    /// Extra where clause.
    pub where_sql: Option<String>,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
    /// Row limit.
    pub limit: Option<u64>,
    /// Row offset.
    pub offset: Option<u64>,
    /// Order by text.
    pub order_by: Option<String>,
}

/// How a boolean query parameter reads (`live`, `live_sse`, on every route): anything but
/// `false` is true, as Electric reads them.
pub(crate) fn truthy(v: &str) -> bool {
    v != "false"
}

fn push(errors: &mut FieldErrors, field: &str, msg: impl Into<String>) {
    errors.entry(field.to_string()).or_default().push(msg.into());
}

/// Parses query pairs (and, for POST, the JSON body's subset) into a request.
pub fn parse_shape_request(
    pairs: &[(String, String)],
    body_subset: Option<SubsetParams>,
) -> Result<ShapeRequest, FieldErrors> {
    let mut errors = FieldErrors::new();
    let get = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut params = BTreeMap::new();
    let mut subset_params = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(n) = k.strip_prefix("params[").and_then(|r| r.strip_suffix(']')) {
            params.insert(n.to_string(), v.clone());
        }
        if let Some(n) = k.strip_prefix("subset__params[").and_then(|r| r.strip_suffix(']')) {
            subset_params.insert(n.to_string(), v.clone());
        }
    }
    for n in params.keys() {
        if n.parse::<usize>().map_or(true, |i| i == 0) {
            push(&mut errors, "params", format!("parameter names must be positive integers, got {n:?}"));
        }
    }

    let table = match get("table") {
        None | Some("") => {
            push(&mut errors, "table", "can't be blank");
            None
        }
        Some(t) => match QualifiedName::parse(t) {
            Ok(q) if q.is_reserved() && !q.is_audit_trail() => {
                push(
                    &mut errors,
                    "table",
                    format!("{} is in a schema clients cannot read (Ferrite's own or Postgres's)", q.quoted()),
                );
                None
            }
            Ok(q) => Some(q),
            Err(e) => {
                push(&mut errors, "table", e.to_string());
                None
            }
        },
    };
    let offset_raw = get("offset").unwrap_or("").to_string();
    let offset = match get("offset") {
        None | Some("") => {
            push(&mut errors, "offset", "can't be blank");
            None
        }
        Some(o) => match o.parse::<RequestOffset>() {
            Ok(o) => Some(o),
            Err(e) => {
                push(&mut errors, "offset", e.to_string());
                None
            }
        },
    };
    let handle = get("handle").filter(|h| !h.is_empty()).map(String::from);
    let live = get("live").is_some_and(truthy);
    let live_sse = match get("live_sse").or(get("experimental_live_sse")) {
        Some(v) => truthy(v),
        None => false,
    };
    match offset {
        Some(RequestOffset::BeforeAll) if live => push(&mut errors, "live", "can't be true when offset == -1"),
        Some(RequestOffset::Now) if live => push(&mut errors, "live", "can't be true when offset is 'now'"),
        Some(RequestOffset::At(_)) if handle.is_none() => {
            push(&mut errors, "handle", "can't be blank when offset != -1")
        }
        _ => {}
    }
    if live_sse && !live {
        push(&mut errors, "live_sse", "can't be true unless live is also true");
    }
    let replica = match get("replica") {
        None | Some("default") => Replica::Default,
        Some("full") => Replica::Full,
        Some(other) => {
            push(&mut errors, "replica", format!("is invalid: expected default or full, got {other:?}"));
            Replica::Default
        }
    };
    let log = match get("log") {
        None | Some("full") => LogMode::Full,
        Some("changes_only") => LogMode::ChangesOnly,
        Some(other) => {
            push(&mut errors, "log", format!("is invalid: expected full or changes_only, got {other:?}"));
            LogMode::Full
        }
    };
    let columns = match get("columns") {
        None => None,
        Some(c) => match parse_columns_param(c) {
            Ok(cols) => Some(cols),
            Err(e) => {
                push(&mut errors, "columns", e);
                None
            }
        },
    };
    let cursor = get("cursor").and_then(|c| c.parse().ok());
    let where_sql = get("where").filter(|w| !w.trim().is_empty()).map(String::from);

    let mut subset = body_subset;
    let query_subset = parse_query_subset(pairs, &get, subset_params, &mut errors);
    if subset.is_none() {
        subset = query_subset;
    }
    if let Some(s) = &subset {
        if (s.limit.is_some() || s.offset.is_some()) && s.order_by.is_none() {
            push(&mut errors, "subset", "order_by is required when limit or offset is present");
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(table), Some(offset)) = (table, offset) else {
        return Err(errors);
    };
    let handle = match offset {
        RequestOffset::BeforeAll | RequestOffset::Now => None,
        RequestOffset::At(_) => handle,
    };
    Ok(ShapeRequest {
        definition: ShapeDefinition {
            table,
            where_sql,
            params,
            columns,
            replica,
            log,
            rule: None,
            inner_rules: Default::default(),
        },
        offset,
        offset_raw,
        handle,
        live,
        live_sse: live && live_sse,
        cursor,
        subset,
    })
}

fn parse_query_subset<'a>(
    pairs: &[(String, String)],
    get: &impl Fn(&str) -> Option<&'a str>,
    map_params: BTreeMap<String, String>,
    errors: &mut FieldErrors,
) -> Option<SubsetParams> {
    let keys = ["subset__where", "subset__params", "subset__limit", "subset__offset", "subset__order_by"];
    let any = pairs.iter().any(|(k, _)| keys.contains(&k.as_str()) || k.starts_with("subset__params["));
    if !any {
        return None;
    }
    let mut s = SubsetParams {
        where_sql: get("subset__where").filter(|w| !w.trim().is_empty()).map(String::from),
        params: map_params,
        order_by: get("subset__order_by").filter(|w| !w.trim().is_empty()).map(String::from),
        ..Default::default()
    };
    if let Some(p) = get("subset__params") {
        match serde_json::from_str::<BTreeMap<String, serde_json::Value>>(p) {
            Ok(m) => {
                for (k, v) in m {
                    match json_param_text(&v) {
                        Some(t) => {
                            s.params.insert(k, t);
                        }
                        None => {
                            push(errors, "subset__params", format!("value of parameter {k} must be a string or number"))
                        }
                    }
                }
            }
            Err(e) => push(errors, "subset__params", format!("must be a JSON object: {e}")),
        }
    }
    for (key, slot, min) in [("subset__limit", &mut s.limit, 1u64), ("subset__offset", &mut s.offset, 0)] {
        if let Some(v) = get(key) {
            match v.parse::<u64>() {
                Ok(n) if n >= min => *slot = Some(n),
                _ => push(errors, key, format!("must be an integer >= {min}")),
            }
        }
    }
    Some(s)
}

/// A JSON parameter value as the text Postgres would get (`"a"` → `a`, `5` → `5`).
pub fn json_param_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads a POST body: `{"where", "params", "limit", "offset", "order_by"}` at the top level or
/// under `"subset"`. Errors are `(status, message)` pairs in Electric's shape.
pub fn parse_subset_body(body: &[u8]) -> Result<Option<SubsetParams>, (u16, serde_json::Value)> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| (400, serde_json::json!({"error": "Invalid JSON in request body", "details": e.to_string()})))?;
    let serde_json::Value::Object(mut obj) = v else {
        return Err((400, serde_json::json!({"error": "Request body must be a JSON object"})));
    };
    if let Some(serde_json::Value::Object(inner)) = obj.remove("subset") {
        obj = inner;
    }
    let bad =
        |field: &str, msg: &str| (400, serde_json::json!({"message": "Invalid request", "errors": {field: [msg]}}));
    let mut s = SubsetParams::default();
    match obj.get("where") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(w)) => s.where_sql = Some(w.clone()).filter(|w| !w.trim().is_empty()),
        Some(_) => return Err(bad("where", "must be a string")),
    }
    match obj.get("order_by") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(w)) => s.order_by = Some(w.clone()).filter(|w| !w.trim().is_empty()),
        Some(_) => return Err(bad("order_by", "must be a string")),
    }
    match obj.get("params") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(m)) => {
            for (k, v) in m {
                let t = json_param_text(v).ok_or_else(|| bad("params", "values must be strings or numbers"))?;
                s.params.insert(k.clone(), t);
            }
        }
        Some(serde_json::Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                let t = json_param_text(v).ok_or_else(|| bad("params", "values must be strings or numbers"))?;
                s.params.insert((i + 1).to_string(), t);
            }
        }
        Some(_) => return Err(bad("params", "must be an object or array")),
    }
    for (key, min) in [("limit", 1u64), ("offset", 0)] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => {
                let message = if min == 0 { "must be a non-negative integer" } else { "must be a positive integer" };
                let n = v.as_u64().filter(|n| *n >= min).ok_or_else(|| bad(key, message))?;
                if key == "limit" {
                    s.limit = Some(n);
                } else {
                    s.offset = Some(n);
                }
            }
        }
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).into_owned().collect()
    }

    #[test]
    fn parses_a_full_request() {
        let r = parse_shape_request(
            &q("table=items&offset=0_inf&handle=h&live&cursor=5&where=x%3D%241&params%5B1%5D=a&columns=id,%22Name%22&replica=full&cache-buster=1"),
            None,
        )
        .unwrap();
        assert!(r.live && !r.live_sse);
        assert_eq!(r.handle.as_deref(), Some("h"));
        assert_eq!(r.definition.params.get("1").map(String::as_str), Some("a"));
        assert_eq!(r.definition.columns, Some(vec!["id".to_string(), "Name".to_string()]));
        assert_eq!(r.definition.replica, Replica::Full);
        assert_eq!(r.cursor, Some(5));
    }

    #[test]
    fn reports_every_bad_field() {
        let e = parse_shape_request(&q("offset=abc&replica=x&live_sse=true"), None).unwrap_err();
        assert_eq!(e["table"], vec!["can't be blank"]);
        assert_eq!(e["offset"], vec!["has invalid format"]);
        assert!(e.contains_key("replica"));
        assert!(e.contains_key("live_sse"));
        let e = parse_shape_request(&q("table=t&offset=-1&live=true"), None).unwrap_err();
        assert_eq!(e["live"], vec!["can't be true when offset == -1"]);
        let e = parse_shape_request(&q("table=t&offset=1_0"), None).unwrap_err();
        assert_eq!(e["handle"], vec!["can't be blank when offset != -1"]);
        assert!(parse_shape_request(&q("table=t&offset=-1&live=false"), None).is_ok());
    }

    #[test]
    fn handle_is_ignored_for_initial_requests() {
        let r = parse_shape_request(&q("table=t&offset=-1&handle=old"), None).unwrap();
        assert!(r.handle.is_none());
    }

    #[test]
    fn subset_params_from_query_and_body() {
        let r = parse_shape_request(
            &q("table=t&offset=0_0&handle=h&subset__where=a%3D%241&subset__params=%7B%221%22%3A%22x%22%7D&subset__limit=2&subset__order_by=a"),
            None,
        )
        .unwrap();
        let s = r.subset.unwrap();
        assert_eq!(s.params.get("1").map(String::as_str), Some("x"));
        assert_eq!(s.limit, Some(2));
        let e = parse_shape_request(&q("table=t&offset=-1&subset__limit=2"), None).unwrap_err();
        assert!(e.contains_key("subset"));
        let b = parse_subset_body(br#"{"subset":{"where":"a > 1","params":["5"],"limit":3,"order_by":"a DESC"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(b.params.get("1").map(String::as_str), Some("5"));
        assert_eq!(parse_subset_body(b"[1]").unwrap_err().0, 400);
        assert_eq!(parse_subset_body(b"{oops").unwrap_err().0, 400);
        let zero = parse_subset_body(br#"{"limit": 0, "order_by": "a"}"#).unwrap_err().1;
        assert_eq!(zero["errors"]["limit"][0], "must be a positive integer");
    }
}
