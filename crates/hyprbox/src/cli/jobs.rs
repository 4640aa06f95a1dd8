//! `hyprbox jobs run|list|show|logs|cancel`: dispatch a preset to a node and follow its output live.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Api, Target, cell, enc, fail, print_json, print_list};

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum JobsCommand {
    /// Queue a preset on a node; with --follow, stream its output and exit with its exit code.
    Run {
        node: String,
        preset: String,
        /// A variable as NAME=VALUE; repeat for more (a list takes comma-separated items).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Stream the output until the job ends; the exit code is the job's.
        #[arg(long, short)]
        follow: bool,
        /// Print the created job as JSON (without --follow).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Your jobs (everyone's for an ADMIN), newest first.
    List {
        #[arg(long)]
        node: Option<String>,
        /// QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// One job with its script and the tail of its output.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The job's whole log, streamed (stdout by default).
    Logs {
        id: String,
        /// stdout or stderr.
        #[arg(long, default_value = "stdout")]
        stream: String,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a QUEUED job, or ask a RUNNING job's agent to stop it.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    match args.command {
        JobsCommand::Run {
            node,
            preset,
            vars,
            follow,
            json,
            target,
        } => {
            let api = Api::new(&target);
            let variables = parse_vars(&vars)?;
            let body = json!({ "nodeId": node, "presetName": preset, "variables": variables });
            let created = api.json(Method::POST, "/api/jobs", Some(body)).await?;
            let id = created["job"]["id"].as_str().unwrap_or_default().to_string();
            if !follow {
                if json {
                    print_json(&created);
                } else {
                    println!("job {id} queued on {node} ({preset})");
                }
                return Ok(());
            }
            eprintln!("job {id} queued on {node} ({preset}); waiting for its agent…");
            follow_job(&api, &id).await
        }
        JobsCommand::List {
            node,
            status,
            limit,
            json,
            target,
        } => {
            let api = Api::new(&target);
            let mut path = format!("/api/jobs?limit={limit}");
            if let Some(node) = node {
                path.push_str(&format!("&nodeId={}", enc(&node)));
            }
            if let Some(status) = status {
                path.push_str(&format!("&status={}", enc(&status.to_ascii_uppercase())));
            }
            let body = api.json(Method::GET, &path, None).await?;
            print_list(
                &body,
                json,
                "jobs",
                &[
                    ("ID", "id"),
                    ("NODE", "nodeId"),
                    ("PRESET", "presetName"),
                    ("STATUS", "status"),
                    ("EXIT", "exitCode"),
                    ("CREATED", "createdAt"),
                ],
            );
            Ok(())
        }
        JobsCommand::Show { id, json, target } => {
            let api = Api::new(&target);
            let body = api
                .json(Method::GET, &format!("/api/jobs/{}", enc(&id)), None)
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let job = &body["job"];
            for (label, field) in [
                ("id", "id"),
                ("node", "nodeId"),
                ("preset", "presetName"),
                ("status", "status"),
                ("exit code", "exitCode"),
                ("created", "createdAt"),
                ("started", "startedAt"),
                ("finished", "finishedAt"),
                ("error", "error"),
            ] {
                println!("{label:<10} {}", cell(&job[field]));
            }
            println!("variables  {}", job["variables"]);
            for stream in ["stdout", "stderr"] {
                let text = job[stream].as_str().unwrap_or_default();
                if !text.is_empty() {
                    let cut = if job[format!("{stream}Truncated")] == true {
                        " (tail; `hyprbox jobs logs` has it all)"
                    } else {
                        ""
                    };
                    println!("--- {stream}{cut}");
                    print!("{text}");
                    if !text.ends_with('\n') {
                        println!();
                    }
                }
            }
            Ok(())
        }
        JobsCommand::Logs { id, stream, target } => {
            let api = Api::new(&target);
            let request = api.request(
                Method::GET,
                &format!("/api/jobs/{}/output/raw?stream={stream}", enc(&id)),
            )?;
            let response = api.send(request).await?;
            let mut body = response.bytes_stream();
            let mut stdout = std::io::stdout().lock();
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| fail(6, format!("the download broke off: {e}")))?;
                stdout.write_all(&piece)?;
            }
            Ok(())
        }
        JobsCommand::Cancel { id, json, target } => {
            let api = Api::new(&target);
            let body = api
                .json(
                    Method::POST,
                    &format!("/api/jobs/{}/cancel", enc(&id)),
                    Some(json!({})),
                )
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            match body["job"]["status"].as_str() {
                Some("CANCELLED") => println!("job {id} cancelled"),
                _ => println!("job {id}: its agent was told to stop it"),
            }
            Ok(())
        }
    }
}

/// `--var NAME=VALUE` pairs as the API's `variables` object (values as strings: the server
/// converts them to each variable's type).
pub fn parse_vars(vars: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for var in vars {
        let Some((name, value)) = var.split_once('=') else {
            return Err(fail(2, format!("--var takes NAME=VALUE, got {var:?}")));
        };
        map.insert(name.trim().to_string(), Value::String(value.to_string()));
    }
    Ok(map)
}

/// One server-sent event.
struct SseEvent {
    name: String,
    id: Option<String>,
    data: String,
}

/// Splits complete events off the front of `buffer`. Lines end with CRLF, LF or CR, as the SSE
/// format allows (the server breaks a lone CR in output into a new `data:` line).
fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    // A CR at the very end may be the first half of a CRLF still on its way.
    let trailing_cr = buffer.ends_with('\r');
    if trailing_cr {
        buffer.pop();
    }
    if buffer.contains('\r') {
        *buffer = buffer.replace("\r\n", "\n").replace('\r', "\n");
    }
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = String::from("message");
        let mut id = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.split('\n') {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("id:") {
                id = Some(value.trim_start().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if !data.is_empty() {
            events.push(SseEvent {
                name,
                id,
                data: data.join("\n"),
            });
        }
    }
    if trailing_cr {
        buffer.push('\r');
    }
    events
}

/// Reconnections in a row without a single event before `--follow` gives up (about 45 s).
const FOLLOW_RETRIES: u32 = 8;

/// How one connection to a job's stream ended.
enum Followed {
    /// The job ended: the `done` event's data.
    Done(String),
    /// The stream broke off or could not be opened for a passing reason (the server restarting):
    /// worth opening again. Whether any event came through first.
    BrokeOff { reason: String, progressed: bool },
}

/// Streams a job's output to stdout/stderr until `done`; the exit code is the job's. A stream that
/// breaks off is opened again with `Last-Event-ID`, so no output is shown twice or lost; refusals
/// (not signed in, no such job) end at once with their own exit code.
async fn follow_job(api: &Api, id: &str) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut shown_running = false;
    let mut failures = 0;
    loop {
        match follow_once(api, id, &mut last_id, &mut shown_running).await? {
            Followed::Done(done) => return finish(id, &done),
            Followed::BrokeOff { reason, progressed } => {
                if progressed {
                    failures = 0;
                }
                failures += 1;
                if failures > FOLLOW_RETRIES {
                    return Err(fail(6, reason));
                }
                let wait = Duration::from_secs(1 << (failures - 1).min(3));
                eprintln!("{reason}; reconnecting in {} s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One connection to the job's stream.
async fn follow_once(
    api: &Api,
    id: &str,
    last_id: &mut Option<String>,
    shown_running: &mut bool,
) -> anyhow::Result<Followed> {
    let mut request = api.request(Method::GET, &format!("/api/jobs/{}/stream", enc(id)))?;
    if let Some(last) = last_id.as_deref() {
        request = request.header("Last-Event-ID", last);
    }
    let broke = |reason: String, progressed| Followed::BrokeOff { reason, progressed };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Ok(broke(
                format!("cannot reach {}: {}", api.server, e.without_url()),
                false,
            ));
        }
    };
    if matches!(response.status().as_u16(), 502..=504) {
        return Ok(broke(format!("the server answered {}", response.status()), false));
    }
    let response = super::check(response).await?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut pending = Vec::new();
    let mut progressed = false;
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => return Ok(broke(format!("the stream broke off: {e}"), progressed)),
        };
        pending.extend_from_slice(&piece);
        // Keep an incomplete UTF-8 sequence for the next piece.
        let valid = match std::str::from_utf8(&pending) {
            Ok(text) => text.len(),
            Err(err) => err.valid_up_to(),
        };
        buffer.push_str(&String::from_utf8_lossy(&pending[..valid]));
        pending.drain(..valid);
        for event in take_events(&mut buffer) {
            // Only output counts as progress: every connection replays the status first.
            if event.id.is_some() {
                progressed = true;
                last_id.clone_from(&event.id);
            }
            match event.name.as_str() {
                "stdout" => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(event.data.as_bytes())?;
                    out.flush()?;
                }
                "stderr" => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(event.data.as_bytes())?;
                    err.flush()?;
                }
                "status" => {
                    let status: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    if status["status"] == "RUNNING" && !*shown_running {
                        *shown_running = true;
                        eprintln!("job {id} is RUNNING");
                    }
                }
                "done" => return Ok(Followed::Done(event.data)),
                _ => {}
            }
        }
    }
    Ok(broke(
        "the server closed the stream before the job ended".into(),
        progressed,
    ))
}

fn finish(id: &str, data: &str) -> anyhow::Result<()> {
    let done: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let status = done["status"].as_str().unwrap_or("?");
    let exit = done["exitCode"].as_i64();
    eprintln!(
        "job {id} {status}{}",
        exit.map(|c| format!(" (exit code {c})")).unwrap_or_default()
    );
    match (status, exit) {
        ("SUCCEEDED", _) => Ok(()),
        (_, Some(code)) if (1..=255).contains(&code) => Err(fail(
            u8::try_from(code).unwrap_or(1),
            format!("job {id} {status} with exit code {code}"),
        )),
        _ => Err(fail(1, format!("job {id} {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_split_and_multi_line_data_joined() {
        let mut buffer =
            String::from("event: stdout\nid: 0\ndata: one\ndata: two\n\n: ping\n\nevent: done\ndata: {}");
        let events = take_events(&mut buffer);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "stdout");
        assert_eq!(events[0].data, "one\ntwo");
        assert_eq!(buffer, "event: done\ndata: {}");
        buffer.push_str("\n\n");
        assert_eq!(take_events(&mut buffer)[0].name, "done");
    }

    #[test]
    fn cr_and_crlf_end_lines_too_even_split_across_pieces() {
        let mut buffer = String::from("event: stdout\r\nid: 3\r\ndata: 10%\rdata: 20%\r");
        assert!(take_events(&mut buffer).is_empty());
        assert!(buffer.ends_with('\r'), "a trailing CR waits for its LF");
        buffer.push_str("\n\r\n");
        let events = take_events(&mut buffer);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "stdout");
        assert_eq!(events[0].id.as_deref(), Some("3"));
        assert_eq!(events[0].data, "10%\n20%");
        assert_eq!(buffer, "");
        // CR alone ends lines too (the event is complete once the next byte shows it was no CRLF).
        let mut cr_only = String::from("event: done\rdata: {}\r\r: ping");
        assert_eq!(take_events(&mut cr_only)[0].name, "done");
    }

    fn api(server: &wiremock::MockServer) -> Api {
        Api {
            server: server.uri(),
            token: Some("t".into()),
            client: reqwest::Client::new(),
        }
    }

    fn exit_code(err: &anyhow::Error) -> Option<u8> {
        err.downcast_ref::<super::super::CliError>().map(|e| e.code)
    }

    #[tokio::test]
    async fn follow_gives_up_at_once_on_a_refusal_with_its_exit_code() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(path("/api/jobs/nope/stream"))
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(serde_json::json!({"error": "not_found", "message": "job not found"})),
            )
            .mount(&server)
            .await;
        let started = std::time::Instant::now();
        let err = follow_job(&api(&server), "nope").await.unwrap_err();
        assert_eq!(exit_code(&err), Some(4), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1), "no retries");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn follow_reopens_a_stream_that_broke_off_after_the_last_event_it_saw() {
        use wiremock::matchers::{header, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let sse = |body: &str| {
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(body)
        };
        Mock::given(path("/api/jobs/j1/stream"))
            .and(header("last-event-id", "4"))
            .respond_with(sse(
                "event: done\ndata: {\"status\":\"SUCCEEDED\",\"exitCode\":0}\n\n",
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        // The first connection ends after one output event, before `done` (a server restart).
        Mock::given(path("/api/jobs/j1/stream"))
            .respond_with(sse("event: stdout\nid: 4\ndata: a\n\n"))
            .up_to_n_times(1)
            .with_priority(2)
            .mount(&server)
            .await;
        follow_job(&api(&server), "j1").await.unwrap();
        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 2);
        assert!(requests[0].headers.get("last-event-id").is_none());
    }

    #[test]
    fn values_in_urls_are_percent_encoded() {
        assert_eq!(enc("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn variables_are_name_value_pairs() {
        let vars = parse_vars(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(vars["a"], "1");
        assert_eq!(vars["b"], "x=y");
        assert!(parse_vars(&["nope".into()]).is_err());
    }
}
