//! `POST /v1/transactions` bodies: the write protocol's JSON parser, then each transaction's clock
//! as the server reads it (`Hlc`, `HlcClock::receive`) and the `hlc@client` stamp.
#![no_main]

use ferrite_protocol::hlc::{Hlc, HlcClock, Stamp};
use ferrite_protocol::write_protocol::{parse_request, valid_client_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A bare clock as well: the fuzzer finds clock edge cases faster without the JSON around them.
    if let Ok(s) = std::str::from_utf8(data) {
        check_clock(s);
    }
    let Ok(req) = parse_request(data, 100) else { return };
    assert!(valid_client_id(&req.client_id));
    assert!(req.transactions.len() <= 100);
    // What a client serializes, the server parses back to the same request.
    let again = serde_json::to_vec(&req).expect("serializing a parsed request");
    assert_eq!(parse_request(&again, 100).as_ref(), Ok(&req), "request does not round-trip");
    for t in &req.transactions {
        check_clock(&t.hlc.to_string());
        let _ = format!("{}@{}", t.hlc, req.client_id).parse::<Stamp>();
    }
});

/// A clock that parses prints back the same way, and the server clock moves past it.
fn check_clock(s: &str) {
    let Ok(h) = s.parse::<Hlc>() else { return };
    assert_eq!(h.to_string().parse::<Hlc>(), Ok(h), "clock {s:?} does not round-trip");
    let mut clock = HlcClock::new(1000);
    for wall in [0, h.ms, h.ms.saturating_add(1)] {
        if let Ok(next) = clock.receive(h, wall) {
            // (u64::MAX, u32::MAX) is the one clock with no successor.
            let last = Hlc { ms: u64::MAX, counter: u32::MAX };
            assert!(next > h || h == last, "the server clock {next} did not move past the received {h}");
            assert!(clock.now(wall) > next || next == last, "the server clock stood still after {next}");
        }
    }
}
