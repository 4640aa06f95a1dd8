//! The fleet page in headless chromium against a running server (`docs/PERFORMANCE.md`): signs in,
//! opens `/dashboard`, reports its first contentful paint and page weight, then watches the tab for
//! `SECONDS` while the fleet beats (start `hyprbox simulate` alongside) and reports its long tasks
//! (main-thread work over 50 ms) and the animation frames it managed, with what the five longest
//! frames spent their time on (scripts, style and layout).
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
    // A fresh load, measured on its own. Its first paint may come after the page's script has run:
    // the measure waits for it (2 s at most).
    browser.goto(&format!("{base}/dashboard")).await;
    let load = browser
        .eval(
            "(async () => { const nav = performance.getEntriesByType('navigation')[0]; \
             const fcp = await new Promise(done => { \
               new PerformanceObserver(l => { const e = l.getEntriesByName('first-contentful-paint')[0]; if (e) done(e); }) \
                 .observe({type: 'paint', buffered: true}); setTimeout(() => done(null), 2000); }); \
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
             window.__loaf = []; \
             new PerformanceObserver(l => l.getEntries().forEach(e => window.__loaf.push({ ms: Math.round(e.duration), \
               blockingMs: Math.round(e.blockingDuration), \
               styleLayoutMs: e.styleAndLayoutStart ? Math.round(e.startTime + e.duration - e.styleAndLayoutStart) : 0, \
               scripts: e.scripts.map(x => x.invoker + ' ' + Math.round(x.duration) + ' ms') })) \
             ).observe({type: 'long-animation-frame'}); \
             (function tick() { window.__frames++; requestAnimationFrame(tick); })(); \
             window.__cells = document.querySelectorAll('[data-f=seen]'); window.__before = [...window.__cells].map(c => c.getAttribute('datetime')); true",
        )
        .await;
    // TRACE=path also records a performance trace of the whole watch (open it in DevTools).
    match std::env::var_os("TRACE") {
        Some(path) => {
            let events = browser.trace(seconds).await;
            let trace = serde_json::json!({ "traceEvents": events });
            std::fs::write(&path, trace.to_string()).expect("write the trace");
        }
        None => tokio::time::sleep(Duration::from_secs(seconds)).await,
    }
    let watch = browser
        .eval(&format!(
            "(() => {{ const changed = [...window.__cells].filter((c, i) => c.getAttribute('datetime') !== window.__before[i]).length; \
             return {{ seconds: {seconds}, longTasks: window.__long.length, longestMs: Math.max(0, ...window.__long), \
                      framesPerSecond: window.__frames / {seconds}, rowsUpdated: changed, \
                      longestFrames: window.__loaf.sort((a, b) => b.ms - a.ms).slice(0, 5) }}; }})()"
        ))
        .await;
    println!("while beating: {watch}");
}
