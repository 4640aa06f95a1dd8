//! Jobs: an operator queues a preset on a node and follows it; the node's agent claims it, sends
//! its output in pieces and completes it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `QUEUED`: waiting for its node's agent.
pub const QUEUED: &str = "QUEUED";
/// `RUNNING`: claimed by an agent.
pub const RUNNING: &str = "RUNNING";
/// `SUCCEEDED`: exit code 0.
pub const SUCCEEDED: &str = "SUCCEEDED";
/// `FAILED`: another exit code, a timeout, or its node gone.
pub const FAILED: &str = "FAILED";
/// `CANCELLED`: cancelled while queued, or stopped by its agent after a cancel.
pub const CANCELLED: &str = "CANCELLED";

/// `POST /api/jobs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateJob {
    #[schema(pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")]
    pub node_id: String,
    pub preset_name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
}

/// The job object of the contract.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobBody {
    pub id: String,
    pub node_id: String,
    pub preset_name: String,
    pub preset_version: String,
    /// The resolved variables the script was rendered with.
    #[schema(value_type = Object)]
    pub variables: Value,
    /// `QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: String,
    pub exit_code: Option<i64>,
    /// The creator's user id.
    pub created_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub cancel_requested_at: Option<String>,
    pub error: Option<String>,
    pub timeout_seconds: i64,
}

/// One job: create, cancel, complete.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobEnvelope {
    pub job: JobBody,
}

/// `GET /api/jobs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobsBody {
    pub jobs: Vec<JobBody>,
}

/// A job with its script and the last 4 MiB of each stream.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobBody,
    pub script: String,
    pub stdout: String,
    pub stderr: String,
    /// The `stdout` above is not the whole output: only its tail is shown, or output was dropped
    /// past `HYPRBOX_JOB_OUTPUT_MAX_BYTES` (the raw download then holds everything kept).
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Bytes of output stored for each stream.
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    /// Output was dropped because the job reached the output cap.
    pub output_limit_reached: bool,
}

/// `GET /api/jobs/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDetailEnvelope {
    pub job: JobDetail,
}

/// What an agent needs to run a job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedJob {
    pub id: String,
    pub preset_name: String,
    pub script: String,
    #[schema(value_type = Object)]
    pub variables: Value,
    /// Seconds the job may run before the server ends it FAILED.
    pub timeout_seconds: i64,
}

/// `GET /api/jobs/pending`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PendingBody {
    /// The claimed job, or `null` when the node has none queued.
    pub job: Option<ClaimedJob>,
}

/// `POST /api/jobs/{id}/output`: a piece of each stream, either may be absent.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct OutputPiece {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// `POST /api/jobs/{id}/complete`: the exit code and the last piece of output.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteJob {
    pub exit_code: i64,
    #[serde(flatten)]
    pub output: OutputPiece,
}

/// The events of a job's stream (`GET /api/jobs/{id}/stream`). Output events are named after
/// their stream and carry the text as data and the chunk's sequence number as `id`.
pub mod events {
    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;

    /// Event name of a piece of standard output.
    pub const STDOUT: &str = "stdout";
    /// Event name of a piece of standard error.
    pub const STDERR: &str = "stderr";
    /// Event name of a status flip; data [`StatusEvent`].
    pub const STATUS: &str = "status";
    /// Event name of the last event; data [`DoneEvent`].
    pub const DONE: &str = "done";

    /// `status`: the job's status now.
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
    pub struct StatusEvent {
        pub status: String,
    }

    /// `done`: how the job ended.
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DoneEvent {
        pub status: String,
        pub exit_code: Option<i64>,
        pub error: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_carries_its_last_output_beside_the_exit_code() {
        let complete = CompleteJob {
            exit_code: 3,
            output: OutputPiece {
                stdout: Some("bye\n".into()),
                stderr: None,
            },
        };
        let text = serde_json::to_string(&complete).unwrap();
        assert_eq!(text, r#"{"exitCode":3,"stdout":"bye\n"}"#);
        assert_eq!(serde_json::from_str::<CompleteJob>(&text).unwrap(), complete);
    }
}
