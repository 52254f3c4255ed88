//! SQLite: apps and their API keys.

use super::*;

async fn insert_app(conn: &mut SqliteConnection, app: &NewApp) -> Result<(), sqlx::Error> {
    sqlx::query("insert into apps (id, name, tier, created_at) values ($1, $2, $3, $4)")
        .bind(uuid_text(app.id.as_uuid()))
        .bind(&app.name)
        .bind(app.tier.as_str())
        .bind(time_text(app.created_at))
        .execute(&mut *conn)
        .await?;
    insert_key(
        conn,
        app.id,
        &app.key_hash,
        &app.key_prefix,
        app.created_at,
        app.key_shown,
    )
    .await
}

async fn insert_key(
    conn: &mut SqliteConnection,
    app: AppId,
    hash: &KeyHash,
    prefix: &str,
    created_at: DateTime<Utc>,
    shown: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into api_keys (id, app_id, key_hash, prefix, created_at, expires_at, shown) \
         values ($1, $2, $3, $4, $5, null, $6)",
    )
    .bind(uuid_text(Uuid::now_v7()))
    .bind(uuid_text(app.as_uuid()))
    .bind(hash.to_hex())
    .bind(prefix)
    .bind(time_text(created_at))
    .bind(shown)
    .execute(conn)
    .await?;
    Ok(())
}

fn new_app_record(app: &NewApp) -> AppRecord {
    AppRecord {
        id: app.id,
        name: app.name.clone(),
        tier: app.tier,
        created_at: app.created_at,
        key_prefixes: vec![app.key_prefix.clone()],
        keys: vec![KeySummary {
            prefix: app.key_prefix.clone(),
            expires_at: None,
            shown: app.key_shown,
        }],
    }
}

impl SqliteStore {
    /// Apps (all, or the one `only`), each with the prefixes of its keys active now.
    async fn apps(&self, only: Option<AppId>) -> Result<Vec<AppRecord>, sqlx::Error> {
        let only = only.map(|id| uuid_text(id.as_uuid()));
        let rows = sqlx::query(
            "select id, name, tier, created_at from apps \
             where $1 is null or id = $1 order by created_at, id",
        )
        .bind(&only)
        .fetch_all(&self.readers)
        .await?;
        let keys = sqlx::query(
            "select app_id, prefix, expires_at, shown from api_keys \
             where ($1 is null or app_id = $1) and (expires_at is null or expires_at > $2) \
             order by created_at desc, id desc",
        )
        .bind(&only)
        .bind(time_text(Utc::now()))
        .fetch_all(&self.readers)
        .await?;
        let mut summaries: HashMap<AppId, Vec<KeySummary>> = HashMap::new();
        for key in &keys {
            summaries
                .entry(app_id_col(key, "app_id")?)
                .or_default()
                .push(KeySummary {
                    prefix: key.try_get("prefix")?,
                    expires_at: opt_time_col(key, "expires_at")?,
                    shown: key.try_get("shown")?,
                });
        }
        rows.iter()
            .map(|row| {
                let id = app_id_col(row, "id")?;
                Ok(AppRecord {
                    id,
                    name: row.try_get("name")?,
                    tier: tier_col(row, "tier")?,
                    created_at: time_col(row, "created_at")?,
                    key_prefixes: Vec::new(),
                    keys: summaries.remove(&id).unwrap_or_default(),
                })
            })
            .map(|record: Result<AppRecord, sqlx::Error>| {
                record.map(|mut r| {
                    r.key_prefixes = r.keys.iter().map(|k| k.prefix.clone()).collect();
                    r
                })
            })
            .collect()
    }
}

#[async_trait]
impl AppStore for SqliteStore {
    async fn create_app(&self, app: &NewApp) -> Result<AppRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        insert_app(&mut tx, app).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(new_app_record(app))
    }

    async fn create_app_if_none(&self, app: &NewApp) -> Result<bool, StoreError> {
        // The write lock taken at BEGIN makes check-then-insert atomic, also
        // against another process on the same file.
        let mut tx = self.begin_write().await?;
        let any: bool = sqlx::query_scalar("select exists (select 1 from apps)")
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        if any {
            tx.rollback().await.map_err(store_error)?;
            return Ok(false);
        }
        insert_app(&mut tx, app).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.apps(None).await.map_err(store_error)
    }

    async fn get_app(&self, id: AppId) -> Result<Option<AppRecord>, StoreError> {
        Ok(self
            .apps(Some(id))
            .await
            .map_err(store_error)?
            .into_iter()
            .next())
    }

    async fn rotate_key(
        &self,
        app: AppId,
        new_hash: KeyHash,
        new_prefix: &str,
        now: DateTime<Utc>,
        old_keys_expire_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let app_text = uuid_text(app.as_uuid());
        let exists: bool = sqlx::query_scalar("select exists (select 1 from apps where id = $1)")
            .bind(&app_text)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        let (now_text, expire_text) = (time_text(now), time_text(old_keys_expire_at));
        sqlx::query(
            "update api_keys set expires_at = coalesce(min(expires_at, $3), $3) \
             where app_id = $1 and (expires_at is null or expires_at > $2)",
        )
        .bind(&app_text)
        .bind(&now_text)
        .bind(&expire_text)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_key(&mut tx, app, &new_hash, new_prefix, now, true)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    async fn mark_key_shown(&self, hash: KeyHash) -> Result<(), StoreError> {
        sqlx::query("update api_keys set shown = true where key_hash = $1")
            .bind(hash.to_hex())
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn set_tier(&self, app: AppId, tier: Tier) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("update apps set tier = $2 where id = $1")
            .bind(uuid_text(app.as_uuid()))
            .bind(tier.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if tier == Tier::Standard {
            // Installs stored this hour while the app had no quota count now.
            let window = crate::store::batch::quota_window(Utc::now());
            sqlx::query(
                "insert into quota_usage as q (app_id, window_start, requests, installs) \
                 select $1, $2, 0, count(*) from postback_events \
                 where app_id = $1 and kind = 'install' and received_at >= $2 \
                 on conflict (app_id, window_start) do update \
                 set installs = max(q.installs, excluded.installs)",
            )
            .bind(uuid_text(app.as_uuid()))
            .bind(time_text(window))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(())
    }

    fn key_changes(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        None
    }

    async fn active_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "select k.key_hash, k.app_id, a.tier, k.expires_at \
             from api_keys k join apps a on a.id = k.app_id \
             where k.expires_at is null or k.expires_at > $1",
        )
        .bind(time_text(now))
        .fetch_all(&self.readers)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get("key_hash")?;
                Ok(KeyRecord {
                    hash: KeyHash::from_hex(&hash).ok_or_else(|| decode_error("key hash", "…"))?,
                    app_id: app_id_col(row, "app_id")?,
                    tier: tier_col(row, "tier")?,
                    expires_at: opt_time_col(row, "expires_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }
}
