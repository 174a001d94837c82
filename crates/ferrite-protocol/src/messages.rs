//! The messages of a shape response (the JSON array a catch-up or live request answers, or one
//! `data:` event of an SSE stream): row changes and control messages.
//!
//! Readers parse them into [`ShapeMessage`], which borrows from the response body wherever no
//! unescaping is needed (a replica applies hundreds of thousands of rows a second). The server
//! renders row changes itself (straight from the replication stream, without building these
//! types) and the control messages with the functions below, so both sides spell them one way.

use crate::snapshot_info::SnapshotInfo;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Row values of a message: column → Postgres text (`None` = NULL), borrowed where possible.
pub type Row<'a> = BTreeMap<Text<'a>, Option<Text<'a>>>;

/// A JSON string borrowed from the body when it holds no escapes, owned otherwise. (serde's own
/// `Cow<str>` is always owned inside maps and options.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// One message: a row change (`key`, `value`, `headers.operation`) or a control message
/// (`headers.control`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ShapeMessage<'a> {
    /// The row's key, e.g. `"public"."items"/"1"` (row changes only).
    #[serde(borrow, default)]
    pub key: Option<Cow<'a, str>>,
    /// The row's values: every selected column for inserts and `replica=full`, the key and the
    /// changed columns for updates, the key for deletes.
    #[serde(borrow, default)]
    pub value: Option<Row<'a>>,
    /// For updates with `replica=full`: the changed columns' previous values.
    #[serde(borrow, default)]
    pub old_value: Option<Row<'a>>,
    /// What the message is.
    #[serde(borrow)]
    pub headers: Headers<'a>,
}

/// The `headers` of a message. Numbers that may exceed JavaScript's safe integers (LSNs, xids)
/// travel as strings.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
pub struct Headers<'a> {
    /// `insert`, `update` or `delete` for row changes.
    #[serde(borrow, default)]
    pub operation: Option<Cow<'a, str>>,
    /// `up-to-date`, `snapshot-end` or `must-refetch` for control messages.
    #[serde(borrow, default)]
    pub control: Option<Cow<'a, str>>,
    /// A change's transaction ids (32-bit Postgres xids), as numbers.
    #[serde(default)]
    pub txids: Option<Vec<serde_json::Value>>,
    /// A change's commit position.
    #[serde(borrow, default)]
    pub lsn: Option<Cow<'a, str>>,
    /// Set on the last change of a transaction for this shape.
    #[serde(default)]
    pub last: Option<bool>,
    /// `snapshot-end`: transactions below `xmin`, or below `xmax` and not in `xip_list`, are
    /// in the snapshot.
    #[serde(borrow, default)]
    pub xmin: Option<Cow<'a, str>>,
    /// See [`Headers::xmin`].
    #[serde(borrow, default)]
    pub xmax: Option<Cow<'a, str>>,
    /// See [`Headers::xmin`].
    #[serde(borrow, default)]
    pub xip_list: Option<Vec<Cow<'a, str>>>,
    /// `up-to-date`: the shape holds every change up to this position.
    #[serde(borrow, default)]
    pub global_last_seen_lsn: Option<Cow<'a, str>>,
    /// Relational shapes: `move-out` or `move-in` for an event message (see [`crate::tags`]).
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    /// An event's positions and the tag slots (values) it concerns.
    #[serde(default)]
    pub patterns: Option<Vec<MovePattern>>,
    /// A change of a relational shape: the row's tags, one per alternative of the where clause.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// A change of a relational shape: which conditions hold for the row.
    #[serde(default)]
    pub active_conditions: Option<Vec<bool>>,
    /// An update of a relational shape whose tags changed: the ones it no longer has.
    #[serde(default)]
    pub removed_tags: Option<Vec<String>>,
    /// A row read by a move-in (an insert of a row already held is an update).
    #[serde(default)]
    pub is_move_in: Option<bool>,
    /// The shape's convergence digest after this message ([`crate::digest`]): on a
    /// transaction's last message and on `snapshot-end`, for plain shapes.
    #[serde(borrow, default)]
    pub ferrite_digest: Option<Cow<'a, str>>,
}

/// One pattern of a `move-out` / `move-in` event: rows whose tags hold `value` at position `pos`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct MovePattern {
    /// The position (condition) of the where clause.
    pub pos: usize,
    /// The tag slot: an opaque hash of the values compared there.
    pub value: String,
}

impl Headers<'_> {
    /// The snapshot a `snapshot-end` message describes (without a WAL position: readers only
    /// ask it [`SnapshotInfo::includes`]).
    pub fn snapshot(&self) -> Option<SnapshotInfo> {
        let xmin = self.xmin.as_deref()?.parse().ok()?;
        let xmax = self.xmax.as_deref()?.parse().ok()?;
        let xip = self.xip_list.iter().flatten().map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?;
        Some(SnapshotInfo { xmin, xmax, xip, wal_lsn: u64::MAX })
    }
}

/// The `up-to-date` control message: the shape holds every change up to `lsn`.
pub fn up_to_date(lsn: u64) -> String {
    format!(r#"{{"headers":{{"control":"up-to-date","global_last_seen_lsn":"{lsn}"}}}}"#)
}

/// The `snapshot-end` control message closing a shape's initial snapshot; `digest` (the
/// snapshot's rows' [`crate::digest::Digest`]) goes in its `ferrite_digest` header, last.
pub fn snapshot_end(info: &SnapshotInfo, digest: Option<&crate::digest::Digest>) -> String {
    let xip: Vec<String> = info.xip.iter().map(|x| format!("\"{x}\"")).collect();
    let digest = digest.map(|d| format!(r#","ferrite_digest":"{d}""#)).unwrap_or_default();
    format!(
        r#"{{"headers":{{"control":"snapshot-end","xmin":"{}","xmax":"{}","xip_list":[{}]{digest}}}}}"#,
        info.xmin,
        info.xmax,
        xip.join(",")
    )
}

/// The body of a 409: the handle the client holds is gone, start over.
pub const MUST_REFETCH: &str = r#"[{"headers":{"control":"must-refetch"}}]"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_parse_back() {
        let info = SnapshotInfo { xmin: 100, xmax: 105, xip: vec![101, 103], wal_lsn: 7 };
        let text = snapshot_end(&info, None);
        let m: ShapeMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(m.headers.control.as_deref(), Some("snapshot-end"));
        let back = m.headers.snapshot().unwrap();
        assert_eq!((back.xmin, back.xmax, back.xip.clone()), (100, 105, vec![101, 103]));
        assert!(back.includes(99) && back.includes(102) && !back.includes(101) && !back.includes(105));
        let text = up_to_date(42);
        let m: ShapeMessage<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(m.headers.global_last_seen_lsn.as_deref(), Some("42"));
        let m: Vec<ShapeMessage<'_>> = serde_json::from_str(MUST_REFETCH).unwrap();
        assert_eq!(m[0].headers.control.as_deref(), Some("must-refetch"));
    }

    #[test]
    fn row_changes_borrow_from_the_body() {
        let body = r#"{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","name":"a\"b","n":null},"headers":{"operation":"insert","relation":["public","t"],"lsn":"1234","op_position":0,"txids":[77],"last":true}}"#;
        let m: ShapeMessage<'_> = serde_json::from_str(body).unwrap();
        let value = m.value.unwrap();
        assert!(matches!(value["id"], Some(Text(Cow::Borrowed("1")))), "unescaped text is borrowed");
        assert_eq!(value["name"].as_deref(), Some("a\"b"));
        assert_eq!(value["n"], None);
        assert_eq!(m.headers.operation.as_deref(), Some("insert"));
        assert_eq!(m.headers.last, Some(true));
        assert_eq!(m.headers.txids, Some(vec![serde_json::json!(77)]));
    }
}
