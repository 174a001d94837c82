//! `GET/POST /v1/shape` parameters: the query string and the POST body, parsed as the server does,
//! then the shape compiled against a fixed table and a row converted, plus offsets and cursors.
//!
//! Input: the query string, then optionally a NUL and the POST body.
#![no_main]

use ferrite_protocol::cursor::next_cursor;
use ferrite_protocol::offset::{LogOffset, RequestOffset};
use ferrite_core::shape::{RowChange, ShapeFilter};
use ferrite_fuzz::params::{parse_shape_request, parse_subset_body};
use ferrite_fuzz::{on_server_stack, tables};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

/// 2026-01-01T00:00:00Z, an arbitrary "now" for cursors.
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    // Offsets and cursors as single values too (the query parser only sees well-formed pairs).
    if let Ok(s) = std::str::from_utf8(query) {
        if let Ok(o) = s.parse::<LogOffset>() {
            assert_eq!(o.to_string().parse::<LogOffset>(), Ok(o), "offset {s:?} does not round-trip");
        }
        if let Ok(o) = s.parse::<RequestOffset>() {
            assert_eq!(o.to_string().parse::<RequestOffset>(), Ok(o), "offset {s:?} does not round-trip");
        }
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    let body_subset = match body.map(parse_subset_body) {
        None => None,
        Some(Ok(s)) => s,
        Some(Err(_)) => return,
    };
    let Ok(req) = parse_shape_request(&pairs, body_subset) else { return };
    for long_poll_ms in [0, 20_000, u64::MAX] {
        let next = next_cursor(NOW, long_poll_ms, req.cursor);
        if let Some(prev) = req.cursor.filter(|_| long_poll_ms >= 1000) {
            // A bump of up to 3,600 past the end of the range gives the time bucket instead.
            assert!(next > prev || prev > u64::MAX - 3601, "cursor {next} does not move past {prev}");
        }
    }
    let def = req.definition.clone();
    let table = tables().iter().find(|t| t.name == def.table).unwrap_or(&tables()[0]);
    let table = Arc::new(table.clone());
    on_server_stack(move || {
        let Ok(filter) = ShapeFilter::compile(&def, table.clone()) else { return };
        let row: Vec<Option<String>> = (0..table.columns.len()).map(|i| Some(i.to_string())).collect();
        let _ = filter.convert(RowChange::Insert { new: &row }, 0, 1, 1);
        let _ = filter.convert(RowChange::Update { old: &row, new: &row }, 1, 1, 1);
        let _ = filter.convert(RowChange::Delete { old: &row }, 2, 1, 1);
        if let Some(subset) = &req.subset {
            if let Some(sql) = &subset.where_sql {
                let _ = ferrite_where::WhereClause::compile(sql, &subset.params, &table);
            }
        }
    });
});
