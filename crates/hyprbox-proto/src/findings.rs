//! Findings: problems the agents' scanners report, their fixes, each node's health bucket.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The finding object of the contract.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingBody {
    pub id: String,
    pub node_id: String,
    /// The finding type, e.g. `disk.full`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the finding is about on the node (a mount point, a certificate path…).
    pub key: String,
    /// `INFO`, `WARN` or `CRITICAL`.
    pub severity: String,
    /// `OPEN`, `SNOOZED` or `RESOLVED`.
    pub status: String,
    pub title: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub related_entities: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub detected_at: String,
    pub last_seen_at: String,
    pub snoozed_until: Option<String>,
    pub resolved_at: Option<String>,
    pub resolved_by_user_id: Option<String>,
}

/// One finding: snooze, resolve.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FindingEnvelope {
    pub finding: FindingBody,
}

/// `GET /api/findings`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FindingsBody {
    pub findings: Vec<FindingBody>,
}

/// The preset that fixes a finding, ready to dispatch as a job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub preset_name: String,
    /// `low`, `medium` or `high`.
    pub risk: String,
    pub description: String,
    /// Every variable of the preset: the finding's metadata value of the same name, else the
    /// preset's default (`null` when it has none).
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
}

/// `GET /api/findings/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FindingDetail {
    pub finding: FindingBody,
    /// `null` when no preset fixes this finding type.
    pub recommendation: Option<Recommendation>,
}

/// A finding as an agent reports it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportedFinding {
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub severity: String,
    pub title: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub related_entities: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

/// `POST /api/findings` (node token).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportBody {
    pub node_id: String,
    pub findings: Vec<ReportedFinding>,
    /// Finding types this report fully covers: their OPEN findings it does not list resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub complete: Vec<String>,
}

/// `202` answer of a report.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportAccepted {
    pub received: bool,
    /// Distinct `(type, key)` pairs written.
    pub upserted: usize,
}

/// `POST /api/findings/{id}/snooze`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct SnoozeBody {
    /// 1–720; 24 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 720)]
    pub hours: Option<i64>,
}

/// Active findings of a node by severity.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SeverityCounts {
    pub critical: i64,
    pub warn: i64,
    pub info: i64,
}

/// A node's health bucket.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    pub node_id: String,
    /// `AT_RISK` (an active CRITICAL), `ATTENTION` (an active WARN) or `HEALTHY`.
    pub bucket: String,
    pub counts: SeverityCounts,
}

/// `GET /api/findings/health/summary`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SummaryBody {
    pub summary: Vec<NodeHealth>,
}
