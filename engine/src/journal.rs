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
//! # Recovery
//! [`JournalReader`] walks the segments in order and checks every record. Damage in the last
//! segment after which no intact record follows (a write torn by a crash: a partial record, a bad
//! checksum on the final record, zeros from there on) is a *torn tail*: it was never acknowledged,
//! and [`JournalWriter::open`] truncates it. Damage anywhere else, or followed by any intact
//! record, is *corruption*: recovery refuses, naming the file and offset, because acknowledged
//! data would be lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// Reads every record of one segment. `is_last` allows a torn tail.
fn read_segment(path: &Path, is_last: bool) -> Result<(u64, Vec<Record>, SegmentEnd), JournalError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_error(path))?;
    let corrupt = |offset: usize, reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < SEGMENT_HEADER_BYTES {
        if is_last {
            // A segment whose header was never completely written holds no records.
            return Ok((0, Vec::new(), SegmentEnd::TornAt(0)));
        }
        return Err(corrupt(0, "segment header truncated".into()));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(corrupt(0, "bad segment magic".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(corrupt(8, format!("unsupported format version {version}")));
    }
    let first_sequence = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = first_sequence;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let damage = if rest.len() < RECORD_HEADER_BYTES {
            Some("record header truncated".to_string())
        } else {
            let magic = u32::from_le_bytes(rest[0..4].try_into().unwrap());
            let length = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(rest[24..28].try_into().unwrap());
            if magic != RECORD_MAGIC {
                Some(format!("bad record magic {magic:#010x}"))
            } else if length > RECORD_PAYLOAD_BYTES_MAX {
                Some(format!("record length {length} too large"))
            } else if rest.len() < RECORD_HEADER_BYTES + length {
                Some("record payload truncated".to_string())
            } else if record_crc(&rest[..RECORD_HEADER_BYTES], &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length])
                != crc
            {
                Some("record checksum mismatch".to_string())
            } else {
                None
            }
        };
        if let Some(reason) = damage {
            // A torn write leaves nothing valid after it. If any intact record follows the
            // damage, acknowledged data would be lost by truncating: that is corruption.
            if is_last && !contains_valid_record(&bytes[offset + 1..]) {
                return Ok((first_sequence, records, SegmentEnd::TornAt(offset as u64)));
            }
            return Err(corrupt(offset, reason));
        }
        let length = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        let sequence = u64::from_le_bytes(rest[8..16].try_into().unwrap());
        let timestamp_ns = u64::from_le_bytes(rest[16..24].try_into().unwrap());
        if sequence != expected {
            return Err(corrupt(offset, format!("sequence {sequence}, expected {expected}")));
        }
        records.push(Record {
            sequence,
            timestamp_ns,
            payload: rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length].to_vec(),
        });
        expected += 1;
        offset += RECORD_HEADER_BYTES + length;
    }
    Ok((first_sequence, records, SegmentEnd::Clean))
}

/// Reads a journal directory, checking every record and the continuity of sequences.
#[derive(Debug)]
pub struct JournalReader {
    segments: Vec<(u64, PathBuf)>,
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
}

impl JournalReader {
    /// Opens a journal directory (missing directory: empty journal).
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Ok(Self { segments: list_segments(dir)? })
    }

    /// Reads every record with `sequence > after`, verifying checksums and continuity. Segments
    /// wholly before `after` (older than a snapshot) are still checked for continuity of their
    /// first sequence but their records are not kept.
    ///
    /// # Errors
    /// Corruption (not a torn tail) or I/O errors, naming the file and offset; a gap between
    /// segments (a missing segment) is corruption of the later one at offset 0.
    pub fn read_after(&self, after: u64) -> Result<JournalContents, JournalError> {
        let mut contents = JournalContents::default();
        let mut expected_first: Option<u64> = None;
        for (index, (first, path)) in self.segments.iter().enumerate() {
            let is_last = index + 1 == self.segments.len();
            let (header_first, records, end) = read_segment(path, is_last)?;
            if end == SegmentEnd::TornAt(0) && records.is_empty() && header_first == 0 {
                contents.torn_tail = Some((path.clone(), 0));
                break;
            }
            if header_first != *first {
                return Err(JournalError::Corrupt {
                    path: path.clone(),
                    offset: 16,
                    reason: format!("header first sequence {header_first} does not match the file name"),
                });
            }
            if let Some(expected) = expected_first
                && *first != expected
            {
                return Err(JournalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("segment starts at sequence {first}, expected {expected}: a segment is missing"),
                });
            }
            expected_first = Some(first + records.len() as u64);
            if let Some(last) = records.last() {
                contents.last_sequence = last.sequence;
            }
            contents.records.extend(records.into_iter().filter(|r| r.sequence > after));
            if let SegmentEnd::TornAt(offset) = end {
                contents.torn_tail = Some((path.clone(), offset));
            }
        }
        if contents.last_sequence == 0
            && let Some(first) = expected_first
        {
            contents.last_sequence = first.saturating_sub(1);
        }
        Ok(contents)
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
}

impl JournalWriter {
    /// Opens the journal for appending after recovery: truncates a torn tail, then continues the
    /// last segment (or starts the first). Returns the writer and the records after `after`
    /// (for replay on top of a snapshot taken at `after`).
    ///
    /// # Errors
    /// Corruption or I/O errors.
    pub fn open(dir: &Path, config: JournalConfig, after: u64) -> Result<(Self, JournalContents), JournalError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let contents = JournalReader::open(dir)?.read_after(after)?;
        if let Some((path, offset)) = &contents.torn_tail {
            if *offset == 0 {
                fs::remove_file(path).map_err(io_error(path))?;
            } else {
                let file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
                file.set_len(*offset).map_err(io_error(path))?;
                file.sync_all().map_err(io_error(path))?;
            }
        }
        let next_sequence = contents.last_sequence.max(after) + 1;
        let segments = list_segments(dir)?;
        let (file, path, segment_bytes) = match segments.last() {
            Some((_, path)) => {
                let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io_error(path))?;
                let end = file.seek(SeekFrom::End(0)).map_err(io_error(path))?;
                (file, path.clone(), end)
            }
            None => Self::create_segment(dir, next_sequence)?,
        };
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
        };
        Ok((writer, contents))
    }

    fn create_segment(dir: &Path, first_sequence: u64) -> Result<(File, PathBuf, u64), JournalError> {
        let path = dir.join(segment_name(first_sequence));
        let mut file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_error(&path))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        header[0..8].copy_from_slice(&SEGMENT_MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&first_sequence.to_le_bytes());
        file.write_all(&header).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        // Make the new directory entry durable too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
        Ok((file, path, SEGMENT_HEADER_BYTES as u64))
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
        if result.is_err() {
            self.failed = true;
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
}
