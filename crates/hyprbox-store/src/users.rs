//! Users: accounts, roles, token versions, and the guards that keep at least one ADMIN.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{StoreError, new_id, now_ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Operator => "OPERATOR",
            Role::Viewer => "VIEWER",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "ADMIN" => Some(Role::Admin),
            "OPERATOR" => Some(Role::Operator),
            "VIEWER" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// ADMIN > OPERATOR > VIEWER.
    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Operator => 1,
            Role::Admin => 2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    /// Trimmed and lower-cased; the unique key for sign-in.
    pub email: String,
    pub name: String,
    pub language: String,
    pub role: Role,
    pub password_hash: String,
    /// Bumped to revoke every outstanding token of the user at once.
    pub token_version: i64,
    pub created_at: i64,
}

pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

const COLUMNS: &str = "id, email, name, language, role, password_hash, token_version, created_at";

fn from_row(row: &AnyRow) -> Result<User, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        language: row.try_get("language")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Database(format!("unknown role {role}")))?,
        password_hash: row.try_get("password_hash")?,
        token_version: row.try_get("token_version")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Inserts a user. A duplicate email is [`StoreError::Conflict`].
pub async fn insert(conn: &mut AnyConnection, new: &NewUser<'_>) -> Result<User, StoreError> {
    insert_with_id(conn, &new_id(), new).await
}

async fn insert_with_id(conn: &mut AnyConnection, id: &str, new: &NewUser<'_>) -> Result<User, StoreError> {
    let sql = format!(
        "INSERT INTO users (id, email, name, language, role, password_hash, token_version, created_at, updated_at) \
         VALUES ($1, $2, $3, 'en', $4, $5, 0, $6, $6) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(new.email)
        .bind(new.name)
        .bind(new.role.as_str())
        .bind(new.password_hash)
        .bind(now_ms())
        .fetch_one(&mut *conn)
        .await?;
    from_row(&row)
}

/// Registers a user; the very first registration ever becomes ADMIN, every later one gets the role
/// `otherwise`, or `None` (nothing written) when `otherwise` is `None`: registration is closed.
///
/// Race-safe on both backends: the first-admin claim is a primary-key insert into `bootstrap`, which
/// exactly one transaction can win. Call inside a transaction so a failed insert (duplicate email)
/// or a closed registration gives the claim back.
pub async fn register(
    conn: &mut AnyConnection,
    email: &str,
    name: &str,
    password_hash: &str,
    otherwise: Option<Role>,
) -> Result<Option<User>, StoreError> {
    let id = new_id();
    let claimed = sqlx::query(
        "INSERT INTO bootstrap (id, user_id, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let role = match (claimed, otherwise) {
        (true, _) => Role::Admin,
        (false, Some(role)) => role,
        (false, None) => return Ok(None),
    };
    let new = NewUser {
        email,
        name,
        role,
        password_hash,
    };
    insert_with_id(conn, &id, &new).await.map(Some)
}

/// True once the instance has its first ADMIN (made by the first registration outside production,
/// or by [`create_admin`]).
pub async fn is_bootstrapped(conn: &mut AnyConnection) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM bootstrap")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Creates an ADMIN from the server's own machine (`hyprbox users create-admin`), and marks the
/// instance as having its first ADMIN when it had none, which opens registration in production.
/// A duplicate email is [`StoreError::Conflict`].
pub async fn create_admin(
    conn: &mut AnyConnection,
    email: &str,
    name: &str,
    password_hash: &str,
) -> Result<User, StoreError> {
    let new = NewUser {
        email,
        name,
        role: Role::Admin,
        password_hash,
    };
    let user = insert(conn, &new).await?;
    sqlx::query(
        "INSERT INTO bootstrap (id, user_id, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&user.id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(user)
}

pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn by_email(conn: &mut AnyConnection, email: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every user, oldest first.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Changes name and/or language; `None` keeps the stored value.
pub async fn update_profile(
    conn: &mut AnyConnection,
    id: &str,
    name: Option<&str>,
    language: Option<&str>,
) -> Result<Option<User>, StoreError> {
    let sql = format!(
        "UPDATE users SET name = COALESCE($1, name), language = COALESCE($2, language), updated_at = $3 \
         WHERE id = $4 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .bind(language)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Sets a new password hash and bumps the token version (every outstanding token dies).
pub async fn set_password(
    conn: &mut AnyConnection,
    id: &str,
    password_hash: &str,
) -> Result<Option<User>, StoreError> {
    let sql = format!(
        "UPDATE users SET password_hash = $1, token_version = token_version + 1, updated_at = $2 \
         WHERE id = $3 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(password_hash)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// What a change guarded by "there is always an ADMIN" came to.
#[derive(Debug)]
pub enum AdminGuarded<T> {
    Done(T),
    NotFound,
    /// The change would leave the installation without an ADMIN; nothing was changed.
    LastAdmin,
}

/// Takes the `admins` row lock so concurrent role changes and deletes are checked one at a time
/// (otherwise two admins demoting each other could both see "another admin is left").
async fn lock_admins(conn: &mut AnyConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE store_locks SET name = name WHERE name = 'admins'")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn admin_count(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM users WHERE role = 'ADMIN'")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("n")?)
}

/// Changes a user's role and bumps their token version. Call inside a transaction.
pub async fn set_role(
    conn: &mut AnyConnection,
    id: &str,
    role: Role,
) -> Result<AdminGuarded<User>, StoreError> {
    lock_admins(conn).await?;
    let Some(current) = by_id(conn, id).await? else {
        return Ok(AdminGuarded::NotFound);
    };
    if current.role == Role::Admin && role != Role::Admin && admin_count(conn).await? <= 1 {
        return Ok(AdminGuarded::LastAdmin);
    }
    let sql = format!(
        "UPDATE users SET role = $1, token_version = token_version + 1, updated_at = $2 \
         WHERE id = $3 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(role.as_str())
        .bind(now_ms())
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(AdminGuarded::Done(from_row(&row)?))
}

/// Deletes a user (their reset tokens go with them). Call inside a transaction.
pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<AdminGuarded<User>, StoreError> {
    lock_admins(conn).await?;
    let Some(current) = by_id(conn, id).await? else {
        return Ok(AdminGuarded::NotFound);
    };
    if current.role == Role::Admin && admin_count(conn).await? <= 1 {
        return Ok(AdminGuarded::LastAdmin);
    }
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(AdminGuarded::Done(current))
}
