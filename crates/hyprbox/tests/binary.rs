//! The real `hyprbox` binary: `migrate`, `serve` on the embedded default, configuration errors,
//! and a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hyprbox_store::testing::TestDatabase;

fn hyprbox(dir: &PathBuf) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hyprbox"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyprbox-bin-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

fn wait_for_health(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, _)) = get(port, "/health") {
            assert!(status.contains("200"), "{status}");
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the server exited early");
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `DATABASE_URL` for the backend under test: unset (the embedded default) on SQLite.
async fn database() -> (Option<TestDatabase>, Vec<(&'static str, String)>) {
    if std::env::var(hyprbox_store::testing::TEST_DATABASE_URL).is_ok_and(|v| !v.is_empty()) {
        let db = TestDatabase::new().await;
        let url = db.url.clone();
        (Some(db), vec![("DATABASE_URL", url)])
    } else {
        (None, vec![])
    }
}

#[tokio::test]
async fn migrate_creates_the_default_sqlite_file_and_its_directory() {
    let dir = temp_dir();
    let (_db, env) = database().await;
    let out = hyprbox(&dir).envs(env.clone()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    if env.is_empty() {
        assert!(dir.join("data/hyprbox.db").exists());
    }
    // Running it again is harmless.
    assert!(hyprbox(&dir).envs(env).arg("migrate").status().unwrap().success());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn production_without_a_secret_key_refuses_to_start_with_a_clear_message() {
    let dir = temp_dir();
    let out = hyprbox(&dir)
        .env("HYPRBOX_ENV", "production")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SECRET_KEY is required"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_invalid_setting_is_named_and_the_exit_code_is_not_zero() {
    let dir = temp_dir();
    let out = hyprbox(&dir)
        .env("HYPRBOX_RATE_LIMIT", "lots")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HYPRBOX_RATE_LIMIT"));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn serve_runs_on_the_default_database_logs_its_configuration_without_secrets_and_exits_0_on_sigterm() {
    let dir = temp_dir();
    let (_db, env) = database().await;
    let port = free_port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = hyprbox(&dir)
        .envs(env)
        .env("PORT", port.to_string())
        .env("SECRET_KEY", "a-very-secret-value-1234")
        .env("RUST_LOG", "info")
        .arg("serve")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for_health(port, &mut child);
    let (status, body) = get(port, "/api/health").unwrap();
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("\"database\":\"up\""));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let logged = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(logged.contains(&format!("127.0.0.1:{port}")), "{logged}");
    assert!(logged.contains("secret_key=[redacted]"), "{logged}");
    assert!(!logged.contains("a-very-secret-value-1234"), "{logged}");
    std::fs::remove_dir_all(dir).ok();
}

#[cfg(unix)]
#[tokio::test]
async fn outside_production_a_missing_secret_is_generated_once_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let (_db, env) = database().await;
    assert!(
        hyprbox(&dir)
            .envs(env.clone())
            .arg("migrate")
            .status()
            .unwrap()
            .success()
    );
    let key_path = dir.join("data/secret_key");
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(key.trim().len(), 64);
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(hyprbox(&dir).envs(env).arg("migrate").status().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        key,
        "the key is kept, not regenerated"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A plain HTTP/1.1 POST of a JSON body; returns the status line and the body.
fn post_json(port: u16, path: &str, body: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[tokio::test]
async fn in_production_the_first_admin_comes_from_create_admin_and_never_from_public_registration() {
    let dir = temp_dir();
    let (_db, env) = database().await;
    let port = free_port();
    let production = [
        ("HYPRBOX_ENV", "production".to_string()),
        (
            "SECRET_KEY",
            "0123456789abcdef0123456789abcdef-production".to_string(),
        ),
        ("HYPRBOX_ALLOW_PUBLIC_REGISTRATION", "true".to_string()),
    ];
    let mut child = hyprbox(&dir)
        .envs(env.clone())
        .envs(production.clone())
        .env("PORT", port.to_string())
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_health(port, &mut child);
    let account = r#"{"email":"first@example.com","password":"correct horse battery"}"#;
    let (status, body) = post_json(port, "/api/auth/register", account).unwrap();
    assert!(
        status.contains("403"),
        "a fresh production instance is not claimed by whoever comes first: {status} {body}"
    );
    assert!(body.contains("create-admin"), "{body}");

    let create = |email: &str| {
        hyprbox(&dir)
            .envs(env.clone())
            .envs(production.clone())
            .env("HYPRBOX_NEW_PASSWORD", "another good password")
            .args(["users", "create-admin", "--email", email, "--json"])
            .output()
            .unwrap()
    };
    let out = create("Root@Example.com");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["user"]["role"], "ADMIN");
    assert_eq!(created["user"]["email"], "root@example.com");
    assert_eq!(
        create("root@example.com").status.code(),
        Some(5),
        "a duplicate email is a conflict"
    );

    let (status, body) = post_json(
        port,
        "/api/auth/login",
        r#"{"email":"root@example.com","password":"another good password"}"#,
    )
    .unwrap();
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("\"role\":\"ADMIN\""), "{body}");
    // With an ADMIN in place, open registration makes VIEWERs, never another ADMIN.
    let (status, body) = post_json(port, "/api/auth/register", account).unwrap();
    assert!(status.contains("201"), "{status} {body}");
    assert!(body.contains("\"role\":\"VIEWER\""), "{body}");

    let bad = hyprbox(&dir)
        .envs(env.clone())
        .envs(production.clone())
        .env("HYPRBOX_NEW_PASSWORD", "short")
        .args(["users", "create-admin", "--email", "x@example.com"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(dir).ok();
}
