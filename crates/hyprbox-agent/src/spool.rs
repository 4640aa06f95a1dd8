//! A job's work directory and its output spool.
//!
//! The job writes its output to the files `stdout` and `stderr` in its directory; the agent ships
//! what is new from the last acknowledged offset and persists the offset in `state.json` only after
//! the server answered 204. So the files are the buffer: output written while the server is
//! unreachable waits on disk (bounded: see below), nothing acknowledged is sent twice,
//! and an agent restarted mid-job carries on from the recorded offsets.
//!
//! Each file is kept to the job's output limit: the script appends (`>>`), and past the limit the
//! agent cuts the file back to it at least once a second, ships up to the limit and then one note
//! saying the rest was dropped. So a chatty job cannot fill the node's disk, server reachable or
//! not. The agent's own lines (timeout, cancel…) are kept in `state.json` and sent with the
//! completion, so no limit can drop them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::{ApiError, Client, CompleteJob, OutputPiece};

/// Text per output request, both streams together. The server accepts bodies up to 1 MiB.
pub const MAX_TEXT_PER_REQUEST: usize = 512 * 1024;
/// The encoded body stays under this: lossy decoding and JSON escaping can make text grow (a NUL
/// byte becomes `\u0000`, six bytes), so the piece is halved until its JSON fits.
const MAX_BODY: usize = 1024 * 1024 - 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub const BOTH: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Bytes of each stream the server has acknowledged.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acked {
    pub stdout: u64,
    pub stderr: u64,
}

impl Acked {
    fn get(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    fn add(&mut self, stream: Stream, n: u64) {
        match stream {
            Stream::Stdout => self.stdout += n,
            Stream::Stderr => self.stderr += n,
        }
    }
}

/// Per-stream flags.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flags {
    pub stdout: bool,
    pub stderr: bool,
}

impl Flags {
    fn get(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    fn set(&mut self, stream: Stream) {
        match stream {
            Stream::Stdout => self.stdout = true,
            Stream::Stderr => self.stderr = true,
        }
    }
}

/// Output of one stream kept on the node (and shipped) by default: the server's default cap.
pub const DEFAULT_OUTPUT_MAX: u64 = 64 * 1024 * 1024;

/// `state.json`: what the agent must know about a job to pick it up again after a restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobState {
    pub job_id: String,
    /// The job's process group (the wrapper shell's pid); `None` until it is started.
    #[serde(default)]
    pub pgid: Option<i32>,
    /// `/proc/sys/kernel/random/boot_id` when the job started: after a reboot the pgid means
    /// nothing (the number may belong to another process by now).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Unix seconds after which the job is stopped (its `timeoutSeconds`).
    #[serde(default)]
    pub deadline_unix: Option<u64>,
    #[serde(default)]
    pub acked: Acked,
    /// Set once the agent has decided the exit code (timeout, cancel, lost track), so a restart
    /// while the last output is being flushed completes the same way.
    #[serde(default)]
    pub final_exit_code: Option<i64>,
    /// Streams whose output went past the limit (the file is cut back to it).
    #[serde(default)]
    pub over_limit: Flags,
    /// Streams whose "output dropped" note the server has accepted.
    #[serde(default)]
    pub limit_noted: Flags,
    /// The output limit the job started with (a later configuration change does not move it).
    #[serde(default)]
    pub output_max: Option<u64>,
    /// The agent's own lines about the job, sent at the end of its stderr with the completion.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The backup policy a `hypervault-restic` job runs for: its run is reported before the job
    /// completes.
    #[serde(default)]
    pub backup_policy: Option<String>,
    /// The run the server recorded for it.
    #[serde(default)]
    pub backup_run: Option<String>,
    /// The run's completion was accepted.
    #[serde(default)]
    pub backup_reported: bool,
}

/// Where a flush stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything available now was delivered (or is an incomplete character waiting for its end).
    UpToDate,
    /// The job was completed (200, or 409: completed already).
    Completed,
    /// The server answered 409 to output: the job is no longer RUNNING there.
    JobGone,
}

pub struct JobDir {
    path: PathBuf,
    pub state: JobState,
}

/// What a piece takes from the spool: bytes of each stream, and the limit notes it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Consumed {
    bytes: Acked,
    notes: Flags,
}

/// Length of the longest prefix of `bytes` that does not end inside a multi-byte UTF-8 character,
/// so a piece boundary never splits one (which lossy decoding would turn into two U+FFFD).
pub fn complete_prefix_len(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(4) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let needed = match b {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1, // not a valid lead: nothing to wait for
        };
        return if back < needed { n - back } else { n };
    }
    n
}

pub fn read_boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

impl JobDir {
    /// Creates `<jobs_root>/<job_id>/` (mode 0700) with its first `state.json`.
    pub fn create(jobs_root: &Path, state: JobState) -> io::Result<JobDir> {
        let path = jobs_root.join(&state.job_id);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&path)?;
        let dir = JobDir { path, state };
        dir.save()?;
        Ok(dir)
    }

    /// Opens a directory left by an earlier run of the agent.
    pub fn open(path: &Path) -> io::Result<JobDir> {
        let text = fs::read_to_string(path.join("state.json"))?;
        let state = serde_json::from_str(&text).map_err(io::Error::other)?;
        Ok(JobDir {
            path: path.to_path_buf(),
            state,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state.json` atomically (a temporary file renamed over it), so a crash leaves the old
    /// or the new offsets, never a torn file.
    pub fn save(&self) -> io::Result<()> {
        let tmp = self.path.join("state.json.tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&self.state).map_err(io::Error::other)?)?;
        file.sync_data()?;
        fs::rename(&tmp, self.path.join("state.json"))
    }

    /// The exit code the wrapper wrote when the script ended, if it did.
    pub fn exit_code_file(&self) -> Option<i64> {
        fs::read_to_string(self.path.join("exit_code"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Bytes of each stream kept and shipped; see the module documentation.
    pub fn output_max(&self) -> u64 {
        self.state.output_max.unwrap_or(DEFAULT_OUTPUT_MAX)
    }

    /// Records a line of the agent's own, sent at the end of the job's stderr with its completion.
    pub fn append_note(&mut self, line: &str) {
        self.state.notes.push(format!("hyprbox-agent: {line}\n"));
        if let Err(e) = self.save() {
            tracing::warn!(job_id = %self.state.job_id, error = %e, "cannot record a note about the job");
        }
    }

    pub fn remove(self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the job directory");
        }
    }

    /// Cuts each stream's file back to the output limit, remembering which went past it. Called at
    /// least once a second while the job runs, whether output can be shipped or not.
    pub fn enforce_limit(&mut self) -> io::Result<()> {
        let output_max = self.output_max();
        for stream in Stream::BOTH {
            let path = self.path.join(stream.file_name());
            let len = match fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if len <= output_max {
                continue;
            }
            OpenOptions::new().write(true).open(&path)?.set_len(output_max)?;
            if !self.state.over_limit.get(stream) {
                self.state.over_limit.set(stream);
                self.save()?;
                tracing::warn!(
                    job_id = %self.state.job_id,
                    stream = stream.file_name(),
                    limit = output_max,
                    "the job's output went past the limit; the rest is dropped"
                );
            }
        }
        Ok(())
    }

    /// Unsent bytes of `stream` from the acked offset, at most `limit`, and whether more remain.
    fn unsent(&self, stream: Stream, limit: usize, final_: bool) -> io::Result<(Vec<u8>, bool)> {
        let mut file = match File::open(self.path.join(stream.file_name())) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(e),
        };
        let offset = self.state.acked.get(stream);
        // Nothing past the limit is shipped, even what was written since the last cut.
        let len = file.metadata()?.len().min(self.output_max());
        if len <= offset {
            return Ok((Vec::new(), false));
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(limit.min((len - offset) as usize));
        file.take((limit as u64).min(len - offset))
            .read_to_end(&mut buf)?;
        let more = offset + (buf.len() as u64) < len;
        // Hold back a character cut in two, unless this is the last piece of a finished job (then
        // the bytes are all there is, and lossy decoding shows them as U+FFFD). A piece cut by the
        // limit is never final in that sense.
        if !final_ || more {
            buf.truncate(complete_prefix_len(&buf));
            // A CR may be half of a CRLF: the live stream would show it as an extra line break.
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        Ok((buf, more))
    }

    /// The next piece: per-stream limit `limit`, decoded lossily, with what it consumes.
    fn piece(&self, limit: usize, final_: bool) -> io::Result<(OutputPiece, Consumed, bool)> {
        let mut piece = OutputPiece::default();
        let mut consumed = Consumed::default();
        let mut more = false;
        for stream in Stream::BOTH {
            let (bytes, stream_more) = self.unsent(stream, limit, final_)?;
            more |= stream_more;
            let shipped = self.state.acked.get(stream) + bytes.len() as u64;
            let note = !stream_more
                && shipped >= self.output_max()
                && self.state.over_limit.get(stream)
                && !self.state.limit_noted.get(stream);
            if bytes.is_empty() && !note {
                continue;
            }
            consumed.bytes.add(stream, bytes.len() as u64);
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if note {
                consumed.notes.set(stream);
                text.push_str(&format!(
                    "\n[hyprbox-agent] output past {} bytes was dropped on the node\n",
                    self.output_max()
                ));
            }
            match stream {
                Stream::Stdout => piece.stdout = Some(text),
                Stream::Stderr => piece.stderr = Some(text),
            }
        }
        Ok((piece, consumed, more))
    }

    /// The next piece whose JSON fits in one request.
    fn fitting_piece(&self, final_: bool) -> io::Result<(OutputPiece, Consumed, bool)> {
        let mut limit = MAX_TEXT_PER_REQUEST / 2;
        loop {
            let (piece, consumed, more) = self.piece(limit, final_)?;
            let size = serde_json::to_vec(&piece).map_or(usize::MAX, |v| v.len());
            if size <= MAX_BODY || limit <= 4096 {
                return Ok((piece, consumed, more));
            }
            limit /= 2;
        }
    }

    fn acknowledge(&mut self, consumed: Consumed) -> io::Result<()> {
        for stream in Stream::BOTH {
            self.state.acked.add(stream, consumed.bytes.get(stream));
            if consumed.notes.get(stream) {
                self.state.limit_noted.set(stream);
            }
        }
        self.save()
    }

    /// Ships new output. With `exit_code`, the last piece goes with `complete` and the job ends.
    /// The acked offsets advance only after the server accepted a piece, so a failed request is
    /// retried from the same offset and an accepted one is never sent again.
    pub async fn flush(&mut self, client: &Client, exit_code: Option<i64>) -> Result<Flushed, FlushError> {
        self.enforce_limit()?;
        loop {
            let (mut piece, consumed, more) = self.fitting_piece(exit_code.is_some())?;
            if let (Some(code), false) = (exit_code, more) {
                if !self.state.notes.is_empty() {
                    let stderr = piece.stderr.get_or_insert_with(String::new);
                    for note in &self.state.notes {
                        stderr.push_str(note);
                    }
                }
                let body = CompleteJob {
                    exit_code: code,
                    output: piece,
                };
                return match client.complete(&self.state.job_id, &body).await {
                    Ok(_) | Err(ApiError::Conflict { .. }) => Ok(Flushed::Completed),
                    Err(e) => Err(e.into()),
                };
            }
            if piece == OutputPiece::default() {
                return Ok(Flushed::UpToDate);
            }
            match client.output(&self.state.job_id, &piece).await {
                Ok(()) => self.acknowledge(consumed)?,
                Err(ApiError::Conflict { .. }) => return Ok(Flushed::JobGone),
                Err(e) => return Err(e.into()),
            }
            if !more {
                return Ok(Flushed::UpToDate);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("job directory: {0}")]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh job directory for job `j` under a temporary root.
    fn job_dir(name: &str) -> JobDir {
        let state = JobState {
            job_id: "j".into(),
            ..Default::default()
        };
        JobDir::create(&crate::testutil::temp_dir(name), state).unwrap()
    }

    #[test]
    fn a_piece_never_ends_inside_a_character() {
        let text = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(complete_prefix_len(text), text.len());
        let cuts: Vec<usize> = (0..=text.len())
            .map(|n| complete_prefix_len(&text[..n]))
            .collect();
        assert_eq!(cuts, [0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10]);
        assert_eq!(
            complete_prefix_len(&[0x80, 0x80]),
            2,
            "stray continuations are sent"
        );
        assert_eq!(complete_prefix_len(&[b'a', 0xFF]), 2, "invalid bytes are sent");
    }

    #[test]
    fn state_survives_a_round_trip_through_the_disk() {
        let root = crate::testutil::temp_dir("spool-state");
        let mut dir = JobDir::create(
            &root,
            JobState {
                job_id: "j1".into(),
                pgid: Some(42),
                ..Default::default()
            },
        )
        .unwrap();
        dir.state.acked.stdout = 7;
        dir.save().unwrap();
        let again = JobDir::open(&root.join("j1")).unwrap();
        assert_eq!(again.state, dir.state);
        assert!(again.exit_code_file().is_none());
        fs::write(root.join("j1/exit_code"), "3\n").unwrap();
        assert_eq!(again.exit_code_file(), Some(3));
    }

    #[test]
    fn a_held_back_tail_is_sent_whole_once_it_is_complete() {
        let mut dir = job_dir("spool-tail");
        let euro = "€".as_bytes();
        fs::write(dir.path().join("stdout"), [b"ab".as_slice(), &euro[..2]].concat()).unwrap();
        let (piece, consumed, _) = dir.fitting_piece(false).unwrap();
        assert_eq!(piece.stdout.as_deref(), Some("ab"));
        dir.acknowledge(consumed).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("stdout"))
            .unwrap();
        f.write_all(&euro[2..]).unwrap();
        let (piece, _, more) = dir.fitting_piece(false).unwrap();
        assert_eq!(piece.stdout.as_deref(), Some("€"));
        assert!(!more);
    }

    #[test]
    fn a_trailing_cr_waits_for_the_next_piece_unless_the_job_is_over() {
        let mut dir = job_dir("spool-cr");
        fs::write(dir.path().join("stdout"), "one\r").unwrap();
        let (piece, consumed, _) = dir.fitting_piece(false).unwrap();
        assert_eq!(piece.stdout.as_deref(), Some("one"));
        dir.acknowledge(consumed).unwrap();
        let (piece, _, _) = dir.fitting_piece(false).unwrap();
        assert_eq!(piece, OutputPiece::default(), "a lone CR waits");
        let (piece, _, _) = dir.fitting_piece(true).unwrap();
        assert_eq!(piece.stdout.as_deref(), Some("\r"), "the last piece has it");
    }

    #[test]
    fn big_or_binary_output_is_cut_into_requests_the_server_accepts() {
        let dir = job_dir("spool-big");
        // NUL bytes grow sixfold in JSON.
        fs::write(dir.path().join("stdout"), vec![0u8; 2 * 1024 * 1024]).unwrap();
        fs::write(dir.path().join("stderr"), vec![b'e'; 2 * 1024 * 1024]).unwrap();
        let (piece, consumed, more) = dir.fitting_piece(false).unwrap();
        assert!(more);
        assert!(serde_json::to_vec(&piece).unwrap().len() <= MAX_BODY);
        assert!(consumed.bytes.stdout + consumed.bytes.stderr <= MAX_TEXT_PER_REQUEST as u64);
        assert!(consumed.bytes.stdout > 0 && consumed.bytes.stderr > 0);
    }
}
