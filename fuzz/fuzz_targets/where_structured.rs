//! Where clauses from a grammar (see `ferrite_fuzz::gen`): plausible clauses over the tables'
//! real columns, edge-case literals and row values, and row values repeated up to 256 KiB so that
//! evaluation that is not linear in its input hits libFuzzer's `-timeout`.
//!
//! `FERRITE_FUZZ_SHOW=1` prints each rendered case (clause, params, rows) to stderr, to read a
//! reproducer: `FERRITE_FUZZ_SHOW=1 cargo fuzz run where_structured <file>`.
#![no_main]

use ferrite_fuzz::gen::where_input;
use ferrite_fuzz::{exercise_where, on_server_stack, tables};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn show() -> bool {
    static SHOW: OnceLock<bool> = OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("FERRITE_FUZZ_SHOW").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = where_input(data) else { return };
    let case = input.render();
    if show() {
        let rows: Vec<Vec<Option<String>>> =
            case.rows.iter().map(|r| r.iter().map(|v| v.as_ref().map(|s| abbreviate(s))).collect()).collect();
        eprintln!("table {}\nwhere {}\nparams {:?}\nrows {rows:?}", tables()[case.table].name, case.sql, case.params);
    }
    let table = &tables()[case.table];
    on_server_stack(|| exercise_where(table, &case.sql, &case.params, &case.rows));
});

/// Long values as their start, length and end.
fn abbreviate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let head: String = s.chars().take(30).collect();
    let tail: String = s.chars().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{head}...({} bytes)...{tail}", s.len())
}
