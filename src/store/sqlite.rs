//! STUB: SQLite store, replaced by the real implementation.
use super::{PoolConfig, StoreError};

pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(_url: &str, _pool: &PoolConfig) -> Result<Self, StoreError> {
        todo!()
    }
}
