//! The fleet page in headless chromium against a running server (`docs/PERFORMANCE.md`): signs in,
//! opens `/dashboard`, reports its first contentful paint and page weight, then watches the tab for
//! `SECONDS` while the fleet beats (start `hyprbox simulate` alongside) and reports its long tasks
//! (main-thread work over 50 ms) and the animation frames it managed.
//!
//! ```sh
//! cargo run --release -p hyprbox-server --example fleet_page_bench -- http://127.0.0.1:4100 ops@example.com 'password' 30
//! ```

#[path = "../tests/common/browser.rs"]
mod browser;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, email, password, seconds] = args.as_slice() else {
        eprintln!("usage: fleet_page_bench URL EMAIL PASSWORD SECONDS");
        std::process::exit(2);
    };
    let seconds: u64 = seconds.parse().expect("SECONDS is a number");
    let mut browser = browser::Browser::launch("fleet_page_bench")
        .await
        .expect("chromium");
    browser.goto(&format!("{base}/login")).await;
    browser.fill("input[name=email]", email).await;
    browser.fill("input[name=password]", password).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for(
            "the fleet",
            "location.pathname === '/dashboard' && document.documentElement.dataset.js === 'ready'",
        )
        .await;
    // A fresh load, measured on its own.
    browser.goto(&format!("{base}/dashboard")).await;
    let load = browser
        .eval(
            "(() => { const nav = performance.getEntriesByType('navigation')[0]; \
             const fcp = performance.getEntriesByName('first-contentful-paint')[0]; \
             const bytes = performance.getEntriesByType('resource').reduce((s, r) => s + r.transferSize, nav.transferSize); \
             return { fcp: fcp ? fcp.startTime : null, domContentLoaded: nav.domContentLoadedEventEnd, \
                      transferBytes: bytes, rows: document.querySelectorAll('tr[data-node]').length }; })()",
        )
        .await;
    println!("load: {load}");
    browser
        .eval(
            "window.__long = []; window.__frames = 0; \
             new PerformanceObserver(l => l.getEntries().forEach(e => window.__long.push(e.duration))).observe({type: 'longtask'}); \
             (function tick() { window.__frames++; requestAnimationFrame(tick); })(); \
             window.__cells = document.querySelectorAll('[data-f=seen]'); window.__before = [...window.__cells].map(c => c.getAttribute('datetime')); true",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let watch = browser
        .eval(&format!(
            "(() => {{ const changed = [...window.__cells].filter((c, i) => c.getAttribute('datetime') !== window.__before[i]).length; \
             return {{ seconds: {seconds}, longTasks: window.__long.length, longestMs: Math.max(0, ...window.__long), \
                      framesPerSecond: window.__frames / {seconds}, rowsUpdated: changed }}; }})()"
        ))
        .await;
    println!("while beating: {watch}");
}
