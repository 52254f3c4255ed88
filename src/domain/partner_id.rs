//! The closed set of partners and their method table: the id used in URLs, storage and
//! parser file names, the display name, and how each method carries a partner's fields.
//! The parsers themselves live in `partners/`.

use std::fmt;
use std::str::FromStr;

/// Every partner we accept postbacks from. Its string is the URL segment, the file
/// name of its parser and the value stored in the `partner` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartnerId {
    Kochava,
    Tune,
    Appsflyer,
    Adjust,
    Singular,
    Branch,
}

/// The HTTP methods a postback can arrive with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// Where a partner's fields travel for a given method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// The URL query string, decoded as a form.
    Query,
    /// A form-encoded POST body (plus the query string).
    FormBody,
    /// A POST body holding one JSON object.
    JsonBody,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown partner")]
pub struct UnknownPartner;

/// One row of the method table.
struct Row {
    /// URL segment, stored value and parser file name.
    id: &'static str,
    /// Human name for pages and printouts.
    name: &'static str,
    /// How fields travel in a GET; `None` answers 405.
    get: Option<InputFormat>,
    /// How fields travel in a POST; `None` answers 405.
    post: Option<InputFormat>,
}

impl PartnerId {
    pub const ALL: [PartnerId; 6] = [
        PartnerId::Kochava,
        PartnerId::Tune,
        PartnerId::Appsflyer,
        PartnerId::Adjust,
        PartnerId::Singular,
        PartnerId::Branch,
    ];

    /// The method table (partners.md, one section per partner).
    const fn row(self) -> Row {
        use InputFormat::{FormBody, JsonBody, Query};
        let (id, name, get, post) = match self {
            PartnerId::Kochava => ("kochava", "Kochava", None, Some(JsonBody)),
            PartnerId::Tune => ("tune", "Tune", Some(Query), Some(FormBody)),
            PartnerId::Appsflyer => ("appsflyer", "AppsFlyer", Some(Query), Some(JsonBody)),
            PartnerId::Adjust => ("adjust", "Adjust", Some(Query), None),
            PartnerId::Singular => ("singular", "Singular", Some(Query), Some(JsonBody)),
            PartnerId::Branch => ("branch", "Branch", None, Some(JsonBody)),
        };
        Row {
            id,
            name,
            get,
            post,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.row().id
    }

    pub fn display_name(self) -> &'static str {
        self.row().name
    }

    /// How this partner sends its fields with `method`; `None` means 405.
    pub fn input(self, method: Method) -> Option<InputFormat> {
        match method {
            Method::Get => self.row().get,
            Method::Post => self.row().post,
        }
    }

    /// Methods accepted, for the `Allow` header of a 405.
    pub fn allowed_methods(self) -> &'static str {
        match (self.row().get, self.row().post) {
            (Some(_), Some(_)) => "GET, POST",
            (Some(_), None) => "GET",
            _ => "POST",
        }
    }
}

impl fmt::Display for PartnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for PartnerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl FromStr for PartnerId {
    type Err = UnknownPartner;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PartnerId::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownPartner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partner_id_round_trips_and_accepts_some_method() {
        for p in PartnerId::ALL {
            assert_eq!(p.as_str().parse::<PartnerId>().unwrap(), p);
            assert_eq!(p.as_str(), p.as_str().to_lowercase());
            assert!(
                p.input(Method::Get).is_some() || p.input(Method::Post).is_some(),
                "{p}"
            );
        }
        assert!("Kochava".parse::<PartnerId>().is_err());
    }
}
