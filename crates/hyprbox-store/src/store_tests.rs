//! The store's behaviour on whichever backend the test suite runs against.

use crate::audit::{self, AuditFilter, NewAuditEvent};
use crate::testing::TestDatabase;
use crate::users::{self, AdminGuarded, NewUser, Role};
use crate::{Store, StoreError, now_ms, resets, sessions};

async fn store(db: &TestDatabase) -> Store {
    db.store().await
}

async fn add_user(store: &Store, email: &str, role: Role) -> users::User {
    let mut conn = store.conn().await.unwrap();
    users::insert(
        &mut conn,
        &NewUser {
            email,
            name: "n",
            role,
            password_hash: "h",
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_run_twice_without_error() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    store.migrate().await.unwrap();
}

/// Checks that the database refuses to change or delete audit rows.
async fn assert_append_only(conn: &mut sqlx::AnyConnection) {
    let update = sqlx::query("UPDATE audit_events SET action = 'x'")
        .execute(&mut *conn)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_events").execute(&mut *conn).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn the_leaner_audit_table_keeps_every_earlier_event_and_still_refuses_changes() {
    let db = TestDatabase::new().await;
    let store = crate::Store::connect(&db.url, &crate::ConnectOptions::default())
        .await
        .unwrap();
    store.migrate_to(10).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let insert = "INSERT INTO audit_events (id, at, user_id, user_email, action, resource_type, resource_id, ip, metadata) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    for (id, at, user, action) in [
        ("a1", 1_000_i64, Some("u1"), "job.create"),
        ("a2", 2_000, None, "job.claim"),
    ] {
        sqlx::query(insert)
            .bind(id)
            .bind(at)
            .bind(user)
            .bind(user.map(|_| "ops@example.com"))
            .bind(action)
            .bind("job")
            .bind("j1")
            .bind("10.0.0.1")
            .bind(r#"{"nodeId":"web-1"}"#)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    drop(conn);
    store.migrate().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let (events, total) = audit::page(&mut conn, &AuditFilter::default(), 50, 0)
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(events[0].id, "a2");
    assert_eq!(events[0].action, "job.claim");
    assert_eq!(events[0].user_id, None);
    let created = &events[1];
    assert_eq!(
        (
            created.at,
            created.user_id.as_deref(),
            created.user_email.as_deref()
        ),
        (1_000, Some("u1"), Some("ops@example.com"))
    );
    assert_eq!(
        (created.resource_type.as_deref(), created.resource_id.as_deref()),
        (Some("job"), Some("j1"))
    );
    assert_eq!(
        (created.ip.as_deref(), created.metadata.as_str()),
        (Some("10.0.0.1"), r#"{"nodeId":"web-1"}"#)
    );
    let by_user = AuditFilter {
        user: Some("OPS@example.com".into()),
        ..Default::default()
    };
    let (mine, _) = audit::page(&mut conn, &by_user, 50, 0).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].action, "job.create");
    assert_append_only(&mut conn).await;
}

#[tokio::test]
async fn the_audit_table_refuses_update_and_delete() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let mut conn = store.conn().await.unwrap();
    audit::record(
        &mut conn,
        &NewAuditEvent {
            action: "user.login".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_append_only(&mut conn).await;
    let (events, total) = audit::page(&mut conn, &AuditFilter::default(), 50, 0)
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(events[0].action, "user.login");
}

#[tokio::test]
async fn a_duplicate_email_is_a_conflict() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    add_user(&store, "a@example.com", Role::Viewer).await;
    let mut conn = store.conn().await.unwrap();
    let err = users::insert(
        &mut conn,
        &NewUser {
            email: "a@example.com",
            name: "",
            role: Role::Viewer,
            password_hash: "h",
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
}

#[tokio::test]
async fn many_concurrent_first_registrations_make_exactly_one_admin() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let user = users::register(&mut tx, &format!("u{i}@example.com"), "", "h", Some(Role::Viewer))
                .await?
                .unwrap();
            tx.commit().await?;
            Ok::<_, StoreError>(user.role)
        }));
    }
    let mut admins = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() == Role::Admin {
            admins += 1;
        }
    }
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn create_admin_makes_an_admin_and_ends_the_first_registration_claim() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let mut conn = store.begin().await.unwrap();
    assert!(!users::is_bootstrapped(&mut conn).await.unwrap());
    let admin = users::create_admin(&mut conn, "root@example.com", "Root", "h")
        .await
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert!(users::is_bootstrapped(&mut conn).await.unwrap());
    let second = users::create_admin(&mut conn, "second@example.com", "", "h")
        .await
        .unwrap();
    assert_eq!(
        second.role,
        Role::Admin,
        "a later create-admin still makes an ADMIN"
    );
    conn.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let duplicate = users::create_admin(&mut tx, "root@example.com", "", "h").await;
    assert!(duplicate.unwrap_err().is_conflict());
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    let later = users::register(&mut tx, "visitor@example.com", "", "h", Some(Role::Viewer))
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        later.role,
        Role::Viewer,
        "the first registration after create-admin is not an ADMIN"
    );
}

#[tokio::test]
async fn a_failed_first_registration_gives_the_admin_claim_back() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    add_user(&store, "taken@example.com", Role::Viewer).await;
    let mut tx = store.begin().await.unwrap();
    let err = users::register(&mut tx, "taken@example.com", "", "h", None).await;
    assert!(err.unwrap_err().is_conflict());
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    let user = users::register(&mut tx, "new@example.com", "", "h", None)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(user.role, Role::Admin);
    let mut tx = store.begin().await.unwrap();
    let closed = users::register(&mut tx, "late@example.com", "", "h", None)
        .await
        .unwrap();
    assert!(
        closed.is_none(),
        "a closed registration writes nothing after the first user"
    );
}

#[tokio::test]
async fn the_last_admin_can_be_neither_demoted_nor_deleted() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let admin = add_user(&store, "admin@example.com", Role::Admin).await;
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        users::set_role(&mut tx, &admin.id, Role::Viewer).await.unwrap(),
        AdminGuarded::LastAdmin
    ));
    assert!(matches!(
        users::delete(&mut tx, &admin.id).await.unwrap(),
        AdminGuarded::LastAdmin
    ));
    assert!(matches!(
        users::delete(&mut tx, "nobody").await.unwrap(),
        AdminGuarded::NotFound
    ));
    drop(tx);

    let second = add_user(&store, "second@example.com", Role::Admin).await;
    let mut tx = store.begin().await.unwrap();
    let AdminGuarded::Done(demoted) = users::set_role(&mut tx, &second.id, Role::Operator)
        .await
        .unwrap()
    else {
        panic!("a second admin can be demoted");
    };
    tx.commit().await.unwrap();
    assert_eq!(demoted.role, Role::Operator);
    assert_eq!(demoted.token_version, second.token_version + 1);
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let a = add_user(&store, "a@example.com", Role::Admin).await;
    let b = add_user(&store, "b@example.com", Role::Admin).await;
    let demote = |id: String| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let outcome = users::set_role(&mut tx, &id, Role::Viewer).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(matches!(outcome, AdminGuarded::Done(_)))
        })
    };
    let (x, y) = (demote(a.id), demote(b.id));
    let done = [x.await.unwrap().unwrap(), y.await.unwrap().unwrap()];
    assert_eq!(done.iter().filter(|d| **d).count(), 1);
    let mut conn = store.conn().await.unwrap();
    let admins = users::list(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.role == Role::Admin)
        .count();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn a_reset_token_used_concurrently_succeeds_exactly_once() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let user = add_user(&store, "r@example.com", Role::Viewer).await;
    let now = now_ms();
    let mut conn = store.conn().await.unwrap();
    resets::insert(&mut conn, "hash", &user.id, now, now + 3_600_000)
        .await
        .unwrap();
    drop(conn);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let got = resets::consume(&mut tx, "hash", now_ms()).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(got.is_some())
        }));
    }
    let mut wins = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn an_expired_reset_token_is_not_consumed() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let user = add_user(&store, "r@example.com", Role::Viewer).await;
    let now = now_ms();
    let mut conn = store.conn().await.unwrap();
    resets::insert(&mut conn, "old", &user.id, now - 10, now - 1)
        .await
        .unwrap();
    assert_eq!(resets::consume(&mut conn, "old", now).await.unwrap(), None);
}

#[tokio::test]
async fn audit_pages_filter_and_count_newest_first() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let mut conn = store.conn().await.unwrap();
    for i in 0..7 {
        audit::record(
            &mut conn,
            &NewAuditEvent {
                user_id: Some(if i % 2 == 0 { "u1" } else { "u2" }.into()),
                user_email: Some(
                    if i % 2 == 0 {
                        "one@example.com"
                    } else {
                        "two@example.com"
                    }
                    .into(),
                ),
                action: if i < 5 { "user.login" } else { "user.create" }.into(),
                resource_type: Some("user".into()),
                resource_id: Some(format!("r{i}")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let (all, total) = audit::page(&mut conn, &AuditFilter::default(), 3, 0)
        .await
        .unwrap();
    assert_eq!(total, 7);
    assert_eq!(
        all.iter()
            .map(|e| e.resource_id.clone().unwrap())
            .collect::<Vec<_>>(),
        ["r6", "r5", "r4"]
    );
    let by_email = AuditFilter {
        user: Some("ONE@example.com".into()),
        action: Some("user.login".into()),
        ..Default::default()
    };
    let (events, total) = audit::page(&mut conn, &by_email, 50, 0).await.unwrap();
    assert_eq!(total, 3);
    assert!(
        events
            .iter()
            .all(|e| e.user_id.as_deref() == Some("u1") && e.action == "user.login")
    );
    let by_resource = AuditFilter {
        resource_type: Some("user".into()),
        resource_id: Some("r5".into()),
        ..Default::default()
    };
    assert_eq!(audit::export(&mut conn, &by_resource, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn pruning_removes_only_expired_revoked_ids_and_reset_tokens() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let user = add_user(&store, "p@example.com", Role::Viewer).await;
    let now = now_ms();
    let mut conn = store.conn().await.unwrap();
    sessions::revoke(&mut conn, "old", &user.id, now - 1)
        .await
        .unwrap();
    sessions::revoke(&mut conn, "live", &user.id, now + 60_000)
        .await
        .unwrap();
    resets::insert(&mut conn, "expired", &user.id, now - 10, now - 1)
        .await
        .unwrap();
    resets::insert(&mut conn, "fresh", &user.id, now, now + 60_000)
        .await
        .unwrap();

    assert_eq!(sessions::prune(&mut conn, now, 1000).await.unwrap(), 1);
    assert_eq!(resets::prune(&mut conn, now, 1000).await.unwrap(), 1);
    let left: Vec<String> = sessions::active(&mut conn, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    assert_eq!(left, ["live"]);
    assert_eq!(
        resets::consume(&mut conn, "fresh", now).await.unwrap(),
        Some(user.id.clone())
    );
}

#[tokio::test]
async fn pruning_works_in_bounded_batches() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let user = add_user(&store, "b@example.com", Role::Viewer).await;
    let mut conn = store.conn().await.unwrap();
    for i in 0..5 {
        sessions::revoke(&mut conn, &format!("j{i}"), &user.id, 1)
            .await
            .unwrap();
    }
    assert_eq!(sessions::prune(&mut conn, now_ms(), 2).await.unwrap(), 2);
    assert_eq!(sessions::prune(&mut conn, now_ms(), 2).await.unwrap(), 2);
    assert_eq!(sessions::prune(&mut conn, now_ms(), 2).await.unwrap(), 1);
    assert_eq!(sessions::prune(&mut conn, now_ms(), 2).await.unwrap(), 0);
}

fn node(id: &str, at: i64) -> crate::nodes::Node {
    crate::nodes::Node {
        node_id: id.into(),
        config: "{}".into(),
        created_at: at,
        last_seen_at: at,
        ..Default::default()
    }
}

fn beat(id: &str, at: i64, cpu: f64) -> crate::nodes::HeartbeatRow {
    crate::nodes::HeartbeatRow {
        node_id: id.into(),
        at,
        cpu_percent: Some(cpu),
        ram_percent: Some(1.0),
        disk_percent: None,
        status: None,
    }
}

#[tokio::test]
async fn a_node_upsert_keeps_inventory_that_was_not_sent() {
    use crate::nodes;
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let mut tx = store.begin().await.unwrap();
    let first = nodes::Node {
        hostname: Some("web-1".into()),
        os: Some("debian".into()),
        cpu_percent: Some(5.0),
        ..node("n1", 1000)
    };
    nodes::write_batch(&mut tx, &[first], &[beat("n1", 1000, 5.0)], &[])
        .await
        .unwrap();
    let second = nodes::Node {
        os: Some("ubuntu".into()),
        cpu_percent: Some(7.0),
        ..node("n1", 2000)
    };
    nodes::write_batch(&mut tx, &[second], &[beat("n1", 2000, 7.0)], &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let all = nodes::all(&mut conn).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].hostname.as_deref(), Some("web-1"));
    assert_eq!(all[0].os.as_deref(), Some("ubuntu"));
    assert_eq!(all[0].cpu_percent, Some(7.0));
    assert_eq!((all[0].created_at, all[0].last_seen_at), (1000, 2000));
}

#[tokio::test]
async fn batches_larger_than_one_statement_are_written_whole() {
    use crate::nodes;
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let ids: Vec<String> = (0..130).map(|i| format!("n{i:03}")).collect();
    let many: Vec<_> = ids.iter().map(|id| node(id, 1)).collect();
    let beats: Vec<_> = ids
        .iter()
        .flat_map(|id| (0..3).map(move |t| beat(id, 10 + t, t as f64)))
        .collect();
    let mut tx = store.begin().await.unwrap();
    nodes::write_batch(&mut tx, &many, &beats, &[]).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(nodes::all(&mut conn).await.unwrap().len(), 130);
    let history = nodes::history(&mut conn, "n129", 2).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.at).collect::<Vec<_>>(),
        [11, 12],
        "the last two, oldest first"
    );
    assert_eq!(nodes::history(&mut conn, "n000", 100).await.unwrap().len(), 3);
}

#[tokio::test]
async fn deleting_a_node_removes_its_history_and_events() {
    use crate::nodes;
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let event = nodes::NodeEvent {
        id: crate::new_id(),
        node_id: "n1".into(),
        at: 5,
        kind: "cpu.high".into(),
        severity: "WARN".into(),
        message: "CPU at 91%".into(),
        metadata: "{}".into(),
    };
    let mut tx = store.begin().await.unwrap();
    nodes::write_batch(
        &mut tx,
        &[node("n1", 1), node("n2", 1)],
        &[beat("n1", 1, 1.0), beat("n2", 1, 1.0)],
        std::slice::from_ref(&event),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(nodes::events(&mut conn, "n1", 8).await.unwrap(), [event]);
    assert!(
        nodes::set_config(&mut conn, "n1", "{\"scan_interval\":60}")
            .await
            .unwrap()
    );
    assert!(!nodes::set_config(&mut conn, "nope", "{}").await.unwrap());
    let mut tx = store.begin().await.unwrap();
    assert!(nodes::delete(&mut tx, "n1").await.unwrap());
    assert!(!nodes::delete(&mut tx, "n1").await.unwrap());
    tx.commit().await.unwrap();
    assert!(nodes::history(&mut conn, "n1", 10).await.unwrap().is_empty());
    assert!(nodes::events(&mut conn, "n1", 8).await.unwrap().is_empty());
    assert_eq!(nodes::history(&mut conn, "n2", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_replayed_heartbeat_row_is_written_once() {
    use crate::nodes;
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let mut tx = store.begin().await.unwrap();
    nodes::write_batch(
        &mut tx,
        &[node("n1", 0)],
        &[beat("n1", 5, 1.0), beat("n1", 5, 1.0)],
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(nodes::history(&mut conn, "n1", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn history_is_pruned_by_time_window() {
    use crate::nodes;
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let beats: Vec<_> = (0..10).map(|t| beat("n1", t * 100, 1.0)).collect();
    let mut tx = store.begin().await.unwrap();
    nodes::write_batch(&mut tx, &[node("n1", 0)], &beats, &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(nodes::oldest_heartbeat(&mut conn, "n1").await.unwrap(), Some(0));
    assert_eq!(nodes::prune_history(&mut conn, "n1", 0, 450).await.unwrap(), 5);
    assert_eq!(nodes::oldest_heartbeat(&mut conn, "n1").await.unwrap(), Some(500));
    assert_eq!(nodes::oldest_heartbeat(&mut conn, "n2").await.unwrap(), None);
}

#[tokio::test]
async fn old_activity_is_pruned_but_each_node_keeps_its_newest_events() {
    use crate::nodes::{self, NodeEvent};
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let event = |node: &str, at: i64| NodeEvent {
        id: crate::new_id(),
        node_id: node.into(),
        at,
        kind: "job.started".into(),
        severity: "INFO".into(),
        message: format!("at {at}"),
        metadata: "{}".into(),
    };
    let mut events: Vec<_> = (0..10).map(|t| event("n1", t * 100)).collect();
    events.push(event("n2", 0));
    let mut tx = store.begin().await.unwrap();
    nodes::write_batch(&mut tx, &[node("n1", 0), node("n2", 0)], &[], &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    // Older than 850: 0..800 (9 events); the newest 3 (700, 800, 900) stay whatever their age.
    assert_eq!(nodes::prune_events(&mut conn, "n1", 850, 3).await.unwrap(), 7);
    let left: Vec<i64> = nodes::events(&mut conn, "n1", 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(left, [900, 800, 700]);
    assert_eq!(
        nodes::prune_events(&mut conn, "n1", 850, 3).await.unwrap(),
        0,
        "nothing more to prune"
    );
    assert_eq!(nodes::prune_events(&mut conn, "n2", 850, 0).await.unwrap(), 1);
}

#[tokio::test]
async fn node_tokens_are_found_by_prefix_scoped_by_owner_and_revoked_softly() {
    use crate::tokens::{self, NodeToken};
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let token = NodeToken {
        id: crate::new_id(),
        prefix: "abcdefgh".into(),
        token_hash: "h".into(),
        name: "web".into(),
        node_id: Some("web-1".into()),
        created_by: "u1".into(),
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
    };
    let mut conn = store.conn().await.unwrap();
    tokens::insert(&mut conn, &token).await.unwrap();
    let clash = tokens::insert(
        &mut conn,
        &NodeToken {
            id: crate::new_id(),
            ..token.clone()
        },
    )
    .await;
    assert!(clash.unwrap_err().is_conflict());
    assert_eq!(
        tokens::by_prefix(&mut conn, "abcdefgh").await.unwrap().unwrap(),
        token
    );
    assert!(
        tokens::by_id(&mut conn, &token.id, Some("u2"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(tokens::by_id(&mut conn, &token.id, None).await.unwrap().is_some());
    assert_eq!(tokens::list(&mut conn, Some("u2")).await.unwrap().len(), 0);
    assert_eq!(tokens::list(&mut conn, Some("u1")).await.unwrap().len(), 1);
    let revoked = tokens::revoke(&mut conn, &token.id, 50).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(50));
    let again = tokens::revoke(&mut conn, &token.id, 90).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(50));
    tokens::touch(&mut conn, &token.id, 70).await.unwrap();
    assert_eq!(
        tokens::by_prefix(&mut conn, "abcdefgh")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(70)
    );
}

mod jobs {
    use super::store;
    use crate::jobs::{self, Appended, NewJob, Stream};
    use crate::testing::TestDatabase;
    use crate::{Store, new_id, now_ms};

    async fn queue(store: &Store, node_id: &str, created_at: i64) -> jobs::Job {
        let mut conn = store.conn().await.unwrap();
        jobs::insert(
            &mut conn,
            &NewJob {
                id: &new_id(),
                node_id,
                preset_name: "p",
                preset_version: "1.0.0",
                variables: "{}",
                script: "#!/usr/bin/env bash\n",
                created_by: "u",
                created_at,
                timeout_seconds: 3600,
                policy_id: None,
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn concurrent_claimers_get_every_job_exactly_once() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let now = now_ms();
        let mut all = Vec::new();
        for i in 0..500 {
            all.push(queue(&store, "web-1", now + i).await.id);
        }
        let mut claimers = Vec::new();
        for c in 0..32 {
            let store = store.clone();
            claimers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = jobs::claim(&store, "web-1", &format!("t{c}"), now_ms())
                    .await
                    .unwrap()
                {
                    assert_eq!(job.status, jobs::RUNNING);
                    assert_eq!(job.claimed_by.as_deref(), Some(format!("t{c}").as_str()));
                    got.push(job.id);
                }
                got
            }));
        }
        let mut claimed = Vec::new();
        for claimer in claimers {
            claimed.extend(claimer.await.unwrap());
        }
        let count = claimed.len();
        claimed.sort();
        claimed.dedup();
        assert_eq!(claimed.len(), count, "a job was handed out twice");
        all.sort();
        assert_eq!(claimed, all, "a job was lost");
    }

    #[tokio::test]
    async fn a_claim_takes_the_oldest_job_of_that_node_only() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let older = queue(&store, "a", 10).await;
        let _newer = queue(&store, "a", 20).await;
        let _other = queue(&store, "b", 5).await;
        let claimed = jobs::claim(&store, "a", "t", 30).await.unwrap().unwrap();
        assert_eq!(claimed.id, older.id);
        assert_eq!(claimed.started_at, Some(30));
        assert!(jobs::claim(&store, "c", "t", 30).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn output_past_the_cap_is_dropped_and_flagged() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let job = queue(&store, "a", 1).await;
        assert_eq!(
            jobs::append_output(&store, &job.id, &[(Stream::Stdout, b"early")], 10)
                .await
                .unwrap(),
            Appended::NotRunning
        );
        jobs::claim(&store, "a", "t", 2).await.unwrap().unwrap();
        let first = jobs::append_output(
            &store,
            &job.id,
            &[(Stream::Stdout, b"hello "), (Stream::Stderr, b"oops")],
            10,
        )
        .await
        .unwrap();
        let Appended::Stored(first) = first else {
            panic!("not stored")
        };
        assert_eq!(first.len(), 2);
        jobs::append_output(&store, &job.id, &[(Stream::Stdout, b"world")], 10)
            .await
            .unwrap();
        let mut conn = store.conn().await.unwrap();
        let stored = jobs::get(&mut conn, &job.id).await.unwrap().unwrap();
        assert_eq!((stored.stdout_bytes, stored.stderr_bytes), (6, 4));
        assert!(stored.stdout_truncated);
        assert!(!stored.stderr_truncated);
        let (tail, more) = jobs::tail(&mut conn, &job.id, Stream::Stdout, 1024)
            .await
            .unwrap();
        assert_eq!((tail.as_str(), more), ("hello ", false));
        let all = jobs::chunks(&mut conn, &job.id, None, -1, 100).await.unwrap();
        assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(all[1].stream, Stream::Stderr);
    }

    #[tokio::test]
    async fn the_tail_is_the_end_of_the_log_read_from_the_last_chunks() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let job = queue(&store, "a", 1).await;
        jobs::claim(&store, "a", "t", 2).await.unwrap().unwrap();
        for i in 0..200 {
            let line = format!("line {i:03}\n");
            jobs::append_output(&store, &job.id, &[(Stream::Stdout, line.as_bytes())], 1 << 20)
                .await
                .unwrap();
        }
        let mut conn = store.conn().await.unwrap();
        let (tail, more) = jobs::tail(&mut conn, &job.id, Stream::Stdout, 18).await.unwrap();
        assert_eq!(tail, "line 198\nline 199\n");
        assert!(more);
        let (whole, more) = jobs::tail(&mut conn, &job.id, Stream::Stdout, 1 << 20)
            .await
            .unwrap();
        assert_eq!(whole.len(), 200 * 9);
        assert!(whole.starts_with("line 000\n"));
        assert!(!more);
    }

    #[tokio::test]
    async fn completion_flips_the_status_once_and_honours_a_cancel_request() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        for (exit, cancel, expected) in [
            (0, false, jobs::SUCCEEDED),
            (3, false, jobs::FAILED),
            (143, true, jobs::CANCELLED),
        ] {
            let job = queue(&store, "a", 1).await;
            jobs::claim(&store, "a", "t", 2).await.unwrap().unwrap();
            if cancel {
                let mut conn = store.conn().await.unwrap();
                jobs::request_cancel(&mut conn, &job.id, 3)
                    .await
                    .unwrap()
                    .unwrap();
            }
            let (done, chunks) =
                jobs::complete(&store, &job.id, exit, &[(Stream::Stdout, b"bye")], 1 << 20, 4)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(done.status, expected);
            assert_eq!(done.exit_code, Some(exit));
            assert_eq!(done.finished_at, Some(4));
            assert_eq!(chunks.len(), 1);
            assert!(
                jobs::complete(&store, &job.id, 0, &[], 1 << 20, 5)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[tokio::test]
    async fn a_queued_job_cancels_but_a_running_one_only_records_the_request() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let job = queue(&store, "a", 1).await;
        let mut conn = store.conn().await.unwrap();
        assert!(
            jobs::request_cancel(&mut conn, &job.id, 2)
                .await
                .unwrap()
                .is_none()
        );
        let cancelled = jobs::cancel_queued(&mut conn, &job.id, None, 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cancelled.status, jobs::CANCELLED);
        assert!(
            jobs::cancel_queued(&mut conn, &job.id, None, 3)
                .await
                .unwrap()
                .is_none()
        );
        drop(conn);
        assert!(jobs::claim(&store, "a", "t", 4).await.unwrap().is_none());

        let running = queue(&store, "a", 5).await;
        jobs::claim(&store, "a", "t", 6).await.unwrap().unwrap();
        let (failed, _) = jobs::fail(
            &store,
            &running.id,
            "the node went offline",
            jobs::Ending::Failed,
            1 << 20,
            7,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(failed.status, jobs::FAILED);
        assert_eq!(failed.error.as_deref(), Some("the node went offline"));
        let mut conn = store.conn().await.unwrap();
        let (stderr, _) = jobs::tail(&mut conn, &running.id, Stream::Stderr, 1024)
            .await
            .unwrap();
        assert!(stderr.contains("the node went offline"));
    }

    #[tokio::test]
    async fn the_job_list_filters_by_owner_node_and_status_newest_first() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let first = queue(&store, "a", 1).await;
        let second = queue(&store, "b", 2).await;
        let mut conn = store.conn().await.unwrap();
        let all = jobs::list(&mut conn, &jobs::JobFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|j| &j.id).collect::<Vec<_>>(),
            vec![&second.id, &first.id]
        );
        let only_a = jobs::JobFilter {
            node_id: Some("a"),
            status: Some(jobs::QUEUED),
            owner: Some("u"),
        };
        assert_eq!(jobs::list(&mut conn, &only_a, 10).await.unwrap().len(), 1);
        let nobody = jobs::JobFilter {
            owner: Some("someone-else"),
            ..Default::default()
        };
        assert!(jobs::list(&mut conn, &nobody, 10).await.unwrap().is_empty());
        assert_eq!(
            jobs::list(&mut conn, &jobs::JobFilter::default(), 1)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn commits_through_the_writer_are_durable_against_a_power_loss() {
    let db = TestDatabase::new().await;
    let store = db.store().await;
    let mut writer = store.write_conn().await.unwrap();
    match store.dialect() {
        crate::Dialect::Sqlite => {
            // 2 is FULL: the WAL is synced at every commit; the read pool may stay NORMAL (1).
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *writer)
                .await
                .unwrap();
            assert_eq!(level, 2);
            let mut reader = store.conn().await.unwrap();
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *reader)
                .await
                .unwrap();
            assert_eq!(level, 1);
        }
        crate::Dialect::Postgres => {
            let commit: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&mut *writer)
                .await
                .unwrap();
            assert_eq!(commit, "on");
        }
    }
}

mod writes {
    use sqlx::Row;

    use super::store;
    use crate::audit::{self, NewAuditEvent};
    use crate::testing::TestDatabase;
    use crate::{Dialect, Store, StoreError};

    fn event(action: &str) -> NewAuditEvent {
        NewAuditEvent {
            user_id: None,
            user_email: None,
            action: action.into(),
            resource_type: None,
            resource_id: None,
            ip: None,
            metadata: None,
        }
    }

    async fn count(store: &Store, action: &str) -> i64 {
        let mut conn = store.conn().await.unwrap();
        sqlx::query("SELECT COUNT(*) AS n FROM audit_events WHERE action = $1")
            .bind(action)
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// Records `action`, then fails when told to: what it wrote must vanish with it.
    async fn record(store: &Store, action: &'static str, fail: bool) -> Result<(), StoreError> {
        store
            .write(move |tx| {
                Box::pin(async move {
                    audit::record(tx, &event(action)).await?;
                    if fail {
                        sqlx::query("SELECT * FROM no_such_table")
                            .execute(&mut *tx)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Records `action` in one call to the database; when told to fail, that call writes the row
    /// and then fails on a second row (one without an action on SQLite, a second copy of the first
    /// on Postgres, where the id is the key): the first must vanish with it.
    async fn record_in_one_call(store: &Store, action: &'static str, fail: bool) -> Result<(), StoreError> {
        let dialect = store.dialect();
        let id = crate::new_id();
        store
            .write_call(move |conn, lead| {
                Box::pin(async move {
                    let insert = "INSERT INTO audit_events (id, at, action) VALUES ($1, 0, $2)";
                    let sql = match (dialect, fail) {
                        (Dialect::Sqlite, false) => format!("{lead}{insert}"),
                        (Dialect::Sqlite, true) => format!(
                            "{lead}{insert}; INSERT INTO audit_events (id, at, action) VALUES ($1, 0, NULL)"
                        ),
                        (Dialect::Postgres, false) => insert.to_owned(),
                        (Dialect::Postgres, true) => format!("WITH first AS ({insert}) {insert}"),
                    };
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .bind(action)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    #[tokio::test]
    async fn one_call_writes_and_plain_writes_share_commits_and_a_failing_one_undoes_only_itself() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let mut writers = Vec::new();
        for i in 0..300 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let fail = i % 10 == 3 || i % 10 == 4;
                let action = if fail { "test.failed" } else { "test.kept" };
                let outcome = if i % 2 == 0 {
                    record_in_one_call(&store, action, fail).await
                } else {
                    record(&store, action, fail).await
                };
                (fail, outcome)
            }));
        }
        for writer in writers {
            let (fail, outcome) = writer.await.unwrap();
            assert_eq!(outcome.is_err(), fail, "{outcome:?}");
        }
        assert_eq!(count(&store, "test.kept").await, 240);
        assert_eq!(
            count(&store, "test.failed").await,
            0,
            "a failed write left rows behind"
        );
    }

    #[tokio::test]
    async fn a_one_call_write_that_fails_alone_leaves_nothing_and_the_next_one_commits() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        record_in_one_call(&store, "test.failed", true)
            .await
            .expect_err("a duplicate row was accepted");
        record_in_one_call(&store, "test.kept", false).await.unwrap();
        record(&store, "test.kept", false).await.unwrap();
        assert_eq!(count(&store, "test.failed").await, 0);
        assert_eq!(count(&store, "test.kept").await, 2);
    }

    #[tokio::test]
    async fn concurrent_writes_all_commit_and_a_failing_one_undoes_only_itself() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let mut writers = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let fail = i % 10 == 3;
                let action = if fail { "test.failed" } else { "test.kept" };
                (fail, record(&store, action, fail).await)
            }));
        }
        for writer in writers {
            let (fail, outcome) = writer.await.unwrap();
            assert_eq!(outcome.is_err(), fail, "{outcome:?}");
        }
        assert_eq!(count(&store, "test.kept").await, 180);
        assert_eq!(
            count(&store, "test.failed").await,
            0,
            "a failed write left rows behind"
        );
    }

    #[tokio::test]
    async fn a_one_call_write_that_fails_before_its_call_never_costs_another_its_answered_write() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        // A write that holds the writer until told, so the next two queue up behind it together.
        let (started, is_started) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        Box::pin(async move {
                            let _ = started.send(());
                            let _ = released.await;
                            Ok(())
                        })
                    })
                    .await
            })
        };
        is_started.await.unwrap();
        let kept = {
            let store = store.clone();
            tokio::spawn(async move { record(&store, "test.kept", false).await })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // Its savepoint is never opened: a rollback to it must not reach the write before it.
        let refused = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_call(|_, _| {
                        Box::pin(async {
                            Err::<(), _>(StoreError::Database("refused before its call".into()))
                        })
                    })
                    .await
            })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert!(refused.await.unwrap().is_err(), "a refused write was answered Ok");
        let kept = kept.await.unwrap();
        assert_eq!(
            count(&store, "test.kept").await,
            i64::from(kept.is_ok()),
            "the write before it was answered {kept:?}"
        );
    }

    #[tokio::test]
    async fn a_transaction_of_its_own_gets_the_writer_while_group_writes_keep_coming() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        // More writers than one batch takes, so the queue is never empty after a commit.
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..600 {
            let (store, stop) = (store.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    record(&store, "test.load", false).await.unwrap();
                }
            }));
        }
        while count(&store, "test.load").await < 600 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let own = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut tx = store.begin().await?;
            audit::record(&mut tx, &event("test.own")).await?;
            tx.commit().await
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for writer in load {
            writer.await.unwrap();
        }
        own.expect("the group writes never handed the writer over")
            .unwrap();
        assert_eq!(count(&store, "test.own").await, 1);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_going() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let panicking = store.write(|tx| {
            Box::pin(async move {
                audit::record(tx, &event("test.panicked")).await?;
                if std::hint::black_box(true) {
                    panic!("a bug in a write");
                }
                Ok(())
            })
        });
        let beside = record(&store, "test.beside", false);
        let (panicked, beside) = tokio::join!(panicking, beside);
        assert!(panicked.is_err(), "the panic was answered as a success");
        beside.unwrap();
        record(&store, "test.after", false).await.unwrap();
        assert_eq!(count(&store, "test.panicked").await, 0);
        assert_eq!(count(&store, "test.beside").await, 1);
        assert_eq!(count(&store, "test.after").await, 1);
    }
}
