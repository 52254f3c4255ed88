//! STUB: replaced by the real parser.
use super::{Fields, Verdict};

pub fn parse(_fields: &Fields) -> Verdict {
    Verdict::Organic
}
pub const QUERY_TEMPLATE: &str = "";
pub const VOLATILE_FIELDS: &[&str] = &["retry_attempts"];
