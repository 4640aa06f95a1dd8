//! `/api/presets`: the catalogue (built-ins plus `HYPRBOX_PRESETS_DIR`) and rendering.

mod common;

use common::{TestApp, test_presets};
use reqwest::StatusCode;
use serde_json::json;

async fn app_with_test_presets() -> TestApp {
    let dir = test_presets();
    TestApp::with(&[("HYPRBOX_PRESETS_DIR", dir.to_str().unwrap())]).await
}

#[tokio::test]
async fn the_list_holds_the_built_ins_and_the_directory_presets_by_name() {
    let app = app_with_test_presets().await;
    let admin = app.register_admin().await;
    let answer = app.get("/api/presets", Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let presets = answer.body["presets"].as_array().unwrap();
    let names: Vec<&str> = presets.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for expected in [
        "hello",
        "server-light",
        "hypervault-restic",
        "tls-renew",
        "disk-cleanup",
        "postgres-backup",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let hello = presets.iter().find(|p| p["name"] == "hello").unwrap();
    assert_eq!(hello["version"], "1.2.3");
    assert_eq!(hello["stepCount"], 1);
    assert_eq!(hello["risk"], "low");
    assert_eq!(hello["variables"][0]["name"], "who");
    assert_eq!(hello["variables"][0]["type"], "string");
    assert_eq!(hello["variables"][0]["required"], true);
    assert_eq!(hello["variables"][1]["default"], 1);
}

#[tokio::test]
async fn reading_presets_needs_a_signed_in_user() {
    let app = app_with_test_presets().await;
    assert_eq!(
        app.get("/api/presets", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/presets/hello", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let render = app.post("/api/presets/hello/render", None, json!({})).await;
    assert_eq!(render.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_preset_comes_whole_and_an_unknown_one_is_404() {
    let app = app_with_test_presets().await;
    let admin = app.register_admin().await;
    let viewer = app.user_with_role(&admin, "v@example.com", "VIEWER").await;
    let answer = app.get("/api/presets/hello", Some(&viewer.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["preset"]["name"], "hello");
    assert_eq!(answer.body["preset"]["steps"][0]["name"], "Greet");
    let missing = app.get("/api/presets/nope", Some(&viewer.token)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_tag(), "not_found");
}

#[tokio::test]
async fn rendering_fills_defaults_warns_of_unknown_variables_and_quotes_values() {
    let app = app_with_test_presets().await;
    let admin = app.register_admin().await;
    let answer = app
        .post(
            "/api/presets/hello/render",
            Some(&admin.token),
            json!({"variables": {"who": "the world", "extra": 1, "note": "it's $(rm -rf /)"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["name"], "hello");
    assert_eq!(answer.body["resolvedVariables"]["who"], "the world");
    assert_eq!(answer.body["resolvedVariables"]["times"], 1);
    let warnings = answer.body["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("extra")),
        "{warnings:?}"
    );
    let script = answer.body["script"].as_str().unwrap();
    assert!(script.starts_with("#!/usr/bin/env bash\n"));
    assert!(script.contains("set -euo pipefail"));
    assert!(script.contains(r"note='it'\''s $(rm -rf /)'"), "{script}");
    assert_eq!(answer.body["bytes"], script.len());
    let again = app
        .post(
            "/api/presets/hello/render",
            Some(&admin.token),
            json!({"variables": {"who": "the world", "extra": 1, "note": "it's $(rm -rf /)"}}),
        )
        .await;
    assert_eq!(
        again.body["script"], answer.body["script"],
        "rendering is deterministic"
    );
}

#[tokio::test]
async fn a_missing_or_invalid_variable_is_a_400_naming_it() {
    let app = app_with_test_presets().await;
    let admin = app.register_admin().await;
    for (variables, named) in [
        (json!({}), "who"),
        (json!({"who": "UPPER"}), "who"),
        (json!({"who": "x", "times": 9}), "times"),
        (json!({"who": "x", "times": "many"}), "times"),
        (json!({"who": "x", "note": "nul\u{0}byte"}), "note"),
    ] {
        let answer = app
            .post(
                "/api/presets/hello/render",
                Some(&admin.token),
                json!({"variables": variables}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{variables}: {}",
            answer.text
        );
        assert_eq!(answer.error_tag(), "bad_request");
        assert!(
            answer.body["message"].as_str().unwrap().contains(named),
            "{}",
            answer.text
        );
    }
    let unknown = app
        .post(
            "/api/presets/nope/render",
            Some(&admin.token),
            json!({"variables": {}}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_invalid_preset_file_stops_the_server_at_start_naming_it() {
    let dir = test_presets();
    std::fs::write(dir.join("broken.yaml"), "name: broken\nversion: one\nsteps: []\n").unwrap();
    let db = hyprbox_store::testing::TestDatabase::new().await;
    let vars = std::collections::HashMap::from([
        ("SECRET_KEY", common::SECRET.to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("HYPRBOX_PRESETS_DIR", dir.to_str().unwrap().to_string()),
    ]);
    let settings = hyprbox_server::Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let Err(err) = hyprbox_server::Application::build(settings).await else {
        panic!("the server started with an invalid preset");
    };
    let message = format!("{err:#}");
    assert!(message.contains("broken.yaml"), "{message}");
}
