//! Password hashing with Argon2id (the crate's defaults), off the async runtime and bounded.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::http::error::ApiError;

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

/// An Argon2 run over `memory`, which is grown to what `params` needs and kept for the next run.
fn compute(
    memory: &mut Vec<Block>,
    argon2: &Argon2,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        // At least 32 MiB of capacity: glibc serves an allocation that large with a mapping of its
        // own (its dynamic mmap threshold never exceeds 32 MiB), so dropping it gives the pages
        // back to the system; the capacity Argon2 does not touch never becomes resident.
        let at_least = (32 << 20) / std::mem::size_of::<Block>();
        *memory = Vec::with_capacity(blocks.max(at_least));
        memory.resize(blocks, Block::default());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

fn internal(err: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("argon2: {err}"))
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password`, with a random salt.
/// One Argon2id hash on the calling thread, for one-off commands that run no server.
pub fn hash_now(password: &str) -> Result<String, ApiError> {
    hash_with(&mut Vec::new(), password)
}

fn hash_with(memory: &mut Vec<Block>, password: &str) -> Result<String, ApiError> {
    let params = Params::DEFAULT;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(memory, &argon2, &params, password.as_bytes(), &salt, &mut out).map_err(internal)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(internal)?,
        salt: Some(Salt::new(&salt).map_err(internal)?),
        hash: Some(Output::new(&out).map_err(internal)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches a stored PHC string; anything unparsable simply does not match.
fn verify_with(memory: &mut Vec<Block>, password: &str, stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(phc.algorithm.as_str()),
        Params::try_from(&phc),
        phc.salt.as_ref(),
        phc.hash.as_ref(),
    ) else {
        return false;
    };
    let version = phc
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or_default();
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    compute(
        memory,
        &argon2,
        &params,
        password.as_bytes(),
        salt.as_ref(),
        &mut out,
    )
    .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// A worker drops its Argon2 memory after this long without a job, so an idle server is small.
const IDLE_RELEASE: Duration = Duration::from_secs(5);

/// Argon2id hashing and verification on a few dedicated threads, one per CPU, each reusing one
/// memory area.
///
/// Each Argon2id run needs ~19 MiB and takes tens of milliseconds on purpose. On tokio's blocking
/// pool a burst of sign-ins ran on dozens of threads at once and the allocator kept hundreds of MiB
/// afterwards; a fixed set of threads with reused memory bounds both the concurrency and the
/// resident size, and the memory is released when the workers go idle.
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
                .spawn(move || worker(&receiver));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password-hashing thread");
            }
        }
        let mut bytes = [0u8; 24];
        rand::fill(&mut bytes);
        let dummy = hash_with(&mut Vec::new(), &hex::encode(bytes)).unwrap_or_default();
        Passwords { jobs: sender, dummy }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = answer.send(work(memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("password workers stopped")))?;
        answered
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("password hashing failed")))
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |memory| hash_with(memory, &password)).await?
    }

    /// Whether `password` matches `stored`. With no stored hash (an unknown user) the dummy is
    /// verified, for the same cost, and the answer is `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.clone());
        let matches = self
            .run(move |memory| verify_with(memory, &password, &stored))
            .await?;
        Ok(known && matches)
    }
}

fn worker(receiver: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = match receiver.lock() {
            Ok(receiver) => receiver.recv_timeout(IDLE_RELEASE),
            Err(_) => return,
        };
        match next {
            Ok(job) => {
                // A panicking job must not shrink the pool; its caller sees a dropped answer.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut memory)));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => memory = Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
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
    fn hashes_are_standard_phc_strings_that_the_argon2_crate_verifies() {
        use argon2::password_hash::PasswordVerifier;
        let stored = hash_with(&mut Vec::new(), "pässword").unwrap();
        let parsed = PasswordHash::new(&stored).unwrap();
        assert!(
            Argon2::default()
                .verify_password("pässword".as_bytes(), &parsed)
                .is_ok()
        );
        // And the other way round: a hash made by the crate verifies here, with reused memory.
        let mut memory = Vec::new();
        assert!(verify_with(&mut memory, "pässword", &stored));
        assert!(!verify_with(&mut memory, "password", &stored));
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
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
