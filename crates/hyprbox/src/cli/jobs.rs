//! `hyprbox jobs run|list|show|logs|cancel`: dispatch a preset to a node and follow its output live.

use std::io::Write;

use futures_util::StreamExt;
use hyprbox_client::{Client, JobQuery};
use hyprbox_proto::jobs::events::{self, DoneEvent, StatusEvent};
use hyprbox_proto::jobs::{CreateJob, RUNNING, SUCCEEDED};
use serde_json::{Map, Value};

use super::{Target, cell, connect, fail, print_json, print_list};

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
            let api = connect(&target)?;
            let created = api
                .create_job(&CreateJob {
                    node_id: node.clone(),
                    preset_name: preset.clone(),
                    variables: parse_vars(&vars)?,
                })
                .await?;
            let id = created.job.id.clone();
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
            let status = status.map(|s| s.to_ascii_uppercase());
            let body = connect(&target)?
                .jobs(&JobQuery {
                    node_id: node.as_deref(),
                    status: status.as_deref(),
                    limit: Some(limit),
                })
                .await?;
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
            let body = connect(&target)?.job(&id).await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let job = serde_json::to_value(&body.job)?;
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
            let response = connect(&target)?.raw_output(&id, &stream).await?;
            let mut body = response.bytes_stream();
            let mut stdout = std::io::stdout().lock();
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| fail(6, format!("the download broke off: {e}")))?;
                stdout.write_all(&piece)?;
            }
            Ok(())
        }
        JobsCommand::Cancel { id, json, target } => {
            let body = connect(&target)?.cancel_job(&id).await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            match body.job.status.as_str() {
                hyprbox_proto::jobs::CANCELLED => println!("job {id} cancelled"),
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

/// Streams a job's output to stdout/stderr until `done`; the exit code is the job's. A stream that
/// breaks off is opened again with `Last-Event-ID` (by the client's subscription), so no output
/// is shown twice or lost; refusals (not signed in, no such job) end at once with their own exit
/// code.
async fn follow_job(api: &Client, id: &str) -> anyhow::Result<()> {
    let mut stream = api
        .job_events(id)
        .on_reconnect(|reason, wait| eprintln!("{reason}; reconnecting in {} s", wait.as_secs()));
    let mut shown_running = false;
    loop {
        let event = stream.next().await?;
        match event.name.as_str() {
            events::STDOUT => {
                let mut out = std::io::stdout().lock();
                out.write_all(event.data.as_bytes())?;
                out.flush()?;
            }
            events::STDERR => {
                let mut err = std::io::stderr().lock();
                err.write_all(event.data.as_bytes())?;
                err.flush()?;
            }
            events::STATUS => {
                let status: StatusEvent = event.json()?;
                if status.status == RUNNING && !shown_running {
                    shown_running = true;
                    eprintln!("job {id} is RUNNING");
                }
            }
            events::DONE => return finish(id, &event.json()?),
            _ => {}
        }
    }
}

fn finish(id: &str, done: &DoneEvent) -> anyhow::Result<()> {
    let status = done.status.as_str();
    let exit = done.exit_code;
    eprintln!(
        "job {id} {status}{}",
        exit.map(|c| format!(" (exit code {c})")).unwrap_or_default()
    );
    match (status, exit) {
        (SUCCEEDED, _) => Ok(()),
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

    fn api(server: &wiremock::MockServer) -> Client {
        Client::new(&server.uri(), Some("t")).unwrap()
    }

    fn exit_code(err: &anyhow::Error) -> Option<u8> {
        Some(super::super::exit_status(err).0)
    }

    #[tokio::test]
    async fn follow_gives_up_at_once_on_a_refusal_with_its_exit_code() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(path("/api/jobs/nope/stream"))
            .respond_with(
                ResponseTemplate::new(404).set_body_json(hyprbox_proto::ErrorBody {
                    error: "not_found".into(),
                    message: "job not found".into(),
                }),
            )
            .mount(&server)
            .await;
        let started = std::time::Instant::now();
        let err = follow_job(&api(&server), "nope").await.unwrap_err();
        assert_eq!(exit_code(&err), Some(4), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "no retries"
        );
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
    fn variables_are_name_value_pairs() {
        let vars = parse_vars(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(vars["a"], "1");
        assert_eq!(vars["b"], "x=y");
        assert!(parse_vars(&["nope".into()]).is_err());
    }
}
