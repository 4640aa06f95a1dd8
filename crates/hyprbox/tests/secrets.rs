//! No secret ever reaches a log: the real binaries run a full scenario in production mode with
//! debug logging (sign-up of the first admin, sign-ins right and wrong, users, node tokens,
//! heartbeats, a job claimed by a token, a mailed password reset, a password change, logout), and
//! then every line the server and the CLI wrote is searched for every secret the scenario used.

#[path = "../../hyprbox-server/tests/common/smtp.rs"]
mod smtp;

use std::process::Command;
use std::time::{Duration, Instant};

use hyprbox_store::testing::TestDatabase;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }
}

#[tokio::test]
async fn a_full_scenario_leaves_no_secret_in_any_log_line() {
    let dir = std::env::temp_dir().join(format!("hyprbox-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = if std::env::var(hyprbox_store::testing::TEST_DATABASE_URL).is_ok_and(|v| !v.is_empty()) {
        Some(TestDatabase::new().await)
    } else {
        None
    };
    let (smtp_url, mut inbox) = smtp::smtp_listener().await;
    let port = free_port();
    let secret_key = "s3cr3t-signing-key-0123456789abcdef-never-logged";
    let admin_password = "first admin password 1";
    let mut env: Vec<(&str, String)> = vec![
        ("HYPRBOX_ENV", "production".into()),
        ("SECRET_KEY", secret_key.into()),
        ("HYPRBOX_SMTP_URL", smtp_url.clone()),
        ("HYPRBOX_PUBLIC_URL", "https://hb.example.com".into()),
        ("HYPRBOX_ALLOW_PUBLIC_REGISTRATION", "true".into()),
        ("PORT", port.to_string()),
        ("RUST_LOG", "debug".into()),
    ];
    if let Some(db) = &db {
        env.push(("DATABASE_URL", db.url.clone()));
    }
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_hyprbox"))
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .args(args)
            .output()
            .unwrap()
    };
    let created = run(
        &["users", "create-admin", "--email", "root@example.com"],
        &[("HYPRBOX_NEW_PASSWORD", admin_password)],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut logs =
        String::from_utf8_lossy(&created.stdout).into_owned() + &String::from_utf8_lossy(&created.stderr);

    let log_file = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_hyprbox"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("serve")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let api = Api {
        client: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while api
        .client
        .get(format!("{}/health", api.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let wrong_password = "not the right password 9";
    let (status, _) = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": "root@example.com", "password": wrong_password}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, session) = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": "root@example.com", "password": admin_password}),
        )
        .await;
    assert_eq!(status, 200);
    let admin_jwt = session["token"].as_str().unwrap().to_string();
    let user_password = "second user password 2";
    let (status, _) = api
        .post(
            "/api/users",
            Some(&admin_jwt),
            json!({"email": "ops@example.com", "password": user_password, "role": "OPERATOR"}),
        )
        .await;
    assert_eq!(status, 201);
    let visitor_password = "visitor password 3";
    let (status, visitor) = api
        .post(
            "/api/auth/register",
            None,
            json!({"email": "v@example.com", "password": visitor_password}),
        )
        .await;
    assert_eq!(status, 201);
    let visitor_jwt = visitor["token"].as_str().unwrap().to_string();

    let (status, minted) = api
        .post(
            "/api/tokens",
            Some(&admin_jwt),
            json!({"name": "web", "nodeId": "web-1"}),
        )
        .await;
    assert_eq!(status, 201);
    let node_token = minted["token"].as_str().unwrap().to_string();
    let (status, _) = api
        .post(
            "/api/nodes/heartbeat",
            Some(&node_token),
            json!({"node_id": "web-1", "cpu_percent": 3}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = api
        .post(
            "/api/jobs",
            Some(&admin_jwt),
            json!({"nodeId": "web-1", "presetName": "server-light", "variables": {}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, claimed) = api
        .call(
            reqwest::Method::GET,
            "/api/jobs/pending?nodeId=web-1",
            Some(&node_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(claimed["job"]["id"].is_string());
    let guessed = format!("hbnt_{}", "G".repeat(48));
    let (status, _) = api
        .post(
            "/api/nodes/heartbeat",
            Some(&guessed),
            json!({"node_id": "web-1"}),
        )
        .await;
    assert_eq!(status, 401);

    let (status, _) = api
        .post(
            "/api/auth/forgot-password",
            None,
            json!({"email": "ops@example.com"}),
        )
        .await;
    assert_eq!(status, 200);
    let mail = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        smtp::unwrap_mail(&mail).contains("/reset-password#token="),
        "{mail}"
    );
    let reset_token = smtp::reset_token_in(&mail);
    assert_eq!(reset_token.len(), 64);
    let reset_password = "reset password 4 chosen";
    let (status, _) = api
        .post(
            "/api/auth/reset-password",
            None,
            json!({"token": reset_token, "newPassword": reset_password}),
        )
        .await;
    assert_eq!(status, 200);
    let changed_password = "changed password 5 now";
    let (status, changed) = api
        .post(
            "/api/auth/change-password",
            Some(&visitor_jwt),
            json!({"currentPassword": visitor_password, "newPassword": changed_password}),
        )
        .await;
    assert_eq!(status, 200);
    let fresh_jwt = changed["token"].as_str().unwrap().to_string();
    let (status, _) = api.post("/api/auth/logout", Some(&fresh_jwt), json!({})).await;
    assert_eq!(status, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    logs += &std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(logs.lines().count() > 20, "debug logging wrote little: {logs}");
    assert!(
        logs.contains("/api/auth/reset-password") && logs.contains("/api/jobs/pending"),
        "every request is in the log, so a secret in a URL would be too: {logs}"
    );

    let secrets = [
        ("the secret key", secret_key.to_string()),
        ("the admin's password", admin_password.to_string()),
        ("a wrong password", wrong_password.to_string()),
        ("a created user's password", user_password.to_string()),
        ("a registered user's password", visitor_password.to_string()),
        ("a reset password", reset_password.to_string()),
        ("a changed password", changed_password.to_string()),
        ("the admin's session token", admin_jwt),
        (
            "a session token's signature",
            visitor_jwt.rsplit('.').next().unwrap().to_string(),
        ),
        ("a renewed session token", fresh_jwt),
        ("a node token", node_token.clone()),
        ("a node token's secret part", node_token[13..].to_string()),
        ("a guessed node token", guessed),
        ("a reset token", reset_token),
    ];
    for (what, secret) in &secrets {
        if let Some(line) = logs.lines().find(|line| line.contains(secret.as_str())) {
            panic!("{what} appears in the logs: {line}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
