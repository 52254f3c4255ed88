//! Domain types shared by every layer: apps, keys, tiers, partners, parsed postbacks.
//! Holding one of these means it is valid; constructors are the only way in.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

mod partner_id;

pub use partner_id::{InputFormat, Method, PartnerId, UnknownPartner};

/// An app's id: a UUID, shown and parsed in its hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(Uuid);

impl AppId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for AppId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a valid app id (expected a UUID)")]
pub struct InvalidAppId;

impl FromStr for AppId {
    type Err = InvalidAppId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| InvalidAppId)
    }
}

/// API restriction level: `standard` apps have an hourly postback quota, `enterprise` none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Standard,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown tier {0:?} (expected standard or enterprise)")]
pub struct InvalidTier(String);

impl FromStr for Tier {
    type Err = InvalidTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(Tier::Standard),
            "enterprise" => Ok(Tier::Enterprise),
            other => Err(InvalidTier(other.to_owned())),
        }
    }
}

/// Prefix of every API key, so secret scanners can recognise a leaked one.
pub const API_KEY_PREFIX: &str = "pbgk_";
/// How many characters of a key (after [`API_KEY_PREFIX`]) are kept in clear for display.
const DISPLAY_PREFIX_CHARS: usize = 8;

/// A secret API key as presented by a caller or freshly generated.
/// It never prints its value: `Debug` and `Display` are redacted; use [`ApiKey::expose`]
/// at the one place the key is shown to its owner.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// 256 random bits, hex-encoded, behind a fixed prefix.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(format!("{API_KEY_PREFIX}{}", hex::encode(bytes)))
    }

    /// Wrap a key presented by a caller. Whitespace around it is ignored.
    pub fn presented(value: &str) -> Option<Self> {
        let value = value.trim();
        (!value.is_empty() && value.len() <= 256).then(|| Self(value.to_owned()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The part shown in listings and on the status page, e.g. `pbgk_1a2b3c4d`.
    pub fn display_prefix(&self) -> String {
        let end = (API_KEY_PREFIX.len() + DISPLAY_PREFIX_CHARS).min(self.0.len());
        self.0.get(..end).unwrap_or_default().to_owned()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it looks like a key this server makes (`pbgk_` + 64 hex digits).
    pub fn has_our_format(&self) -> bool {
        self.0
            .strip_prefix(API_KEY_PREFIX)
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// SHA-256 of an API key: what is stored and looked up. Keys are 256-bit random,
/// so a fast unsalted hash is enough (nothing to brute-force).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Constant-time comparison, used to confirm a hash-map hit.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// Whether a delivery is an install (may create an attribution) or any other event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Install,
    Event,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Install => "install",
            EventKind::Event => "event",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "install" => Some(EventKind::Install),
            "event" => Some(EventKind::Event),
            _ => None,
        }
    }
}

/// `not_connected` until the first accepted attributed install, then `connected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    NotConnected,
    Connected,
}

/// The four attribution dimensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segments {
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub adgroup: Option<String>,
    pub ad: Option<String>,
}

impl Segments {
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.campaign.is_none()
            && self.adgroup.is_none()
            && self.ad.is_none()
    }
}

/// Device and user identifiers, in the order users are matched by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifiers {
    pub user_id: Option<String>,
    pub idfa: Option<String>,
    pub idfv: Option<String>,
    pub google_aid: Option<String>,
    pub android_id: Option<String>,
    pub partner_device_id: Option<String>,
}

impl Identifiers {
    pub fn is_empty(&self) -> bool {
        self.pairs().all(|(_, v)| v.is_none())
    }

    /// Put the advertising and vendor ids in their one stored letter case: IDFA and IDFV
    /// upper case (as Apple prints them), Google advertising ids lower case (as Google
    /// does). They are UUIDs whose case means nothing, and partners differ in it, so one
    /// device must not become two users. User ids, Android ids and partner device ids
    /// keep their case. ASCII only: the length of a value never changes.
    pub fn canonicalize_case(&mut self) {
        for (kind, id) in [
            (IdentifierKind::Idfa, &mut self.idfa),
            (IdentifierKind::Idfv, &mut self.idfv),
            (IdentifierKind::GoogleAid, &mut self.google_aid),
        ] {
            if let Some(value) = id {
                if let std::borrow::Cow::Owned(canonical) = kind.canonical(value) {
                    *value = canonical;
                }
            }
        }
    }

    /// `(column name, value)` in matching priority order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, Option<&str>)> {
        [
            ("user_id", self.user_id.as_deref()),
            ("idfa", self.idfa.as_deref()),
            ("idfv", self.idfv.as_deref()),
            ("google_aid", self.google_aid.as_deref()),
            ("android_id", self.android_id.as_deref()),
            ("partner_device_id", self.partner_device_id.as_deref()),
        ]
        .into_iter()
    }
}

/// Identifiers a user can be looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    UserId,
    Idfa,
    Idfv,
    GoogleAid,
    AndroidId,
    PartnerDeviceId,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 6] = [
        IdentifierKind::UserId,
        IdentifierKind::Idfa,
        IdentifierKind::Idfv,
        IdentifierKind::GoogleAid,
        IdentifierKind::AndroidId,
        IdentifierKind::PartnerDeviceId,
    ];

    /// `value` in the letter case it is stored in (partners.md §1): IDFA and IDFV
    /// upper case, Google advertising ids lower case, everything else as sent.
    pub fn canonical(self, value: &str) -> std::borrow::Cow<'_, str> {
        match self {
            IdentifierKind::Idfa | IdentifierKind::Idfv
                if value.bytes().any(|b| b.is_ascii_lowercase()) =>
            {
                value.to_ascii_uppercase().into()
            }
            IdentifierKind::GoogleAid if value.bytes().any(|b| b.is_ascii_uppercase()) => {
                value.to_ascii_lowercase().into()
            }
            _ => value.into(),
        }
    }

    /// The column (and query parameter) name.
    pub fn column(self) -> &'static str {
        match self {
            IdentifierKind::UserId => "user_id",
            IdentifierKind::Idfa => "idfa",
            IdentifierKind::Idfv => "idfv",
            IdentifierKind::GoogleAid => "google_aid",
            IdentifierKind::AndroidId => "android_id",
            IdentifierKind::PartnerDeviceId => "partner_device_id",
        }
    }
}

/// An attributed delivery as a partner parser returns it: mapped, normalised, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Postback {
    pub kind: EventKind,
    pub event_name: Option<String>,
    pub segments: Segments,
    pub ids: Identifiers,
    pub event_time: Option<DateTime<Utc>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The partner's own unique delivery id, where it has one (Branch `id`).
    pub partner_event_id: Option<String>,
}

/// One accepted delivery handed to the store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub app_id: AppId,
    pub partner: PartnerId,
    pub postback: Postback,
    pub dedupe_key: String,
    /// The request's fields as JSON, without the API key.
    pub raw: serde_json::Value,
    pub received_at: DateTime<Utc>,
    /// Attributed installs the app may store per clock hour (`standard` apps); `None`
    /// for no limit. The batch that would store an install over it answers 429.
    pub install_quota: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_random_and_redacted() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert!(a.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(a.expose().len(), API_KEY_PREFIX.len() + 64);
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(&a.expose()[API_KEY_PREFIX.len()..]));
        assert_eq!(a.display_prefix().len(), API_KEY_PREFIX.len() + 8);
    }

    #[test]
    fn key_hash_round_trips_through_hex_and_compares() {
        let k = ApiKey::generate();
        let h = k.hash();
        assert!(KeyHash::from_hex(&h.to_hex()).unwrap().ct_eq(&h));
        assert!(!ApiKey::generate().hash().ct_eq(&h));
    }

    #[test]
    fn only_advertising_and_vendor_ids_change_case() {
        let mut ids = Identifiers {
            user_id: Some("Braze-User-1".into()),
            idfa: Some("aaaa1111-bb22-4c33-8d44-ee55ff667788".into()),
            idfv: Some("e2c1b0a9-8F7E-4d6c-b5a4-93827160f5e4".into()),
            google_aid: Some("38400000-8CF0-11BD-B23E-10B96E40000D".into()),
            android_id: Some("9774D56D682e549c".into()),
            partner_device_id: Some("KA4b8e2f".into()),
        };
        ids.canonicalize_case();
        assert_eq!(
            ids,
            Identifiers {
                user_id: Some("Braze-User-1".into()),
                idfa: Some("AAAA1111-BB22-4C33-8D44-EE55FF667788".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                google_aid: Some("38400000-8cf0-11bd-b23e-10b96e40000d".into()),
                android_id: Some("9774D56D682e549c".into()),
                partner_device_id: Some("KA4b8e2f".into()),
            }
        );
    }

    #[test]
    fn tier_parses_its_own_names_only() {
        assert_eq!("enterprise".parse::<Tier>().unwrap(), Tier::Enterprise);
        assert!("gold".parse::<Tier>().is_err());
    }
}
