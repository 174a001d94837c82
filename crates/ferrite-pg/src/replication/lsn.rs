//! Log sequence numbers in Postgres's textual form (`16/B374D848`).
//!
//! Ferrite keeps LSNs as `u64` (offsets and `global_last_seen_lsn` are decimal renderings of it);
//! Postgres prints them as two hex halves. These helpers convert between the two.

/// Parses `"16/B374D848"` (upper or lower case hex) into `0x16_B374_D848`. `None` for anything
/// else, including halves wider than 32 bits.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(((hi as u64) << 32) | lo as u64)
}

/// Formats an LSN the way Postgres does: `format_lsn(0x16_B374_D848) == "16/B374D848"`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("ffffffff/ffffffff"), Some(u64::MAX));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
        for v in [0u64, 1, 0x1_0000_0000, 0xDEAD_BEEF_0000_0001, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(v)), Some(v));
        }
        for bad in ["", "16", "/1", "1/", "g/1", "1/2/3", "123456789/0", "-1/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }
}
