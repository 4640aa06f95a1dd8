//! The dashboard's persisted history: the server's health samples (one a minute) and the distinct
//! signed-in users of each UTC day.

use sqlx::{AnyConnection, Row};

use crate::StoreError;

/// One health sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: i64,
    pub cpu_percent: f64,
    pub memory_percent: f64,
}

pub async fn insert_sample(conn: &mut AnyConnection, sample: &Sample) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO health_samples (at, cpu_percent, memory_percent) VALUES ($1, $2, $3) \
         ON CONFLICT (at) DO NOTHING",
    )
    .bind(sample.at)
    .bind(sample.cpu_percent)
    .bind(sample.memory_percent)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Samples taken at or after `since`, oldest first.
pub async fn samples_since(conn: &mut AnyConnection, since: i64) -> Result<Vec<Sample>, StoreError> {
    let rows =
        sqlx::query("SELECT at, cpu_percent, memory_percent FROM health_samples WHERE at >= $1 ORDER BY at")
            .bind(since)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| {
            Ok(Sample {
                at: row.try_get("at")?,
                cpu_percent: row.try_get("cpu_percent")?,
                memory_percent: row.try_get("memory_percent")?,
            })
        })
        .collect()
}

/// When the first sample still kept was taken.
pub async fn first_sample_at(conn: &mut AnyConnection) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT MIN(at) AS first FROM health_samples")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("first")?)
}

/// Deletes samples older than `before`, at most `batch` of them; returns how many went.
pub async fn prune_samples(conn: &mut AnyConnection, before: i64, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM health_samples WHERE at IN \
         (SELECT at FROM health_samples WHERE at < $1 ORDER BY at LIMIT $2)",
    )
    .bind(before)
    .bind(batch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Notes that these users were active on `day` (a UTC day number); known pairs are skipped.
pub async fn record_daily_users(
    conn: &mut AnyConnection,
    day: i64,
    users: &[String],
) -> Result<(), StoreError> {
    for user in users {
        sqlx::query(
            "INSERT INTO ux_daily_users (day, user_id) VALUES ($1, $2) ON CONFLICT (day, user_id) DO NOTHING",
        )
        .bind(day)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Distinct users per day from `from_day` on: `(day, users)`, oldest first, days without any left out.
pub async fn daily_user_counts(
    conn: &mut AnyConnection,
    from_day: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT day, CAST(COUNT(*) AS BIGINT) AS users FROM ux_daily_users WHERE day >= $1 \
         GROUP BY day ORDER BY day",
    )
    .bind(from_day)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("day")?, row.try_get("users")?)))
        .collect()
}

/// Forgets days before `before_day`.
pub async fn prune_daily_users(conn: &mut AnyConnection, before_day: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM ux_daily_users WHERE day < $1")
        .bind(before_day)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::testing::TestDatabase;

    async fn store(db: &TestDatabase) -> Store {
        db.store().await
    }

    #[tokio::test]
    async fn health_samples_are_kept_in_order_and_pruned_in_batches() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let mut conn = store.conn().await.unwrap();
        assert_eq!(first_sample_at(&mut conn).await.unwrap(), None);
        for at in [3_000, 1_000, 2_000] {
            let sample = Sample {
                at,
                cpu_percent: 10.0,
                memory_percent: 20.5,
            };
            insert_sample(&mut conn, &sample).await.unwrap();
        }
        // The same minute twice (a restart within it) is not an error.
        insert_sample(
            &mut conn,
            &Sample {
                at: 1_000,
                cpu_percent: 1.0,
                memory_percent: 1.0,
            },
        )
        .await
        .unwrap();
        assert_eq!(first_sample_at(&mut conn).await.unwrap(), Some(1_000));
        let all = samples_since(&mut conn, 0).await.unwrap();
        assert_eq!(
            all.iter().map(|s| s.at).collect::<Vec<_>>(),
            vec![1_000, 2_000, 3_000]
        );
        assert_eq!(all[0].memory_percent, 20.5);
        assert_eq!(samples_since(&mut conn, 2_000).await.unwrap().len(), 2);
        assert_eq!(prune_samples(&mut conn, 3_000, 1).await.unwrap(), 1);
        assert_eq!(prune_samples(&mut conn, 3_000, 10).await.unwrap(), 1);
        assert_eq!(first_sample_at(&mut conn).await.unwrap(), Some(3_000));
    }

    #[tokio::test]
    async fn daily_users_count_each_user_once_a_day() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let mut conn = store.conn().await.unwrap();
        record_daily_users(&mut conn, 10, &["a".into(), "b".into()])
            .await
            .unwrap();
        record_daily_users(&mut conn, 10, &["a".into()]).await.unwrap();
        record_daily_users(&mut conn, 12, &["a".into()]).await.unwrap();
        record_daily_users(&mut conn, 5, &["old".into()]).await.unwrap();
        assert_eq!(
            daily_user_counts(&mut conn, 6).await.unwrap(),
            vec![(10, 2), (12, 1)]
        );
        assert_eq!(prune_daily_users(&mut conn, 6).await.unwrap(), 1);
        assert_eq!(daily_user_counts(&mut conn, 0).await.unwrap().len(), 2);
    }
}
