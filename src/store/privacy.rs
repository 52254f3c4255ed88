//! Privacy's storage types and trait: erasing one user on request, with a receipt
//! that never holds the identifier (tables `erasures`, `erasure_salts`, migration
//! 0014). Clearing old raw data is part of `MaintenanceStore::prune`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::StoreError;
use crate::domain::{AppId, IdentifierKind};

/// What one erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureCounts {
    pub attributions: u64,
    pub events: u64,
    pub deliveries: u64,
    pub outbox: u64,
}

/// One erasure request carried out, as `erasures` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErasureReceipt {
    pub id: Uuid,
    pub app_id: AppId,
    pub erased_at: DateTime<Utc>,
    pub kind: IdentifierKind,
    /// Hex HMAC-SHA256 of `kind:value` (the canonical value) under the app's salt.
    pub value_hash: String,
    pub counts: ErasureCounts,
}

/// Erasure on request (`store/<backend>/privacy.rs`).
#[async_trait]
pub trait PrivacyStore: Send + Sync + 'static {
    /// In ONE transaction, remove the user that `kind`/`value` (any letter case)
    /// identifies in `app`: its attribution and `user_identities`, every stored event
    /// that carries any of the user's identifiers (with their dedupe keys), the
    /// delivery log rows of those events or carrying those identifiers, and the
    /// outbox messages of those events; then write a receipt. Finding nothing is
    /// not an error: the receipt then counts zeros.
    ///
    /// The user's identifiers are those of its attribution (`user_identities`) or,
    /// without one, those of the stored events that carry `value`; plus `value`.
    async fn erase_user(
        &self,
        app: AppId,
        kind: IdentifierKind,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<ErasureReceipt, StoreError>;

    /// The app's receipts, newest first, at most `limit`.
    async fn list_erasures(
        &self,
        app: AppId,
        limit: u32,
    ) -> Result<Vec<ErasureReceipt>, StoreError>;
}

/// A new salt: 32 random bytes, hex.
pub(crate) fn new_salt() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The receipt's hash of an identifier: hex HMAC-SHA256 of `kind:value` keyed with
/// the app's salt, so equal requests give equal hashes (an operator holding the
/// salt can check "was this one erased?") while the value cannot be read back.
pub fn value_hash(salt: &str, kind: IdentifierKind, canonical_value: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes any key length");
    mac.update(kind.column().as_bytes());
    mac.update(b":");
    mac.update(canonical_value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The identifier kind named by its column, as stored.
pub(crate) fn kind_from_column(column: &str) -> Option<IdentifierKind> {
    IdentifierKind::ALL
        .into_iter()
        .find(|k| k.column() == column)
}

/// A user's identifiers, grouped by kind in `IdentifierKind::ALL` order.
#[derive(Debug, Default)]
pub(crate) struct UserIds(pub [Vec<String>; 6]);

impl UserIds {
    pub fn add(&mut self, kind: IdentifierKind, value: &str) {
        let index = IdentifierKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("kind is in ALL");
        let values = &mut self.0[index];
        if !values.iter().any(|v| v == value) {
            values.push(value.to_owned());
        }
    }

    /// `(kind, values)` for every kind, empty ones included (they match nothing).
    pub fn by_kind(&self) -> impl Iterator<Item = (IdentifierKind, &Vec<String>)> {
        IdentifierKind::ALL.into_iter().zip(self.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_salt_kind_and_value_and_hold_no_value() {
        let h = value_hash("salt-a", IdentifierKind::Idfa, "ABC");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("ABC"));
        assert_eq!(h, value_hash("salt-a", IdentifierKind::Idfa, "ABC"));
        assert_ne!(h, value_hash("salt-b", IdentifierKind::Idfa, "ABC"));
        assert_ne!(h, value_hash("salt-a", IdentifierKind::Idfv, "ABC"));
        assert_ne!(h, value_hash("salt-a", IdentifierKind::Idfa, "ABD"));
    }
}
