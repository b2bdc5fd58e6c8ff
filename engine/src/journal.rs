//! The write-ahead journal: every sequenced command, durable before anything it caused leaves the
//! process.
//!
//! # Format
//! A directory of segment files `journal-<first sequence, 20 digits>.log`. Each segment starts
//! with a 24-byte header (magic `EXJRNL01`, format version u32, reserved u32, first sequence u64)
//! followed by records, all little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `0x4A52_4543` ("CERJ" on disk) |
//! | 4 | 4 | payload length in bytes |
//! | 8 | 8 | sequence |
//! | 16 | 8 | timestamp (ns since the epoch, stamped by the sequencer) |
//! | 24 | 4 | CRC32C of bytes 4..24 and the payload |
//! | 28 | 4 | reserved, zero |
//! | 32 | n | payload: the command's SBE message (header + block) |
//!
//! Sequences are contiguous across records and segments; a gap is corruption.
//!
//! # Group commit
//! [`JournalWriter::append`] only buffers; [`JournalWriter::commit`] writes the whole batch with one
//! `write` and, under [`Durability::Fsync`], one `fdatasync`. Callers release acknowledgements only
//! for sequences up to [`JournalWriter::durable_sequence`].
//!
//! # Reading
//! [`JournalReader::for_each_after`] streams the segments in order, one buffer at a time, and
//! checks every record it reads; it reads only the header of a segment that lies wholly before
//! the requested start (covered by a snapshot) and stops as soon as its visitor says so, so a
//! catch-up over days of journal holds one record in memory, not the tail.
//! [`JournalReader::for_each_after_read_ahead`] is the same walk with the reading and checking on
//! a second thread, a few batches ahead of the visitor: recovery replays with it, so execution
//! overlaps the reads and checksums.
//!
//! # Recovery
//! [`JournalReader`] walks the segments after the snapshot in order and checks every record. Damage in the last
//! segment after which no intact record follows (a write torn by a crash: a partial record, a bad
//! checksum on the final record, zeros from there on) is a *torn tail*: it was never acknowledged,
//! and [`JournalWriter::open`] truncates it. Damage anywhere else, or followed by any intact
//! record, is *corruption*: recovery refuses, naming the file and offset, because acknowledged
//! data would be lost.
//!
//! # The manifest: where the journal must end at least
//! A journal that merely *stops early* (its newest segment deleted, the last file cut at a record
//! boundary) reads as a clean, shorter journal. So the writer records, outside the segment being
//! written, how far the journal is known to reach: the file `MANIFEST` in the journal directory
//! ([`JournalManifest`], 40 bytes: magic `EXJMAN01`, format version u32 = 2, reserved u32, the
//! first sequence of the active segment u64, the watermark u64, CRC32C u32 of bytes 0..32,
//! reserved u32; version 1, 32 bytes without the watermark and with the CRC at 24, is still read).
//! It is always replaced atomically (temporary file, `fsync`, rename, directory `fsync`). It
//! states: "every sequence before `active_segment_first` is in sealed segments,
//! `journal-<active_segment_first>.log` is the segment being written, and every sequence up to
//! `durable_through` was committed".
//!
//! It is rewritten when the writer opens, at every segment roll (after the new segment's header
//! is durable), and with the **watermark** by a thread of its own
//! ([`JournalWriter::start_watermark`]): after each commit the writer hands it the committed
//! sequence with an atomic store (and a wake-up when it is idle), and it rewrites the manifest at
//! most once per [`WATERMARK_INTERVAL`], so the acknowledgement path pays no extra `fsync`.
//! [`JournalWriter::stop_watermark`] records the last committed sequence synchronously at a clean
//! shutdown. The watermark is only ever a sequence already committed (`fdatasync`ed under
//! [`Durability::Fsync`]), so the journal on disk always reaches it: a journal that ends before it
//! has lost acknowledged records, whatever the cause; a torn tail (a crash mid-write) can only
//! follow it.
//!
//! Recovery ([`JournalReader::read_for_recovery`], [`JournalWriter::open_with`]) refuses
//! ([`JournalError::Incomplete`]) when the journal ends before the sealed sequences or the
//! watermark, when the active segment file is gone, or when it ends before a sequence the caller
//! knows was durable ([`RecoveryOptions::reached_elsewhere`], e.g. the newest snapshot's). That
//! check runs before a torn tail is truncated, so damage to the last complete record of a journal
//! that should go further is refused rather than cut off.
//!
//! What it cannot see: records committed after the last watermark rewrite (at most
//! [`WATERMARK_INTERVAL`] of them before a crash; none after a clean shutdown) cut off at a record
//! boundary, or their last record damaged (exactly what a torn tail looks like), unless something
//! else durable recorded a later sequence; and a deleted manifest (a journal without one, as
//! written before it existed, is read without the check).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Segment header magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EXJRNL01";
/// Journal format version.
pub const FORMAT_VERSION: u32 = 1;
/// Record header magic.
pub const RECORD_MAGIC: u32 = 0x4A52_4543;
/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Largest payload a record may carry (the largest command is far smaller).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1024;
/// Bytes of a segment a reader buffers at a time: what streaming a segment costs in memory,
/// whatever the segment's size.
pub const SEGMENT_READ_BUFFER_BYTES: usize = 256 << 10;

/// Payload bytes a read-ahead batch gathers before the reading thread hands it over
/// ([`JournalReader::for_each_after_read_ahead`]): large enough that hand-overs are rare (a few
/// thousand records each), small enough to stay in the caches the two threads share.
pub const READ_AHEAD_BATCH_BYTES: usize = 256 << 10;
/// Read-ahead batches in flight between the reading thread and the visitor: bounds its memory to
/// a few batches, whatever the journal's length.
pub const READ_AHEAD_BATCHES: usize = 2;

/// Name of the manifest file in the journal directory (see the module documentation).
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Manifest magic.
pub const MANIFEST_MAGIC: [u8; 8] = *b"EXJMAN01";
/// Manifest format version written: 2 adds the committed-sequence watermark.
pub const MANIFEST_VERSION: u32 = 2;
/// Bytes of the manifest file (version 2).
pub const MANIFEST_BYTES: usize = 40;
/// Bytes of the manifest covered by its checksum (version 2).
const MANIFEST_CHECKED_BYTES: usize = 32;
const _: () = assert!(MANIFEST_CHECKED_BYTES + 8 == MANIFEST_BYTES);
/// Manifest format version 1 (no watermark), still read.
pub const MANIFEST_VERSION_1: u32 = 1;
/// Bytes of a version 1 manifest file.
pub const MANIFEST_V1_BYTES: usize = 32;
/// Bytes of a version 1 manifest covered by its checksum.
const MANIFEST_V1_CHECKED_BYTES: usize = 24;
const _: () = assert!(MANIFEST_V1_CHECKED_BYTES + 8 == MANIFEST_V1_BYTES);
/// Least time between two rewrites of the manifest by the watermark thread
/// ([`JournalWriter::start_watermark`]): bounds its `fsync`s to a few per second, whatever the
/// commit rate, at the price of a watermark up to this far behind the journal.
pub const WATERMARK_INTERVAL: Duration = Duration::from_millis(50);

/// How hard the journal works to make a batch durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` after every batch: an acknowledged command survives power loss. The default.
    Fsync,
    /// Write to the page cache only: survives a process crash (`kill -9`) but not power loss or a
    /// kernel crash. For benchmarks; unsafe for real money.
    None,
}

/// One journaled command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Global sequence.
    pub sequence: u64,
    /// Sequencer timestamp.
    pub timestamp_ns: u64,
    /// The command's SBE bytes.
    pub payload: Vec<u8>,
}

/// Journal failures. Corruption names the file and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O error (disk full, fsync failure...). The writer must stop: nothing after the last
    /// durable sequence may be acknowledged.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Damage that is not a torn tail.
    #[error("journal corrupt in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the damaged record or header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The journal ends before a sequence recorded durably elsewhere (its manifest, a snapshot):
    /// acknowledged records are missing, and starting would hand their sequences and order ids
    /// out again. The text names the last sequence found, what shows the journal went further,
    /// the missing sequences or segment, and any damage that looked like a torn tail.
    #[error("journal incomplete: {0}")]
    Incomplete(String),
    /// A payload larger than [`RECORD_PAYLOAD_BYTES_MAX`] or a non-contiguous sequence was
    /// appended (a caller bug).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

fn segment_name(first_sequence: u64) -> String {
    format!("journal-{first_sequence:020}.log")
}

/// The segment files of a journal directory, sorted by first sequence.
///
/// # Errors
/// The directory cannot be read.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(sequence) = name.strip_prefix("journal-").and_then(|rest| rest.strip_suffix(".log"))
            && let Ok(first) = sequence.parse::<u64>()
        {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// What the journal is known to reach, recorded outside the segment being written (see the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalManifest {
    /// First sequence of the segment being written: every earlier sequence is in sealed
    /// segments, and `journal-<active_segment_first>.log` exists.
    pub active_segment_first: u64,
    /// The watermark: every sequence up to this one was committed (written and, under
    /// [`Durability::Fsync`], `fdatasync`ed) before the manifest said so, so the journal reaches
    /// at least this far. Never below [`Self::sealed_through`]; a version 1 manifest, which has
    /// no watermark, reads as exactly that.
    pub durable_through: u64,
}

impl JournalManifest {
    /// The last sequence of the sealed segments (0 while the first segment is active).
    pub fn sealed_through(&self) -> u64 {
        self.active_segment_first.saturating_sub(1)
    }

    fn encode(&self) -> [u8; MANIFEST_BYTES] {
        let mut bytes = [0u8; MANIFEST_BYTES];
        bytes[0..8].copy_from_slice(&MANIFEST_MAGIC);
        bytes[8..12].copy_from_slice(&MANIFEST_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.active_segment_first.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.durable_through.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..MANIFEST_CHECKED_BYTES]);
        bytes[32..36].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes version 2 (40 bytes) or version 1 (32 bytes, written before the watermark existed);
    /// the size tells which layout to check the checksum of.
    fn decode(path: &Path, bytes: &[u8]) -> Result<Self, JournalError> {
        let corrupt = |offset: u64, reason: String| JournalError::Corrupt { path: path.to_path_buf(), offset, reason };
        let (expected_version, checked) = match bytes.len() {
            MANIFEST_BYTES => (MANIFEST_VERSION, MANIFEST_CHECKED_BYTES),
            MANIFEST_V1_BYTES => (MANIFEST_VERSION_1, MANIFEST_V1_CHECKED_BYTES),
            length => {
                return Err(corrupt(
                    0,
                    format!(
                        "manifest of {length} bytes, expected {MANIFEST_BYTES} (or {MANIFEST_V1_BYTES}, version 1)"
                    ),
                ));
            }
        };
        if bytes[0..8] != MANIFEST_MAGIC {
            return Err(corrupt(0, "bad manifest magic".into()));
        }
        let crc = u32::from_le_bytes(bytes[checked..checked + 4].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[..checked]) != crc {
            return Err(corrupt(checked as u64, "manifest checksum mismatch".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != expected_version {
            return Err(corrupt(8, format!("unsupported manifest version {version} in {} bytes", bytes.len())));
        }
        let active_segment_first = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        if active_segment_first == 0 {
            return Err(corrupt(16, "active segment starts at sequence 0".into()));
        }
        let sealed_through = active_segment_first - 1;
        if version == MANIFEST_VERSION_1 {
            return Ok(Self { active_segment_first, durable_through: sealed_through });
        }
        let durable_through = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
        if durable_through < sealed_through {
            return Err(corrupt(
                24,
                format!("watermark {durable_through} before the sealed segments' end {sealed_through}"),
            ));
        }
        Ok(Self { active_segment_first, durable_through })
    }
}

/// Reads the journal's manifest; `None` when there is none (a new journal, or one written before
/// manifests existed).
///
/// # Errors
/// I/O errors, or a damaged manifest (bad size, magic, checksum or version): corruption.
pub fn read_manifest(dir: &Path) -> Result<Option<JournalManifest>, JournalError> {
    let path = dir.join(MANIFEST_FILE);
    match fs::read(&path) {
        Ok(bytes) => JournalManifest::decode(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Replaces the journal's manifest atomically: a crash leaves the old one or the new one, whole
/// and durable (temporary file, `fsync`, rename, directory `fsync`).
///
/// # Errors
/// I/O errors.
pub fn write_manifest(dir: &Path, manifest: &JournalManifest) -> Result<(), JournalError> {
    let path = dir.join(MANIFEST_FILE);
    let temporary = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(&manifest.encode()).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// The manifest as last recorded, shared by the writer (which rewrites it at segment rolls) and its
/// watermark thread: rewrites are serialised (they share one temporary file) and never move the
/// recorded sequences backwards, whichever of the two writes last.
#[derive(Debug)]
struct ManifestRecorder {
    dir: PathBuf,
    recorded: Mutex<JournalManifest>,
}

impl ManifestRecorder {
    /// Rewrites the manifest with the later of what it records and `active_segment_first` /
    /// `durable_through`; returns whether anything changed.
    fn record(&self, active_segment_first: u64, durable_through: u64) -> Result<bool, JournalError> {
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let next = JournalManifest {
            active_segment_first: recorded.active_segment_first.max(active_segment_first),
            durable_through: recorded.durable_through.max(durable_through),
        };
        if next == *recorded {
            return Ok(false);
        }
        write_manifest(&self.dir, &next)?;
        *recorded = next;
        Ok(true)
    }

    fn recorded(&self) -> JournalManifest {
        *self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the writer and its watermark thread share.
#[derive(Debug, Default)]
struct WatermarkShared {
    /// The writer's committed sequence, stored after each commit: the engine thread's only cost.
    committed: AtomicU64,
    /// Set (and the condition signalled, the thread unparked) to stop the thread.
    stop: Mutex<bool>,
    stopping: Condvar,
}

/// The thread that records the writer's committed sequence in the manifest, at most once per
/// interval, so that the segment being written cannot be cut short unnoticed (see the module
/// documentation). Stopped and joined when dropped, without a last rewrite.
#[derive(Debug)]
struct WatermarkThread {
    shared: Arc<WatermarkShared>,
    thread: Option<JoinHandle<()>>,
}

impl WatermarkThread {
    fn start(
        manifest: Arc<ManifestRecorder>,
        committed: u64,
        interval: Duration,
        mut on_error: impl FnMut(&JournalError) + Send + 'static,
    ) -> io::Result<Self> {
        let shared = Arc::new(WatermarkShared { committed: AtomicU64::new(committed), ..Default::default() });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new().name("journal-watermark".into()).spawn(move || {
            let shared = thread_shared;
            let mut failing = false;
            loop {
                if *shared.stop.lock().unwrap_or_else(PoisonError::into_inner) {
                    return;
                }
                let committed = shared.committed.load(Ordering::Acquire);
                if committed <= manifest.recorded().durable_through {
                    // Woken by the next commit (an unpark that comes first makes this return at
                    // once) or by stop.
                    std::thread::park();
                    continue;
                }
                match manifest.record(0, committed) {
                    Ok(_) => failing = false,
                    Err(error) => {
                        // Once per run of failures: retried every interval, not logged every time.
                        if !failing {
                            on_error(&error);
                        }
                        failing = true;
                    }
                }
                // The rate limit. Commits meanwhile only mark the thread to be woken (no system
                // call, since it does not park here); stop cuts the wait short.
                let stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
                drop(shared.stopping.wait_timeout_while(stop, interval, |stop| !*stop));
            }
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Hands the thread a new committed sequence: an atomic store, and a wake-up that costs a
    /// system call only when the thread is idle (at most once per interval).
    fn publish(&self, committed: u64) {
        self.shared.committed.store(committed, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    fn stop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stopping.notify_all();
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for WatermarkThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[4..24]), payload)
}

/// Encodes a record (header + payload) onto `out`.
fn encode_record(out: &mut Vec<u8>, sequence: u64, timestamp_ns: u64, payload: &[u8]) {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&sequence.to_le_bytes());
    header[16..24].copy_from_slice(&timestamp_ns.to_le_bytes());
    let crc = record_crc(&header, payload);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Checks and visits the records framed back to back in `bytes` (a group commit's bytes as
/// [`JournalWriter::pending_records`] returned them, e.g. carried by the replicated journal
/// topic): each must have the record magic, a sane length, a matching CRC32C and the sequence
/// after the previous one. Returns how many records were visited.
///
/// # Errors
/// [`JournalError::Corrupt`] (with `origin` as the path and the byte offset) on any damage or
/// sequence gap, before the damaged record is visited.
pub fn for_each_record_in<'b, E, F>(origin: &Path, bytes: &'b [u8], mut visit: F) -> Result<u64, E>
where
    E: From<JournalError>,
    F: FnMut(RecordRef<'b>) -> Result<(), E>,
{
    let corrupt = |offset: usize, reason: String| JournalError::Corrupt {
        path: origin.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut offset = 0;
    let mut previous: Option<u64> = None;
    let mut visited = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < RECORD_HEADER_BYTES {
            return Err(corrupt(offset, format!("{} bytes left, less than a record header", rest.len())).into());
        }
        let header = &rest[..RECORD_HEADER_BYTES];
        let field = |range: std::ops::Range<usize>| -> u64 {
            let mut word = [0u8; 8];
            word[..range.len()].copy_from_slice(&header[range]);
            u64::from_le_bytes(word)
        };
        if field(0..4) != u64::from(RECORD_MAGIC) {
            return Err(corrupt(offset, "bad record magic".into()).into());
        }
        let length = field(4..8) as usize;
        if length > RECORD_PAYLOAD_BYTES_MAX || rest.len() < RECORD_HEADER_BYTES + length {
            return Err(corrupt(offset, format!("record length {length} exceeds the bytes or the bound")).into());
        }
        let payload = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length];
        if field(24..28) != u64::from(record_crc(header, payload)) {
            return Err(corrupt(offset, "record checksum mismatch".into()).into());
        }
        let sequence = field(8..16);
        if previous.is_some_and(|p| p.checked_add(1) != Some(sequence)) {
            return Err(corrupt(offset, format!("sequence {sequence} after {previous:?}")).into());
        }
        previous = Some(sequence);
        visit(RecordRef { sequence, timestamp_ns: field(16..24), payload })?;
        visited += 1;
        offset += RECORD_HEADER_BYTES + length;
    }
    Ok(visited)
}

/// What is at the end of a segment's valid records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The file ends exactly after the last valid record.
    Clean,
    /// A torn write starts at this offset.
    TornAt(u64),
}

/// Whether an intact record (magic, sane length, matching checksum) starts anywhere in `bytes`.
fn contains_valid_record(bytes: &[u8]) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    (0..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1)).any(|start| {
        let rest = &bytes[start..];
        if rest[0..4] != magic {
            return false;
        }
        let length = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[24..28].try_into().unwrap());
        length <= RECORD_PAYLOAD_BYTES_MAX
            && rest.len() >= RECORD_HEADER_BYTES + length
            && record_crc(&rest[..RECORD_HEADER_BYTES], &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length]) == crc
    })
}

/// Reads into `buffer` until it is full or the input ends; returns the bytes read (fewer than
/// `buffer.len()` only at the end of the input).
fn read_up_to(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// One segment file opened for streaming. Only the bytes present when it was opened are read:
/// while the writer appends, the reader sees a consistent prefix (as a whole-file read would)
/// rather than a record that is still being written.
struct SegmentFile<'p> {
    path: &'p Path,
    file: File,
    length_bytes: u64,
}

impl<'p> SegmentFile<'p> {
    fn open(path: &'p Path) -> Result<Self, JournalError> {
        let file = File::open(path).map_err(io_error(path))?;
        let length_bytes = file.metadata().map_err(io_error(path))?.len();
        Ok(Self { path, file, length_bytes })
    }

    fn corrupt(&self, offset: u64, reason: String) -> JournalError {
        JournalError::Corrupt { path: self.path.to_path_buf(), offset, reason }
    }

    /// Reads and checks the segment header; returns its first sequence, or `None` for a header
    /// never completely written (allowed only in the last segment: it holds no records).
    fn read_header(&mut self, is_last: bool) -> Result<Option<u64>, JournalError> {
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let read = read_up_to(&mut (&self.file).take(self.length_bytes), &mut header).map_err(io_error(self.path))?;
        if read < SEGMENT_HEADER_BYTES {
            if is_last {
                return Ok(None);
            }
            return Err(self.corrupt(0, "segment header truncated".into()));
        }
        if header[0..8] != SEGMENT_MAGIC {
            return Err(self.corrupt(0, "bad segment magic".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(self.corrupt(8, format!("unsupported format version {version}")));
        }
        Ok(Some(u64::from_le_bytes(header[16..24].try_into().unwrap())))
    }

    /// Whether an intact record starts anywhere from `offset` to the end of the segment (read
    /// only after damage, to tell a torn tail from corruption).
    fn holds_valid_record_from(&self, offset: u64) -> Result<bool, JournalError> {
        let mut rest = Vec::new();
        (&self.file).seek(SeekFrom::Start(offset)).map_err(io_error(self.path))?;
        (&self.file)
            .take(self.length_bytes.saturating_sub(offset))
            .read_to_end(&mut rest)
            .map_err(io_error(self.path))?;
        Ok(contains_valid_record(&rest))
    }

    /// Streams the records after the header (call [`Self::read_header`] first), checking each
    /// record and that sequences run on from `first_sequence`, and visits those with
    /// `sequence > after`. `is_last` allows a torn tail. Holds one read buffer and one payload,
    /// never the whole segment (except the remainder of the file after damage, to classify it).
    fn scan_records<E, F>(
        &mut self,
        first_sequence: u64,
        is_last: bool,
        after: u64,
        visit: &mut F,
    ) -> Result<SegmentScan, E>
    where
        E: From<JournalError>,
        F: FnMut(RecordRef<'_>) -> Result<ControlFlow<()>, E>,
    {
        let body_bytes = self.length_bytes.saturating_sub(SEGMENT_HEADER_BYTES as u64);
        let mut input = BufReader::with_capacity(SEGMENT_READ_BUFFER_BYTES, (&self.file).take(body_bytes));
        let mut header = [0u8; RECORD_HEADER_BYTES];
        let mut payload = [0u8; RECORD_PAYLOAD_BYTES_MAX];
        let mut offset = SEGMENT_HEADER_BYTES as u64;
        let mut records = 0u64;
        loop {
            let read = read_up_to(&mut input, &mut header).map_err(io_error(self.path))?;
            if read == 0 {
                return Ok(SegmentScan { records, end: SegmentEnd::Clean, stopped: false });
            }
            let magic = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let length = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(header[24..28].try_into().unwrap());
            let damage = if read < RECORD_HEADER_BYTES {
                Some("record header truncated".to_string())
            } else if magic != RECORD_MAGIC {
                Some(format!("bad record magic {magic:#010x}"))
            } else if length > RECORD_PAYLOAD_BYTES_MAX {
                Some(format!("record length {length} too large"))
            } else if read_up_to(&mut input, &mut payload[..length]).map_err(io_error(self.path))? < length {
                Some("record payload truncated".to_string())
            } else if record_crc(&header, &payload[..length]) != crc {
                Some("record checksum mismatch".to_string())
            } else {
                None
            };
            if let Some(reason) = damage {
                // A torn write leaves nothing valid after it. If any intact record follows the
                // damage, acknowledged data would be lost by truncating: that is corruption.
                if is_last && !self.holds_valid_record_from(offset + 1)? {
                    return Ok(SegmentScan { records, end: SegmentEnd::TornAt(offset), stopped: false });
                }
                return Err(self.corrupt(offset, reason).into());
            }
            let sequence = u64::from_le_bytes(header[8..16].try_into().unwrap());
            let timestamp_ns = u64::from_le_bytes(header[16..24].try_into().unwrap());
            let expected = first_sequence + records;
            if sequence != expected {
                return Err(self.corrupt(offset, format!("sequence {sequence}, expected {expected}")).into());
            }
            records += 1;
            offset += (RECORD_HEADER_BYTES + length) as u64;
            if sequence > after && visit(RecordRef { sequence, timestamp_ns, payload: &payload[..length] })?.is_break()
            {
                return Ok(SegmentScan { records, end: SegmentEnd::Clean, stopped: true });
            }
        }
    }
}

/// What streaming one segment's records found.
struct SegmentScan {
    /// Valid records read (up to and including the one the visitor stopped at).
    records: u64,
    /// Where the valid records end.
    end: SegmentEnd,
    /// The visitor stopped the walk.
    stopped: bool,
}

/// A journaled command as the reader streams it: the payload borrows the reader's buffer and is
/// valid only during the visit ([`RecordRef::to_record`] keeps a copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Global sequence.
    pub sequence: u64,
    /// Sequencer timestamp.
    pub timestamp_ns: u64,
    /// The command's SBE bytes.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record { sequence: self.sequence, timestamp_ns: self.timestamp_ns, payload: self.payload.to_vec() }
    }
}

/// Records read ahead of their visit ([`JournalReader::for_each_after_read_ahead`]): the
/// payloads back to back in one buffer, and per record its sequence, timestamp and payload's end.
#[derive(Debug, Default)]
struct ReadAheadBatch {
    payloads: Vec<u8>,
    records: Vec<(u64, u64, usize)>,
}

impl ReadAheadBatch {
    fn push(&mut self, record: RecordRef<'_>) {
        self.payloads.extend_from_slice(record.payload);
        self.records.push((record.sequence, record.timestamp_ns, self.payloads.len()));
    }

    fn clear(&mut self) {
        self.payloads.clear();
        self.records.clear();
    }

    fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        let mut start = 0;
        self.records.iter().map(move |&(sequence, timestamp_ns, end)| {
            let payload = &self.payloads[start..end];
            start = end;
            RecordRef { sequence, timestamp_ns, payload }
        })
    }
}

/// How a walk through the journal ([`JournalReader::for_each_after`]) ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Visited {
    /// The last valid sequence read: the journal's last (0 if empty) when the walk reached the
    /// end, the sequence the visitor stopped at otherwise.
    pub last_sequence: u64,
    /// Where the last segment's torn tail starts, if it has one and the walk reached it.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// The visitor stopped the walk before the end of the journal; later records were not read.
    pub stopped: bool,
}

/// Reads a journal directory, checking every record it reads and the continuity of sequences.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    segments: Vec<(u64, PathBuf)>,
}

/// What recovery checks the end of the journal against, beyond its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// Return the records after this sequence (that of the snapshot recovery starts from, which
    /// the journal must also reach).
    pub after: u64,
    /// A sequence recorded durably outside the journal (the newest snapshot's), with a
    /// description of the record for the error message: the journal must reach it.
    pub reached_elsewhere: Option<(u64, String)>,
    /// Accept a journal that ends early instead of refusing: the loss is described in
    /// [`JournalContents::accepted_loss`] and, for a writer, the manifest is rewritten to the
    /// journal as found, so the next start does not refuse again.
    pub accept_loss: bool,
}

/// The result of reading a whole journal.
#[derive(Debug, Default)]
pub struct JournalContents {
    /// Every valid record with a sequence greater than the requested start, in order.
    pub records: Vec<Record>,
    /// The last valid sequence in the journal (0 if empty).
    pub last_sequence: u64,
    /// Where the last segment's torn tail starts, if it has one.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// With [`RecoveryOptions::accept_loss`]: what is missing at the end of the journal (the
    /// text [`JournalError::Incomplete`] would have carried). The caller should log it loudly.
    pub accepted_loss: Option<String>,
}

impl JournalReader {
    /// Opens a journal directory (missing directory: empty journal).
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Ok(Self { dir: dir.to_path_buf(), segments: list_segments(dir)? })
    }

    /// Whether the directory holds no segment at all.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// [`Self::read_after`] for recovery: also checks that the journal reaches every sequence
    /// its manifest and `options` record as durable (see the module documentation), before
    /// anything is truncated.
    ///
    /// # Errors
    /// As [`Self::read_after`]; a damaged manifest (unless `accept_loss`); and
    /// [`JournalError::Incomplete`] when the journal ends early (unless `accept_loss`).
    pub fn read_for_recovery(&self, options: &RecoveryOptions) -> Result<JournalContents, JournalError> {
        let mut contents = self.read_after(options.after)?;
        contents.accepted_loss = self.check_end(&contents, options)?;
        Ok(contents)
    }

    /// [`Self::read_for_recovery`] without holding the records: streams every record after
    /// `options.after` through `visit` (as [`Self::for_each_after_read_ahead`] does, a few
    /// batches in memory, read and checked on a second thread while `visit` runs), then checks the end of the journal as [`Self::read_for_recovery`]
    /// does. The returned contents hold no records. A recovery that replays as it reads must not
    /// use its result when this fails: the end check comes after the visits.
    ///
    /// # Errors
    /// As [`Self::read_for_recovery`], and any error `visit` returns (which ends the walk).
    pub fn stream_for_recovery<E, F>(&self, options: &RecoveryOptions, visit: F) -> Result<JournalContents, E>
    where
        E: From<JournalError>,
        F: FnMut(RecordRef<'_>) -> Result<ControlFlow<()>, E>,
    {
        let visited = self.for_each_after_read_ahead(options.after, visit)?;
        let mut contents = JournalContents {
            records: Vec::new(),
            last_sequence: visited.last_sequence,
            torn_tail: visited.torn_tail,
            accepted_loss: None,
        };
        contents.accepted_loss = self.check_end(&contents, options)?;
        Ok(contents)
    }

    /// Compares where the journal ends with what its manifest and `options` say it reached;
    /// returns the accepted loss, if any.
    fn check_end(&self, contents: &JournalContents, options: &RecoveryOptions) -> Result<Option<String>, JournalError> {
        let last = contents.last_sequence;
        let mut problems = Vec::new();
        let manifest = match read_manifest(&self.dir) {
            Ok(manifest) => manifest,
            Err(error) if options.accept_loss => {
                problems.push(format!("the journal manifest is unreadable ({error})"));
                None
            }
            Err(error) => return Err(error),
        };
        let missing = |through: u64| {
            if through == last + 1 {
                format!("sequence {through} is missing")
            } else {
                format!("sequences {}..={through} are missing", last + 1)
            }
        };
        if let Some(manifest) = manifest {
            let sealed = manifest.sealed_through();
            if last < sealed {
                problems.push(format!(
                    "the journal manifest records every sequence through {sealed} in sealed segments ({})",
                    missing(sealed)
                ));
            }
            let watermark = manifest.durable_through;
            if last < watermark && watermark > sealed {
                problems.push(format!(
                    "the journal manifest's watermark records sequence {watermark} as committed ({})",
                    missing(watermark)
                ));
            }
            if !self.segments.iter().any(|(first, _)| *first >= manifest.active_segment_first) {
                problems.push(format!(
                    "the segment being written, {}, named by the journal manifest, is missing",
                    self.dir.join(segment_name(manifest.active_segment_first)).display()
                ));
            }
        }
        if last < options.after {
            problems.push(format!(
                "recovery starts from a snapshot at sequence {} ({})",
                options.after,
                missing(options.after)
            ));
        }
        if let Some((reached, what)) = &options.reached_elsewhere
            && last < *reached
            && *reached != options.after
        {
            problems.push(format!("{what} records sequence {reached} as durable ({})", missing(*reached)));
        }
        if problems.is_empty() {
            return Ok(None);
        }
        let mut description = format!("the journal in {} ends at sequence {last}", self.dir.display());
        if let Some((path, offset)) = &contents.torn_tail {
            description.push_str(&format!(
                " followed by damage at offset {offset} of {}, which is therefore not a torn tail",
                path.display()
            ));
        }
        description.push_str(", but ");
        description.push_str(&problems.join("; and "));
        if options.accept_loss { Ok(Some(description)) } else { Err(JournalError::Incomplete(description)) }
    }

    /// Calls `visit` with every record with `sequence > after`, in order, streaming one segment
    /// at a time: memory holds a read buffer ([`SEGMENT_READ_BUFFER_BYTES`]) and one record, never
    /// the journal tail. The walk stops as soon as `visit` returns [`ControlFlow::Break`]; later
    /// records and segments are not read.
    ///
    /// Every record read is checked (magic, length, checksum, sequence continuity), as is every
    /// segment header against its file name and the continuity of first sequences between
    /// segments. A segment wholly before `after` (the next segment starts at or before
    /// `after + 1`) has only its header read: its records are covered by the snapshot at `after`
    /// and need no reading, and the next segment's first sequence stands for where it ends.
    ///
    /// # Errors
    /// Corruption (not a torn tail, which is allowed in the last segment only) or I/O errors,
    /// naming the file and offset; a gap between segments (a missing segment) is corruption of
    /// the later one at offset 0. Any error `visit` returns ends the walk and is returned as is.
    pub fn for_each_after<E, F>(&self, after: u64, mut visit: F) -> Result<Visited, E>
    where
        E: From<JournalError>,
        F: FnMut(RecordRef<'_>) -> Result<ControlFlow<()>, E>,
    {
        let mut visited = Visited::default();
        // Where the next segment must start: the sequence after the last record so far.
        let mut expected_first: Option<u64> = None;
        for (index, (first, path)) in self.segments.iter().enumerate() {
            let first = *first;
            let next_first = self.segments.get(index + 1).map(|(next, _)| *next);
            let is_last = next_first.is_none();
            let mut segment = SegmentFile::open(path)?;
            if let Some(expected) = expected_first
                && first != expected
            {
                return Err(segment
                    .corrupt(
                        0,
                        format!("segment starts at sequence {first}, expected {expected}: a segment is missing"),
                    )
                    .into());
            }
            let Some(header_first) = segment.read_header(is_last)? else {
                // A header never completely written (a crash while the segment was created): it
                // holds no record, but it was created only once every earlier sequence was
                // durable, so the journal reaches the sequence before its name's.
                expected_first = Some(first);
                visited.torn_tail = Some((path.clone(), 0));
                break;
            };
            if header_first != first {
                return Err(segment
                    .corrupt(16, format!("header first sequence {header_first} does not match the file name"))
                    .into());
            }
            if let Some(next) = next_first
                && next > first
                && next <= after.saturating_add(1)
            {
                expected_first = Some(next);
                continue;
            }
            let scan = segment.scan_records(first, is_last, after, &mut visit)?;
            expected_first = Some(first + scan.records);
            if scan.stopped {
                visited.stopped = true;
                visited.last_sequence = first + scan.records - 1;
                return Ok(visited);
            }
            if let SegmentEnd::TornAt(offset) = scan.end {
                visited.torn_tail = Some((path.clone(), offset));
            }
        }
        // Sequences are contiguous across segments, so the last record precedes where the next
        // segment would start (an empty last segment: the previous segment's last record).
        visited.last_sequence = expected_first.map_or(0, |first| first.saturating_sub(1));
        Ok(visited)
    }

    /// [`Self::for_each_after`] with the reading and checking on a second thread, ahead of
    /// `visit`: the thread reads records in batches ([`READ_AHEAD_BATCH_BYTES`], at most
    /// [`READ_AHEAD_BATCHES`] waiting) that the calling thread visits, so a replay's execution
    /// overlaps the reads and checksums instead of waiting for them. The visits, the result and
    /// the errors are those of [`Self::for_each_after`]: records in order, each checked before it
    /// is visited; damage is reported only after every record before it was visited; a visitor's
    /// error or stop ends the walk (the thread may have read a little further, which is
    /// discarded, and damage it found there is not reported, as a walk that stopped would not
    /// have read it). When no thread can be started the walk runs on the calling thread.
    ///
    /// # Errors
    /// As [`Self::for_each_after`].
    pub fn for_each_after_read_ahead<E, F>(&self, after: u64, mut visit: F) -> Result<Visited, E>
    where
        E: From<JournalError>,
        F: FnMut(RecordRef<'_>) -> Result<ControlFlow<()>, E>,
    {
        let (full_sender, full_batches) = std::sync::mpsc::sync_channel::<ReadAheadBatch>(READ_AHEAD_BATCHES);
        let (empty_sender, empty_batches) = std::sync::mpsc::channel::<ReadAheadBatch>();
        std::thread::scope(|scope| {
            let reading =
                std::thread::Builder::new().name("journal-read-ahead".into()).spawn_scoped(scope, move || {
                    let mut batch = ReadAheadBatch::default();
                    let visited = self.for_each_after(after, |record| {
                        batch.push(record);
                        if batch.payloads.len() >= READ_AHEAD_BATCH_BYTES {
                            let mut full = empty_batches.try_recv().unwrap_or_default();
                            full.clear();
                            std::mem::swap(&mut full, &mut batch);
                            if full_sender.send(full).is_err() {
                                // The visitor stopped: read no further.
                                return Ok::<_, JournalError>(ControlFlow::Break(()));
                            }
                        }
                        Ok(ControlFlow::Continue(()))
                    });
                    // The records before any damage are visited before the damage is reported.
                    if !batch.records.is_empty() {
                        let _ = full_sender.send(batch);
                    }
                    visited
                });
            let Ok(reading) = reading else {
                drop(full_batches);
                return self.for_each_after(after, &mut visit);
            };
            let mut ended: Option<Result<Visited, E>> = None;
            'batches: for batch in full_batches.iter() {
                for record in batch.records() {
                    let sequence = record.sequence;
                    match visit(record) {
                        Err(error) => ended = Some(Err(error)),
                        Ok(ControlFlow::Break(())) => {
                            ended = Some(Ok(Visited { last_sequence: sequence, torn_tail: None, stopped: true }))
                        }
                        Ok(ControlFlow::Continue(())) => continue,
                    }
                    break 'batches;
                }
                let _ = empty_sender.send(batch);
            }
            // A reading thread blocked on a full channel sees it closed and stops.
            drop(full_batches);
            let read = reading.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            ended.unwrap_or_else(|| read.map_err(E::from))
        })
    }

    /// Reads every record with `sequence > after` into memory (recovery replays them all), with
    /// the checks of [`Self::for_each_after`]; segments wholly before `after` (older than a
    /// snapshot) have only their header read.
    ///
    /// # Errors
    /// As [`Self::for_each_after`].
    pub fn read_after(&self, after: u64) -> Result<JournalContents, JournalError> {
        let mut records = Vec::new();
        let visited = self.for_each_after(after, |record| {
            records.push(record.to_record());
            Ok::<_, JournalError>(ControlFlow::Continue(()))
        })?;
        Ok(JournalContents {
            records,
            last_sequence: visited.last_sequence,
            torn_tail: visited.torn_tail,
            accepted_loss: None,
        })
    }
}

/// Settings of a [`JournalWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Durability of each batch.
    pub durability: Durability,
    /// A segment is closed and a new one started once it exceeds this size.
    pub segment_bytes_max: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self { durability: Durability::Fsync, segment_bytes_max: 256 << 20 }
    }
}

/// Appends records with group commit. Single writer (the sequencer).
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    config: JournalConfig,
    file: File,
    path: PathBuf,
    segment_bytes: u64,
    batch: Vec<u8>,
    next_sequence: u64,
    durable_sequence: u64,
    /// Set after an I/O error: the writer refuses further work.
    failed: bool,
    /// The manifest, rewritten at rolls here and with the watermark by `watermark`.
    manifest: Arc<ManifestRecorder>,
    /// The watermark thread, once started ([`Self::start_watermark`]).
    watermark: Option<WatermarkThread>,
}

impl JournalWriter {
    /// Opens the journal for appending after recovery: truncates a torn tail, then continues the
    /// last segment (or starts the first). Returns the writer and the records after `after`
    /// (for replay on top of a snapshot taken at `after`). Checks the journal's end against its
    /// manifest (see [`Self::open_with`]).
    ///
    /// # Errors
    /// Corruption, an incomplete journal, or I/O errors.
    pub fn open(dir: &Path, config: JournalConfig, after: u64) -> Result<(Self, JournalContents), JournalError> {
        Self::open_with(dir, config, &RecoveryOptions { after, ..RecoveryOptions::default() })
    }

    /// Opens the journal for appending after recovery, returning the records after
    /// `options.after`. First checks that the journal reaches what its manifest and `options`
    /// record ([`JournalReader::read_for_recovery`]), and only then truncates a torn tail; then
    /// continues the last segment (or starts a new one where the journal must go on: at the
    /// first sequence, or after a snapshot that is ahead of an accepted short journal), and
    /// rewrites the manifest to name the segment being written.
    ///
    /// # Errors
    /// Corruption, [`JournalError::Incomplete`] (unless `options.accept_loss`), or I/O errors.
    pub fn open_with(
        dir: &Path,
        config: JournalConfig,
        options: &RecoveryOptions,
    ) -> Result<(Self, JournalContents), JournalError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let contents = JournalReader::open(dir)?.read_for_recovery(options)?;
        let next_sequence = contents.last_sequence.max(options.after) + 1;
        if let Some((path, offset)) = &contents.torn_tail {
            if *offset == 0 {
                // A segment whose header was torn holds nothing: write its header again in place
                // (its name may already be in the manifest, so it never disappears), or drop it
                // if the journal goes on from another sequence.
                if path.file_name().and_then(|n| n.to_str()) == Some(segment_name(next_sequence).as_str()) {
                    let mut file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
                    Self::write_segment_header(&mut file, path, next_sequence)?;
                } else {
                    fs::remove_file(path).map_err(io_error(path))?;
                }
            } else {
                let file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
                file.set_len(*offset).map_err(io_error(path))?;
                file.sync_all().map_err(io_error(path))?;
            }
        }
        let segments = list_segments(dir)?;
        // The last segment continues only where the journal ends; after an accepted loss behind
        // a snapshot the next records start a segment of their own (a gap between segments, which
        // only a replay from sequence 1 runs into, is what was lost).
        let (file, path, segment_bytes, segment_first) = match segments.last() {
            Some((first, path)) if next_sequence == contents.last_sequence + 1 => {
                let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io_error(path))?;
                let end = file.seek(SeekFrom::End(0)).map_err(io_error(path))?;
                // The watermark below says the journal reaches its last record: make that so
                // even if the previous run wrote without `fdatasync` (durability "none").
                file.sync_data().map_err(io_error(path))?;
                (file, path.clone(), end, *first)
            }
            _ => {
                let (file, path, bytes) = Self::create_segment(dir, next_sequence)?;
                (file, path, bytes, next_sequence)
            }
        };
        // Written as found (after an accepted loss too: the next start must not refuse again).
        let manifest = JournalManifest { active_segment_first: segment_first, durable_through: next_sequence - 1 };
        write_manifest(dir, &manifest)?;
        let writer = Self {
            dir: dir.to_path_buf(),
            config,
            file,
            path,
            segment_bytes,
            batch: Vec::with_capacity(1 << 20),
            next_sequence,
            durable_sequence: next_sequence - 1,
            failed: false,
            manifest: Arc::new(ManifestRecorder { dir: dir.to_path_buf(), recorded: Mutex::new(manifest) }),
            watermark: None,
        };
        Ok((writer, contents))
    }

    fn create_segment(dir: &Path, first_sequence: u64) -> Result<(File, PathBuf, u64), JournalError> {
        let path = dir.join(segment_name(first_sequence));
        let mut file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_error(&path))?;
        Self::write_segment_header(&mut file, &path, first_sequence)?;
        // Make the new directory entry durable too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
        Ok((file, path, SEGMENT_HEADER_BYTES as u64))
    }

    /// Writes a segment header at the start of `file` (emptied first) and makes it durable.
    fn write_segment_header(file: &mut File, path: &Path, first_sequence: u64) -> Result<(), JournalError> {
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        header[0..8].copy_from_slice(&SEGMENT_MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&first_sequence.to_le_bytes());
        file.set_len(0).map_err(io_error(path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
        file.write_all(&header).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))
    }

    /// The sequence the next appended record must carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Every sequence up to this one is durable.
    pub fn durable_sequence(&self) -> u64 {
        self.durable_sequence
    }

    /// Buffers one record; it becomes durable at the next [`Self::commit`].
    ///
    /// # Errors
    /// Oversized payload or a writer that failed before.
    pub fn append(&mut self, timestamp_ns: u64, payload: &[u8]) -> Result<u64, JournalError> {
        if self.failed {
            return Err(JournalError::InvalidAppend("journal writer failed earlier".into()));
        }
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(JournalError::InvalidAppend(format!("payload of {} bytes", payload.len())));
        }
        let sequence = self.next_sequence;
        encode_record(&mut self.batch, sequence, timestamp_ns, payload);
        self.next_sequence += 1;
        Ok(sequence)
    }

    /// Starts the watermark thread: after each commit it is handed the committed sequence (an
    /// atomic store and, when it is idle, a wake-up: nothing that waits on the disk), and it
    /// rewrites the manifest's watermark ([`JournalManifest::durable_through`]) atomically, at
    /// most once per `interval` ([`WATERMARK_INTERVAL`] in the server). A failed rewrite is passed
    /// to `on_error` (once per run of failures) and retried after `interval`: it weakens what
    /// recovery can detect, it loses nothing, so the writer goes on. Replaces a thread started
    /// before. Call [`Self::stop_watermark`] at a clean shutdown.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start_watermark(
        &mut self,
        interval: Duration,
        on_error: impl FnMut(&JournalError) + Send + 'static,
    ) -> io::Result<()> {
        self.watermark = None;
        self.watermark =
            Some(WatermarkThread::start(self.manifest.clone(), self.durable_sequence, interval, on_error)?);
        Ok(())
    }

    /// Stops the watermark thread (if any) and records the committed sequence in the manifest
    /// now, on this thread: at a clean shutdown every committed record is then covered, so
    /// cutting any of them off is detected at the next start. Returns the recorded watermark.
    ///
    /// # Errors
    /// I/O errors writing the manifest (the journal itself is intact).
    pub fn stop_watermark(&mut self) -> Result<u64, JournalError> {
        if let Some(mut watermark) = self.watermark.take() {
            watermark.stop();
        }
        self.record_watermark()
    }

    /// Records the committed sequence in the manifest now, on this thread (a rewrite only if it
    /// advanced). Returns the recorded watermark.
    ///
    /// # Errors
    /// I/O errors writing the manifest.
    pub fn record_watermark(&self) -> Result<u64, JournalError> {
        self.manifest.record(0, self.durable_sequence)?;
        Ok(self.recorded_watermark())
    }

    /// The watermark the manifest records now: the journal on disk reaches at least this
    /// sequence.
    pub fn recorded_watermark(&self) -> u64 {
        self.manifest.recorded().durable_through
    }

    /// The records buffered since the last commit, framed exactly as they will be on disk
    /// (see the module documentation, "Format"): what a replicated journal ships for this batch
    /// ([`for_each_record_in`] reads them back). Empty right after [`Self::commit`].
    pub fn pending_records(&self) -> &[u8] {
        &self.batch
    }

    /// Bytes buffered and not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.batch.len()
    }

    /// Writes the buffered batch with one `write` and (under [`Durability::Fsync`]) one
    /// `fdatasync`; returns the new durable sequence. On error the writer is poisoned: the caller
    /// must stop acknowledging and shut down; recovery on restart truncates whatever was torn.
    ///
    /// # Errors
    /// I/O errors (disk full, fsync failure).
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        if self.failed {
            return Err(JournalError::InvalidAppend("journal writer failed earlier".into()));
        }
        if self.batch.is_empty() {
            return Ok(self.durable_sequence);
        }
        let result = self.write_batch();
        match result {
            // Only a committed sequence: the watermark never claims more than the disk holds.
            Ok(committed) => {
                if let Some(watermark) = &self.watermark {
                    watermark.publish(committed);
                }
            }
            Err(_) => self.failed = true,
        }
        result
    }

    fn write_batch(&mut self) -> Result<u64, JournalError> {
        self.file.write_all(&self.batch).map_err(io_error(&self.path))?;
        if self.config.durability == Durability::Fsync {
            self.file.sync_data().map_err(io_error(&self.path))?;
        }
        self.segment_bytes += self.batch.len() as u64;
        self.batch.clear();
        self.durable_sequence = self.next_sequence - 1;
        if self.segment_bytes >= self.config.segment_bytes_max {
            let (file, path, bytes) = Self::create_segment(&self.dir, self.next_sequence)?;
            self.file = file;
            self.path = path;
            self.segment_bytes = bytes;
            // The sealed segment's end is now recorded outside it: losing it, or cutting it
            // short, is detected at the next recovery. (This may wait for a watermark rewrite in
            // progress: only at a roll, which pays for `fsync`s of its own anyway.)
            self.manifest.record(self.next_sequence, self.durable_sequence)?;
        }
        Ok(self.durable_sequence)
    }

    /// Deletes whole segments whose records all precede `sequence` (see
    /// [`remove_segments_before`]).
    ///
    /// # Errors
    /// I/O errors.
    pub fn remove_segments_before(&self, sequence: u64) -> Result<usize, JournalError> {
        remove_segments_before(&self.dir, sequence)
    }
}

/// Deletes whole segments whose records all precede `sequence` (already covered by a snapshot).
/// The newest segment (the one being appended to) is never deleted, so this is safe to call from
/// another thread while the writer runs.
///
/// # Errors
/// I/O errors.
pub fn remove_segments_before(dir: &Path, sequence: u64) -> Result<usize, JournalError> {
    let segments = list_segments(dir)?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first <= sequence + 1 {
            fs::remove_file(path).map_err(io_error(path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("journal-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn write(dir: &Path, count: u64, segment_bytes_max: u64) {
        let config = JournalConfig { durability: Durability::None, segment_bytes_max };
        let (mut writer, _) = JournalWriter::open(dir, config, 0).unwrap();
        for i in 0..count {
            let payload = vec![i as u8; 10 + (i as usize % 7)];
            writer.append(1_000 + i, &payload).unwrap();
            if i % 3 == 2 {
                writer.commit().unwrap();
            }
        }
        writer.commit().unwrap();
    }

    #[test]
    fn pending_records_read_back_and_damage_is_refused() {
        let dir = temp_dir("pending-records");
        let config = JournalConfig { durability: Durability::None, segment_bytes_max: 1 << 20 };
        let (mut writer, _) = JournalWriter::open(&dir, config, 0).unwrap();
        for i in 0..3u64 {
            writer.append(500 + i, &[i as u8; 12]).unwrap();
        }
        let shipped = writer.pending_records().to_vec();
        writer.commit().unwrap();
        assert!(writer.pending_records().is_empty());
        let mut seen = Vec::new();
        let count = for_each_record_in::<JournalError, _>(&dir, &shipped, |r| {
            seen.push(r.to_record());
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 3);
        let on_disk = JournalReader::open(&dir).unwrap().read_after(0).unwrap().records;
        assert_eq!(seen, on_disk, "the shipped bytes are the journal's own records");
        // One flipped payload byte, a cut record, a gap in sequences: refused.
        let mut flipped = shipped.clone();
        flipped[RECORD_HEADER_BYTES + 1] ^= 1;
        assert!(for_each_record_in::<JournalError, _>(&dir, &flipped, |_| Ok(())).is_err());
        assert!(for_each_record_in::<JournalError, _>(&dir, &shipped[..shipped.len() - 1], |_| Ok(())).is_err());
        let record_bytes = shipped.len() / 3;
        let mut gap = shipped[..record_bytes].to_vec();
        gap.extend_from_slice(&shipped[2 * record_bytes..]);
        assert!(for_each_record_in::<JournalError, _>(&dir, &gap, |_| Ok(())).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn round_trip_across_segments_and_reopen() {
        let dir = temp_dir("round-trip");
        write(&dir, 50, 300);
        assert!(list_segments(&dir).unwrap().len() > 3, "small segments roll over");
        let contents = JournalReader::open(&dir).unwrap().read_after(0).unwrap();
        assert_eq!(contents.records.len(), 50);
        assert_eq!(contents.last_sequence, 50);
        assert!(contents.torn_tail.is_none());
        for (i, record) in contents.records.iter().enumerate() {
            assert_eq!(record.sequence, i as u64 + 1);
            assert_eq!(record.timestamp_ns, 1_000 + i as u64);
            assert_eq!(record.payload, vec![i as u8; 10 + i % 7]);
        }
        // Reopening continues the sequence.
        let (mut writer, contents) = JournalWriter::open(&dir, JournalConfig::default(), 40).unwrap();
        assert_eq!(contents.records.len(), 10, "only records after 40 are returned");
        assert_eq!(writer.append(7, b"next").unwrap(), 51);
        assert_eq!(writer.commit().unwrap(), 51);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_is_truncated_at_every_cut() {
        let dir = temp_dir("torn");
        write(&dir, 5, 1 << 20);
        let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
        let full = fs::read(&path).unwrap();
        let record_bytes = RECORD_HEADER_BYTES + 10 + 4; // the fifth record's payload is 14 bytes
        let last_start = full.len() - record_bytes;
        for cut in last_start + 1..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (mut writer, contents) = JournalWriter::open(&dir, JournalConfig::default(), 0).unwrap();
            assert_eq!(contents.last_sequence, 4, "cut at {cut}");
            assert_eq!(contents.torn_tail.as_ref().map(|t| t.1), Some(last_start as u64));
            assert_eq!(fs::metadata(&path).unwrap().len(), last_start as u64, "truncated");
            assert_eq!(writer.append(0, b"again").unwrap(), 5);
            writer.commit().unwrap();
            drop(writer);
        }
        // Zeros after the last record (pre-allocated blocks never written) are a torn tail too.
        let mut zeroed = fs::read(&path).unwrap();
        zeroed.extend_from_slice(&[0; 100]);
        fs::write(&path, &zeroed).unwrap();
        let contents = JournalReader::open(&dir).unwrap().read_after(0).unwrap();
        assert_eq!(contents.last_sequence, 5);
        assert!(contents.torn_tail.is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flipped_bit_mid_file_is_corruption_naming_file_and_offset() {
        let dir = temp_dir("flip");
        write(&dir, 10, 1 << 20);
        let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Second record's payload.
        let second = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 10;
        bytes[second + RECORD_HEADER_BYTES + 3] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let error = JournalWriter::open(&dir, JournalConfig::default(), 0).unwrap_err();
        match &error {
            JournalError::Corrupt { path: bad, offset, .. } => {
                assert_eq!(bad, &path);
                assert_eq!(*offset, second as u64);
            }
            other => panic!("expected corruption, got {other}"),
        }
        assert!(error.to_string().contains("checksum"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_length_mid_file_is_not_mistaken_for_a_torn_tail() {
        let dir = temp_dir("length");
        write(&dir, 10, 1 << 20);
        let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Make the third record claim a huge payload running past the end of the file.
        let third = SEGMENT_HEADER_BYTES + 2 * RECORD_HEADER_BYTES + 10 + 11;
        bytes[third + 6] = 0x7f;
        fs::write(&path, &bytes).unwrap();
        let error = JournalReader::open(&dir).unwrap().read_after(0).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { offset, .. } if offset == third as u64), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_segment_is_corruption() {
        let dir = temp_dir("missing");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        assert!(segments.len() >= 3);
        fs::remove_file(&segments[1].1).unwrap();
        let error = JournalReader::open(&dir).unwrap().read_after(0).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { path, offset: 0, .. } if path == &segments[2].1), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn visit_sequences(dir: &Path, after: u64) -> Result<(Vec<u64>, Visited), JournalError> {
        let mut sequences = Vec::new();
        let visited = JournalReader::open(dir).unwrap().for_each_after(after, |record| {
            sequences.push(record.sequence);
            Ok::<_, JournalError>(ControlFlow::Continue(()))
        })?;
        Ok((sequences, visited))
    }

    /// Flips a payload bit of the first record of a segment: a checksum mismatch at offset 24.
    fn damage_first_record(path: &Path) {
        let mut bytes = fs::read(path).unwrap();
        bytes[SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 2] ^= 0x01;
        fs::write(path, &bytes).unwrap();
    }

    #[test]
    fn visitor_sees_exactly_the_records_after_a_sequence() {
        let dir = temp_dir("visit");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        assert!(segments.len() > 4, "small segments roll over");
        let all = JournalReader::open(&dir).unwrap().read_after(0).unwrap().records;
        // Every start, including each segment boundary and past the end.
        for after in 0..=62 {
            let (sequences, visited) = visit_sequences(&dir, after).unwrap();
            assert_eq!(sequences, (after + 1..=60).collect::<Vec<_>>(), "after {after}");
            assert_eq!(visited, Visited { last_sequence: 60, torn_tail: None, stopped: false });
        }
        // Payloads and timestamps are those written, and `read_after` is the same walk.
        let mut copies = Vec::new();
        JournalReader::open(&dir)
            .unwrap()
            .for_each_after(0, |record| {
                copies.push(record.to_record());
                Ok::<_, JournalError>(ControlFlow::Continue(()))
            })
            .unwrap();
        assert_eq!(copies, all);
        assert_eq!(copies[7], Record { sequence: 8, timestamp_ns: 1_007, payload: vec![7; 10] });
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_wholly_before_the_start_are_not_read() {
        let dir = temp_dir("skip");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let second_first = segments[1].0;
        damage_first_record(&segments[0].1);
        // The damaged segment is read (and refused) while any of its records is wanted...
        for after in [0, second_first - 2] {
            let error = visit_sequences(&dir, after).unwrap_err();
            assert!(
                matches!(&error, JournalError::Corrupt { path, offset: 24, .. } if path == &segments[0].1),
                "after {after}: {error}"
            );
        }
        // ...and not even opened past its header once all of them precede the start.
        let (sequences, visited) = visit_sequences(&dir, second_first - 1).unwrap();
        assert_eq!(sequences.first(), Some(&second_first));
        assert_eq!(visited.last_sequence, 60);
        // A skipped segment's header is still checked against its file name.
        let mut bytes = fs::read(&segments[0].1).unwrap();
        bytes[16] ^= 0x01;
        fs::write(&segments[0].1, &bytes).unwrap();
        let error = visit_sequences(&dir, second_first - 1).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { offset: 16, .. }), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stopping_visitor_reads_no_further() {
        let dir = temp_dir("stop");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        // Damage a later segment: a walk that stops before it never sees the damage.
        damage_first_record(&segments[3].1);
        let stop_at = segments[1].0 + 1;
        let mut sequences = Vec::new();
        let visited = JournalReader::open(&dir)
            .unwrap()
            .for_each_after(5, |record| {
                sequences.push(record.sequence);
                Ok::<_, JournalError>(if record.sequence == stop_at {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })
            .unwrap();
        assert_eq!(sequences, (6..=stop_at).collect::<Vec<_>>());
        assert_eq!(visited, Visited { last_sequence: stop_at, torn_tail: None, stopped: true });
        // Walking on reaches it.
        let error = visit_sequences(&dir, 5).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { path, .. } if path == &segments[3].1), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The sequences a walk visited and how it ended, by the sequential walk or the read-ahead.
    fn walk(dir: &Path, after: u64, read_ahead: bool, stop_at: u64, fail_at: u64) -> (Vec<Record>, String) {
        let mut records = Vec::new();
        let visit = |record: RecordRef<'_>| {
            records.push(record.to_record());
            if record.sequence == fail_at {
                return Err(JournalError::Incomplete(format!("visitor failed at {fail_at}")));
            }
            Ok(if record.sequence == stop_at { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        };
        let reader = JournalReader::open(dir).unwrap();
        let ended = if read_ahead {
            reader.for_each_after_read_ahead(after, visit)
        } else {
            reader.for_each_after(after, visit)
        };
        (records, format!("{ended:?}"))
    }

    /// Reading ahead on a second thread visits the same records and ends the same way as the
    /// sequential walk: over many batches and segments, from any start, when the visitor stops or
    /// fails (in a later batch than the first), and at damage, which is reported only after
    /// every record before it was visited.
    #[test]
    fn reading_ahead_visits_and_ends_exactly_as_the_sequential_walk() {
        const RECORDS: u64 = 60_000;
        let dir = temp_dir("read-ahead");
        write(&dir, RECORDS, 64 << 10);
        let segments = list_segments(&dir).unwrap();
        assert!(segments.len() > 8, "the journal spans many segments");
        let payload_bytes: usize =
            JournalReader::open(&dir).unwrap().read_after(0).unwrap().records.iter().map(|r| r.payload.len()).sum();
        assert!(payload_bytes > 2 * READ_AHEAD_BATCH_BYTES, "the journal spans several batches");
        let late = RECORDS - 5;
        let cases = [
            (0, 0, 0),
            (1, 0, 0),
            (segments[3].0 - 1, 0, 0),
            (RECORDS - 1, 0, 0),
            (RECORDS + 2, 0, 0),
            (0, late, 0),
            (0, 0, late),
            (0, 0, 7),
            (0, 3, 0),
        ];
        for (after, stop_at, fail_at) in cases {
            let sequential = walk(&dir, after, false, stop_at, fail_at);
            let ahead = walk(&dir, after, true, stop_at, fail_at);
            assert_eq!(ahead.1, sequential.1, "after {after}, stop at {stop_at}, fail at {fail_at}");
            assert!(ahead.0 == sequential.0, "after {after}, stop at {stop_at}, fail at {fail_at}: visits differ");
        }
        assert_eq!(walk(&dir, 0, true, 0, 0).0.len(), RECORDS as usize);
        // Damage in a middle segment, far into the journal: the same visits, then the same error.
        damage_first_record(&segments[segments.len() - 3].1);
        let sequential = walk(&dir, 0, false, 0, 0);
        let ahead = walk(&dir, 0, true, 0, 0);
        assert!(sequential.1.contains("Corrupt"), "{}", sequential.1);
        assert_eq!(ahead.1, sequential.1);
        assert!(ahead.0 == sequential.0, "visits before the damage differ");
        // A walk that stops before the damage does not report it, read ahead or not.
        assert_eq!(walk(&dir, 0, true, 10, 0).1, walk(&dir, 0, false, 10, 0).1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn visitor_errors_end_the_walk_and_are_returned_as_is() {
        #[derive(Debug)]
        enum Failure {
            Journal,
            Visitor(u64),
        }
        impl From<JournalError> for Failure {
            fn from(_: JournalError) -> Self {
                Failure::Journal
            }
        }
        let dir = temp_dir("visitor-error");
        write(&dir, 20, 300);
        let mut seen = 0;
        let error = JournalReader::open(&dir)
            .unwrap()
            .for_each_after(0, |record| {
                seen += 1;
                if record.sequence == 7 { Err(Failure::Visitor(7)) } else { Ok(ControlFlow::Continue(())) }
            })
            .unwrap_err();
        assert!(matches!(error, Failure::Visitor(7)), "{error:?}");
        assert_eq!(seen, 7);
        let segments = list_segments(&dir).unwrap();
        damage_first_record(&segments[0].1);
        let error =
            JournalReader::open(&dir).unwrap().for_each_after(0, |_| Ok(ControlFlow::Continue(()))).unwrap_err();
        assert!(matches!(error, Failure::Journal), "{error:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damage_in_a_middle_segment_is_corruption_and_a_torn_last_segment_is_not() {
        let dir = temp_dir("middle");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let last = &segments[segments.len() - 1].1;
        let middle = &segments[2].1;
        // A torn tail in the last segment: every complete record is visited.
        let full_last = fs::read(last).unwrap();
        assert!(full_last.len() > SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES, "the last segment holds records");
        fs::write(last, &full_last[..full_last.len() - 3]).unwrap();
        let (sequences, visited) = visit_sequences(&dir, 0).unwrap();
        assert_eq!(sequences, (1..=59).collect::<Vec<_>>());
        assert_eq!(visited.last_sequence, 59);
        assert!(matches!(&visited.torn_tail, Some((path, _)) if path == last));
        // The same cut in a middle segment is corruption: later segments hold acknowledged data.
        let full_middle = fs::read(middle).unwrap();
        fs::write(middle, &full_middle[..full_middle.len() - 3]).unwrap();
        let error = visit_sequences(&dir, 0).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { path, .. } if path == middle), "{error}");
        // So is a flipped bit there.
        fs::write(middle, &full_middle).unwrap();
        damage_first_record(middle);
        let error = visit_sequences(&dir, 0).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { path, offset: 24, .. } if path == middle), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn old_segments_are_removed_after_a_snapshot() {
        let dir = temp_dir("prune");
        write(&dir, 60, 300);
        let before = list_segments(&dir).unwrap();
        let config = JournalConfig { durability: Durability::None, segment_bytes_max: 300 };
        let (writer, _) = JournalWriter::open(&dir, config, 0).unwrap();
        let cut = before[2].0; // keep the segment that starts at the third boundary onward
        let removed = writer.remove_segments_before(cut - 1).unwrap();
        assert_eq!(removed, 2);
        let contents = JournalReader::open(&dir).unwrap().read_after(cut - 1).unwrap();
        assert_eq!(contents.records.first().unwrap().sequence, cut);
        assert_eq!(contents.last_sequence, 60);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Incomplete-journal error text, or a panic naming what happened instead.
    fn incomplete(result: Result<(JournalWriter, JournalContents), JournalError>) -> String {
        match result {
            Err(JournalError::Incomplete(text)) => text,
            Err(other) => panic!("expected an incomplete journal, got {other}"),
            Ok((_, contents)) => panic!("expected a refusal, recovered to {}", contents.last_sequence),
        }
    }

    fn open_default(dir: &Path) -> Result<(JournalWriter, JournalContents), JournalError> {
        JournalWriter::open(dir, JournalConfig::default(), 0)
    }

    #[test]
    fn the_manifest_names_the_segment_being_written() {
        let dir = temp_dir("manifest");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let manifest = read_manifest(&dir).unwrap().unwrap();
        assert_eq!(manifest.active_segment_first, segments.last().unwrap().0);
        assert_eq!(manifest.sealed_through(), segments.last().unwrap().0 - 1);
        // No temporary file is left behind, and reopening keeps it.
        assert!(!dir.join(format!("{MANIFEST_FILE}.tmp")).exists());
        drop(open_default(&dir).unwrap());
        assert_eq!(
            read_manifest(&dir).unwrap(),
            Some(JournalManifest { durable_through: 60, ..manifest }),
            "the same segment, and a watermark at the journal's end as found"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deleting_the_newest_segment_is_refused_naming_it() {
        let dir = temp_dir("delete-newest");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let (newest_first, newest) = segments.last().unwrap().clone();
        // Make sure it holds records: more to lose than an empty file.
        assert!(fs::metadata(&newest).unwrap().len() > SEGMENT_HEADER_BYTES as u64);
        fs::remove_file(&newest).unwrap();
        let text = incomplete(open_default(&dir));
        assert!(text.contains(newest.to_str().unwrap()) && text.contains("missing"), "{text}");
        assert!(text.contains(&format!("ends at sequence {}", newest_first - 1)), "{text}");
        // The read-only path (replay) refuses the same way, and nothing was changed on disk.
        let error = JournalReader::open(&dir).unwrap().read_for_recovery(&RecoveryOptions::default()).unwrap_err();
        assert!(matches!(error, JournalError::Incomplete(_)), "{error}");
        assert_eq!(list_segments(&dir).unwrap(), segments[..segments.len() - 1]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Cuts the last record off a segment, exactly at its start: a clean, shorter file.
    fn cut_last_record(path: &Path) -> u64 {
        let bytes = fs::read(path).unwrap();
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut last_start = offset;
        while offset < bytes.len() {
            last_start = offset;
            let length = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
            offset += RECORD_HEADER_BYTES + length;
        }
        fs::write(path, &bytes[..last_start]).unwrap();
        u64::from_le_bytes(bytes[last_start + 8..last_start + 16].try_into().unwrap())
    }

    #[test]
    fn a_sealed_segment_cut_at_a_record_boundary_is_refused() {
        let dir = temp_dir("cut-sealed");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let sealed = &segments[segments.len() - 2].1;
        let cut_sequence = cut_last_record(sealed);
        // With the segment being written still there, the gap between the files shows it...
        let error = open_default(&dir).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { path, .. } if path == &segments[segments.len() - 1].1));
        // ...and without it, only the manifest does.
        fs::remove_file(&segments[segments.len() - 1].1).unwrap();
        let text = incomplete(open_default(&dir));
        assert!(text.contains(&format!("ends at sequence {}", cut_sequence - 1)), "{text}");
        assert!(text.contains(&format!("sequence {cut_sequence} is missing")), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_not_a_torn_tail_when_the_journal_went_further() {
        let dir = temp_dir("flip-last");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        fs::remove_file(&segments[segments.len() - 1].1).unwrap();
        let sealed = &segments[segments.len() - 2].1;
        let mut bytes = fs::read(sealed).unwrap();
        let length = bytes.len();
        bytes[length - 2] ^= 0x04; // the last record's payload
        fs::write(sealed, &bytes).unwrap();
        let text = incomplete(open_default(&dir));
        assert!(text.contains("not a torn tail") && text.contains(sealed.to_str().unwrap()), "{text}");
        assert_eq!(fs::read(sealed).unwrap(), bytes, "nothing was truncated");
        fs::remove_dir_all(&dir).unwrap();

        // In the segment being written, a sequence recorded elsewhere (a snapshot) does the same.
        write(&dir, 10, 1 << 20);
        let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let length = bytes.len();
        bytes[length - 1] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let snapshot = RecoveryOptions { reached_elsewhere: Some((10, "snapshot s-10".into())), ..Default::default() };
        let text = incomplete(JournalWriter::open_with(&dir, JournalConfig::default(), &snapshot));
        assert!(text.contains("snapshot s-10 records sequence 10") && text.contains("not a torn tail"), "{text}");
        // A snapshot the journal does reach leaves the torn tail to be truncated as before.
        let earlier = RecoveryOptions { reached_elsewhere: Some((9, "snapshot s-9".into())), ..Default::default() };
        let (_, contents) = JournalWriter::open_with(&dir, JournalConfig::default(), &earlier).unwrap();
        assert_eq!(contents.last_sequence, 9);
        assert!(contents.torn_tail.is_some() && contents.accepted_loss.is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_partial_record_at_the_end_still_recovers_as_a_torn_tail() {
        let dir = temp_dir("torn-with-manifest");
        write(&dir, 60, 300);
        let (_, last) = list_segments(&dir).unwrap().pop().unwrap();
        let full = fs::read(&last).unwrap();
        assert!(full.len() > SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES);
        fs::write(&last, &full[..full.len() - 5]).unwrap();
        let (mut writer, contents) = open_default(&dir).unwrap();
        assert_eq!(contents.last_sequence, 59);
        assert!(contents.torn_tail.is_some());
        assert_eq!(writer.append(0, b"again").unwrap(), 60);
        writer.commit().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_loss_accepted_explicitly_starts_where_the_journal_ends_and_is_not_refused_again() {
        let dir = temp_dir("accept");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let (newest_first, newest) = segments.last().unwrap().clone();
        fs::remove_file(&newest).unwrap();
        let accept = RecoveryOptions { accept_loss: true, ..Default::default() };
        let (mut writer, contents) = JournalWriter::open_with(&dir, JournalConfig::default(), &accept).unwrap();
        let loss = contents.accepted_loss.expect("the loss is reported");
        assert!(loss.contains(newest.to_str().unwrap()), "{loss}");
        assert_eq!(writer.append(0, b"after the loss").unwrap(), newest_first);
        writer.commit().unwrap();
        drop(writer);
        let (_, contents) = open_default(&dir).unwrap();
        assert_eq!(contents.last_sequence, newest_first);
        assert!(contents.accepted_loss.is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_accepted_journal_behind_its_snapshot_goes_on_in_a_segment_after_the_snapshot() {
        let dir = temp_dir("behind-snapshot");
        write(&dir, 20, 1 << 20);
        let snapshot = RecoveryOptions { after: 25, ..Default::default() };
        let text = incomplete(JournalWriter::open_with(&dir, JournalConfig::default(), &snapshot));
        assert!(text.contains("snapshot at sequence 25") && text.contains("sequences 21..=25 are missing"), "{text}");
        let accept = RecoveryOptions { accept_loss: true, ..snapshot.clone() };
        let (mut writer, contents) = JournalWriter::open_with(&dir, JournalConfig::default(), &accept).unwrap();
        assert!(contents.accepted_loss.is_some());
        assert_eq!(writer.append(0, b"next").unwrap(), 26);
        writer.commit().unwrap();
        drop(writer);
        assert_eq!(list_segments(&dir).unwrap().last().unwrap().0, 26);
        let (_, contents) = JournalWriter::open_with(&dir, JournalConfig::default(), &snapshot).unwrap();
        assert_eq!(contents.records.iter().map(|r| r.sequence).collect::<Vec<_>>(), [26]);
        // Sequence 1 onwards is gone for good: a replay from scratch says so.
        let error = JournalReader::open(&dir).unwrap().read_after(0).unwrap_err();
        assert!(error.to_string().contains("a segment is missing"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_segment_header_is_rewritten_in_place() {
        let dir = temp_dir("torn-header");
        write(&dir, 10, 1 << 20);
        // A crash while rolling over: the new segment's header never fully reached the disk.
        fs::write(dir.join(segment_name(11)), [0x45, 0x58]).unwrap();
        let (mut writer, contents) = open_default(&dir).unwrap();
        assert_eq!(contents.last_sequence, 10);
        assert_eq!(writer.append(0, b"eleven").unwrap(), 11);
        writer.commit().unwrap();
        drop(writer);
        assert_eq!(list_segments(&dir).unwrap().last().unwrap().0, 11);
        assert_eq!(read_manifest(&dir).unwrap().unwrap().active_segment_first, 11);
        assert_eq!(open_default(&dir).unwrap().1.last_sequence, 11);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_manifest_is_corruption_unless_the_loss_is_accepted() {
        let dir = temp_dir("bad-manifest");
        write(&dir, 10, 1 << 20);
        let path = dir.join(MANIFEST_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[17] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let error = open_default(&dir).unwrap_err();
        assert!(matches!(&error, JournalError::Corrupt { path: bad, offset: 32, .. } if bad == &path), "{error}");
        let accept = RecoveryOptions { accept_loss: true, ..Default::default() };
        let (_, contents) = JournalWriter::open_with(&dir, JournalConfig::default(), &accept).unwrap();
        assert!(contents.accepted_loss.unwrap().contains("manifest"));
        assert_eq!(read_manifest(&dir).unwrap().unwrap().active_segment_first, 1, "rewritten");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes `count` records into one segment (three per commit) and returns the open writer.
    fn write_one_segment(dir: &Path, count: u64) -> JournalWriter {
        let config = JournalConfig { durability: Durability::Fsync, segment_bytes_max: 1 << 20 };
        let (mut writer, _) = JournalWriter::open(dir, config, 0).unwrap();
        for i in 0..count {
            writer.append(1_000 + i, &[i as u8; 12]).unwrap();
            if i % 3 == 2 {
                writer.commit().unwrap();
            }
        }
        writer.commit().unwrap();
        writer
    }

    #[test]
    fn the_segment_being_written_cut_at_a_record_boundary_before_the_watermark_is_refused() {
        let dir = temp_dir("cut-active");
        let writer = write_one_segment(&dir, 30);
        assert_eq!(writer.record_watermark().unwrap(), 30);
        drop(writer);
        assert_eq!(
            read_manifest(&dir).unwrap(),
            Some(JournalManifest { active_segment_first: 1, durable_through: 30 })
        );
        let (_, active) = list_segments(&dir).unwrap().pop().unwrap();
        assert_eq!(cut_last_record(&active), 30);
        let cut = fs::read(&active).unwrap();
        let text = incomplete(open_default(&dir));
        assert!(text.contains("ends at sequence 29"), "{text}");
        assert!(text.contains("watermark records sequence 30 as committed (sequence 30 is missing)"), "{text}");
        // The read-only path (replay) refuses too, and nothing was changed on disk.
        let error = JournalReader::open(&dir).unwrap().read_for_recovery(&RecoveryOptions::default()).unwrap_err();
        assert!(matches!(&error, JournalError::Incomplete(text) if text.contains("watermark")), "{error}");
        assert_eq!(fs::read(&active).unwrap(), cut);
        // Cut further: the whole range is named.
        cut_last_record(&active);
        cut_last_record(&active);
        let text = incomplete(open_default(&dir));
        assert!(text.contains("ends at sequence 27") && text.contains("sequences 28..=30 are missing"), "{text}");
        // Accepting the loss goes on at 28, and later starts need no flag.
        let accept = RecoveryOptions { accept_loss: true, ..Default::default() };
        let (mut writer, contents) = JournalWriter::open_with(&dir, JournalConfig::default(), &accept).unwrap();
        assert!(contents.accepted_loss.unwrap().contains("watermark"));
        assert_eq!(writer.recorded_watermark(), 27);
        assert_eq!(writer.append(0, b"after the loss").unwrap(), 28);
        writer.commit().unwrap();
        drop(writer);
        assert_eq!(open_default(&dir).unwrap().1.last_sequence, 28);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_after_the_watermark_end_as_a_torn_tail_and_damage_before_it_is_refused() {
        let dir = temp_dir("after-watermark");
        let mut writer = write_one_segment(&dir, 20);
        assert_eq!(writer.record_watermark().unwrap(), 20);
        for i in 0..5 {
            writer.append(i, &[7; 12]).unwrap();
        }
        writer.commit().unwrap();
        // A crash: records 21..=25 are committed but not under the watermark.
        drop(writer);
        let (_, active) = list_segments(&dir).unwrap().pop().unwrap();
        let full = fs::read(&active).unwrap();
        // A write torn by the crash in a record after the watermark is a torn tail, as ever.
        fs::write(&active, &full[..full.len() - 5]).unwrap();
        let (writer, contents) = open_default(&dir).unwrap();
        assert_eq!((contents.last_sequence, contents.torn_tail.is_some()), (24, true));
        assert_eq!(writer.recorded_watermark(), 24, "reopening records what it found");
        drop(writer);
        // The documented window: a cut at a record boundary after the watermark is not seen.
        fs::write(&active, &full).unwrap();
        write_manifest(&dir, &JournalManifest { active_segment_first: 1, durable_through: 20 }).unwrap();
        cut_last_record(&active);
        assert_eq!(open_default(&dir).unwrap().1.last_sequence, 24);
        // A flipped bit in the last complete record the watermark covers is not a torn tail.
        write_manifest(&dir, &JournalManifest { active_segment_first: 1, durable_through: 24 }).unwrap();
        let mut flipped = fs::read(&active).unwrap();
        let length = flipped.len();
        flipped[length - 3] ^= 0x10;
        fs::write(&active, &flipped).unwrap();
        let text = incomplete(open_default(&dir));
        assert!(text.contains("ends at sequence 23 followed by damage at offset"), "{text}");
        assert!(text.contains("not a torn tail") && text.contains("watermark records sequence 24"), "{text}");
        assert_eq!(fs::read(&active).unwrap(), flipped, "nothing was truncated");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Waits (bounded) until the manifest on disk records `watermark`.
    fn await_watermark(dir: &Path, watermark: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read_manifest(dir).unwrap().unwrap().durable_through != watermark {
            assert!(std::time::Instant::now() < deadline, "the watermark thread never recorded {watermark}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_watermark_thread_follows_commits_at_most_once_per_interval_and_stop_records_the_rest() {
        let dir = temp_dir("watermark-thread");
        let mut writer = write_one_segment(&dir, 6);
        assert_eq!(writer.record_watermark().unwrap(), 6);
        let errors = Arc::new(AtomicU64::new(0));
        let counted = errors.clone();
        // An interval far longer than the test: only the first commit is recorded by the thread.
        writer
            .start_watermark(Duration::from_secs(3600), move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        writer.append(0, b"seven").unwrap();
        writer.commit().unwrap();
        await_watermark(&dir, 7);
        writer.append(0, b"eight").unwrap();
        writer.commit().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(read_manifest(&dir).unwrap().unwrap().durable_through, 7, "rate-limited");
        // A clean shutdown does not wait out the interval, and records everything committed.
        let started = std::time::Instant::now();
        assert_eq!(writer.stop_watermark().unwrap(), 8);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(read_manifest(&dir).unwrap().unwrap().durable_through, 8);
        // Started again with a short interval, it keeps following the commits.
        writer.start_watermark(Duration::from_millis(1), |_| {}).unwrap();
        for i in 0..20 {
            writer.append(i, &[1; 12]).unwrap();
            writer.commit().unwrap();
        }
        await_watermark(&dir, 28);
        drop(writer);
        assert_eq!(errors.load(Ordering::Relaxed), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_manifest_is_read_as_a_watermark_at_its_sealed_segments_and_rewritten() {
        let dir = temp_dir("manifest-v1");
        write(&dir, 60, 300);
        let segments = list_segments(&dir).unwrap();
        let active_first = segments.last().unwrap().0;
        // The 32-byte layout of version 1: no watermark, checksum of bytes 0..24 at 24.
        let mut v1 = [0u8; MANIFEST_V1_BYTES];
        v1[0..8].copy_from_slice(&MANIFEST_MAGIC);
        v1[8..12].copy_from_slice(&MANIFEST_VERSION_1.to_le_bytes());
        v1[16..24].copy_from_slice(&active_first.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        fs::write(dir.join(MANIFEST_FILE), v1).unwrap();
        let manifest = read_manifest(&dir).unwrap().unwrap();
        assert_eq!(manifest, JournalManifest { active_segment_first: active_first, durable_through: active_first - 1 });
        // Its check still works: the newest segment deleted is refused...
        let newest = fs::read(&segments.last().unwrap().1).unwrap();
        fs::remove_file(&segments.last().unwrap().1).unwrap();
        assert!(incomplete(open_default(&dir)).contains("missing"));
        // ...and with it back, the journal opens and the manifest is rewritten as version 2.
        fs::write(&segments.last().unwrap().1, newest).unwrap();
        drop(open_default(&dir).unwrap());
        assert_eq!(fs::read(dir.join(MANIFEST_FILE)).unwrap().len(), MANIFEST_BYTES);
        assert_eq!(read_manifest(&dir).unwrap().unwrap().durable_through, 60);
        // A journal without a manifest (older still) opens without the check and gets one.
        fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        assert_eq!(open_default(&dir).unwrap().1.last_sequence, 60);
        assert_eq!(read_manifest(&dir).unwrap().unwrap().durable_through, 60);
        // A version 2 manifest with a watermark before its sealed segments is corruption.
        write_manifest(&dir, &JournalManifest { active_segment_first: 10, durable_through: 5 }).unwrap();
        let error = open_default(&dir).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { offset: 24, .. }), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
