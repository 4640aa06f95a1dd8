//! The fleet page (a filtered, sorted page of nodes, patched live from `/api/stream/nodes`) and the
//! node page.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use hyprbox_store::now_ms;

use super::{Chrome, PageUser, html, problem, view};
use crate::auth::CurrentUser;
use crate::fleet::nodes::{self as api, FleetListQuery, LimitQuery, offline_ms};
use crate::fleet::query::{self, FleetQuery, RawQuery, SortKey};
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::time::rfc3339;
use crate::state::AppState;

/// CPU values drawn in each row's sparkline.
const SPARK_POINTS: usize = 30;

pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub status: &'static str,
    pub region: String,
    pub cpu: String,
    pub ram: String,
    pub disk: String,
    pub cpu_meter: String,
    pub ram_meter: String,
    pub disk_meter: String,
    pub spark: String,
    pub last_seen: String,
    pub bucket: &'static str,
}

/// A column header: its label, the sort it links to, and whether the list is sorted by it now.
pub struct Column {
    pub label: &'static str,
    pub href: String,
    pub mark: &'static str,
}

#[derive(Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    chrome: Chrome,
    rows: Vec<NodeRow>,
    total: usize,
    fleet_size: usize,
    first: usize,
    last: usize,
    prev: Option<String>,
    next: Option<String>,
    columns: Vec<Column>,
    status: String,
    region: String,
    text: String,
    regions: Vec<String>,
    error: Option<String>,
    /// A node silent this long is OFFLINE; the page marks it so without an event.
    offline_after_ms: i64,
}

fn bucket(counts: Option<&hyprbox_store::findings::Counts>) -> &'static str {
    match counts {
        Some(c) if c.critical > 0 => "AT_RISK",
        Some(c) if c.warn > 0 => "ATTENTION",
        _ => "HEALTHY",
    }
}

pub async fn fleet(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Query(params): Query<FleetListQuery>,
) -> Response {
    let raw = RawQuery {
        status: params.status.as_deref(),
        region: params.region.as_deref(),
        q: params.q.as_deref(),
        sort: params.sort.as_deref(),
        limit: params.limit.as_deref(),
        cursor: params.cursor.as_deref(),
    };
    // A bad parameter shows the whole fleet with the reason, rather than an error page.
    let (query, error) = match FleetQuery::parse(&raw) {
        Ok(query) => (query, None),
        Err(message) => (FleetQuery::default(), Some(message)),
    };
    let now = now_ms();
    let page = query::page(&state.fleet, &query, now, offline_ms(&state), SPARK_POINTS);
    // Without the counts every node would look HEALTHY: a database that cannot answer is a 503 page.
    let counts = match state.store.conn().await {
        Ok(mut conn) => hyprbox_store::findings::counts(&mut conn, now).await,
        Err(err) => Err(err),
    };
    let counts = match counts {
        Ok(counts) => counts,
        Err(err) => return problem(&identity, err.into()),
    };
    let rows = page
        .nodes
        .iter()
        .map(|(node, status, spark)| NodeRow {
            id: node.node_id.clone(),
            hostname: view::text(node.hostname.as_deref()),
            status,
            region: view::text(node.region.as_deref()),
            cpu: view::percent(node.cpu_percent),
            ram: view::percent(node.ram_percent),
            disk: view::percent(node.disk_percent),
            cpu_meter: view::meter(node.cpu_percent),
            ram_meter: view::meter(node.ram_percent),
            disk_meter: view::meter(node.disk_percent),
            spark: view::sparkline(spark, 80.0, 20.0),
            last_seen: rfc3339(node.last_seen_at),
            bucket: bucket(counts.get(&node.node_id)),
        })
        .collect();
    let columns = [
        ("Node", SortKey::NodeId),
        ("Hostname", SortKey::Hostname),
        ("Status", SortKey::Status),
        ("Region", SortKey::Region),
        ("CPU %", SortKey::Cpu),
        ("RAM %", SortKey::Ram),
        ("Disk %", SortKey::Disk),
        ("Last seen", SortKey::LastSeen),
    ]
    .into_iter()
    .map(|(label, key)| {
        let current = query.sort == key;
        let sorted = FleetQuery {
            sort: key,
            // A second click on the current column turns the order round.
            descending: current && !query.descending,
            ..query.clone()
        };
        Column {
            label,
            href: format!("/dashboard?{}", sorted.to_query_string(0)),
            mark: match (current, query.descending) {
                (false, _) => "",
                (true, false) => "▲",
                (true, true) => "▼",
            },
        }
    })
    .collect();
    let prev = (query.offset > 0).then(|| {
        format!(
            "/dashboard?{}",
            query.to_query_string(query.offset.saturating_sub(query.limit))
        )
    });
    let next = page
        .next_offset
        .map(|offset| format!("/dashboard?{}", query.to_query_string(offset)));
    html(&FleetPage {
        chrome: Chrome::new(&identity, "fleet", "Fleet"),
        first: if page.total == 0 { 0 } else { query.offset + 1 },
        last: query.offset + page.nodes.len(),
        rows,
        total: page.total,
        fleet_size: state.fleet.len(),
        prev,
        next,
        columns,
        status: query.status.clone().unwrap_or_default(),
        region: query.region.clone().unwrap_or_default(),
        text: query.text.clone().unwrap_or_default(),
        regions: query::regions(&state.fleet),
        error,
        offline_after_ms: offline_ms(&state),
    })
}

pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub severity: String,
    pub message: String,
}

pub struct ContainerRow {
    pub name: String,
    pub image: String,
    pub state: String,
}

pub struct FindingRow {
    pub id: String,
    pub severity: String,
    pub title: String,
    pub message: String,
    pub fix: Option<String>,
}

pub struct JobRow {
    pub id: String,
    pub preset: String,
    pub status: String,
    pub created_at: String,
}

pub struct PolicyRow {
    pub id: String,
    pub name: String,
    pub schedule: String,
    pub last_success: String,
}

#[derive(Template)]
#[template(path = "node.html")]
struct NodePage {
    chrome: Chrome,
    id: String,
    hostname: String,
    status: String,
    os: String,
    kernel: String,
    architecture: String,
    ip: String,
    region: String,
    agent: String,
    uptime: String,
    load: String,
    memory: String,
    disk_size: String,
    cpu: String,
    ram: String,
    disk: String,
    last_seen: String,
    cpu_line: String,
    ram_line: String,
    disk_line: String,
    history_from: String,
    events: Vec<EventRow>,
    containers: Vec<ContainerRow>,
    findings: Vec<FindingRow>,
    jobs: Vec<JobRow>,
    policies: Vec<PolicyRow>,
    heartbeat_interval: String,
    scan_interval: String,
    tls_paths: String,
    offline_after_ms: i64,
}

/// The preset that fixes findings of this type, if any.
pub fn fix_for(state: &AppState, kind: &str) -> Option<String> {
    state.presets.fixing(kind).next().map(|p| p.name.clone())
}

fn uptime(seconds: Option<i64>) -> String {
    seconds.map_or_else(
        || "–".into(),
        |s| format!("{}d {}h {}m", s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60),
    )
}

pub async fn node(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Path(node_id): Path<String>,
) -> Response {
    match node_page(&state, &identity, node_id).await {
        Ok(page) => html(&page),
        Err(err) => problem(&identity, err),
    }
}

async fn node_page(
    state: &AppState,
    identity: &crate::auth::Identity,
    node_id: String,
) -> Result<NodePage, ApiError> {
    let user = || CurrentUser(identity.clone());
    let st = api::status(State(state.clone()), user(), Path(node_id.clone()))
        .await?
        .0;
    let history = api::history(
        State(state.clone()),
        user(),
        Path(node_id.clone()),
        Query(LimitQuery {
            limit: Some("200".into()),
        }),
    )
    .await?
    .0
    .history;
    let activity = api::activity(State(state.clone()), user(), Path(node_id.clone()))
        .await?
        .0
        .events;
    let findings = crate::findings::list(
        State(state.clone()),
        user(),
        Query(crate::findings::ListQuery {
            node_id: Some(node_id.clone()),
            severity: None,
            include: None,
        }),
    )
    .await?
    .0
    .findings;
    let jobs = crate::jobs::operator::list(
        State(state.clone()),
        user(),
        Query(crate::jobs::operator::ListQuery {
            node_id: Some(node_id.clone()),
            status: None,
            limit: Some("10".into()),
        }),
    )
    .await?
    .0
    .jobs;
    let policies = crate::backups::policies::list(
        State(state.clone()),
        user(),
        Query(crate::backups::policies::ListQuery {
            node_id: Some(node_id.clone()),
        }),
    )
    .await?
    .0
    .policies;
    let containers = {
        let mut conn = state.store.conn().await?;
        hyprbox_store::backups::containers(&mut conn, &node_id).await?
    };
    let n = &st.node.node;
    let line = |pick: fn(&api::HistoryPoint) -> Option<f64>| {
        let values: Vec<f64> = history.iter().map(|p| pick(p).unwrap_or(0.0)).collect();
        view::sparkline(&values, 600.0, 120.0)
    };
    let config = &st.config;
    let config_text = |key: &str| {
        config
            .get(key)
            .map(|v| v.as_u64().map_or_else(|| v.to_string(), |n| n.to_string()))
            .unwrap_or_default()
    };
    let tls_paths = config
        .get("tls_paths")
        .and_then(|v| v.as_array())
        .map(|paths| {
            paths
                .iter()
                .filter_map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let text_of = |event: &serde_json::Value, key: &str| {
        event
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok(NodePage {
        chrome: Chrome::new(identity, "fleet", format!("Node {}", n.node_id)),
        id: n.node_id.clone(),
        hostname: view::text(n.hostname.as_deref()),
        status: n.status.clone(),
        os: view::text(n.os.as_deref()),
        kernel: view::text(n.kernel.as_deref()),
        architecture: view::text(n.architecture.as_deref()),
        ip: view::text(n.ip.as_deref()),
        region: view::text(n.region.as_deref()),
        agent: view::text(n.agent_version.as_deref()),
        uptime: uptime(st.node.uptime_seconds),
        load: st
            .node
            .load_avg
            .map_or_else(|| "–".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])),
        memory: view::bytes(st.node.mem_total_bytes),
        disk_size: view::bytes(st.node.disk_total_bytes),
        cpu: view::percent(n.cpu_percent),
        ram: view::percent(n.ram_percent),
        disk: view::percent(n.disk_percent),
        last_seen: n.last_seen_at.clone(),
        cpu_line: line(|p| p.cpu_percent),
        ram_line: line(|p| p.ram_percent),
        disk_line: line(|p| p.disk_percent),
        history_from: history.first().map(|p| p.at.clone()).unwrap_or_default(),
        events: activity
            .iter()
            .map(|e| EventRow {
                at: text_of(e, "at"),
                kind: text_of(e, "type"),
                severity: text_of(e, "severity"),
                message: text_of(e, "message"),
            })
            .collect(),
        containers: containers
            .into_iter()
            .map(|c| ContainerRow {
                name: c.name,
                image: c.image,
                state: c.state,
            })
            .collect(),
        findings: findings
            .into_iter()
            .map(|f| FindingRow {
                fix: fix_for(state, &f.kind),
                id: f.id,
                severity: f.severity,
                title: f.title,
                message: f.message,
            })
            .collect(),
        jobs: jobs
            .into_iter()
            .map(|j| JobRow {
                id: j.id,
                preset: j.preset_name,
                status: j.status,
                created_at: j.created_at,
            })
            .collect(),
        policies: policies
            .into_iter()
            .map(|p| PolicyRow {
                id: p.id,
                name: p.name,
                schedule: p.schedule.unwrap_or_else(|| "manual".into()),
                last_success: view::text(p.last_success_at.as_deref()),
            })
            .collect(),
        heartbeat_interval: config_text("heartbeat_interval"),
        scan_interval: config_text("scan_interval"),
        tls_paths,
        offline_after_ms: offline_ms(state),
    })
}
