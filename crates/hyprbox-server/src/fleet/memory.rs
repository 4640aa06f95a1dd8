//! The live picture of the fleet, in memory: each node's latest state, its last 100 CPU values
//! (sparks) and its heartbeat spacing. Heartbeats update it; `GET /api/nodes`, `/sparks` and
//! `/status` read it, so those reads cost no query. It is loaded from the database at start.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;

use hyprbox_proto::Heartbeat;
use hyprbox_store::nodes::{HeartbeatRow, Node, NodeEvent};

const SHARDS: usize = 16;
/// CPU values kept per node for sparklines.
pub const SPARK_LEN: usize = 100;
/// Heartbeat gaps kept per node to compute the median spacing.
const GAPS_KEPT: usize = 21;
/// A reconnect needs this many known gaps before a median is trusted.
const GAPS_FOR_MEDIAN: usize = 3;
pub const CPU_HIGH: f64 = 80.0;
pub const RAM_HIGH: f64 = 90.0;

#[derive(Clone, Debug)]
pub struct NodeState {
    pub node: Node,
    pub sparks: VecDeque<f64>,
    gaps: VecDeque<i64>,
    /// The last heartbeat as received (values and time), for `/status`.
    pub last: Option<HeartbeatRow>,
    /// When the node row was last queued for the database (`last_seen_at` it carried).
    persisted_at: i64,
}

/// The node row is rewritten at least this often while heartbeats flow (and at once when its
/// inventory or self-reported status changes, and at shutdown); the heartbeat history is written
/// every time. Reads come from memory, so this only bounds what a crash could leave stale.
pub const PERSIST_EVERY_MS: i64 = 30_000;

/// What one heartbeat changed: the rows for the batch writer and the events it raised.
pub struct Applied {
    /// The node row to write, when it is due (see [`PERSIST_EVERY_MS`]).
    pub upsert: Option<Node>,
    pub row: HeartbeatRow,
    pub events: Vec<NodeEvent>,
    pub status: &'static str,
    /// The node's inventory is unknown (no hostname, OS or agent version was ever sent).
    pub inventory_wanted: bool,
}

pub struct Fleet {
    shards: Vec<RwLock<HashMap<String, NodeState>>>,
    hasher: RandomState,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// `OFFLINE` past the offline threshold, else `DEGRADED` when the agent said so, else `ONLINE`.
pub fn status(node: &Node, now: i64, offline_after_ms: i64) -> &'static str {
    if now - node.last_seen_at > offline_after_ms {
        "OFFLINE"
    } else if node
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("degraded"))
    {
        "DEGRADED"
    } else {
        "ONLINE"
    }
}

fn median(gaps: &VecDeque<i64>) -> Option<i64> {
    if gaps.len() < GAPS_FOR_MEDIAN {
        return None;
    }
    let mut sorted: Vec<i64> = gaps.iter().copied().collect();
    sorted.sort_unstable();
    Some(sorted[sorted.len() / 2])
}

fn event(
    node_id: &str,
    at: i64,
    kind: &str,
    severity: &str,
    message: String,
    metadata: serde_json::Value,
) -> NodeEvent {
    NodeEvent {
        id: hyprbox_store::new_id(),
        node_id: node_id.to_string(),
        at,
        kind: kind.into(),
        severity: severity.into(),
        message,
        metadata: metadata.to_string(),
    }
}

impl Fleet {
    fn shard(&self, node_id: &str) -> &RwLock<HashMap<String, NodeState>> {
        let index = usize::try_from(self.hasher.hash_one(node_id) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// Loads stored nodes and their recent heartbeats (oldest first per node): the spark rings, the
    /// spacing used to detect reconnects, and the last heartbeat, whose time and values win over a
    /// node row that was written up to [`PERSIST_EVERY_MS`] earlier.
    pub fn load(&self, nodes: Vec<Node>, recent: Vec<HeartbeatRow>) {
        for node in nodes {
            let id = node.node_id.clone();
            let state = NodeState {
                persisted_at: node.last_seen_at,
                node,
                sparks: VecDeque::with_capacity(SPARK_LEN),
                gaps: VecDeque::new(),
                last: None,
            };
            self.shard(&id)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, state);
        }
        for row in recent {
            let mut shard = self
                .shard(&row.node_id)
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let Some(state) = shard.get_mut(&row.node_id) else {
                continue;
            };
            if let Some(cpu) = row.cpu_percent {
                if state.sparks.len() == SPARK_LEN {
                    state.sparks.pop_front();
                }
                state.sparks.push_back(cpu);
            }
            if let Some(previous) = &state.last {
                if state.gaps.len() == GAPS_KEPT {
                    state.gaps.pop_front();
                }
                state.gaps.push_back(row.at - previous.at);
            }
            if row.at >= state.node.last_seen_at {
                state.node.last_seen_at = row.at;
                state.node.cpu_percent = row.cpu_percent.or(state.node.cpu_percent);
                state.node.ram_percent = row.ram_percent.or(state.node.ram_percent);
                state.node.disk_percent = row.disk_percent.or(state.node.disk_percent);
                state.node.status = row.status.clone().or(state.node.status.take());
            }
            state.last = Some(row);
        }
    }

    /// Applies a validated heartbeat received at `now`: registers the node on first contact,
    /// updates its state, and detects threshold crossings and reconnects.
    pub fn apply(&self, hb: &Heartbeat, now: i64, offline_after_ms: i64) -> Applied {
        let mut shard = self.shard(&hb.node_id).write().unwrap_or_else(|e| e.into_inner());
        // Two heartbeats of one node in the same millisecond would have no order in the history;
        // the later one is stamped a millisecond after the earlier.
        let now = shard
            .get(&hb.node_id)
            .map_or(now, |s| now.max(s.node.last_seen_at + 1));
        let to_i64 = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        let upsert = Node {
            node_id: hb.node_id.clone(),
            hostname: hb.hostname.clone(),
            os: hb.os.clone(),
            status: hb.status.as_ref().map(|s| s.to_ascii_lowercase()),
            agent_version: hb.agent_version.clone(),
            ip: hb.ip.clone(),
            region: hb.region.clone(),
            kernel: hb.kernel.clone(),
            architecture: hb.architecture.clone(),
            cpu_percent: hb.cpu_percent,
            ram_percent: hb.ram_percent,
            disk_percent: hb.disk_percent,
            uptime_seconds: to_i64(hb.uptime_seconds),
            load_avg: hb.load_avg.map(|l| serde_json::json!(l).to_string()),
            mem_total_bytes: to_i64(hb.mem_total_bytes),
            disk_total_bytes: to_i64(hb.disk_total_bytes),
            config: "{}".into(),
            created_at: now,
            last_seen_at: now,
        };
        let row = HeartbeatRow {
            node_id: hb.node_id.clone(),
            at: now,
            cpu_percent: hb.cpu_percent,
            ram_percent: hb.ram_percent,
            disk_percent: hb.disk_percent,
            status: upsert.status.clone(),
        };
        let mut events = Vec::new();
        let is_new = !shard.contains_key(&hb.node_id);
        let state = shard.entry(hb.node_id.clone()).or_insert_with(|| NodeState {
            node: Node {
                last_seen_at: now,
                ..upsert.clone()
            },
            sparks: VecDeque::with_capacity(SPARK_LEN),
            gaps: VecDeque::new(),
            last: None,
            persisted_at: i64::MIN,
        });
        let changed = inventory_changed(&state.node, &upsert);
        let id = &hb.node_id;
        let previous = &state.node;
        if let (Some(before), Some(after)) = (previous.cpu_percent, hb.cpu_percent)
            && before < CPU_HIGH
            && after >= CPU_HIGH
        {
            let message = format!("CPU at {after:.0}% (threshold {CPU_HIGH:.0}%)");
            events.push(event(
                id,
                now,
                "cpu.high",
                "WARN",
                message,
                serde_json::json!({"cpuPercent": after}),
            ));
        }
        if let (Some(before), Some(after)) = (previous.ram_percent, hb.ram_percent)
            && before < RAM_HIGH
            && after >= RAM_HIGH
        {
            let message = format!("RAM at {after:.0}% (threshold {RAM_HIGH:.0}%)");
            events.push(event(
                id,
                now,
                "ram.high",
                "WARN",
                message,
                serde_json::json!({"ramPercent": after}),
            ));
        }
        if state.last.is_some() {
            let gap = now - previous.last_seen_at;
            if let Some(median) = median(&state.gaps)
                && median > 0
                && gap > 5 * median
            {
                let message = format!("reconnected after {}s without heartbeats", gap / 1000);
                events.push(event(
                    id,
                    now,
                    "reconnect",
                    "INFO",
                    message,
                    serde_json::json!({"gapMs": gap}),
                ));
            }
            if state.gaps.len() == GAPS_KEPT {
                state.gaps.pop_front();
            }
            state.gaps.push_back(gap);
        }
        merge(&mut state.node, &upsert);
        if let Some(cpu) = hb.cpu_percent {
            if state.sparks.len() == SPARK_LEN {
                state.sparks.pop_front();
            }
            state.sparks.push_back(cpu);
        }
        state.last = Some(row.clone());
        let due = is_new || changed || now - state.persisted_at >= PERSIST_EVERY_MS;
        let upsert = due.then(|| {
            state.persisted_at = now;
            state.node.clone()
        });
        let status = status(&state.node, now, offline_after_ms);
        let known = &state.node;
        let inventory_wanted =
            known.hostname.is_none() && known.os.is_none() && known.agent_version.is_none();
        Applied {
            upsert,
            row,
            events,
            status,
            inventory_wanted,
        }
    }

    /// `view` of every node, sorted by node id (no node state is copied, only what `view` makes).
    pub fn map_sorted<T>(&self, view: impl Fn(&NodeState) -> T) -> Vec<(String, T)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().map(|(id, state)| (id.clone(), view(state))));
        }
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// `view` of the nodes it keeps (`Some`), in no particular order.
    pub fn filter_map<T>(&self, view: impl Fn(&NodeState) -> Option<T>) -> Vec<T> {
        let mut kept = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            kept.extend(shard.values().filter_map(&view));
        }
        kept
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for shard in &self.shards {
            ids.extend(shard.read().unwrap_or_else(|e| e.into_inner()).keys().cloned());
        }
        ids
    }

    /// Every node's last `limit` CPU values, oldest first.
    pub fn sparks(&self, limit: usize) -> Vec<(String, Vec<f64>)> {
        self.map_sorted(|state| {
            let skip = state.sparks.len().saturating_sub(limit);
            state.sparks.iter().skip(skip).copied().collect()
        })
    }

    /// Whether the node is known (without copying its state).
    pub fn contains(&self, node_id: &str) -> bool {
        self.shard(node_id)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(node_id)
    }

    pub fn get(&self, node_id: &str) -> Option<NodeState> {
        self.shard(node_id)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .cloned()
    }

    /// The rows of every node changed since it was last queued for the database, marking them
    /// queued (called at shutdown so the stored rows match the last heartbeats).
    pub fn unpersisted(&self) -> Vec<Node> {
        let mut rows = Vec::new();
        for shard in &self.shards {
            for state in shard.write().unwrap_or_else(|e| e.into_inner()).values_mut() {
                if state.node.last_seen_at > state.persisted_at {
                    state.persisted_at = state.node.last_seen_at;
                    rows.push(state.node.clone());
                }
            }
        }
        rows
    }

    pub fn set_config(&self, node_id: &str, config: String) {
        if let Some(state) = self
            .shard(node_id)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(node_id)
        {
            state.node.config = config;
        }
    }

    pub fn remove(&self, node_id: &str) -> bool {
        self.shard(node_id)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id)
            .is_some()
    }
}

/// Whether `update` sends an inventory value or a self-reported status that differs from `node`.
fn inventory_changed(node: &Node, update: &Node) -> bool {
    fn differs<T: PartialEq>(old: &Option<T>, new: &Option<T>) -> bool {
        new.is_some() && new != old
    }
    differs(&node.hostname, &update.hostname)
        || differs(&node.os, &update.os)
        || differs(&node.status, &update.status)
        || differs(&node.agent_version, &update.agent_version)
        || differs(&node.ip, &update.ip)
        || differs(&node.region, &update.region)
        || differs(&node.kernel, &update.kernel)
        || differs(&node.architecture, &update.architecture)
        || differs(&node.mem_total_bytes, &update.mem_total_bytes)
        || differs(&node.disk_total_bytes, &update.disk_total_bytes)
}

/// Writes into `node` what `update` carries (metrics always, inventory where sent). Also merges
/// two pending rows of one node inside a batch, since one statement may not touch a row twice.
pub fn merge(node: &mut Node, update: &Node) {
    fn keep<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
        if value.is_some() {
            slot.clone_from(value);
        }
    }
    keep(&mut node.hostname, &update.hostname);
    keep(&mut node.os, &update.os);
    keep(&mut node.status, &update.status);
    keep(&mut node.agent_version, &update.agent_version);
    keep(&mut node.ip, &update.ip);
    keep(&mut node.region, &update.region);
    keep(&mut node.kernel, &update.kernel);
    keep(&mut node.architecture, &update.architecture);
    keep(&mut node.cpu_percent, &update.cpu_percent);
    keep(&mut node.ram_percent, &update.ram_percent);
    keep(&mut node.disk_percent, &update.disk_percent);
    keep(&mut node.uptime_seconds, &update.uptime_seconds);
    keep(&mut node.load_avg, &update.load_avg);
    keep(&mut node.mem_total_bytes, &update.mem_total_bytes);
    keep(&mut node.disk_total_bytes, &update.disk_total_bytes);
    node.last_seen_at = update.last_seen_at;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(cpu: f64, ram: f64) -> Heartbeat {
        Heartbeat {
            node_id: "n1".into(),
            cpu_percent: Some(cpu),
            ram_percent: Some(ram),
            ..Default::default()
        }
    }

    const OFFLINE: i64 = 600_000;

    #[test]
    fn status_is_offline_exactly_past_the_threshold_and_degraded_when_reported() {
        let node = Node {
            last_seen_at: 1_000,
            ..Default::default()
        };
        assert_eq!(status(&node, 1_000 + OFFLINE, OFFLINE), "ONLINE");
        assert_eq!(status(&node, 1_001 + OFFLINE, OFFLINE), "OFFLINE");
        let degraded = Node {
            status: Some("degraded".into()),
            ..node
        };
        assert_eq!(status(&degraded, 1_000, OFFLINE), "DEGRADED");
        assert_eq!(status(&degraded, 2_000 + OFFLINE, OFFLINE), "OFFLINE");
    }

    #[test]
    fn a_threshold_crossing_raises_one_event_at_the_crossing_only() {
        let fleet = Fleet::default();
        let kinds = |a: &Applied| a.events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
        assert!(
            fleet.apply(&hb(85.0, 95.0), 0, OFFLINE).events.is_empty(),
            "no previous value"
        );
        assert!(fleet.apply(&hb(50.0, 50.0), 1_000, OFFLINE).events.is_empty());
        assert_eq!(
            kinds(&fleet.apply(&hb(80.0, 90.0), 2_000, OFFLINE)),
            ["cpu.high", "ram.high"]
        );
        assert!(
            fleet.apply(&hb(99.0, 99.0), 3_000, OFFLINE).events.is_empty(),
            "still high"
        );
        assert!(fleet.apply(&hb(79.9, 89.9), 4_000, OFFLINE).events.is_empty());
        assert_eq!(kinds(&fleet.apply(&hb(81.0, 10.0), 5_000, OFFLINE)), ["cpu.high"]);
    }

    #[test]
    fn a_gap_longer_than_five_median_spacings_is_a_reconnect() {
        let fleet = Fleet::default();
        for t in 0..5 {
            assert!(fleet.apply(&hb(1.0, 1.0), t * 1_000, OFFLINE).events.is_empty());
        }
        assert!(
            fleet
                .apply(&hb(1.0, 1.0), 4_000 + 5_000, OFFLINE)
                .events
                .is_empty(),
            "exactly 5x"
        );
        let applied = fleet.apply(&hb(1.0, 1.0), 9_000 + 5_001, OFFLINE);
        assert_eq!(applied.events.len(), 1);
        assert_eq!(applied.events[0].kind, "reconnect");
    }

    #[test]
    fn sparks_keep_the_last_hundred_values_oldest_first() {
        let fleet = Fleet::default();
        for i in 0..150 {
            fleet.apply(&hb(f64::from(i % 100), 1.0), i64::from(i) * 1000, OFFLINE);
        }
        let sparks = fleet.sparks(24);
        assert_eq!(sparks[0].1.len(), 24);
        assert_eq!(sparks[0].1.last(), Some(&49.0));
        assert_eq!(fleet.get("n1").unwrap().sparks.len(), SPARK_LEN);
    }

    #[test]
    fn the_node_row_is_written_when_new_changed_or_due_and_at_shutdown() {
        let fleet = Fleet::default();
        assert!(fleet.apply(&hb(1.0, 1.0), 0, OFFLINE).upsert.is_some(), "new");
        assert!(
            fleet.apply(&hb(2.0, 1.0), 1_000, OFFLINE).upsert.is_none(),
            "metrics only"
        );
        let renamed = Heartbeat {
            hostname: Some("web-2".into()),
            ..hb(1.0, 1.0)
        };
        assert!(
            fleet.apply(&renamed, 2_000, OFFLINE).upsert.is_some(),
            "inventory changed"
        );
        assert!(
            fleet.apply(&renamed, 3_000, OFFLINE).upsert.is_none(),
            "same inventory again"
        );
        let due = fleet
            .apply(&hb(3.0, 1.0), 2_000 + PERSIST_EVERY_MS, OFFLINE)
            .upsert
            .unwrap();
        assert_eq!(due.cpu_percent, Some(3.0));
        assert_eq!(
            due.hostname.as_deref(),
            Some("web-2"),
            "the full row, not just what was sent"
        );
        assert!(fleet.unpersisted().is_empty());
        fleet.apply(&hb(4.0, 1.0), 3_000 + PERSIST_EVERY_MS, OFFLINE);
        let left = fleet.unpersisted();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].cpu_percent, Some(4.0));
        assert!(fleet.unpersisted().is_empty());
    }

    #[test]
    fn inventory_is_kept_unless_sent() {
        let fleet = Fleet::default();
        let first = Heartbeat {
            hostname: Some("web-1".into()),
            ..hb(1.0, 1.0)
        };
        fleet.apply(&first, 0, OFFLINE);
        fleet.apply(&hb(2.0, 2.0), 1_000, OFFLINE);
        let state = fleet.get("n1").unwrap();
        assert_eq!(state.node.hostname.as_deref(), Some("web-1"));
        assert_eq!(state.node.cpu_percent, Some(2.0));
        assert_eq!((state.node.created_at, state.node.last_seen_at), (0, 1_000));
    }
}
