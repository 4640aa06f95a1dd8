//! The agent's WebSocket (`GET /api/agent/ws`): what the server pushes to a connected agent.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A text frame from the server, `{"type": …}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AgentMessage {
    /// A job was queued for this node: claim it now instead of at the next poll.
    Wakeup,
    /// Stop the RUNNING job `jobId` (its completion then ends it CANCELLED).
    Cancel {
        #[serde(rename = "jobId")]
        job_id: String,
    },
    /// The node's agent config changed (an operator's PATCH): act on it now, not at the next pull.
    Config { config: crate::nodes::NodeConfig },
    /// A message a newer server sends that this version does not know: ignored.
    #[serde(other)]
    Unknown,
}

impl AgentMessage {
    /// The frame's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type_and_unknown_ones_are_tolerated() {
        assert_eq!(AgentMessage::Wakeup.to_json(), r#"{"type":"wakeup"}"#);
        assert_eq!(
            AgentMessage::Cancel { job_id: "j1".into() }.to_json(),
            r#"{"type":"cancel","jobId":"j1"}"#
        );
        let later: AgentMessage = serde_json::from_str(r#"{"type":"reboot","at":1}"#).unwrap();
        assert_eq!(later, AgentMessage::Unknown);
    }
}
