//! The web client's protocol types (`web/client/src/protocol.ts`) are generated from this crate's
//! definitions, so the two clients cannot drift apart. This test fails when the file is out of
//! date; regenerate it with `FERRITE_WRITE_TS=1 cargo test -p ferrite-protocol --test typescript`.

use ferrite_protocol::client_config::{AuthMode, ClientConfig};
use ferrite_protocol::write_protocol::{
    ClientTransaction, Mutation, Overridden, Rejection, RejectionCode, Status, TransactionResult, TransactionsRequest,
    TransactionsResponse,
};
use std::path::PathBuf;
use ts_rs::{Config, TS};

fn render() -> String {
    // Ids and counts are JSON numbers, well below 2^53.
    let cfg = Config::new().with_large_int("number");
    let decls = [
        TransactionsRequest::decl(&cfg),
        ClientTransaction::decl(&cfg),
        Mutation::decl(&cfg),
        TransactionsResponse::decl(&cfg),
        TransactionResult::decl(&cfg),
        Status::decl(&cfg),
        Overridden::decl(&cfg),
        Rejection::decl(&cfg),
        RejectionCode::decl(&cfg),
        ClientConfig::decl(&cfg),
        AuthMode::decl(&cfg),
    ];
    let mut out = String::from(
        "// The wire types of Ferrite's write protocol and client settings, generated from the Rust\n\
         // definitions in crates/ferrite-protocol (run `FERRITE_WRITE_TS=1 cargo test -p ferrite-protocol\n\
         // --test typescript`). Do not edit by hand.\n\n\
         /** Column values as they travel: Postgres text, or null for SQL NULL. */\n\
         export type Values = Record<string, string | null>;\n",
    );
    for d in decls {
        out.push('\n');
        out.push_str("export ");
        out.push_str(&d.replace("{ [key in string]: string | null }", "Values"));
        out.push('\n');
    }
    out
}

#[test]
fn typescript_types_are_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/client/src/protocol.ts");
    let wanted = render();
    if std::env::var_os("FERRITE_WRITE_TS").is_some() {
        std::fs::write(&path, &wanted).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == wanted,
        "{} is out of date with crates/ferrite-protocol: regenerate it with \
         `FERRITE_WRITE_TS=1 cargo test -p ferrite-protocol --test typescript`",
        path.display()
    );
}
