//! Postgres snapshot visibility, for splicing a shape's initial snapshot with the change stream.
//!
//! The initial snapshot is taken in a REPEATABLE READ transaction that also records
//! `pg_current_snapshot()` and `pg_current_wal_insert_lsn()`. A streamed transaction whose
//! changes the snapshot already contains must be skipped; every other one must be applied.

/// `pg_current_snapshot()` of a shape's initial snapshot plus the WAL insert position then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// Oldest transaction still running (64-bit xid8).
    pub xmin: u64,
    /// First unassigned xid (64-bit xid8).
    pub xmax: u64,
    /// Transactions in progress when the snapshot was taken.
    pub xip: Vec<u64>,
    /// `pg_current_wal_insert_lsn()` right after the snapshot was taken.
    pub wal_lsn: u64,
}

impl SnapshotInfo {
    /// Parses `pg_current_snapshot()::text`: `xmin:xmax:xip1,xip2`.
    pub fn parse(snapshot: &str, wal_lsn: u64) -> Option<SnapshotInfo> {
        let mut parts = snapshot.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip_s = parts.next()?;
        let xip = if xip_s.is_empty() {
            vec![]
        } else {
            xip_s.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?
        };
        Some(SnapshotInfo { xmin, xmax, xip, wal_lsn })
    }

    /// Widens a 32-bit xid from the replication stream to the xid8 epoch of this snapshot.
    /// Valid for transactions near the snapshot, which are the only ones this is asked about.
    pub fn widen_xid(&self, xid: u32) -> u64 {
        let epoch = self.xmax >> 32;
        let full = (epoch << 32) | xid as u64;
        if full > self.xmax && epoch > 0 {
            full - (1 << 32)
        } else {
            full
        }
    }

    /// True if the snapshot already contains the effects of the transaction `xid` that committed
    /// at `commit_lsn`. Transactions committed after the recorded WAL position cannot be visible.
    pub fn contains(&self, xid: u32, commit_lsn: u64) -> bool {
        if commit_lsn >= self.wal_lsn {
            return false;
        }
        let x = self.widen_xid(xid);
        x < self.xmin || (x < self.xmax && !self.xip.contains(&x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility() {
        let s = SnapshotInfo::parse("100:105:101,103", 5000).unwrap();
        assert!(s.contains(99, 10));
        assert!(!s.contains(101, 10));
        assert!(s.contains(102, 10));
        assert!(!s.contains(103, 10));
        assert!(!s.contains(105, 10));
        assert!(!s.contains(99, 5000), "committed after the snapshot position");
        let e = SnapshotInfo::parse("4294967390:4294967400:", 1).unwrap();
        assert_eq!(e.widen_xid(100), 4294967396);
        assert!(SnapshotInfo::parse("1:2", 0).is_none());
    }
}
