//! The job runner against a mock server: output delivery while the server fails, cancels,
//! timeouts, exit codes and resuming after an agent restart.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyprbox_agent::client::{self, ClaimedJob};
use hyprbox_agent::jobs::{Event, Jobs, group_alive};
use hyprbox_agent::spool::{Flushed, JobDir, JobState};
use hyprbox_proto::jobs::PendingBody;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hyprbox-agent-it-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Answers `ok` (recording the body) or 503 while `down` is set, counting the failures.
#[derive(Clone)]
struct Recorder {
    ok: u16,
    down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<AtomicUsize>,
    /// The answer's body, as the protocol defines it (none for a 204).
    body: Option<Value>,
}

impl Recorder {
    fn new(ok: u16, down: &Arc<AtomicBool>) -> Recorder {
        Recorder {
            ok,
            down: down.clone(),
            accepted: Arc::default(),
            refused: Arc::default(),
            body: None,
        }
    }

    fn answering(mut self, body: Value) -> Recorder {
        self.body = Some(body);
        self
    }

    fn bodies(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(503);
        }
        self.accepted
            .lock()
            .unwrap()
            .push(request.body_json().unwrap_or(Value::Null));
        match &self.body {
            Some(body) => ResponseTemplate::new(self.ok).set_body_json(body),
            None => ResponseTemplate::new(self.ok),
        }
    }
}

/// A mock server with the output and complete routes of any job.
struct Server {
    mock: MockServer,
    down: Arc<AtomicBool>,
    output: Recorder,
    complete: Recorder,
}

impl Server {
    async fn start() -> Server {
        let mock = MockServer::start().await;
        let down = Arc::new(AtomicBool::new(false));
        let output = Recorder::new(204, &down);
        let complete = Recorder::new(200, &down)
            .answering(serde_json::to_value(common::completed("job", "test-node")).unwrap());
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/jobs/[^/]+/output$"))
            .respond_with(output.clone())
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/jobs/[^/]+/complete$"))
            .respond_with(complete.clone())
            .mount(&mock)
            .await;
        Server {
            mock,
            down,
            output,
            complete,
        }
    }

    fn jobs(&self, root: &Path, kill_grace: Duration) -> Jobs {
        Jobs {
            client: client::connect(&self.mock.uri(), "hbnt_test").unwrap(),
            node_id: "test-node".into(),
            jobs_root: root.join("jobs"),
            kill_grace,
            poll_interval: Duration::from_secs(1),
            output_max: hyprbox_agent::spool::DEFAULT_OUTPUT_MAX,
        }
    }

    /// Everything the server accepted of one stream, output pieces and the final piece together.
    fn delivered(&self, stream: &str) -> String {
        self.output
            .bodies()
            .iter()
            .chain(self.complete.bodies().iter())
            .filter_map(|b| b[stream].as_str().map(str::to_string))
            .collect()
    }

    fn exit_code(&self) -> Option<i64> {
        let completes = self.complete.bodies();
        assert!(completes.len() <= 1, "completed twice: {completes:?}");
        completes.first().and_then(|b| b["exitCode"].as_i64())
    }
}

fn job(id: &str, script: &str, timeout_seconds: Option<u64>) -> ClaimedJob {
    let timeout_seconds = timeout_seconds.map_or(0, |s| i64::try_from(s).unwrap());
    ClaimedJob {
        id: id.into(),
        preset_name: "test".into(),
        script: script.into(),
        variables: json!({}),
        timeout_seconds,
    }
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `script` as job `id` in the background until its process group is up and has had time to
/// start its children; returns the runner, the channel for the job loop's events, and the pgid.
async fn start_job(
    jobs: Jobs,
    root: &Path,
    id: &'static str,
    script: &'static str,
) -> (tokio::task::JoinHandle<()>, mpsc::Sender<Event>, i32) {
    let (tx, mut rx) = mpsc::channel(8);
    let runner = tokio::spawn(async move {
        jobs.run_job(job(id, script, None), &mut rx, &CancellationToken::new())
            .await;
    });
    let mut pgid = None;
    wait_for("the job's process group", Duration::from_secs(10), || {
        pgid = pgid_of(root, id);
        pgid.is_some_and(group_alive)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (runner, tx, pgid.unwrap())
}

fn pgid_of(root: &Path, job_id: &str) -> Option<i32> {
    JobDir::open(&root.join("jobs").join(job_id)).ok()?.state.pgid
}

#[tokio::test]
async fn a_job_whose_script_exits_3_completes_with_exit_code_3_and_its_output() {
    let server = Server::start().await;
    let root = temp_dir("exit3");
    let jobs = server.jobs(&root, Duration::from_secs(5));
    let (_tx, mut rx) = mpsc::channel(8);
    jobs.run_job(
        job("job-exit3", "echo out; echo err >&2; printf 'é'; exit 3", None),
        &mut rx,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(server.exit_code(), Some(3));
    assert_eq!(server.delivered("stdout"), "out\né");
    assert_eq!(server.delivered("stderr"), "err\n");
    assert!(
        !root.join("jobs/job-exit3").exists(),
        "the work dir is removed once completed"
    );
}

#[tokio::test]
async fn scripts_run_in_their_work_dir_and_know_their_job_id() {
    let server = Server::start().await;
    let root = temp_dir("env");
    let jobs = server.jobs(&root, Duration::from_secs(5));
    let (_tx, mut rx) = mpsc::channel(8);
    jobs.run_job(
        job(
            "job-env",
            "pwd; echo \"token=${HYPRBOX_TOKEN:-none} job=$HYPRBOX_JOB_ID\"",
            None,
        ),
        &mut rx,
        &CancellationToken::new(),
    )
    .await;
    let expected_dir = root.join("jobs/job-env");
    assert_eq!(
        server.delivered("stdout"),
        format!("{}\ntoken=none job=job-env\n", expected_dir.display())
    );
    assert_eq!(server.exit_code(), Some(0));
}

#[tokio::test]
async fn output_buffered_while_the_server_is_down_is_delivered_once() {
    let server = Server::start().await;
    server.down.store(true, Ordering::SeqCst);
    let root = temp_dir("buffered");
    let jobs = server.jobs(&root, Duration::from_secs(5));
    let (_tx, mut rx) = mpsc::channel(8);
    let script = "for i in $(seq 1 200); do echo \"line $i\"; done; echo oops >&2; sleep 1.5; echo tail";
    let runner = tokio::spawn(async move {
        jobs.run_job(job("job-buf", script, None), &mut rx, &CancellationToken::new())
            .await;
    });
    let stdout = root.join("jobs/job-buf/stdout");
    wait_for("the output on disk", Duration::from_secs(10), || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("line 200"))
    })
    .await;
    wait_for("a refused delivery", Duration::from_secs(10), || {
        server.output.refused.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(server.output.bodies().is_empty());
    server.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .expect("the job completes once the server is back")
        .unwrap();
    let expected: String = (1..=200).map(|i| format!("line {i}\n")).collect();
    assert_eq!(server.delivered("stdout"), expected + "tail\n");
    assert_eq!(server.delivered("stderr"), "oops\n");
    assert_eq!(server.exit_code(), Some(0));
}

#[tokio::test]
async fn output_past_the_limit_is_dropped_with_one_note_and_takes_no_disk_on_the_node() {
    use std::os::unix::fs::MetadataExt;
    let server = Server::start().await;
    server.down.store(true, Ordering::SeqCst);
    let root = temp_dir("limit");
    let mut jobs = server.jobs(&root, Duration::from_secs(5));
    jobs.output_max = 4096;
    let (_tx, mut rx) = mpsc::channel(8);
    let script = "head -c 2000000 /dev/zero | tr '\\0' x; echo small >&2; sleep 2; echo late";
    let runner = tokio::spawn(async move {
        jobs.run_job(job("job-limit", script, None), &mut rx, &CancellationToken::new())
            .await;
    });
    let stdout = root.join("jobs/job-limit/stdout");
    wait_for("the 2 MB written", Duration::from_secs(10), || {
        std::fs::read_to_string(root.join("jobs/job-limit/stderr")).is_ok_and(|s| s == "small\n")
    })
    .await;
    // While the server is down the file is cut back to the limit at each flush attempt.
    wait_for("the file cut back to the limit", Duration::from_secs(10), || {
        std::fs::metadata(&stdout).is_ok_and(|m| m.blocks() * 512 <= 64 * 1024)
    })
    .await;
    server.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .expect("the job completes once the server is back")
        .unwrap();
    let expected = "x".repeat(4096) + "\n[hyprbox-agent] output past 4096 bytes was dropped on the node\n";
    assert_eq!(
        server.delivered("stdout"),
        expected,
        "the limit, then the note once"
    );
    assert_eq!(
        server.delivered("stderr"),
        "small\n",
        "the other stream is under its limit"
    );
    assert_eq!(server.exit_code(), Some(0));
}

#[tokio::test]
async fn the_agents_own_lines_arrive_even_when_stderr_is_past_its_limit() {
    let server = Server::start().await;
    let root = temp_dir("limit-note");
    let mut jobs = server.jobs(&root, Duration::from_secs(1));
    jobs.output_max = 2048;
    let (_tx, mut rx) = mpsc::channel(8);
    jobs.run_job(
        job(
            "job-noisy",
            "head -c 100000 /dev/zero | tr '\\0' e >&2; sleep 600",
            Some(2),
        ),
        &mut rx,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(server.exit_code(), Some(124));
    let stderr = server.delivered("stderr");
    assert!(stderr.starts_with(&"e".repeat(2048)), "{}", &stderr[..100]);
    assert!(stderr.contains("output past 2048 bytes was dropped"), "{stderr}");
    assert!(
        stderr.ends_with(
            "hyprbox-agent: the job reached its timeout: sent SIGTERM to its process group (SIGKILL after 1 s)\n"
        ),
        "{}",
        &stderr[2048..]
    );
}

#[tokio::test]
async fn a_retry_after_a_failed_post_does_not_resend_acknowledged_bytes() {
    let server = Server::start().await;
    let root = temp_dir("retry");
    let client = client::connect(&server.mock.uri(), "hbnt_test").unwrap();
    let mut dir = JobDir::create(
        &root,
        JobState {
            job_id: "job-retry".into(),
            ..JobState::default()
        },
    )
    .unwrap();
    let stdout = dir.path().join("stdout");
    std::fs::write(&stdout, "first\n").unwrap();
    assert_eq!(dir.flush(&client, None).await.unwrap(), Flushed::UpToDate);
    assert_eq!(dir.state.acked.stdout, 6);

    server.down.store(true, Ordering::SeqCst);
    std::fs::write(&stdout, "first\nsecond\n").unwrap();
    assert!(dir.flush(&client, None).await.is_err());
    assert_eq!(dir.state.acked.stdout, 6, "a refused piece is not acknowledged");

    // The offsets survive a restart of the agent: read them back from state.json.
    let mut dir = JobDir::open(dir.path()).unwrap();
    assert_eq!(dir.state.acked.stdout, 6);
    server.down.store(false, Ordering::SeqCst);
    assert_eq!(dir.flush(&client, None).await.unwrap(), Flushed::UpToDate);
    let pieces: Vec<String> = server
        .output
        .bodies()
        .iter()
        .map(|b| b["stdout"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pieces, ["first\n", "second\n"]);
    assert_eq!(dir.flush(&client, Some(0)).await.unwrap(), Flushed::Completed);
    assert_eq!(server.complete.bodies(), [json!({"exitCode": 0})]);
}

#[tokio::test]
async fn output_answered_409_stops_the_job_and_drops_its_buffer() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/jobs/job-gone/output"))
        .respond_with(ResponseTemplate::new(409))
        .mount(&mock)
        .await;
    let root = temp_dir("gone");
    let jobs = Jobs {
        client: client::connect(&mock.uri(), "hbnt_test").unwrap(),
        node_id: "n".into(),
        jobs_root: root.join("jobs"),
        kill_grace: Duration::from_secs(5),
        poll_interval: Duration::from_secs(1),
        output_max: hyprbox_agent::spool::DEFAULT_OUTPUT_MAX,
    };
    let (_tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let run = jobs.run_job(job("job-gone", "echo hi; sleep 600", None), &mut rx, &shutdown);
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("a job the server dropped is stopped");
    assert!(!root.join("jobs/job-gone").exists());
}

#[tokio::test]
async fn cancel_stops_a_sleep_600_jobs_whole_process_group_within_the_grace_period() {
    let server = Server::start().await;
    let root = temp_dir("cancel");
    let grace = Duration::from_secs(10);
    let jobs = server.jobs(&root, grace);
    let (runner, tx, pgid) = start_job(jobs, &root, "job-cancel", "sleep 600 & sleep 600; wait").await;
    tx.send(Event::Cancel("some-other-job".into())).await.unwrap();
    tx.send(Event::Cancel("job-cancel".into())).await.unwrap();
    let asked = Instant::now();
    tokio::time::timeout(grace, runner)
        .await
        .expect("cancelled within the grace period")
        .unwrap();
    assert!(asked.elapsed() < grace);
    assert!(!group_alive(pgid), "every process of the group is gone");
    assert_eq!(server.exit_code(), Some(143), "the script died of SIGTERM");
    assert!(server.delivered("stderr").contains("cancelled"));
}

#[tokio::test]
async fn a_job_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let server = Server::start().await;
    let root = temp_dir("kill");
    let jobs = server.jobs(&root, Duration::from_secs(1));
    let (runner, tx, pgid) = start_job(jobs, &root, "job-stubborn", "trap '' TERM; sleep 600").await;
    tx.send(Event::Cancel("job-stubborn".into())).await.unwrap();
    let asked = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("killed after the grace period")
        .unwrap();
    assert!(asked.elapsed() >= Duration::from_secs(1));
    assert!(!group_alive(pgid));
    assert_eq!(server.exit_code(), Some(137), "SIGKILL");
}

#[tokio::test]
async fn a_job_past_its_timeout_is_stopped_and_completes_with_124() {
    let server = Server::start().await;
    let root = temp_dir("timeout");
    let jobs = server.jobs(&root, Duration::from_secs(2));
    let (_tx, mut rx) = mpsc::channel(8);
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(15),
        jobs.run_job(
            job("job-slow", "echo started; sleep 600", Some(1)),
            &mut rx,
            &CancellationToken::new(),
        ),
    )
    .await
    .expect("the timeout stops the job");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.exit_code(), Some(124));
    assert_eq!(server.delivered("stdout"), "started\n");
    assert!(server.delivered("stderr").contains("timeout"));
}

#[tokio::test]
async fn an_agent_restarted_mid_job_resumes_it_without_resending_output() {
    let server = Server::start().await;
    Mock::given(method("GET"))
        .and(path("/api/jobs/pending"))
        .respond_with(ResponseTemplate::new(200).set_body_json(PendingBody { job: None }))
        .mount(&server.mock)
        .await;
    let root = temp_dir("resume");
    let (_tx, mut rx) = mpsc::channel(8);
    let first_run = CancellationToken::new();
    let jobs = server.jobs(&root, Duration::from_secs(5));
    let script = "echo before; while [ ! -e release ]; do sleep 0.1; done; echo after";
    let stop = first_run.clone();
    let output = server.output.clone();
    let first = tokio::spawn(async move {
        let jobs2 = jobs.clone();
        let run = jobs2.run_job(job("job-resume", script, None), &mut rx, &first_run);
        tokio::join!(run, async {
            while !output.bodies().iter().any(|b| b["stdout"] == json!("before\n")) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.cancel();
        });
    });
    tokio::time::timeout(Duration::from_secs(15), first)
        .await
        .expect("the first agent run stops")
        .unwrap();
    let pgid = pgid_of(&root, "job-resume").unwrap();
    assert!(group_alive(pgid), "the job outlives the agent");
    assert!(server.complete.bodies().is_empty());

    // The second agent run: the job finishes while it watches.
    let jobs = server.jobs(&root, Duration::from_secs(5));
    let (_tx2, rx2) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { jobs.run(rx2, shutdown).await }
    });
    std::fs::write(root.join("jobs/job-resume/release"), "").unwrap();
    wait_for("the resumed job's completion", Duration::from_secs(15), || {
        !server.complete.bodies().is_empty()
    })
    .await;
    shutdown.cancel();
    agent.await.unwrap();
    assert_eq!(server.delivered("stdout"), "before\nafter\n");
    assert_eq!(server.exit_code(), Some(0));
    // The wrapper was the first agent's child: its zombie goes with that runtime's reaper.
    assert!(!root.join("jobs/job-resume").exists());
}

#[tokio::test]
async fn a_job_left_without_a_process_or_exit_code_completes_with_255() {
    let server = Server::start().await;
    Mock::given(method("GET"))
        .and(path("/api/jobs/pending"))
        .respond_with(ResponseTemplate::new(200).set_body_json(PendingBody { job: None }))
        .mount(&server.mock)
        .await;
    let root = temp_dir("lost");
    let dir = JobDir::create(
        &root.join("jobs"),
        JobState {
            job_id: "job-lost".into(),
            pgid: None,
            ..JobState::default()
        },
    )
    .unwrap();
    std::fs::write(dir.path().join("stdout"), "partial\n").unwrap();
    let jobs = server.jobs(&root, Duration::from_secs(5));
    let (_tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { jobs.run(rx, shutdown).await }
    });
    wait_for("the lost job's completion", Duration::from_secs(10), || {
        !server.complete.bodies().is_empty()
    })
    .await;
    shutdown.cancel();
    agent.await.unwrap();
    assert_eq!(server.exit_code(), Some(255));
    assert_eq!(server.delivered("stdout"), "partial\n");
    assert!(server.delivered("stderr").contains("lost track"));
}
