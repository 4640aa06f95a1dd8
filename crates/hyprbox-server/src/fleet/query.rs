//! A filtered, sorted page of the fleet, from memory: what `GET /api/nodes?…` and the dashboard's
//! fleet page show, so neither has to send a 50,000-node fleet to show fifty rows.

use hyprbox_store::nodes::Node;

use super::memory::{self, Fleet};

/// The largest page asked for at once.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    NodeId,
    Hostname,
    Status,
    Region,
    Cpu,
    Ram,
    Disk,
    LastSeen,
}

impl SortKey {
    /// The names the `sort` parameter takes (`-` in front for descending).
    pub const NAMES: [(&'static str, SortKey); 8] = [
        ("nodeId", SortKey::NodeId),
        ("hostname", SortKey::Hostname),
        ("status", SortKey::Status),
        ("region", SortKey::Region),
        ("cpu", SortKey::Cpu),
        ("ram", SortKey::Ram),
        ("disk", SortKey::Disk),
        ("lastSeen", SortKey::LastSeen),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, key)| *key == self)
            .map_or("nodeId", |(name, _)| name)
    }
}

/// What to show: every field optional, as the query string gives them.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetQuery {
    pub status: Option<String>,
    pub region: Option<String>,
    /// Matched case-insensitively against node id, hostname, IP and region.
    pub text: Option<String>,
    pub sort: SortKey,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

impl Default for FleetQuery {
    fn default() -> Self {
        FleetQuery {
            status: None,
            region: None,
            text: None,
            sort: SortKey::NodeId,
            descending: false,
            offset: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// The raw parameters, before they are checked.
#[derive(Clone, Debug, Default)]
pub struct RawQuery<'a> {
    pub status: Option<&'a str>,
    pub region: Option<&'a str>,
    pub q: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl FleetQuery {
    /// Checks the parameters; the error names the parameter and the rule.
    pub fn parse(raw: &RawQuery<'_>) -> Result<FleetQuery, String> {
        let status = match present(raw.status) {
            None => None,
            Some(s) => {
                let upper = s.to_ascii_uppercase();
                if !["ONLINE", "DEGRADED", "OFFLINE"].contains(&upper.as_str()) {
                    return Err("status must be one of ONLINE, DEGRADED, OFFLINE".into());
                }
                Some(upper)
            }
        };
        let region = present(raw.region).map(str::to_string);
        if region.as_ref().is_some_and(|r| r.len() > 128) {
            return Err("region must be at most 128 characters".into());
        }
        let text = present(raw.q).map(str::to_lowercase);
        if text.as_ref().is_some_and(|t| t.len() > 256) {
            return Err("q must be at most 256 characters".into());
        }
        let (sort, descending) = match present(raw.sort) {
            None => (SortKey::NodeId, false),
            Some(s) => {
                let (name, descending) = s.strip_prefix('-').map_or((s, false), |n| (n, true));
                let key = SortKey::NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, key)| *key)
                    .ok_or_else(|| {
                        format!(
                            "sort must be one of {} (with - in front for descending)",
                            SortKey::NAMES.map(|(n, _)| n).join(", ")
                        )
                    })?;
                (key, descending)
            }
        };
        let limit = match present(raw.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_LIMIT}"))?,
        };
        let offset = match present(raw.cursor) {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| "cursor must be a nextCursor from an earlier answer".to_string())?,
        };
        Ok(FleetQuery {
            status,
            region,
            text,
            sort,
            descending,
            offset,
            limit,
        })
    }

    /// The query with another offset, as a query string (for links to other pages).
    pub fn to_query_string(&self, offset: usize) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: &str| parts.push(format!("{k}={}", encode(v)));
        if let Some(s) = &self.status {
            push("status", s);
        }
        if let Some(r) = &self.region {
            push("region", r);
        }
        if let Some(q) = &self.text {
            push("q", q);
        }
        if self.sort != SortKey::NodeId || self.descending {
            let sort = format!("{}{}", if self.descending { "-" } else { "" }, self.sort.name());
            push("sort", &sort);
        }
        if self.limit != DEFAULT_LIMIT {
            push("limit", &self.limit.to_string());
        }
        if offset > 0 {
            push("cursor", &offset.to_string());
        }
        parts.join("&")
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One page of the fleet.
pub struct FleetPage {
    /// The nodes of the page, each with its computed status and recent CPU values (oldest first).
    pub nodes: Vec<(Node, &'static str, Vec<f64>)>,
    /// How many nodes match the filters.
    pub total: usize,
    /// Where the next page starts, when there is one.
    pub next_offset: Option<usize>,
}

fn matches(query: &FleetQuery, node: &Node, status: &str) -> bool {
    if query.status.as_deref().is_some_and(|s| s != status) {
        return false;
    }
    if let Some(region) = &query.region
        && !node
            .region
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(region))
    {
        return false;
    }
    if let Some(text) = &query.text {
        let hit = [
            Some(node.node_id.as_str()),
            node.hostname.as_deref(),
            node.ip.as_deref(),
            node.region.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(text.as_str()));
        if !hit {
            return false;
        }
    }
    true
}

/// What a node is sorted by, taken out of the fleet without copying the node.
#[derive(PartialEq, PartialOrd)]
enum SortValue {
    None,
    Number(f64),
    Text(Option<String>),
    Time(i64),
}

fn sort_value(key: SortKey, node: &Node, status: &'static str) -> SortValue {
    // An unknown metric sorts below every known one.
    let number = |v: Option<f64>| SortValue::Number(v.unwrap_or(-1.0));
    match key {
        SortKey::NodeId => SortValue::None,
        SortKey::Hostname => SortValue::Text(node.hostname.clone()),
        SortKey::Status => SortValue::Text(Some(status.to_string())),
        SortKey::Region => SortValue::Text(node.region.clone()),
        SortKey::Cpu => number(node.cpu_percent),
        SortKey::Ram => number(node.ram_percent),
        SortKey::Disk => number(node.disk_percent),
        SortKey::LastSeen => SortValue::Time(node.last_seen_at),
    }
}

/// The page `query` asks for, with statuses computed at `now`. Only each matching node's id and
/// sort value are copied out of the fleet; the page's own nodes are read afterwards.
pub fn page(fleet: &Fleet, query: &FleetQuery, now: i64, offline_after_ms: i64, sparks: usize) -> FleetPage {
    let mut hits: Vec<(SortValue, String)> = fleet.filter_map(|state| {
        let status = memory::status(&state.node, now, offline_after_ms);
        matches(query, &state.node, status).then(|| {
            (
                sort_value(query.sort, &state.node, status),
                state.node.node_id.clone(),
            )
        })
    });
    let total = hits.len();
    let order = |(a, a_id): &(SortValue, String), (b, b_id): &(SortValue, String)| {
        // Ties fall back on the node id, so pages are stable between requests.
        let order = a
            .partial_cmp(b)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a_id.cmp(b_id));
        if query.descending { order.reverse() } else { order }
    };
    let end = query.offset.saturating_add(query.limit).min(total);
    // Only the first `end` in order matter: partition them out in linear time, then sort those.
    if end > 0 && end < total {
        hits.select_nth_unstable_by(end - 1, order);
        hits.truncate(end);
    }
    hits.sort_unstable_by(order);
    let start = query.offset.min(end);
    let nodes = hits[start..end]
        .iter()
        .filter_map(|(_, id)| fleet.get(id))
        .map(|state| {
            let status = memory::status(&state.node, now, offline_after_ms);
            let skip = state.sparks.len().saturating_sub(sparks);
            let spark = state.sparks.iter().skip(skip).copied().collect();
            (state.node, status, spark)
        })
        .collect();
    FleetPage {
        nodes,
        total,
        next_offset: (end < total).then_some(end),
    }
}

/// Every region the fleet names, sorted, for the filter's choices.
pub fn regions(fleet: &Fleet) -> Vec<String> {
    let mut regions: Vec<String> = fleet.filter_map(|state| state.node.region.clone());
    regions.sort_unstable();
    regions.dedup();
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(pairs: &[(&str, &'a str)]) -> RawQuery<'a> {
        let mut raw = RawQuery::default();
        for (k, v) in pairs {
            match *k {
                "status" => raw.status = Some(v),
                "sort" => raw.sort = Some(v),
                "limit" => raw.limit = Some(v),
                "cursor" => raw.cursor = Some(v),
                "q" => raw.q = Some(v),
                _ => raw.region = Some(v),
            }
        }
        raw
    }

    #[test]
    fn parameters_out_of_their_rules_are_refused_with_the_parameter_named() {
        for (pairs, named) in [
            (vec![("status", "BROKEN")], "status"),
            (vec![("sort", "-nope")], "sort"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "1001")], "limit"),
            (vec![("cursor", "abc")], "cursor"),
        ] {
            let err = FleetQuery::parse(&raw(&pairs)).unwrap_err();
            assert!(err.starts_with(named), "{err}");
        }
    }

    #[test]
    fn a_query_survives_the_round_trip_through_its_query_string() {
        let query = FleetQuery::parse(&raw(&[
            ("status", "online"),
            ("q", "web 1&x"),
            ("sort", "-cpu"),
            ("limit", "20"),
        ]))
        .unwrap();
        let string = query.to_query_string(40);
        assert_eq!(string, "status=ONLINE&q=web%201%26x&sort=-cpu&limit=20&cursor=40");
    }
}
