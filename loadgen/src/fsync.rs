//! The disk's floor for a durable acknowledgement: the time of one `fdatasync` after a small
//! append, measured in the directory the journal lives in, in the same run as the gateways (the
//! goal for `--durability fsync` is the baseline plus 1.2 × this median, docs/benchmarks.md).

use crate::LoadError;
use crate::latency::{LatencySummary, new_histogram};
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Bytes appended before each sync: about one journal record.
pub const RECORD_BYTES: usize = 96;

/// What to measure.
#[derive(Debug, Clone)]
pub struct FsyncConfig {
    /// Directory for the scratch file (the journal's file system).
    pub dir: PathBuf,
    /// Appends, each followed by one `fdatasync`.
    pub count: u64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncReport {
    /// Where it was measured.
    pub dir: String,
    /// Append + fdatasync times, ns.
    pub fdatasync: LatencySummary,
}

impl fmt::Display for FsyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.fdatasync;
        writeln!(
            f,
            "fdatasync ({} appends of {RECORD_BYTES} bytes in {}): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            s.count,
            self.dir,
            s.p50_ns as f64 / 1e3,
            s.p99_ns as f64 / 1e3,
            s.max_ns as f64 / 1e3
        )
    }
}

/// Appends and syncs `count` times in a scratch file (removed after).
///
/// # Errors
/// The file cannot be created, written or synced.
pub fn run(config: &FsyncConfig) -> Result<FsyncReport, LoadError> {
    let path = config.dir.join(format!("loadgen-fdatasync-{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&path).map_err(|e| LoadError::new(format!("{}: {e}", path.display())))?;
    let mut histogram = new_histogram();
    let record = [0x5au8; RECORD_BYTES];
    let result = (|| {
        for _ in 0..config.count.max(1) {
            let started = Instant::now();
            file.write_all(&record)?;
            file.sync_data()?;
            histogram.saturating_record(started.elapsed().as_nanos().max(1) as u64);
        }
        Ok::<(), std::io::Error>(())
    })();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| LoadError::new(format!("{}: {e}", path.display())))?;
    Ok(FsyncReport { dir: config.dir.display().to_string(), fdatasync: LatencySummary::of("fdatasync", &histogram) })
}
