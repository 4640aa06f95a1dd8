//! Password hashing with Argon2id (the crate's defaults), off the async runtime.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::ApiError;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// Checks the length rule; the message names the field.
pub fn validate(field: &str, password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} must be at least {MIN_LEN} characters"
        )));
    }
    if len > MAX_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_LEN} characters"
        )));
    }
    Ok(())
}

fn hash_blocking(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("argon2 hash: {e}")))
}

/// Hashes on the blocking pool: Argon2id takes tens of milliseconds on purpose.
pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
}

/// Verifies on the blocking pool. An unparsable stored hash simply does not match.
pub async fn verify(password: String, stored: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

/// A real Argon2id hash of a random password, verified against when an email is unknown so that
/// "no such user" costs the same time as "wrong password".
pub fn dummy_hash() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    hash_blocking(&hex::encode(bytes)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let stored = hash("correct horse".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), stored.clone()).await.unwrap());
        assert!(!verify("wrong horse".into(), stored).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
    }

    #[test]
    fn lengths_outside_8_to_128_are_refused_by_name() {
        assert!(
            validate("password", "1234567")
                .unwrap_err()
                .to_string()
                .contains("password must be at least 8")
        );
        assert!(
            validate("newPassword", &"x".repeat(129))
                .unwrap_err()
                .to_string()
                .contains("newPassword")
        );
        assert!(validate("password", "12345678").is_ok());
    }
}
