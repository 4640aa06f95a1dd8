//! Password hashing with Argon2id (the crate's defaults), off the async runtime and bounded.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

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

type Job = Box<dyn FnOnce() + Send>;

/// Argon2id hashing and verification on a few dedicated threads, one per CPU.
///
/// Each Argon2id run allocates ~19 MiB and takes tens of milliseconds on purpose. On tokio's
/// blocking pool a burst of sign-ins ran on dozens of threads at once, and the allocator kept a
/// 19 MiB block per thread afterwards (300 MiB after a login benchmark); a fixed set of threads
/// bounds both the concurrency and what stays resident.
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
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
    /// Starts the worker threads and computes the dummy hash (one Argon2id run, on this thread).
    pub fn new() -> Passwords {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        for n in 0..workers {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job, not while running it.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking job must not shrink the pool; its caller sees a dropped answer.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password-hashing thread");
            }
        }
        let mut bytes = [0u8; 24];
        rand::fill(&mut bytes);
        Passwords {
            jobs: sender,
            dummy: hash_blocking(&hex::encode(bytes)).unwrap_or_default(),
        }
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("password workers stopped")))?;
        answered
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("password hashing failed")))
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
