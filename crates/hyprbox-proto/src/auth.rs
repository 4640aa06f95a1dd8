//! Accounts and sessions: sign-in, the user object, the users an ADMIN manages.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The user object of the contract; `name` and `full_name` carry the same value.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub name: String,
    pub full_name: String,
    pub language: String,
    /// `ADMIN`, `OPERATOR` or `VIEWER`.
    pub role: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

/// `POST /api/auth/register`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /api/auth/login`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// A new session: answer of register, signup and login.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionBody {
    /// Present on login and signup (the Hyperion client shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The session JWT; also set as the `hb_token` cookie.
    pub token: String,
    pub user: UserBody,
}

/// `GET /api/users`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UsersBody {
    pub users: Vec<UserBody>,
}

/// One user: `POST /api/users`, `PATCH /api/users/{id}/role`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OneUserBody {
    pub user: UserBody,
}

/// `POST /api/users`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$"
    )]
    pub email: String,
    /// At most 200 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    /// `ADMIN`, `OPERATOR` or `VIEWER`.
    #[schema(pattern = "^(ADMIN|OPERATOR|VIEWER)$")]
    pub role: String,
    #[schema(min_length = 8, max_length = 128, pattern = "^[^\\u0000]*$")]
    pub password: String,
}

/// `PATCH /api/users/{id}/role`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// `ADMIN`, `OPERATOR` or `VIEWER`.
    #[schema(pattern = "^(ADMIN|OPERATOR|VIEWER)$")]
    pub role: String,
}
