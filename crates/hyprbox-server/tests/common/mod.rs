//! The HTTP test harness: a real server on 127.0.0.1:0 over a fresh database (SQLite, or Postgres
//! when HYPRBOX_TEST_DATABASE_URL is set), and a client with helpers.

#![allow(dead_code)]

pub mod browser;
mod smtp;

#[allow(unused_imports)]
pub use smtp::{reset_token_in, smtp_listener, unwrap_mail};

use std::collections::HashMap;
use std::net::SocketAddr;

use hyprbox_server::{AppState, Application, Settings};
use hyprbox_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-key-for-hyprbox-tests-only";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    db: Option<TestDatabase>,
}

/// A signed-in user as the tests see it.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub id: String,
    pub email: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// Asserts the contract's error shape and returns the tag.
    pub fn error_tag(&self) -> &str {
        let tag = self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error shape in {}", self.text));
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message in {}",
            self.text
        );
        tag
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::with(&[]).await
    }

    /// A server with extra settings (as environment variables would give them).
    pub async fn with(env: &[(&str, &str)]) -> TestApp {
        let db = TestDatabase::new().await;
        let mut vars: HashMap<String, String> = HashMap::from([
            ("SECRET_KEY".to_string(), SECRET.to_string()),
            ("DATABASE_URL".to_string(), db.url.clone()),
            ("HYPRBOX_DB_MAX_CONNECTIONS".to_string(), "4".to_string()),
        ]);
        for (k, v) in env {
            vars.insert((*k).to_string(), (*v).to_string());
        }
        let settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("test settings");
        let app = Application::build(settings).await.expect("build the application");
        let state = app.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.serve(listener, shutdown.clone()));
        TestApp {
            addr,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            state,
            shutdown,
            server: Some(server),
            db: Some(db),
        }
    }

    /// The database this server runs on (for tests that open a second connection to it).
    pub fn database_url(&self) -> String {
        self.db.as_ref().expect("a running test app").url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request with an optional Bearer token and JSON body; reads the whole answer.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A POST of raw bytes with the given content type (malformed JSON, forms, plain text).
    pub async fn post_raw(&self, path: &str, token: &str, content_type: &str, body: &str) -> Answer {
        let request = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_string());
        read(request.send().await.expect("request")).await
    }

    /// A POST that appears to come from `ip` (needs `HYPRBOX_TRUST_PROXY=true`).
    pub async fn post_from(&self, ip: &str, path: &str, body: Value) -> Answer {
        let request = self
            .client
            .post(self.url(path))
            .header("x-forwarded-for", ip)
            .json(&body);
        read(request.send().await.expect("request")).await
    }

    /// Registers the first user (who becomes ADMIN); in production, where public registration
    /// never makes an ADMIN, creates them as `hyprbox users create-admin` does and signs them in.
    pub async fn register_admin(&self) -> Session {
        if self.state.settings.is_production() {
            hyprbox_server::auth::users::create_admin(
                &self.state.store,
                "admin@example.com",
                Some("Admin"),
                PASSWORD,
            )
            .await
            .expect("create the first admin");
            return self.login("admin@example.com", PASSWORD).await;
        }
        let answer = self
            .post(
                "/api/auth/register",
                None,
                json!({"email": "admin@example.com", "password": PASSWORD, "name": "Admin"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        assert_eq!(answer.body["user"]["role"], "ADMIN");
        session(&answer)
    }

    /// Has the admin create a user with `role`, then signs them in.
    pub async fn user_with_role(&self, admin: &Session, email: &str, role: &str) -> Session {
        let created = self
            .post(
                "/api/users",
                Some(&admin.token),
                json!({"email": email, "password": PASSWORD, "role": role}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        self.login(email, PASSWORD).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let answer = self
            .post(
                "/api/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        session(&answer)
    }

    /// Cancels the server and waits for it to stop; returns what `serve` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.take().unwrap().await.unwrap()
    }

    /// Stops the server but keeps its database, to look at what it left behind.
    pub async fn stop_keeping_database(mut self) -> (anyhow::Result<()>, TestDatabase) {
        self.shutdown.cancel();
        let stopped = self.server.take().unwrap().await.unwrap();
        (stopped, self.db.take().unwrap())
    }

    /// Mints a node token as `operator`; returns the plaintext and the answer's `meta`.
    pub async fn mint_token(&self, operator: &Session, node_id: Option<&str>) -> (String, Value) {
        let answer = self
            .post(
                "/api/tokens",
                Some(&operator.token),
                json!({"name": "agent", "nodeId": node_id}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        (
            answer.body["token"].as_str().unwrap().to_string(),
            answer.body["meta"].clone(),
        )
    }

    /// Posts a heartbeat with an optional node token.
    pub async fn heartbeat(&self, token: Option<&str>, body: Value) -> Answer {
        self.post("/api/nodes/heartbeat", token, body).await
    }

    /// Polls `check` until it holds or 10 s pass.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

/// A GET with a bearer token whose body the caller reads as it arrives (event streams, downloads).
pub async fn get_streaming(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    get_streaming_with(app, path, token, &[]).await
}

/// [`get_streaming`] with extra request headers (`Accept-Encoding`, `Last-Event-ID`…).
pub async fn get_streaming_with(
    app: &TestApp,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app.client.get(app.url(path)).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the request is answered")
}

/// Reads a server-sent event stream until `done` holds for the newest text (20 s at most).
pub async fn read_sse(response: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time")
            .unwrap();
        let start = text.len().saturating_sub(256);
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
        let window = text.get(start..).unwrap_or(&text);
        if done(window) {
            return text;
        }
    }
}

/// Reads a gzip-compressed event stream as a browser does, inflating what has arrived at once (so
/// every frame must be whole when it lands), until `done` holds for the text so far (20 s at most).
/// Returns the compressed bytes and the text.
pub async fn read_gzip_sse(
    response: &mut reqwest::Response,
    done: impl Fn(&str) -> bool,
) -> (Vec<u8>, String) {
    let mut compressed = Vec::new();
    let mut inflate = flate2::Decompress::new(false);
    let mut text = Vec::with_capacity(1 << 20);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done(&String::from_utf8_lossy(&text)) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("the stream stays open");
        compressed.extend_from_slice(&chunk);
        assert!(
            compressed.len() < 2 || compressed.starts_with(&[0x1f, 0x8b]),
            "a gzip header first"
        );
        // The 10-byte gzip header, then deflate; what the inflater took so far is skipped.
        let from = 10 + inflate.total_in() as usize;
        if compressed.len() > from {
            inflate
                .decompress_vec(&compressed[from..], &mut text, flate2::FlushDecompress::Sync)
                .unwrap();
        }
    }
    (compressed, String::from_utf8(text).unwrap())
}

/// A preset directory for tests: `hello` (prints a greeting; one required variable with a
/// pattern, one bounded integer) and `slow` (a 1-second timeout, for the reaper).
pub fn test_presets() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hyprbox-test-presets-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A process id is reused across runs: start from an empty directory.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hello.yaml"),
        r#"name: hello
version: 1.2.3
description: Prints a greeting
tags: [test]
targets: [debian]
risk: low
timeout: 1h
variables:
  who: { type: string, required: true, pattern: "^[a-z ]+$", description: Whom to greet }
  times: { type: integer, default: 1, min: 1, max: 5 }
  note: { type: string, default: "" }
steps:
  - name: Greet
    run: |
      for _ in $(seq "$times"); do echo "hello $who"; done
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("slow.yaml"),
        "name: slow\nversion: 1.0.0\ndescription: Sleeps\nrisk: low\ntimeout: 1s\nsteps:\n  - name: Sleep\n    run: sleep 600\n",
    )
    .unwrap();
    dir
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn session(answer: &Answer) -> Session {
    Session {
        token: answer.body["token"].as_str().expect("token").to_string(),
        id: answer.body["user"]["id"].as_str().expect("user id").to_string(),
        email: answer.body["user"]["email"].as_str().expect("email").to_string(),
    }
}

pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// The value of the named cookie in a list of Set-Cookie headers.
pub fn cookie<'a>(set_cookies: &'a [String], name: &str) -> Option<&'a str> {
    set_cookies.iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or(""))
    })
}
