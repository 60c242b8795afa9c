//! The claims of a verified QStash token.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::VerifyError;
use crate::keys::MatchedKey;

/// The claims of a token that passed verification, and which key matched.
///
/// QStash signs `iss`, `sub` (the destination URL), `aud` (always `""`), `exp` (`iat + 300`),
/// `nbf`, `iat`, `jti` (unique per delivery attempt) and `body` (the body's SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    iss: String,
    sub: String,
    body: String,
    aud: Option<String>,
    jti: Option<String>,
    pub(crate) exp: i64,
    pub(crate) nbf: Option<i64>,
    pub(crate) iat: Option<i64>,
    pub(crate) key: MatchedKey,
}

impl Claims {
    /// Claims from checked values. `None` for a required claim is reported as missing.
    pub(crate) fn build(raw: RawClaims<'_>, key: MatchedKey) -> Result<Self, VerifyError> {
        let required = |claim: Option<Cow<'_, str>>, name| {
            claim
                .map(Cow::into_owned)
                .ok_or(VerifyError::MissingClaim(name))
        };
        Ok(Self {
            iss: required(raw.iss, "iss")?,
            sub: required(raw.sub, "sub")?,
            exp: raw.exp.ok_or(VerifyError::MissingClaim("exp"))?,
            body: required(raw.body, "body")?,
            aud: raw.aud.map(Cow::into_owned),
            jti: raw.jti.map(Cow::into_owned),
            nbf: raw.nbf,
            iat: raw.iat,
            key,
        })
    }

    /// `iss`: always `Upstash` once verified.
    pub fn issuer(&self) -> &str {
        &self.iss
    }

    /// `sub`: the URL QStash delivered to (destination, URL-group endpoint or callback URL).
    pub fn subject(&self) -> &str {
        &self.sub
    }

    /// `sub`, by what it means: the URL QStash delivered to.
    pub fn url(&self) -> &str {
        &self.sub
    }

    /// `aud` when it is a string (QStash sends `""`); not checked.
    pub fn audience(&self) -> Option<&str> {
        self.aud.as_deref()
    }

    /// `exp`, Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.exp
    }

    /// `nbf`, Unix seconds; QStash sends Go's zero time, `-62135596800`.
    pub fn not_before(&self) -> Option<i64> {
        self.nbf
    }

    /// `iat`, Unix seconds (a fractional value is truncated); not compared with the clock.
    pub fn issued_at(&self) -> Option<i64> {
        self.iat
    }

    /// `jti`, when it is a string: unique per delivery *attempt* (not per message).
    pub fn jwt_id(&self) -> Option<&str> {
        self.jti.as_deref()
    }

    /// `body`: base64url of the body's SHA-256, as signed (with its padding, if any).
    pub fn body_hash(&self) -> &str {
        &self.body
    }

    /// Which key's MAC matched.
    pub fn matched_key(&self) -> MatchedKey {
        self.key
    }
}

/// Claims as parsed, before any check. JSON semantics: for a duplicated member the last one
/// wins (as in JavaScript's and Python's parsers); unknown members are skipped.
#[derive(Default)]
pub(crate) struct RawClaims<'a> {
    pub(crate) iss: Option<Cow<'a, str>>,
    pub(crate) sub: Option<Cow<'a, str>>,
    pub(crate) aud: Option<Cow<'a, str>>,
    pub(crate) exp: Option<i64>,
    pub(crate) nbf: Option<i64>,
    pub(crate) iat: Option<i64>,
    pub(crate) jti: Option<Cow<'a, str>>,
    pub(crate) body: Option<Cow<'a, str>>,
}

impl<'a> RawClaims<'a> {
    /// Parses the payload JSON (strings without escapes are borrowed, not copied). Wrong types
    /// are reported as [`VerifyError::InvalidClaim`]; anything else that is not one UTF-8 JSON
    /// object as [`VerifyError::Malformed`].
    pub(crate) fn parse(json: &'a [u8]) -> Result<Self, VerifyError> {
        // The whole payload must be UTF-8, the members serde_json skips unread included.
        let text = std::str::from_utf8(json)
            .map_err(|_| VerifyError::Malformed("payload is not utf-8"))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let mut error = None;
        let parsed = de.deserialize_map(ClaimsVisitor { error: &mut error });
        let parsed = match (parsed, error) {
            (_, Some(claim_error)) => return Err(claim_error),
            (Ok(parsed), None) => parsed,
            (Err(_), None) => return Err(VerifyError::Malformed("payload is not a json object")),
        };
        de.end()
            .map_err(|_| VerifyError::Malformed("payload has trailing data"))?;
        Ok(parsed)
    }

    /// Stores one claim's value; the last occurrence of a member wins.
    fn set(&mut self, field: Field, value: JsonValue<'a>) -> Result<(), VerifyError> {
        match (field, value) {
            (Field::Iss, JsonValue::Str(v)) => self.iss = Some(v),
            (Field::Sub, JsonValue::Str(v)) => self.sub = Some(v),
            (Field::Body, JsonValue::Str(v)) => self.body = Some(v),
            (Field::Exp, JsonValue::Int(v)) => self.exp = Some(v),
            (Field::Nbf, JsonValue::Int(v)) => self.nbf = Some(v),
            (Field::Iat, JsonValue::Int(v)) => self.iat = Some(v),
            // `as` saturates; non-finite values never reach here.
            (Field::Iat, JsonValue::Float(v)) => self.iat = Some(v as i64),
            // Unchecked claims: kept when they are strings, otherwise skipped.
            (Field::Aud, v) => self.aud = v.into_string(),
            (Field::Jti, v) => self.jti = v.into_string(),
            (Field::Other, _) => {}
            (field, _) => return Err(VerifyError::InvalidClaim(field.name())),
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Field {
    Iss,
    Sub,
    Aud,
    Exp,
    Nbf,
    Iat,
    Jti,
    Body,
    Other,
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "iss" => Field::Iss,
                    "sub" => Field::Sub,
                    "aud" => Field::Aud,
                    "exp" => Field::Exp,
                    "nbf" => Field::Nbf,
                    "iat" => Field::Iat,
                    "jti" => Field::Jti,
                    "body" => Field::Body,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

struct ClaimsVisitor<'e> {
    /// Set when a claim has the wrong type, so the caller reports which one.
    error: &'e mut Option<VerifyError>,
}

impl<'de> Visitor<'de> for ClaimsVisitor<'_> {
    type Value = RawClaims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawClaims<'de>, A::Error> {
        let mut c = RawClaims::default();
        while let Some(field) = map.next_key::<Field>()? {
            if let Field::Other = field {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value::<JsonValue<'de>>()?;
            if let Err(claim_error) = c.set(field, value) {
                *self.error = Some(claim_error);
                return Err(de::Error::custom("claim has the wrong type"));
            }
        }
        Ok(c)
    }
}

/// A claim's JSON value, reduced to what the checks need.
enum JsonValue<'a> {
    Str(Cow<'a, str>),
    /// An integer that fits in `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// `null`, a boolean, an array or an object.
    Other,
}

impl<'a> JsonValue<'a> {
    fn into_string(self) -> Option<Cow<'a, str>> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for JsonValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = JsonValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonValue<'de>, E> {
        Ok(i64::try_from(v).map_or(JsonValue::Float(v as f64), JsonValue::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Float(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<JsonValue<'de>, E> {
        Ok(JsonValue::Other)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<JsonValue<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonValue::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonValue<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(JsonValue::Other)
    }
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Iss => "iss",
            Self::Sub => "sub",
            Self::Aud => "aud",
            Self::Exp => "exp",
            Self::Nbf => "nbf",
            Self::Iat => "iat",
            Self::Jti => "jti",
            Self::Body => "body",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of a parse: the claims, or `invalid <claim>` / `malformed`.
    fn outcome(json: &[u8]) -> Result<String, String> {
        RawClaims::parse(json)
            .map(|c| {
                format!(
                    "{:?}",
                    (c.iss, c.sub, c.aud, c.exp, c.nbf, c.iat, c.jti, c.body)
                )
            })
            .map_err(|e| match e {
                VerifyError::InvalidClaim(name) => format!("invalid {name}"),
                _ => "malformed".to_owned(),
            })
    }

    #[test]
    fn real_payload_borrows_its_strings() {
        let real = br#"{"aud":"","body":"pZGm1Av0IEBKARczz7exkNYsZb8LzaMrV7J32a2fFG4=","exp":1657530756,"iat":1657530456,"iss":"Upstash","jti":"jwt_7AqGnDKWwKNf6tGT4LgF8jtCDB8j","nbf":-62135596800,"sub":"https://example.com/test"}"#;
        let c = RawClaims::parse(real).unwrap();
        assert!(matches!(
            c.sub,
            Some(Cow::Borrowed("https://example.com/test"))
        ));
        assert_eq!(
            (c.exp, c.nbf, c.iat),
            (Some(1657530756), Some(-62135596800), Some(1657530456))
        );
        assert_eq!(c.jti.as_deref(), Some("jwt_7AqGnDKWwKNf6tGT4LgF8jtCDB8j"));
    }

    #[test]
    fn the_policy_on_json_shapes() {
        let claims = |iss: &str, exp: Option<i64>| {
            Ok(format!(
                "{:?}",
                (
                    Some(iss),
                    None::<&str>,
                    None::<&str>,
                    exp,
                    None::<i64>,
                    None::<i64>,
                    None::<&str>,
                    None::<&str>
                )
            ))
        };
        // The last of a repeated member wins, escapes are decoded, unknown members skipped.
        assert_eq!(
            outcome(br#"{"iss":"a","iss":"b","x":[1,{"y":null}]}"#),
            claims("b", None)
        );
        assert_eq!(
            outcome(br#"{"\u0069ss":"\u0055pstash","exp":5}"#),
            claims("Upstash", Some(5))
        );
        // Types are strict: no numeric strings, no fractions or exponents for integers.
        for (json, error) in [
            (&br#"{"exp":"1"}"#[..], "invalid exp"),
            (br#"{"exp":1.5}"#, "invalid exp"),
            (br#"{"exp":1e3}"#, "invalid exp"),
            (br#"{"exp":100000000000000000000}"#, "invalid exp"),
            (br#"{"nbf":[1]}"#, "invalid nbf"),
            (br#"{"iss":7}"#, "invalid iss"),
            (br#"{"iat":true}"#, "invalid iat"),
        ] {
            assert_eq!(
                outcome(json),
                Err(error.to_owned()),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        // `iat` may be fractional (truncated); `aud` and `jti` of another type are dropped.
        assert!(
            outcome(br#"{"iat":1.9,"jti":7,"aud":["a"]}"#)
                .unwrap()
                .contains("Some(1)")
        );
        // Not one JSON object: malformed.
        for json in [
            &b"[]"[..],
            b"\"x\"",
            b"{\"x\":1}x",
            b"{\"x\":1,}",
            b"{\"x\":NaN}",
            b"{\"sub\":\"\\ud800\"}",
            b"\xef\xbb\xbf{}",
            b"{\"sub\":\"abc",
        ] {
            assert_eq!(
                outcome(json),
                Err("malformed".to_owned()),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn invalid_utf8_anywhere_is_refused_and_deep_nesting_is_safe() {
        assert!(RawClaims::parse(b"{\"sub\":\"\xff\"}").is_err());
        // Even in a member that is skipped unread.
        assert!(RawClaims::parse(b"{\"x\":\"\xed\xa0\x80\",\"exp\":1}").is_err());
        // Deep nesting never overflows the stack: serde_json skips what is not read without
        // recursion, in an unknown member as inside a claim's value of the wrong type.
        let nested = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(RawClaims::parse(format!("{{\"x\":{}}}", nested(5000)).as_bytes()).is_ok());
        assert_eq!(
            outcome(format!("{{\"nbf\":{}}}", nested(5000)).as_bytes()),
            Err("invalid nbf".to_owned())
        );
        assert_eq!(
            outcome(format!("{{\"nbf\":{}}}", nested(100)).as_bytes()),
            Err("invalid nbf".to_owned())
        );
    }
}
