//! STUB: PostgreSQL store, replaced by the real implementation.
use super::{PoolConfig, StoreError};

pub struct PgStore;

impl PgStore {
    pub async fn connect(_url: &str, _pool: &PoolConfig) -> Result<Self, StoreError> {
        todo!()
    }
}
