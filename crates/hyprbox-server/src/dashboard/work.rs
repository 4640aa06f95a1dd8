//! Jobs (list, the run form generated from a preset's variables, a job's live output), findings
//! and backups.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use hyprbox_presets::VarType;
use hyprbox_store::users::Role;
use serde::Deserialize;
use serde_json::Value;

use super::fleet::fix_for;
use super::{Chrome, PageUser, html, problem, refusal, safe_message, view};
use crate::auth::CurrentUser;
use crate::backups::policies;
use crate::backups::schedule::Schedule;
use crate::findings;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Query};
use crate::http::time::rfc3339;
use crate::jobs::operator;
use crate::state::AppState;

pub struct JobRow {
    pub id: String,
    pub node_id: String,
    pub preset: String,
    pub status: String,
    pub exit_code: String,
    pub created_at: String,
    pub finished_at: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    rows: Vec<JobRow>,
    node_id: String,
    status: String,
    statuses: [&'static str; 5],
    error: Option<String>,
}

pub async fn jobs(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Query(query): Query<operator::ListQuery>,
) -> Response {
    let node_id = query.node_id.clone().unwrap_or_default();
    let status = query.status.clone().unwrap_or_default();
    let (jobs, error) = match operator::list(State(state), CurrentUser(identity.clone()), Query(query)).await
    {
        Ok(Json(body)) => (body.jobs, None),
        Err(err) => (Vec::new(), Some(safe_message(&err))),
    };
    let rows = jobs
        .into_iter()
        .map(|j| JobRow {
            exit_code: j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            finished_at: j.finished_at.unwrap_or_default(),
            id: j.id,
            node_id: j.node_id,
            preset: j.preset_name,
            status: j.status,
            created_at: j.created_at,
        })
        .collect();
    html(&JobsPage {
        chrome: Chrome::new(&identity, "jobs", "Jobs"),
        rows,
        node_id,
        status,
        statuses: ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
        error,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NewJobQuery {
    node_id: Option<String>,
    preset: Option<String>,
    finding_id: Option<String>,
}

/// One input of the run form, generated from a preset variable.
pub struct Field {
    pub name: String,
    /// `text`, `password`, `number`, `checkbox`, `list` (a textarea, one item a line) or `select`.
    pub input: &'static str,
    pub value: String,
    pub checked: bool,
    pub required: bool,
    pub description: String,
    pub kind: &'static str,
    pub min: String,
    pub max: String,
    pub pattern: String,
    pub choices: Vec<String>,
}

pub struct PresetChoice {
    pub name: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "job_new.html")]
struct NewJobPage {
    chrome: Chrome,
    node_id: String,
    presets: Vec<PresetChoice>,
    preset: Option<PresetInfo>,
    fields: Vec<Field>,
    finding: Option<String>,
}

pub struct PresetInfo {
    pub name: String,
    pub description: String,
    pub risk: String,
    pub timeout: String,
}

fn field_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
    }
}

fn field(variable: &hyprbox_presets::Variable, value: Option<&Value>) -> Field {
    let value = value.or(variable.default.as_ref());
    let input = match variable.kind {
        VarType::String if variable.secret => "password",
        VarType::String => "text",
        VarType::Integer => "number",
        VarType::Boolean => "checkbox",
        VarType::List => "list",
        VarType::Enum => "select",
    };
    let bound = |b: Option<i64>| b.map(|n| n.to_string()).unwrap_or_default();
    let numeric = variable.kind == VarType::Integer;
    Field {
        name: variable.name.clone(),
        input,
        checked: value.and_then(Value::as_bool).unwrap_or(false),
        value: field_value(value),
        required: variable.required,
        description: variable.description.clone().unwrap_or_default(),
        kind: variable.kind.as_str(),
        min: if numeric {
            bound(variable.min)
        } else {
            String::new()
        },
        max: if numeric {
            bound(variable.max)
        } else {
            String::new()
        },
        pattern: variable.pattern.clone().unwrap_or_default(),
        choices: variable.values.clone(),
    }
}

/// The run form. With `findingId` it is filled from the finding's recommendation: its node, the
/// preset that fixes it, and the variables taken from what the scanner found.
pub async fn new_job(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Query(query): Query<NewJobQuery>,
) -> Response {
    if let Some(page) = refusal(&identity, Role::Operator) {
        return page;
    }
    let mut node_id = query.node_id.unwrap_or_default();
    let mut preset_name = query.preset;
    let mut values = serde_json::Map::new();
    let mut finding = None;
    if let Some(id) = query.finding_id.filter(|id| !id.is_empty()) {
        match findings::get(State(state.clone()), CurrentUser(identity.clone()), Path(id)).await {
            Ok(Json(detail)) => {
                node_id = detail.finding.node_id.clone();
                finding = Some(detail.finding.title.clone());
                if let Some(rec) = detail.recommendation {
                    preset_name = Some(rec.preset_name);
                    values = rec.variables;
                }
            }
            Err(err) => return problem(&identity, err),
        }
    }
    let preset = preset_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .and_then(|name| state.presets.get(name));
    let fields = preset
        .map(|p| {
            p.variables
                .iter()
                .map(|v| field(v, values.get(&v.name)))
                .collect()
        })
        .unwrap_or_default();
    html(&NewJobPage {
        chrome: Chrome::new(&identity, "jobs", "Run a preset"),
        node_id,
        presets: state
            .presets
            .iter()
            .map(|p| PresetChoice {
                selected: preset.is_some_and(|chosen| chosen.name == p.name),
                name: p.name.clone(),
            })
            .collect(),
        preset: preset.map(|p| PresetInfo {
            name: p.name.clone(),
            description: p.description.clone(),
            risk: p.risk.as_str().to_string(),
            timeout: p.timeout.clone(),
        }),
        fields,
        finding,
    })
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    id: String,
    node_id: String,
    preset: String,
    status: String,
    exit_code: String,
    created_at: String,
    started_at: String,
    finished_at: String,
    error: String,
    variables: String,
    script: String,
    terminal: bool,
}

pub async fn job(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Path(id): Path<String>,
) -> Response {
    let detail = match operator::get(State(state), CurrentUser(identity.clone()), Path(id)).await {
        Ok(Json(body)) => body.job,
        Err(err) => return problem(&identity, err),
    };
    let job = detail.job;
    html(&JobPage {
        chrome: Chrome::new(&identity, "jobs", format!("Job {}", job.id)),
        terminal: hyprbox_store::jobs::is_terminal(&job.status),
        exit_code: job.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        started_at: job.started_at.unwrap_or_default(),
        finished_at: job.finished_at.unwrap_or_default(),
        error: job.error.unwrap_or_default(),
        variables: serde_json::to_string_pretty(&job.variables).unwrap_or_default(),
        script: detail.script,
        id: job.id,
        node_id: job.node_id,
        preset: job.preset_name,
        status: job.status,
        created_at: job.created_at,
    })
}

pub struct FindingRow {
    pub id: String,
    pub node_id: String,
    pub severity: String,
    pub status: String,
    pub title: String,
    pub message: String,
    pub detected_at: String,
    pub fix: Option<String>,
}

#[derive(Template)]
#[template(path = "findings.html")]
struct FindingsPage {
    chrome: Chrome,
    rows: Vec<FindingRow>,
    severity: String,
    node_id: String,
    all: bool,
    critical: usize,
    warn: usize,
    info: usize,
    error: Option<String>,
}

pub async fn findings(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Query(query): Query<findings::ListQuery>,
) -> Response {
    let severity = query.severity.clone().unwrap_or_default();
    let node_id = query.node_id.clone().unwrap_or_default();
    let all = query.include.as_deref() == Some("all");
    let (list, error) =
        match findings::list(State(state.clone()), CurrentUser(identity.clone()), Query(query)).await {
            Ok(Json(body)) => (body.findings, None),
            Err(err) => (Vec::new(), Some(safe_message(&err))),
        };
    let count = |s: &str| list.iter().filter(|f| f.severity == s).count();
    let (critical, warn, info) = (count("CRITICAL"), count("WARN"), count("INFO"));
    let rows = list
        .into_iter()
        .map(|f| FindingRow {
            fix: fix_for(&state, &f.kind),
            id: f.id,
            node_id: f.node_id,
            severity: f.severity,
            status: f.status,
            title: f.title,
            message: f.message,
            detected_at: f.detected_at,
        })
        .collect();
    html(&FindingsPage {
        chrome: Chrome::new(&identity, "findings", "Findings"),
        rows,
        severity,
        node_id,
        all,
        critical,
        warn,
        info,
        error,
    })
}

pub struct PolicyRow {
    pub id: String,
    pub name: String,
    pub node_id: String,
    pub schedule: String,
    pub repo: String,
    pub next_run: String,
    pub last_success: String,
}

#[derive(Template)]
#[template(path = "backups.html")]
struct BackupsPage {
    chrome: Chrome,
    rows: Vec<PolicyRow>,
}

pub async fn backups(State(state): State<AppState>, PageUser(identity): PageUser) -> Response {
    let list = match policies::list(
        State(state),
        CurrentUser(identity.clone()),
        Query(policies::ListQuery { node_id: None }),
    )
    .await
    {
        Ok(Json(body)) => body.policies,
        Err(err) => return problem(&identity, err),
    };
    let rows = list
        .into_iter()
        .map(|p| PolicyRow {
            id: p.id,
            name: p.name,
            node_id: p.node_id,
            schedule: p.schedule.unwrap_or_else(|| "manual".into()),
            repo: p.repo_url,
            next_run: view::text(p.next_run_at.as_deref()),
            last_success: view::text(p.last_success_at.as_deref()),
        })
        .collect();
    html(&BackupsPage {
        chrome: Chrome::new(&identity, "backups", "Backups"),
        rows,
    })
}

/// The create and edit form of a policy.
#[derive(Template)]
#[template(path = "backup_form.html")]
struct BackupFormPage {
    chrome: Chrome,
    id: String,
    name: String,
    node_id: String,
    paths: String,
    schedule: String,
    repo_url: String,
    password_ref: String,
    keep_daily: String,
    keep_weekly: String,
    keep_monthly: String,
    runs: Vec<RunRow>,
    next_runs: Vec<String>,
}

pub struct RunRow {
    pub status: String,
    pub started_at: String,
    pub snapshot: String,
    pub size: String,
    pub files: String,
    pub error: String,
    pub job_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NewBackupQuery {
    node_id: Option<String>,
}

pub async fn new_backup(PageUser(identity): PageUser, Query(query): Query<NewBackupQuery>) -> Response {
    if let Some(page) = refusal(&identity, Role::Operator) {
        return page;
    }
    html(&BackupFormPage {
        chrome: Chrome::new(&identity, "backups", "New backup policy"),
        id: String::new(),
        name: String::new(),
        node_id: query.node_id.unwrap_or_default(),
        paths: String::new(),
        schedule: "0 3 * * *".into(),
        repo_url: String::new(),
        password_ref: "file:/etc/hyprbox/restic.pass".into(),
        keep_daily: "7".into(),
        keep_weekly: "4".into(),
        keep_monthly: "6".into(),
        runs: Vec::new(),
        next_runs: next_runs("0 3 * * *", 5).unwrap_or_default(),
    })
}

pub async fn backup(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Path(id): Path<String>,
) -> Response {
    let detail = match policies::get(State(state), CurrentUser(identity.clone()), Path(id)).await {
        Ok(Json(detail)) => detail,
        Err(err) => return problem(&identity, err),
    };
    let p = detail.policy;
    let schedule = p.schedule.clone().unwrap_or_default();
    html(&BackupFormPage {
        chrome: Chrome::new(&identity, "backups", format!("Backup {}", p.name)),
        next_runs: next_runs(&schedule, 5).unwrap_or_default(),
        id: p.id,
        name: p.name,
        node_id: p.node_id,
        paths: p.paths.join("\n"),
        schedule,
        repo_url: p.repo_url,
        password_ref: p.password_ref,
        keep_daily: p.keep_daily.to_string(),
        keep_weekly: p.keep_weekly.to_string(),
        keep_monthly: p.keep_monthly.to_string(),
        runs: detail
            .runs
            .into_iter()
            .map(|r| RunRow {
                status: r.status,
                started_at: r.started_at,
                snapshot: view::text(r.snapshot_id.as_deref()),
                size: view::bytes(r.size_bytes),
                files: r.files_count.map(|n| n.to_string()).unwrap_or_else(|| "–".into()),
                error: r.error.unwrap_or_default(),
                job_id: r.job_id.unwrap_or_default(),
            })
            .collect(),
    })
}

/// The next `count` times (UTC, RFC 3339) a cron expression fires; the error names the problem.
fn next_runs(expr: &str, count: usize) -> Result<Vec<String>, String> {
    let schedule = Schedule::parse(expr)?;
    let mut at = hyprbox_store::now_ms();
    let mut runs = Vec::new();
    for _ in 0..count {
        match schedule.next_after(at) {
            Some(next) => {
                runs.push(rfc3339(next));
                at = next;
            }
            None => break,
        }
    }
    Ok(runs)
}

#[derive(Deserialize)]
pub struct CronQuery {
    expr: Option<String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronPreview {
    next_runs: Vec<String>,
}

/// `GET /dashboard/cron?expr=…` → `{nextRuns}` for the backup form; a bad expression is a 400
/// whose message says why.
pub async fn cron_preview(_: CurrentUser, Query(query): Query<CronQuery>) -> Response {
    let expr = query.expr.unwrap_or_default();
    match next_runs(expr.trim(), 5) {
        Ok(next_runs) => Json(CronPreview { next_runs }).into_response(),
        Err(message) => ApiError::BadRequest(message).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_schedule_fires_once_a_day_at_its_hour() {
        let runs = next_runs("0 3 * * *", 3).unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.contains("T03:00:00")), "{runs:?}");
        assert!(next_runs("not cron", 3).is_err());
    }

    #[test]
    fn a_list_variable_fills_its_textarea_one_item_a_line() {
        let value = serde_json::json!(["/etc", "/var/lib"]);
        assert_eq!(field_value(Some(&value)), "/etc\n/var/lib");
        assert_eq!(field_value(Some(&serde_json::json!(5))), "5");
        assert_eq!(field_value(None), "");
    }
}
