//! The real server refuses to start on a journal that ends early.
//!
//! - Deleting the newest journal segment, or cutting the journal short at a record boundary
//!   behind a snapshot, makes `exchange run` (and `exchange replay`) exit with an error that
//!   names what is missing, instead of starting at an earlier sequence and handing acknowledged
//!   sequences and order ids out again.
//! - Cutting the segment being written at a record boundary, with no snapshot after the cut
//!   records, is refused too: the journal manifest's watermark (rewritten off the engine thread
//!   after commits, and at a clean stop) records how far the journal was committed. That holds
//!   after a clean stop and after `kill -9` once the watermark interval has passed, while a
//!   genuinely torn tail after `kill -9` still recovers.
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

/// Cuts the last record off a segment, exactly at its start (a clean but shorter file); returns
/// the segment's bytes before the cut.
fn cut_last_record(segment: &Path) -> Vec<u8> {
    let bytes = std::fs::read(segment).unwrap();
    let mut offset = engine::journal::SEGMENT_HEADER_BYTES;
    let mut last_start = offset;
    while offset < bytes.len() {
        last_start = offset;
        let length = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
        offset += engine::journal::RECORD_HEADER_BYTES + length;
    }
    assert!(last_start > engine::journal::SEGMENT_HEADER_BYTES, "the segment holds records");
    std::fs::write(segment, &bytes[..last_start]).unwrap();
    bytes
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
    cut_last_record(&newest);
    let output = start(&dir, &[]);
    let text = stderr(&output);
    assert!(!output.status.success(), "the server must refuse a journal behind its snapshot: {text}");
    assert!(text.contains(snapshot.to_str().unwrap()) || text.contains("snapshot at sequence"), "{text}");
    assert!(text.contains("is missing"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts that start-up refuses naming the watermark at `watermark` and the journal's end just
/// before it, and that `replay` refuses too.
fn assert_refused_by_the_watermark(dir: &Path, watermark: u64) {
    let output = start(dir, &[]);
    let text = stderr(&output);
    assert!(!output.status.success(), "the server must refuse a journal cut before its watermark: {text}");
    assert!(text.contains(&format!("ends at sequence {}", watermark - 1)), "{text}");
    assert!(text.contains(&format!("watermark records sequence {watermark} as committed")), "{text}");
    assert!(text.contains("--accept-journal-loss"), "the way out is named: {text}");
    let output = replay(dir);
    assert!(!output.status.success() && stderr(&output).contains("watermark"), "{}", stderr(&output));
}

/// The last sequence `exchange replay` reports.
fn replayed_last_sequence(dir: &Path) -> u64 {
    let output = replay(dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("last sequence")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no last sequence in {stdout}"))
}

#[test]
fn the_segment_being_written_cut_after_a_clean_stop_refuses_to_start() {
    let dir = support::data_dir("journal-loss-active-clean");
    // One segment (the default size): the records are all in the segment being written.
    let status = support::command(&dir)
        .args(["--snapshot-every", "0", "run", "--demo", "--demo-rate", "20000", "--demo-orders", "500"])
        .args(["--run-for", "2", "--status-every", "0"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let last = replayed_last_sequence(&dir);
    assert!(last > 100, "the demo placed orders ({last})");
    let all = segments(&dir);
    assert_eq!(all.len(), 1, "{all:?}");
    // The final snapshot would show the cut as well: without it only the watermark can.
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    cut_last_record(&all[0]);
    assert_refused_by_the_watermark(&dir, last);
    // Accepting the loss starts at the sequence before, says so, and later starts need no flag.
    let output = start(&dir, &["--accept-journal-loss"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("journal loss accepted"), "{}", stderr(&output));
    assert_eq!(replayed_last_sequence(&dir), last - 1);
    let output = start(&dir, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_segment_being_written_cut_after_kill_dash_nine_refuses_to_start_and_a_torn_tail_recovers() {
    use std::time::Duration;
    let dir = support::data_dir("journal-loss-active-kill");
    let (mut child, acks, reader) = support::spawn_with_acks(
        support::command(&dir)
            .args(["--snapshot-every", "0", "run", "--demo", "--demo-rate", "20000", "--demo-orders", "500"])
            .args(["--status-every", "0"]),
    );
    // The demo places its orders and goes quiet; wait for that, then well past the watermark
    // interval, so the watermark thread has recorded the last commit.
    let mut acked = acks.recv_timeout(Duration::from_secs(60)).expect("the server acknowledges work");
    while let Ok(sequence) = acks.recv_timeout(Duration::from_secs(2)) {
        acked = acked.max(sequence);
    }
    std::thread::sleep(engine::journal::WATERMARK_INTERVAL * 10);
    child.kill().unwrap(); // SIGKILL: no final snapshot, no final watermark
    child.wait().unwrap();
    reader.join().unwrap();
    acked = acked.max(acks.try_iter().max().unwrap_or(0));
    assert!(acked > 100, "the demo placed orders ({acked})");
    let _ = std::fs::remove_dir_all(dir.join("snapshots")); // a timed snapshot would show it too
    let all = segments(&dir);
    assert_eq!(all.len(), 1, "{all:?}");
    let full = cut_last_record(&all[0]);
    assert_refused_by_the_watermark(&dir, acked);
    // A write torn by a crash (part of a record after the last committed one) is still a torn
    // tail: truncated, and the server starts with every acknowledged command.
    let mut torn = full.clone();
    torn.extend_from_slice(&full[full.len() - 20..]);
    std::fs::write(&all[0], &torn).unwrap();
    let output = start(&dir, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(replayed_last_sequence(&dir), acked);
    // With the tail cut again, accepting the loss starts.
    cut_last_record(&all[0]);
    assert_refused_by_the_watermark(&dir, acked);
    let output = start(&dir, &["--accept-journal-loss"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("journal loss accepted"), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).unwrap();
}
