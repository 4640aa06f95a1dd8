//! The one error body every failed request answers with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": "<tag>", "message": "<sentence>"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorBody {
    /// A short machine-readable tag, e.g. `bad_request`.
    pub error: String,
    /// A sentence safe to show in a UI.
    pub message: String,
}
