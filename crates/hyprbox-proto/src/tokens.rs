//! Node tokens (`/api/tokens`): the credentials agents authenticate with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTokenRequest {
    /// 1–100 characters (after trimming), no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Pin the token to this node; omit for a fleet-wide token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")]
    pub node_id: Option<String>,
}

/// What a new token's answer says of it besides the secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenMeta {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub node_id: Option<String>,
    pub created_at: String,
}

/// `201` answer of `POST /api/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The plaintext `hbnt_…` token: shown this once, never again.
    pub token: String,
    pub meta: TokenMeta,
}

/// A token as listed: never its secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBody {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub node_id: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// `GET /api/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokensBody {
    pub tokens: Vec<TokenBody>,
}
