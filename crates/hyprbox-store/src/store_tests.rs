//! The store's behaviour on whichever backend the test suite runs against.

use crate::audit::{self, AuditFilter, NewAuditEvent};
use crate::testing::TestDatabase;
use crate::users::{self, AdminGuarded, NewUser, Role};
use crate::{ConnectOptions, Store, StoreError, now_ms, resets, sessions};

async fn store(db: &TestDatabase) -> Store {
    let store = Store::connect(&db.url, &ConnectOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
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
    let update = sqlx::query("UPDATE audit_events SET action = 'x'")
        .execute(&mut *conn)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_events").execute(&mut *conn).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
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
