//! Password hashing with Argon2id (the crate's defaults), off the async runtime and bounded.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use tokio::sync::Semaphore;

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

fn verify_blocking(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Argon2id hashing and verification on the blocking pool, at most one per CPU at a time.
///
/// Each Argon2id run takes about 19 MiB and tens of milliseconds on purpose; without the bound,
/// a burst of sign-ins would run dozens at once and hold gigabytes.
pub struct Passwords {
    permits: Semaphore,
    /// A real hash of a random password, verified against when an email is unknown so that
    /// "no such user" costs the same time as "wrong password".
    dummy: String,
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords::new()
    }
}

impl Passwords {
    /// Computes the dummy hash; call from a blocking context (it takes one Argon2id run).
    pub fn new() -> Passwords {
        let mut bytes = [0u8; 24];
        rand::fill(&mut bytes);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Passwords {
            permits: Semaphore::new(cpus),
            dummy: hash_blocking(&hex::encode(bytes)).unwrap_or_default(),
        }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::Internal(e.into()))
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `stored`; an unparsable stored hash simply does not match.
    /// With no stored hash (unknown user) the dummy is verified and the answer is `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.clone());
        let matches = self.run(move || verify_blocking(&password, &stored)).await?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let passwords = Passwords::new();
        let stored = passwords.hash("correct horse".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(stored))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("x".into(), Some("not a hash".into()))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("x".into(), None).await.unwrap());
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
