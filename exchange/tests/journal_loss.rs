//! The real server refuses to start on a journal that ends early.
//!
//! - Deleting the newest journal segment, or cutting the journal short at a record boundary
//!   behind a snapshot, makes `exchange run` (and `exchange replay`) exit with an error that
//!   names what is missing, instead of starting at an earlier sequence and handing acknowledged
//!   sequences and order ids out again.
//! - `--accept-journal-loss` starts anyway, logging the loss, and later starts need no flag.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs the demo flow for a moment on `dir` with small segments, then stops cleanly (a final
/// snapshot is written).
fn fill(dir: &Path) {
    let status = support::command(dir)
        .args(["--snapshot-every", "0", "--segment-bytes", "16384", "run", "--demo"])
        .args(["--demo-rate", "20000", "--demo-orders", "2000", "--run-for", "2", "--status-every", "0"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    paths
}

/// `exchange run` for a second with `extra` global flags.
fn start(dir: &Path, extra: &[&str]) -> Output {
    support::command(dir).args(extra).args(["run", "--run-for", "1", "--status-every", "0"]).output().unwrap()
}

fn replay(dir: &Path) -> Output {
    Command::new(support::BINARY).args(["--data", dir.to_str().unwrap(), "replay"]).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn deleting_the_newest_segment_refuses_to_start_naming_it() {
    let dir = support::data_dir("journal-loss-newest");
    fill(&dir);
    let all = segments(&dir);
    assert!(all.len() >= 3, "small segments rolled over: {all:?}");
    let newest = all.last().unwrap();
    std::fs::remove_file(newest).unwrap();
    // Without the snapshots only the journal's manifest knows; with them, they do too.
    for keep_snapshots in [true, false] {
        if !keep_snapshots {
            std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
        }
        let output = start(&dir, &[]);
        let text = stderr(&output);
        assert!(!output.status.success(), "the server must refuse a journal without its newest segment: {text}");
        assert!(text.contains(newest.to_str().unwrap()) && text.contains("missing"), "{text}");
        assert!(text.contains("--accept-journal-loss"), "the way out is named: {text}");
        let output = replay(&dir);
        assert!(!output.status.success() && stderr(&output).contains("journal incomplete"), "{}", stderr(&output));
    }
    // Accepting the loss explicitly starts, says so, and later starts need no flag.
    let output = start(&dir, &["--accept-journal-loss"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("journal loss accepted"), "{}", stderr(&output));
    let output = start(&dir, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_journal_cut_at_a_record_boundary_behind_its_snapshot_refuses_to_start() {
    let dir = support::data_dir("journal-loss-cut");
    fill(&dir);
    let mut all = segments(&dir);
    let mut newest = all.pop().unwrap();
    if std::fs::metadata(&newest).unwrap().len() == engine::journal::SEGMENT_HEADER_BYTES as u64 {
        // It rolled over just before the end: the records are in the previous segment.
        std::fs::remove_file(&newest).unwrap();
        newest = all.pop().unwrap();
    }
    let snapshot = std::fs::read_dir(dir.join("snapshots")).unwrap().next().unwrap().unwrap().path();
    // Cut the last record off, exactly at its start: a clean but shorter journal.
    let bytes = std::fs::read(&newest).unwrap();
    let mut offset = engine::journal::SEGMENT_HEADER_BYTES;
    let mut last_start = offset;
    while offset < bytes.len() {
        last_start = offset;
        let length = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
        offset += engine::journal::RECORD_HEADER_BYTES + length;
    }
    assert!(last_start > engine::journal::SEGMENT_HEADER_BYTES, "the newest segment holds records");
    std::fs::write(&newest, &bytes[..last_start]).unwrap();
    let output = start(&dir, &[]);
    let text = stderr(&output);
    assert!(!output.status.success(), "the server must refuse a journal behind its snapshot: {text}");
    assert!(text.contains(snapshot.to_str().unwrap()) || text.contains("snapshot at sequence"), "{text}");
    assert!(text.contains("is missing"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
