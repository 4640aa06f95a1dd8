//! The mock server's answers, built from the protocol's own types so a renamed field fails here.

use hyprbox_proto::jobs::{JobBody, JobEnvelope};

/// The server's answer to the completion of job `id` on `node_id`.
pub fn completed(id: &str, node_id: &str) -> JobEnvelope {
    JobEnvelope {
        job: JobBody {
            id: id.into(),
            node_id: node_id.into(),
            preset_name: "test".into(),
            preset_version: "1".into(),
            variables: serde_json::json!({}),
            status: "SUCCEEDED".into(),
            exit_code: Some(0),
            created_by: "user".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
            cancel_requested_at: None,
            error: None,
            timeout_seconds: 3600,
        },
    }
}
