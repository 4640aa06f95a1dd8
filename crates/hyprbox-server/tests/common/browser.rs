//! A small Chrome DevTools Protocol driver for the browser tests: Debian's `chromium`, headless,
//! driven over its debugging WebSocket (no downloaded browser, no driver binary). Enough of CDP to
//! navigate, evaluate JavaScript, wait for a condition and take a screenshot.
//!
//! Without `chromium` on the machine the browser tests note it and pass, unless
//! `HYPRBOX_REQUIRE_CHROMIUM=1` (CI) makes a missing browser a failure.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Runs before any page script: records CSP violations and any `alert` an injection would call.
const WATCH: &str = "window.__csp = []; window.__alerts = 0; \
    document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); \
    window.alert = () => { window.__alerts += 1; };";

pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    profile: PathBuf,
    /// Names the screenshot a failed wait leaves behind.
    name: String,
}

fn binary() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    /// A fresh headless browser with an empty profile, or `None` when none is installed (and the
    /// run does not require one).
    pub async fn launch(name: &str) -> Option<Browser> {
        let Some(binary) = binary() else {
            assert!(
                std::env::var_os("HYPRBOX_REQUIRE_CHROMIUM").is_none_or(|v| v != "1"),
                "chromium is required (HYPRBOX_REQUIRE_CHROMIUM=1) but not installed"
            );
            eprintln!("note: chromium is not installed; skipping the browser test {name}");
            return None;
        };
        let profile = std::env::temp_dir().join(format!("hyprbox-chromium-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited before it listened");
        })
        .await
        .expect("chromium's debugging endpoint within 30 s");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to chromium");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            profile,
            name: name.to_string(),
        };
        let target = browser
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.call("Page.enable", json!({})).await;
        browser
            .call("Page.addScriptToEvaluateOnNewDocument", json!({"source": WATCH}))
            .await;
        Some(browser)
    }

    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        match self.try_send(session, method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}"),
        }
    }

    /// A DevTools command; its error (for instance "Inspected target navigated or closed" when the
    /// page navigates while an expression runs) as `Err`.
    async fn try_send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send to chromium");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
                .expect("chromium closed the connection")
                .expect("read from chromium");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    /// Records a performance trace of the browser for `seconds` (the categories DevTools' own
    /// performance panel uses) and returns its events, to see what the page's long tasks were made of.
    pub async fn trace(&mut self, seconds: u64) -> Vec<Value> {
        let categories = [
            "devtools.timeline",
            "disabled-by-default-devtools.timeline",
            "v8.execute",
            "blink.user_timing",
            "toplevel",
            "disabled-by-default-devtools.timeline.invalidationTracking",
        ];
        self.send(
            None,
            "Tracing.start",
            json!({"transferMode": "ReportEvents", "traceConfig": {"includedCategories": categories}}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        self.next_id += 1;
        let end = json!({"id": self.next_id, "method": "Tracing.end", "params": {}});
        self.socket
            .send(Message::Text(end.to_string().into()))
            .await
            .expect("send to chromium");
        let mut events = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("the trace in time")
                .expect("chromium closed the connection")
                .expect("read from chromium");
            let Message::Text(text) = frame else { continue };
            let mut message: Value = serde_json::from_str(&text).unwrap();
            match message["method"].as_str() {
                Some("Tracing.dataCollected") => {
                    if let Some(batch) = message["params"]["value"].as_array_mut() {
                        events.append(batch);
                    }
                }
                Some("Tracing.tracingComplete") => return events,
                _ => {}
            }
        }
    }

    /// A DevTools command on the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params).await
    }

    /// Opens `url` and waits for the page's script to have run.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete' && document.documentElement.dataset.js === 'ready'",
        )
        .await;
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `condition` (a JavaScript expression) until it is true; after 10 s the test fails,
    /// leaving a screenshot of the page under the target directory.
    pub async fn wait_for(&mut self, what: &str, condition: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            // A page that navigates (a reload after a change) while the condition is evaluated
            // answers with an error: that is "not yet", the next poll asks the new page.
            let session = self.session.clone();
            let held = self
                .try_send(
                    Some(&session),
                    "Runtime.evaluate",
                    json!({"expression": format!("!!({condition})"), "returnByValue": true}),
                )
                .await
                .unwrap_or_default();
            if held["result"]["value"] == json!(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let shot = self.screenshot().await;
                panic!(
                    "timed out waiting for {what} ({condition}); screenshot at {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the page as `<target tmpdir>/screenshots/<test name>.png`.
    pub async fn screenshot(&mut self) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.png", self.name));
        let bytes = base64_decode(shot["data"].as_str().unwrap_or_default());
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Sets a field's value as typing would (the form reads it on submit).
    pub async fn fill(&mut self, selector: &str, value: &str) {
        let expression = format!(
            "(() => {{ const el = document.querySelector({}); el.value = {}; el.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            json!(selector),
            json!(value)
        );
        assert_eq!(self.eval(&expression).await, json!(true), "no field {selector}");
    }

    pub async fn click(&mut self, selector: &str) {
        let expression = format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.click(); return true; }})()",
            json!(selector)
        );
        assert_eq!(
            self.eval(&expression).await,
            json!(true),
            "nothing to click at {selector}"
        );
    }

    /// CSP violations and alerts seen on the current page; both must stay empty.
    pub async fn assert_clean(&mut self) {
        let csp = self.eval("window.__csp").await;
        assert_eq!(csp, json!([]), "content security policy violations");
        assert_eq!(
            self.eval("window.__alerts").await,
            json!(0),
            "an injected script ran"
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (what CDP sends screenshots in), decoded without another dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
