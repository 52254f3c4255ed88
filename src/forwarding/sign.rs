//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): HMAC-SHA256
//! over `{webhook-id}.{webhook-timestamp}.{body}` with the key the secret's
//! base64 part decodes to, sent as `webhook-signature: v1,<base64>`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The secret's prefix in the Standard Webhooks format.
pub const SECRET_PREFIX: &str = "whsec_";

/// The stable message id of an outbox row: `msg_` + its uuid, simple form.
pub fn webhook_id(outbox_id: Uuid) -> String {
    format!("msg_{}", outbox_id.simple())
}

#[derive(Debug, thiserror::Error)]
#[error("the destination's signing secret is not whsec_ followed by base64")]
pub struct BadSecret;

/// The `webhook-signature` header value for one attempt.
pub fn signature(
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let key = BASE64
        .decode(secret.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?)
        .map_err(|_| BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of svix's tests).
    #[test]
    fn signs_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_without_the_prefix_or_not_base64_is_refused() {
        assert!(signature("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1, b"").is_err());
        assert!(signature("whsec_not base64!", "m", 1, b"").is_err());
    }

    #[test]
    fn webhook_id_is_msg_and_the_simple_uuid() {
        let id = Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
        assert_eq!(webhook_id(id), "msg_0193a1b2c3d47e5f8a9b0c1d2e3f4a5b");
    }
}
