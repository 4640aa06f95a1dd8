//! Running jobs, one at a time.
//!
//! A job runs as `bash script.sh` under a small wrapper shell that is the leader of its own
//! process group, in `<state_dir>/jobs/<id>/`. The wrapper sends the script's output to the files
//! `stdout` and `stderr` and writes the exit code to `exit_code`; nothing flows through pipes to
//! the agent. So the job does not depend on the agent being alive: an agent restarted mid-job
//! (systemd's `KillMode=process` leaves the group running) finds the job in `state.json`, keeps
//! shipping its output from the acknowledged offsets (see [`crate::spool`]) and completes it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use hyprbox_proto::backups::StartRun;

use crate::backoff::Backoff;
use crate::backup;
use crate::client::{ApiError, ClaimedJob, Client, CompleteJob, OutputPiece};
use crate::spool::{FlushError, Flushed, JobDir, JobState, read_boot_id};

/// What the WebSocket tells the job loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A job was queued for this node: pull now instead of at the next poll tick.
    Wakeup,
    /// An operator cancelled this job.
    Cancel(String),
}

/// How often new output is shipped while a job runs (when the server is reachable).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Exit code reported for a job stopped at its timeout, as `timeout(1)` does.
pub const TIMEOUT_EXIT_CODE: i64 = 124;
/// Exit code reported when the agent cannot tell how a job ended.
pub const LOST_EXIT_CODE: i64 = 255;
/// How long to wait for a group to disappear after SIGKILL before giving up on it.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// The wrapper, run as `bash -c` in the job directory. The `TERM` trap keeps the wrapper alive
/// through a SIGTERM sent to the group (a handler, not `''`: an ignored signal would be inherited
/// by the script, which must get SIGTERM), so it still records the script's exit code; the code is
/// written to a temporary file and renamed so a reader never sees half a number.
const WRAPPER: &str = "trap 'true' TERM; bash ./script.sh </dev/null >>stdout 2>>stderr; \
                       code=$?; echo \"$code\" >exit_code.tmp && mv -f exit_code.tmp exit_code";

/// The job loop's settings and its connection to the server.
#[derive(Clone)]
pub struct Jobs {
    pub client: Client,
    pub node_id: String,
    /// `<state_dir>/jobs`.
    pub jobs_root: PathBuf,
    pub kill_grace: Duration,
    pub poll_interval: Duration,
    /// Output of each stream kept on the node and shipped; the rest is dropped with a note.
    pub output_max: u64,
}

/// Whether any process of the group is left (a zombie counts until it is reaped).
pub fn group_alive(pgid: i32) -> bool {
    pgid > 0 && !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Job ids come from the server but become a directory name: only a safe alphabet is accepted.
fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The delay a failed request earned, with a log line that says what to do about it.
pub(crate) fn retry_delay(backoff: &mut Backoff, error: &ApiError, what: &str) -> Duration {
    match error {
        ApiError::Unauthorized { .. } => {
            let delay = backoff.fail_at_cap();
            tracing::warn!(
                retry_in = ?delay,
                "{what}: the server rejected the node token (401): it is invalid or was revoked; \
                 set a valid HYPRBOX_TOKEN"
            );
            delay
        }
        ApiError::RateLimited { retry_after, .. } => {
            let delay = backoff.fail_at_least(*retry_after);
            tracing::warn!(retry_in = ?delay, "{what}: rate limited by the server (429)");
            delay
        }
        other => {
            let delay = backoff.fail();
            tracing::warn!(error = %crate::client::describe(other), retry_in = ?delay, "{what} failed");
            delay
        }
    }
}

/// A job whose process this agent watches: started now (`child` set) or found after a restart.
struct Running {
    dir: JobDir,
    child: Option<Child>,
}

enum Ended {
    Exited(i64),
    Vanished,
}

enum Supervised {
    Finished(i64),
    /// The server no longer has the job RUNNING (409 on output).
    Gone,
    Shutdown,
}

impl Running {
    fn job_id(&self) -> &str {
        &self.dir.state.job_id
    }

    fn pgid(&self) -> Option<i32> {
        self.dir.state.pgid
    }

    /// Collects the wrapper's exit status when it is our child, so it does not linger as a zombie
    /// (which would keep its group "alive").
    fn reap(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(Some(_)) | Err(_)),
            None => !self.pgid().is_some_and(group_alive),
        }
    }

    /// Whether the script has ended. The `exit_code` file is the truth; a wrapper that is gone
    /// without one was killed (or lost).
    fn ended(&mut self) -> Option<Ended> {
        if let Some(code) = self.dir.exit_code_file() {
            return Some(Ended::Exited(code));
        }
        if self.reap() {
            // The wrapper writes the file before it exits: look once more.
            return Some(self.dir.exit_code_file().map_or(Ended::Vanished, Ended::Exited));
        }
        None
    }

    fn timed_out(&self) -> bool {
        self.dir
            .state
            .deadline_unix
            .is_some_and(|deadline| now_unix() >= deadline)
    }
}

/// Resolves when our child exits; never when we have none (a job resumed after a restart).
async fn child_exit(child: &mut Option<Child>) {
    match child {
        Some(child) => {
            let _ = child.wait().await;
        }
        None => std::future::pending().await,
    }
}

impl Jobs {
    /// The job loop: finish what an earlier run left, then pull on every wakeup and poll tick.
    /// Returns when `shutdown` is cancelled; a running job is left running for the next start.
    pub async fn run(&self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.jobs_root) {
            tracing::warn!(path = %self.jobs_root.display(), error = %e, "cannot create the jobs directory");
        }
        self.resume_all(&mut events, &shutdown).await;
        let mut backoff = Backoff::new();
        let mut events_open = true;
        while !shutdown.is_cancelled() {
            let wait = match self.client.pending(Some(&self.node_id)).await {
                Ok(Some(job)) => {
                    backoff.succeed();
                    self.run_job(job, &mut events, &shutdown).await;
                    continue; // more may be queued
                }
                Ok(None) => {
                    backoff.succeed();
                    self.poll_interval
                }
                Err(e) => retry_delay(&mut backoff, &e, "pulling jobs"),
            };
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sleep_until(deadline) => break,
                    event = events.recv(), if events_open => match event {
                        // While backing off, a wakeup does not cut the wait short: the server
                        // may be the one that is failing.
                        Some(Event::Wakeup) if backoff.failures() == 0 => break,
                        Some(Event::Wakeup) => {}
                        Some(Event::Cancel(id)) => {
                            tracing::debug!(job_id = %id, "cancel for a job this agent is not running: ignored");
                        }
                        None => events_open = false,
                    },
                }
            }
        }
    }

    /// Runs one claimed job to its completion (or until shutdown).
    pub async fn run_job(
        &self,
        job: ClaimedJob,
        events: &mut mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) {
        tracing::info!(job_id = %job.id, preset = %job.preset_name, "job started");
        if !valid_job_id(&job.id) {
            tracing::warn!(job_id = %job.id, "refusing a job id that is not a safe directory name");
            let piece = OutputPiece {
                stderr: Some("hyprbox-agent: the job id is not a safe directory name\n".into()),
                ..OutputPiece::default()
            };
            if let Err(e) = self.complete_lost(&job.id, piece).await {
                tracing::warn!(job_id = %job.id, error = %e, "cannot complete the refused job");
            }
            return;
        }
        let running = match self.start(&job) {
            Ok(mut running) => {
                // Reported now so the run shows RUNNING while it lasts; if the server cannot be
                // reached, `finish` records it before completing it.
                if let Err(e) = self.report_backup_start(&mut running.dir).await {
                    tracing::warn!(job_id = %job.id, error = %crate::client::describe(&e), "cannot report the backup run's start yet");
                }
                running
            }
            Err((dir, e)) => {
                tracing::warn!(job_id = %job.id, error = %e, "cannot start the job");
                match dir {
                    Some(mut dir) => {
                        dir.append_note(&format!("cannot start the job: {e}"));
                        self.finish(dir, LOST_EXIT_CODE, shutdown).await;
                    }
                    None => {
                        let piece = OutputPiece {
                            stderr: Some(format!("hyprbox-agent: cannot start the job: {e}\n")),
                            ..OutputPiece::default()
                        };
                        if let Err(e) = self.complete_lost(&job.id, piece).await {
                            tracing::warn!(job_id = %job.id, error = %e, "cannot complete the job");
                        }
                    }
                }
                return;
            }
        };
        self.drive(running, events, shutdown).await;
    }

    /// Ends a job that never ran (or whose record was lost) with [`LOST_EXIT_CODE`] and a note.
    async fn complete_lost(&self, job_id: &str, output: OutputPiece) -> Result<(), ApiError> {
        let body = CompleteJob {
            exit_code: LOST_EXIT_CODE,
            output,
        };
        self.client.complete(job_id, &body).await.map(drop)
    }

    /// Writes the script and starts the wrapper in a new process group.
    #[allow(clippy::result_large_err)] // built once per job, consumed at once: boxing buys nothing
    fn start(&self, job: &ClaimedJob) -> Result<Running, (Option<JobDir>, std::io::Error)> {
        let state = JobState {
            job_id: job.id.clone(),
            boot_id: read_boot_id(),
            deadline_unix: job
                .timeout_seconds
                .try_into()
                .ok()
                .filter(|s: &u64| *s > 0)
                .map(|s| now_unix().saturating_add(s)),
            output_max: Some(self.output_max),
            ..JobState::default()
        };
        let mut dir = JobDir::create(&self.jobs_root, state).map_err(|e| (None, e))?;
        // A backup gets its repository password in its environment, read here on the node.
        let password = if job.preset_name == backup::PRESET {
            dir.state.backup_policy = backup::policy_id(&job.variables);
            let reference = job.variables["password_ref"]
                .as_str()
                .unwrap_or(backup::DEFAULT_PASSWORD_REF);
            match backup::resolve_password(reference, |name| std::env::var(name).ok()) {
                Ok(secret) => Some(secret),
                Err(reason) => return Err((Some(dir), std::io::Error::other(reason))),
            }
        } else {
            None
        };
        let spawned = write_script(dir.path(), &job.script).and_then(|()| {
            let mut command = Command::new("bash");
            if let Some(secret) = &password {
                command
                    .env("RESTIC_PASSWORD", secret.expose())
                    .env_remove("RESTIC_PASSWORD_FILE")
                    .env_remove("RESTIC_PASSWORD_COMMAND");
            }
            command
                .arg("-c")
                .arg(WRAPPER)
                .current_dir(dir.path())
                // Its own group: a signal to -pgid reaches everything the script started, and
                // the job survives the agent's own stop (systemd's KillMode=process).
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // A script has no business with the agent's credentials.
                .env_remove("HYPRBOX_TOKEN")
                .env("HYPRBOX_JOB_ID", &job.id)
                .spawn()
        });
        let child = match spawned {
            Ok(child) => child,
            Err(e) => return Err((Some(dir), e)),
        };
        dir.state.pgid = child.id().and_then(|id| i32::try_from(id).ok());
        if let Err(e) = dir.save() {
            tracing::warn!(job_id = %job.id, error = %e, "cannot record the job's process group");
        }
        tracing::debug!(job_id = %job.id, pgid = ?dir.state.pgid, "job process group started");
        Ok(Running {
            dir,
            child: Some(child),
        })
    }

    /// Watches a running job until it ends, then completes it.
    async fn drive(
        &self,
        mut running: Running,
        events: &mut mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) {
        match self.supervise(&mut running, events, shutdown).await {
            Supervised::Finished(code) => {
                running.dir.state.final_exit_code = Some(code);
                if let Err(e) = running.dir.save() {
                    tracing::warn!(job_id = %running.job_id(), error = %e, "cannot record the exit code");
                }
                self.finish(running.dir, code, shutdown).await;
            }
            Supervised::Gone => {
                tracing::warn!(
                    job_id = %running.job_id(),
                    "the server no longer has this job running (409): stopped it and dropped its output"
                );
                running.dir.remove();
            }
            Supervised::Shutdown => {
                tracing::info!(
                    job_id = %running.job_id(),
                    "agent stopping: the job keeps running and is picked up at the next start"
                );
            }
        }
    }

    async fn supervise(
        &self,
        running: &mut Running,
        events: &mut mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) -> Supervised {
        let mut backoff = Backoff::new();
        let mut next_flush = Instant::now();
        let mut events_open = true;
        loop {
            if let Some(ended) = running.ended() {
                return Supervised::Finished(match ended {
                    Ended::Exited(code) => code,
                    Ended::Vanished => {
                        running.dir.append_note(
                            "lost track of the job: its process group is gone and it left no exit code",
                        );
                        LOST_EXIT_CODE
                    }
                });
            }
            if running.timed_out() {
                tracing::warn!(job_id = %running.job_id(), "job timed out: stopping its process group");
                running.dir.append_note(&format!(
                    "the job reached its timeout: sent SIGTERM to its process group (SIGKILL after {} s)",
                    self.kill_grace.as_secs()
                ));
                self.stop_group(running).await;
                return Supervised::Finished(TIMEOUT_EXIT_CODE);
            }
            // Kept to the limit every pass, also while output cannot be shipped (backing off).
            if let Err(e) = running.dir.enforce_limit() {
                tracing::warn!(job_id = %running.job_id(), error = %e, "cannot keep the job's output to its limit");
            }
            if Instant::now() >= next_flush {
                next_flush = match running.dir.flush(&self.client, None).await {
                    Ok(Flushed::UpToDate) => {
                        backoff.succeed();
                        Instant::now() + FLUSH_EVERY
                    }
                    Ok(Flushed::JobGone | Flushed::Completed) => {
                        self.stop_group(running).await;
                        return Supervised::Gone;
                    }
                    Err(FlushError::Api(e)) => {
                        Instant::now() + retry_delay(&mut backoff, &e, "sending job output")
                    }
                    Err(FlushError::Io(e)) => {
                        tracing::warn!(job_id = %running.job_id(), error = %e, "cannot read the job's output");
                        Instant::now() + backoff.fail()
                    }
                };
            }
            // Wake at the next flush, at the latest in a second (to notice the timeout and a
            // resumed job's end), or as soon as our child exits.
            let wake = next_flush.min(Instant::now() + FLUSH_EVERY);
            let cancelled = tokio::select! {
                () = shutdown.cancelled() => return Supervised::Shutdown,
                () = sleep_until(wake) => false,
                () = child_exit(&mut running.child) => false,
                event = events.recv(), if events_open => match event {
                    Some(Event::Cancel(id)) if id == running.dir.state.job_id => true,
                    Some(Event::Cancel(id)) => {
                        tracing::debug!(job_id = %id, "cancel for a job this agent is not running: ignored");
                        false
                    }
                    // One job at a time: the next pull follows this job anyway.
                    Some(Event::Wakeup) => false,
                    None => {
                        events_open = false;
                        false
                    }
                },
            };
            if cancelled {
                tracing::info!(job_id = %running.job_id(), "job cancelled: stopping its process group");
                running.dir.append_note(&format!(
                    "cancelled: sent SIGTERM to the job's process group (SIGKILL after {} s)",
                    self.kill_grace.as_secs()
                ));
                let signal = self.stop_group(running).await;
                let code = running
                    .dir
                    .exit_code_file()
                    .unwrap_or(128 + signal.unwrap_or(Signal::SIGTERM) as i64);
                return Supervised::Finished(code);
            }
        }
    }

    /// SIGTERM to the whole group, SIGKILL after the grace period; returns the last signal sent
    /// (`None` when the group was already gone).
    async fn stop_group(&self, running: &mut Running) -> Option<Signal> {
        let pgid = running.pgid().filter(|p| *p > 0)?;
        let group = Pid::from_raw(pgid);
        if killpg(group, Signal::SIGTERM) == Err(Errno::ESRCH) {
            return None;
        }
        for (signal, patience) in [(Signal::SIGTERM, self.kill_grace), (Signal::SIGKILL, AFTER_KILL)] {
            if signal == Signal::SIGKILL {
                tracing::warn!(job_id = %running.job_id(), pgid, "job ignored SIGTERM: sending SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
            }
            let deadline = Instant::now() + patience;
            loop {
                running.reap();
                if !group_alive(pgid) {
                    return Some(signal);
                }
                if Instant::now() >= deadline {
                    break;
                }
                sleep(Duration::from_millis(50)).await;
            }
        }
        tracing::warn!(job_id = %running.job_id(), pgid, "the job's process group outlived SIGKILL");
        Some(Signal::SIGKILL)
    }

    /// Records the backup run of a `hypervault-restic` job for its policy (once: the server answers
    /// a retried start with the same run).
    async fn report_backup_start(&self, dir: &mut JobDir) -> Result<(), ApiError> {
        let Some(policy) = dir.state.backup_policy.clone() else {
            return Ok(());
        };
        if dir.state.backup_run.is_some() {
            return Ok(());
        }
        let body = StartRun {
            job_id: Some(dir.state.job_id.clone()),
        };
        let run = self.client.start_backup_run(&policy, &body).await?.run;
        dir.state.backup_run = Some(run.id);
        if let Err(e) = dir.save() {
            tracing::warn!(job_id = %dir.state.job_id, error = %e, "cannot record the backup run");
        }
        Ok(())
    }

    /// Completes the backup run of a finished `hypervault-restic` job from restic's summary.
    async fn report_backup_end(&self, dir: &mut JobDir, exit_code: i64) -> Result<(), ApiError> {
        if dir.state.backup_policy.is_none() || dir.state.backup_reported {
            return Ok(());
        }
        self.report_backup_start(dir).await?;
        let Some(run) = dir.state.backup_run.clone() else {
            return Ok(());
        };
        let stdout = read_tail(&dir.path().join("stdout"));
        let mut stderr = read_tail(&dir.path().join("stderr"));
        for note in &dir.state.notes {
            stderr.push_str(note);
        }
        let body = backup::outcome(exit_code, &stdout, &stderr);
        match self.client.complete_backup_run(&run, &body).await {
            // 409: an earlier attempt was recorded and its answer lost.
            Ok(_) | Err(ApiError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(job_id = %dir.state.job_id, run_id = %run, status = %body.status, "backup run reported");
        dir.state.backup_reported = true;
        if let Err(e) = dir.save() {
            tracing::warn!(job_id = %dir.state.job_id, error = %e, "cannot record the backup run's report");
        }
        Ok(())
    }

    /// Ships the rest of the output and completes the job, retrying until the server has it.
    async fn finish(&self, mut dir: JobDir, exit_code: i64, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            if let Err(e) = self.report_backup_end(&mut dir, exit_code).await {
                let delay = retry_delay(&mut backoff, &e, "reporting the backup run");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sleep(delay) => continue,
                }
            }
            let delay = match dir.flush(&self.client, Some(exit_code)).await {
                Ok(Flushed::Completed) => {
                    tracing::info!(job_id = %dir.state.job_id, exit_code, "job finished");
                    dir.remove();
                    return;
                }
                Ok(Flushed::JobGone) => {
                    tracing::warn!(
                        job_id = %dir.state.job_id,
                        "the server no longer has this job running (409): dropped its output"
                    );
                    dir.remove();
                    return;
                }
                Ok(Flushed::UpToDate) => Duration::ZERO,
                Err(FlushError::Api(e)) => retry_delay(&mut backoff, &e, "completing the job"),
                Err(FlushError::Io(e)) => {
                    tracing::warn!(job_id = %dir.state.job_id, error = %e, "cannot read the job's output");
                    backoff.fail()
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(delay) => {}
            }
        }
    }

    /// Picks up the jobs an earlier run of the agent left in `jobs_root`.
    async fn resume_all(&self, events: &mut mpsc::Receiver<Event>, shutdown: &CancellationToken) {
        let Ok(entries) = std::fs::read_dir(&self.jobs_root) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for path in dirs {
            if shutdown.is_cancelled() {
                return;
            }
            match JobDir::open(&path) {
                Ok(dir) => self.resume(dir, events, shutdown).await,
                Err(e) => {
                    // Created but never recorded (the agent died between mkdir and the first
                    // write of state.json): nothing ran, nothing to report.
                    tracing::warn!(path = %path.display(), error = %e, "removing a job directory without a readable state.json");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }

    async fn resume(
        &self,
        mut dir: JobDir,
        events: &mut mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) {
        let job_id = dir.state.job_id.clone();
        if let Some(code) = dir.state.final_exit_code {
            tracing::info!(%job_id, "completing a job the previous agent run had finished");
            self.finish(dir, code, shutdown).await;
            return;
        }
        let same_boot = dir.state.boot_id.is_some() && dir.state.boot_id == read_boot_id();
        let alive = same_boot && dir.state.pgid.is_some_and(group_alive);
        if dir.exit_code_file().is_none() && !alive {
            tracing::warn!(%job_id, "lost track of a job while the agent was down: completing it with 255");
            dir.append_note(
                "lost track of the job while the agent was down: its process group is gone and it left no exit code",
            );
            self.finish(dir, LOST_EXIT_CODE, shutdown).await;
            return;
        }
        tracing::info!(%job_id, pgid = ?dir.state.pgid, "resuming a job started before the agent restarted");
        self.drive(Running { dir, child: None }, events, shutdown).await;
    }
}

/// The last 256 KiB of a job's output file, as text (empty when it cannot be read): enough for
/// restic's summary, which the backup script prints last.
fn read_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn write_script(dir: &Path, script: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(dir.join("script.sh"))?;
    file.write_all(script.as_bytes())
}
