//! Where clauses from raw bytes: libpg_query's parser and Ferrite's typing on anything at all.
//!
//! Input: byte 0 picks the table; the rest splits on NUL into the clause, then the params
//! (separated by 0x1E), then one value per column (0x1F alone is NULL). Bytes that are not UTF-8
//! are replaced, as the server only ever sees decoded strings.
#![no_main]

use ferrite_fuzz::{exercise_where, full_row, on_server_stack, tables};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let table = &tables()[pick as usize % tables().len()];
    let mut parts = rest.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
    let sql = parts.next().unwrap_or_default();
    let params: BTreeMap<String, String> = parts
        .next()
        .unwrap_or_default()
        .split('\u{1e}')
        .enumerate()
        .map(|(i, v)| ((i + 1).to_string(), v.to_string()))
        .collect();
    let values = parts.map(|v| if v == "\u{1f}" { None } else { Some(v) }).collect();
    let rows = vec![full_row(table, values)];
    on_server_stack(|| exercise_where(table, &sql, &params, &rows));
});
