//! Nodes: the agent's heartbeat and its answer, the fleet's list, a node's configuration.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Names that are routes under `/api/nodes/`, so a node with one could not be addressed there.
pub const RESERVED_NODE_IDS: [&str; 4] = ["heartbeat", "inventory", "me", "sparks"];

/// A `nodeId` is chosen by the agent: 1–64 characters of `[A-Za-z0-9._-]`, not a reserved name.
pub fn validate_node_id(field: &str, node_id: &str) -> Result<(), String> {
    if node_id.is_empty() || node_id.len() > 64 {
        return Err(format!("{field} must be 1 to 64 characters"));
    }
    if RESERVED_NODE_IDS.contains(&node_id) {
        return Err(format!("{field} {node_id:?} is reserved (it names an API route)"));
    }
    if !node_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "{field} may only contain letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// `POST /api/nodes/heartbeat`: the agent's report, snake_case as in the reference. Inventory fields
/// (hostname … architecture, totals) overwrite the stored value only when sent.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Heartbeat {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_percent: Option<f64>,
    /// What the agent says of itself: `ok` or `degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_avg: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
}

/// Longest accepted inventory string (hostname, OS, kernel, …).
pub const MAX_TEXT: usize = 255;

impl Heartbeat {
    /// Checks every field; the message names the first one that breaks a rule.
    pub fn validate(&self) -> Result<(), String> {
        validate_node_id("node_id", &self.node_id)?;
        for (field, value) in [
            ("cpu_percent", self.cpu_percent),
            ("ram_percent", self.ram_percent),
            ("disk_percent", self.disk_percent),
        ] {
            if value.is_some_and(|v| !v.is_finite() || !(0.0..=100.0).contains(&v)) {
                return Err(format!("{field} must be between 0 and 100"));
            }
        }
        for (field, value) in [
            ("hostname", &self.hostname),
            ("os", &self.os),
            ("status", &self.status),
            ("agent_version", &self.agent_version),
            ("ip", &self.ip),
            ("region", &self.region),
            ("kernel", &self.kernel),
            ("architecture", &self.architecture),
        ] {
            if let Some(v) = value {
                if v.chars().count() > MAX_TEXT {
                    return Err(format!("{field} must be at most {MAX_TEXT} characters"));
                }
                if v.chars().any(char::is_control) {
                    return Err(format!("{field} must not contain control characters"));
                }
            }
        }
        let known_status =
            |s: &String| matches!(s.to_ascii_lowercase().as_str(), "ok" | "online" | "degraded");
        if self.status.as_ref().is_some_and(|s| !known_status(s)) {
            return Err("status must be ok, online or degraded".into());
        }
        if self
            .load_avg
            .is_some_and(|load| load.iter().any(|v| !v.is_finite() || *v < 0.0))
        {
            return Err("load_avg must be three non-negative numbers".into());
        }
        for (field, value) in [
            ("uptime_seconds", self.uptime_seconds),
            ("mem_total_bytes", self.mem_total_bytes),
            ("disk_total_bytes", self.disk_total_bytes),
        ] {
            if value.is_some_and(|v| v > i64::MAX as u64) {
                return Err(format!("{field} is too large"));
            }
        }
        Ok(())
    }

    /// Whether the agent reported itself degraded.
    pub fn degraded(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("degraded"))
    }
}

/// `202` answer to a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAck {
    pub received: bool,
    pub node_id: String,
}

/// A node of `GET /api/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBody {
    pub node_id: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    /// `ONLINE`, `DEGRADED` or `OFFLINE`, computed when asked.
    pub status: String,
    pub last_seen_at: String,
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub agent_version: Option<String>,
    pub ip: Option<String>,
    pub region: Option<String>,
    pub kernel: Option<String>,
    pub architecture: Option<String>,
    pub created_at: String,
}

/// `GET /api/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NodesBody {
    pub nodes: Vec<NodeBody>,
}

/// A node's configuration: the keys the agent acts on, typed, and any other key kept as given.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NodeConfig {
    /// Seconds between heartbeats (10–86,400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 86400)]
    pub heartbeat_interval: Option<u64>,
    /// Seconds between scans (10–86,400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 86400)]
    pub scan_interval: Option<u64>,
    /// Absolute paths of PEM certificates (or directories of them) the TLS scanner reads; at most
    /// 256, each at most 4,096 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 256, inline, value_type = Option<Vec<TlsPath>>)]
    pub tls_paths: Option<Vec<String>>,
    /// Keys this version does not act on, kept as given.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: Map<String, Value>,
}

/// An absolute path, as the TLS scanner reads it.
#[derive(ToSchema)]
#[schema(pattern = "^/[^\\u0000]{0,1023}$")]
pub struct TlsPath(#[allow(dead_code)] String);

/// `GET /api/nodes/me/config` and `PATCH /api/nodes/{nodeId}/config`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NodeConfigBody {
    pub config: NodeConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_the_alphabet_and_length_rule() {
        for ok in ["a", "prod-eu-1", "web_01.example", &"x".repeat(64)] {
            assert!(validate_node_id("nodeId", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "slash/",
            "ünï",
            "semi;colon",
            "me",
            "sparks",
            &"x".repeat(65),
        ] {
            assert!(
                validate_node_id("nodeId", bad).unwrap_err().starts_with("nodeId"),
                "{bad}"
            );
        }
    }

    #[test]
    fn percentages_outside_0_to_100_are_named() {
        let mut hb = Heartbeat {
            node_id: "n".into(),
            ..Default::default()
        };
        assert!(hb.validate().is_ok());
        hb.ram_percent = Some(100.5);
        assert_eq!(
            hb.validate().unwrap_err(),
            "ram_percent must be between 0 and 100"
        );
        hb.ram_percent = Some(-0.1);
        assert!(hb.validate().is_err());
        hb.ram_percent = Some(f64::NAN);
        assert!(hb.validate().is_err());
        hb.ram_percent = Some(100.0);
        assert!(hb.validate().is_ok());
    }

    #[test]
    fn status_text_and_load_are_checked() {
        let base = Heartbeat {
            node_id: "n".into(),
            ..Default::default()
        };
        let bad = [
            Heartbeat {
                status: Some("exploded".into()),
                ..base.clone()
            },
            Heartbeat {
                hostname: Some("x".repeat(256)),
                ..base.clone()
            },
            Heartbeat {
                kernel: Some("a\nb".into()),
                ..base.clone()
            },
            Heartbeat {
                load_avg: Some([0.1, -1.0, 0.0]),
                ..base.clone()
            },
        ];
        for hb in bad {
            assert!(hb.validate().is_err(), "{hb:?}");
        }
        assert!(
            Heartbeat {
                status: Some("DEGRADED".into()),
                ..base
            }
            .degraded()
        );
    }
}

/// `POST /api/nodes/inventory`: what the agent found running on its node (Docker containers), the
/// whole list each time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    #[schema(pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")]
    pub node_id: String,
    #[schema(max_items = 1000)]
    pub containers: Vec<Container>,
}

/// One container, as the Docker Engine API lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Container {
    #[schema(min_length = 1, max_length = 128)]
    pub id: String,
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    #[schema(min_length = 1, max_length = 512)]
    pub image: String,
    /// `running`, `exited`, `paused`…
    #[schema(min_length = 1, max_length = 64)]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// `202` answer to an inventory report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryAccepted {
    pub received: bool,
    /// Containers stored.
    pub containers: usize,
}

/// Whether a container image runs PostgreSQL: the official image and the common distributions of
/// it (PostGIS, TimescaleDB, Bitnami, pgvector, Supabase, Crunchy, CloudNativePG), from any
/// registry, at any tag or digest.
pub fn is_postgres_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag follows the last ':' only after the last '/' (a registry may have a port).
    let repo = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    let mut parts: Vec<&str> = repo.split('/').collect();
    // A first component with a dot or a port, or "localhost", is a registry host.
    if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        parts.remove(0);
    }
    let path = parts.join("/").to_ascii_lowercase();
    let last = parts.last().map(|p| p.to_ascii_lowercase()).unwrap_or_default();
    matches!(
        path.as_str(),
        "postgres"
            | "library/postgres"
            | "postgis/postgis"
            | "bitnami/postgresql"
            | "bitnami/postgresql-repmgr"
            | "supabase/postgres"
            | "pgvector/pgvector"
            | "cloudnative-pg/postgresql"
    ) || path.starts_with("timescale/timescaledb")
        || path.starts_with("crunchydata/crunchy-postgres")
        || matches!(last.as_str(), "postgres" | "postgresql" | "postgis")
}

#[cfg(test)]
mod inventory_tests {
    use super::is_postgres_image;

    #[test]
    fn postgres_images_are_recognised_from_any_registry_and_tag() {
        for image in [
            "postgres",
            "postgres:16",
            "postgres:16-alpine",
            "docker.io/library/postgres:15",
            "postgis/postgis:16-3.4",
            "timescale/timescaledb:latest-pg16",
            "timescale/timescaledb-ha:pg16",
            "bitnami/postgresql:16",
            "registry.example.com:5000/team/postgres:14",
            "ghcr.io/cloudnative-pg/postgresql:16.2",
            "postgres@sha256:0123abcd",
        ] {
            assert!(is_postgres_image(image), "{image}");
        }
        for image in [
            "redis:7",
            "nginx",
            "mysql:8",
            "bitnami/redis",
            "postgres-exporter:1",
            "prom/postgres-exporter",
        ] {
            assert!(!is_postgres_image(image), "{image}");
        }
    }
}
