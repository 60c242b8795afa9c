//! A small, strict JSON reader for the token's claims: one pass, no allocation but the claim
//! strings kept. RFC 8259 grammar; the whole payload must be UTF-8; a duplicated member's last
//! value wins; unknown members are validated and skipped (nesting up to [`MAX_DEPTH`]).
//!
//! serde_json is kept as the reference: the unit tests below and a property test compare the two
//! on generated and mutated payloads.

use std::borrow::Cow;

use crate::VerifyError;
use crate::claims::{Field, JsonValue, RawClaims};

/// Arrays and objects nested deeper than this are refused (serde_json's limit is 128 as well).
pub(crate) const MAX_DEPTH: usize = 128;

const MALFORMED: VerifyError = VerifyError::Malformed("payload is not a json object");

/// Parses the claims object. Syntax errors are `Malformed`; a claim of the wrong type is
/// `InvalidClaim`.
pub(crate) fn parse_claims(json: &[u8]) -> Result<RawClaims<'_>, VerifyError> {
    let text =
        std::str::from_utf8(json).map_err(|_| VerifyError::Malformed("payload is not utf-8"))?;
    match qstash_shape(text) {
        Some(claims) => Ok(claims),
        None => parse_any(text),
    }
}

/// The fast path for the payload QStash itself writes: Go's alphabetical member order, no
/// whitespace, no escapes, integer times:
/// `{"aud":"","body":"…","exp":N,"iat":N,"iss":"Upstash","jti":"jwt_…","nbf":N,"sub":"…"}`.
/// Anything else (`None`) goes through the general reader, which gives the same result for this
/// shape (a property test checks it) and precise errors for every other.
fn qstash_shape(text: &str) -> Option<RawClaims<'_>> {
    let mut r = Reader { text, pos: 0 };
    r.literal(r#"{"aud":"#).ok()?;
    let aud = r.plain_string()?;
    r.literal(r#","body":"#).ok()?;
    let body = r.plain_string()?;
    r.literal(r#","exp":"#).ok()?;
    let exp = r.plain_integer()?;
    r.literal(r#","iat":"#).ok()?;
    let iat = r.plain_integer()?;
    r.literal(r#","iss":"#).ok()?;
    let iss = r.plain_string()?;
    r.literal(r#","jti":"#).ok()?;
    let jti = r.plain_string()?;
    r.literal(r#","nbf":"#).ok()?;
    let nbf = r.plain_integer()?;
    r.literal(r#","sub":"#).ok()?;
    let sub = r.plain_string()?;
    r.literal("}").ok()?;
    (r.pos == text.len()).then_some(RawClaims {
        iss: Some(Cow::Borrowed(iss)),
        sub: Some(Cow::Borrowed(sub)),
        aud: Some(Cow::Borrowed(aud)),
        exp: Some(exp),
        nbf: Some(nbf),
        iat: Some(iat),
        jti: Some(Cow::Borrowed(jti)),
        body: Some(Cow::Borrowed(body)),
    })
}

/// The general reader: any member order, whitespace, escapes, unknown members, duplicates.
fn parse_any(text: &str) -> Result<RawClaims<'_>, VerifyError> {
    let mut r = Reader { text, pos: 0 };
    let mut claims = RawClaims::default();
    r.ws();
    r.expect(b'{')?;
    r.ws();
    if r.peek() == Some(b'}') {
        r.pos += 1;
    } else {
        loop {
            r.ws();
            let name = r.string()?;
            r.ws();
            r.expect(b':')?;
            r.ws();
            let field = Field::from_name(&name);
            if let Field::Other = field {
                r.skip_value(0)?;
            } else {
                let value = r.claim_value()?;
                claims.set(field, value)?;
            }
            r.ws();
            match r.bump() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(MALFORMED),
            }
        }
    }
    r.ws();
    if r.pos != r.text.len() {
        return Err(VerifyError::Malformed("payload has trailing data"));
    }
    Ok(claims)
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// `text[start..end]`, or `Malformed`.
    #[inline]
    fn slice(&self, start: usize, end: usize) -> Result<&'a str, VerifyError> {
        match self.text.get(start..end) {
            Some(s) => Ok(s),
            None => Err(MALFORMED),
        }
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    #[inline]
    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    fn expect(&mut self, want: u8) -> Result<(), VerifyError> {
        match self.bump() {
            Some(b) if b == want => Ok(()),
            _ => Err(MALFORMED),
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// A claim's value, reduced to what the checks need; arrays and objects are skipped.
    fn claim_value(&mut self) -> Result<JsonValue<'a>, VerifyError> {
        match self.peek() {
            Some(b'"') => Ok(JsonValue::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'{' | b'[' | b't' | b'f' | b'n') => {
                self.skip_value(0)?;
                Ok(JsonValue::Other)
            }
            _ => Err(MALFORMED),
        }
    }

    /// A string without escapes (`None` for anything else).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"').ok()?;
        let start = self.pos;
        self.pos = find_special(self.bytes(), start);
        if self.bump()? != b'"' {
            return None;
        }
        self.text.get(start..self.pos - 1)
    }

    /// An integer that fits in `i64` (`None` for anything else, `-0` included).
    fn plain_integer(&mut self) -> Option<i64> {
        let (span, integer) = self.number_span().ok()?;
        if !integer || span == "-0" {
            return None;
        }
        span.parse().ok()
    }

    /// Validates and skips any value.
    fn skip_value(&mut self, depth: usize) -> Result<(), VerifyError> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'-' | b'0'..=b'9') => self.number_span().map(|_| ()),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(open @ (b'[' | b'{')) => {
                if depth >= MAX_DEPTH {
                    return Err(VerifyError::Malformed("payload nests too deeply"));
                }
                self.pos += 1;
                let close = if open == b'[' { b']' } else { b'}' };
                self.ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.skip_string()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.bump() {
                        Some(b',') => continue,
                        Some(b) if b == close => return Ok(()),
                        _ => return Err(MALFORMED),
                    }
                }
            }
            _ => Err(MALFORMED),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), VerifyError> {
        let end = self.pos + word.len();
        if self.text.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            Err(MALFORMED)
        }
    }

    /// The span of a number, checked against the JSON grammar; and whether it is an integer.
    fn number_span(&mut self) -> Result<(&'a str, bool), VerifyError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.bump() {
            // A leading zero is the whole integer part: `01` is malformed (as serde_json says
            // at once, before the value's type is looked at).
            Some(b'0') if matches!(self.peek(), Some(b'0'..=b'9')) => return Err(MALFORMED),
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(MALFORMED),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.one_or_more_digits()?;
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.one_or_more_digits()?;
            integer = false;
        }
        let span = self.slice(start, self.pos)?;
        Ok((span, integer))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn one_or_more_digits(&mut self) -> Result<(), VerifyError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            _ => Err(MALFORMED),
        }
    }

    fn number(&mut self) -> Result<JsonValue<'a>, VerifyError> {
        let (span, integer) = self.number_span()?;
        // `-0` is a float in serde_json (negative zero); keep the reference's reading.
        if integer && span != "-0" {
            if let Ok(v) = span.parse::<i64>() {
                return Ok(JsonValue::Int(v));
            }
        }
        // Out of i64 range or not an integer. A number beyond f64's range (`1e400`) is refused
        // as malformed, as serde_json does.
        match span.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(JsonValue::Float(v)),
            _ => Err(VerifyError::Malformed("payload has a number out of range")),
        }
    }

    /// A string's value: borrowed when it has no escape.
    fn string(&mut self) -> Result<Cow<'a, str>, VerifyError> {
        self.expect(b'"')?;
        let start = self.pos;
        self.pos = find_special(self.bytes(), start);
        match self.bump() {
            Some(b'"') => self.slice(start, self.pos - 1).map(Cow::Borrowed),
            Some(b'\\') => {
                let prefix = self.slice(start, self.pos - 1)?;
                self.escaped_string(prefix).map(Cow::Owned)
            }
            _ => Err(MALFORMED),
        }
    }

    /// The rest of a string after its first backslash (already consumed).
    fn escaped_string(&mut self, prefix: &str) -> Result<String, VerifyError> {
        let mut out = String::with_capacity(prefix.len() + 16);
        out.push_str(prefix);
        let mut escape_pending = true;
        loop {
            if escape_pending {
                escape_pending = false;
                let c = match self.bump() {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'b') => '\u{8}',
                    Some(b'f') => '\u{c}',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(b't') => '\t',
                    Some(b'u') => self.unicode_escape()?,
                    _ => return Err(MALFORMED),
                };
                out.push(c);
                continue;
            }
            let run_start = self.pos;
            self.pos = find_special(self.bytes(), run_start);
            out.push_str(self.slice(run_start, self.pos)?);
            match self.bump() {
                Some(b'"') => return Ok(out),
                Some(b'\\') => escape_pending = true,
                _ => return Err(MALFORMED),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, VerifyError> {
        let end = self.pos + 4;
        let hex = self.slice(self.pos, end)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MALFORMED);
        }
        self.pos = end;
        u16::from_str_radix(hex, 16).map_err(|_| MALFORMED)
    }

    /// `\uXXXX` (the `\u` consumed), with a surrogate pair; a lone surrogate is refused in a
    /// value that is kept, as serde_json does.
    fn unicode_escape(&mut self) -> Result<char, VerifyError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.text.get(self.pos..self.pos + 2) != Some("\\u") {
                    return Err(MALFORMED);
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(MALFORMED);
                }
                0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(MALFORMED),
            _ => u32::from(first),
        };
        char::from_u32(code).ok_or(MALFORMED)
    }

    /// Skips a string, checking its escapes' syntax only (a lone surrogate in a skipped member is
    /// accepted, as serde_json does when it ignores a value).
    fn skip_string(&mut self) -> Result<(), VerifyError> {
        self.expect(b'"')?;
        loop {
            self.pos = find_special(self.bytes(), self.pos);
            match self.bump() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.bump() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        self.hex4()?;
                    }
                    _ => return Err(MALFORMED),
                },
                _ => return Err(MALFORMED),
            }
        }
    }
}

/// The index of the first byte at or after `from` that ends a plain run of string content: `"`,
/// `\` or a control character (or `bytes.len()`). Eight bytes at a time: QStash's string claims
/// are 7 to ~100 bytes long.
#[inline]
fn find_special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        // "Has a zero byte" and "has a byte below 0x20": exact as to *whether* a chunk holds a
        // special byte (the byte loop below finds which).
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (v.wrapping_sub(ONES * 0x20) & !v);
        if special & HIGH != 0 {
            break;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of a parse, comparable across the two parsers.
    fn outcome(r: Result<RawClaims<'_>, VerifyError>) -> Result<String, String> {
        r.map(|c| {
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
    fn qstash_shape_takes_real_payloads_and_nothing_else() {
        let real = r#"{"aud":"","body":"pZGm1Av0IEBKARczz7exkNYsZb8LzaMrV7J32a2fFG4=","exp":1657530756,"iat":1657530456,"iss":"Upstash","jti":"jwt_7AqGnDKWwKNf6tGT4LgF8jtCDB8j","nbf":-62135596800,"sub":"https://example.com/test"}"#;
        let fast = qstash_shape(real).expect("the fast path takes QStash's own payload");
        assert_eq!(outcome(Ok(fast)), outcome(parse_any(real)));
        for other in [
            r#"{"aud":"","body":"b","exp":1,"iat":1,"iss":"Upstash","jti":"j","nbf":1,"sub":"s","x":1}"#,
            r#"{"aud":"","body":"b","exp":1.0,"iat":1,"iss":"Upstash","jti":"j","nbf":1,"sub":"s"}"#,
            r#"{"aud":"","body":"b\u0041","exp":1,"iat":1,"iss":"Upstash","jti":"j","nbf":1,"sub":"s"}"#,
            r#"{"aud":"","body":"b","exp":-0,"iat":1,"iss":"Upstash","jti":"j","nbf":1,"sub":"s"}"#,
            r#"{"aud":"","body":"b","exp":1,"iat":1,"iss":"Upstash","jti":"j","nbf":1,"sub":"s"} "#,
            r#"{"body":"b","aud":"","exp":1,"iat":1,"iss":"Upstash","jti":"j","nbf":1,"sub":"s"}"#,
        ] {
            assert!(qstash_shape(other).is_none(), "{other}");
        }
    }

    fn same(json: &str) {
        let ours = outcome(parse_claims(json.as_bytes()));
        let reference = outcome(RawClaims::parse_with_serde(json.as_bytes()));
        assert_eq!(ours, reference, "{json}");
    }

    #[test]
    fn agrees_with_serde_json() {
        for json in [
            r#"{"iss":"Upstash","sub":"https://a/b","exp":1,"nbf":-62135596800,"iat":1,"jti":"j","body":"x=","aud":""}"#,
            r#" { "iss" : "Upstash" , "exp" : 5 } "#,
            r#"{}"#,
            r#"{"body":"a","body":"b"}"#,
            r#"{"\u0062ody":"esc","sub":"\/\"\\\b\f\n\r\t\u00e9\ud83d\ude00"}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"sub":"\ud800"}"#,
            r#"{"sub":"\udc00x"}"#,
            r#"{"sub":"\ud800\u0041"}"#,
            r#"{"exp":1.5}"#,
            r#"{"exp":1e3}"#,
            r#"{"exp":1767225900.000}"#,
            r#"{"exp":100000000000000000000}"#,
            r#"{"exp":-0}"#,
            r#"{"exp":01}"#,
            // A leading zero then digits, on a claim whose type is wrong anyway (found by the
            // mutation property): malformed first, as serde_json says.
            r#"{ "iss" : 0000000000000000000 }"#,
            r#"{"iss":-01}"#,
            r#"{"x":00}"#,
            r#"{"exp":-}"#,
            r#"{"exp":1.}"#,
            r#"{"exp":.5}"#,
            r#"{"exp":1e}"#,
            r#"{"exp":"1"}"#,
            r#"{"exp":null}"#,
            r#"{"iat":1.9}"#,
            r#"{"iat":-1.9e2}"#,
            r#"{"iat":true}"#,
            r#"{"nbf":[1]}"#,
            r#"{"jti":7,"aud":["a"]}"#,
            r#"{"x":{"a":[1,{"b":null}],"c":"d"},"exp":2}"#,
            r#"{"x":[1,2,]}"#,
            r#"{"x":tru}"#,
            r#"{"x":1}x"#,
            r#"{"x":1},"#,
            r#"{"x" 1}"#,
            r#"{"x":1,}"#,
            r#"{,}"#,
            r#"[]"#,
            r#""x""#,
            "{\"sub\":\"a\tb\"}",
            "{\"sub\":\"a\u{7f}\u{e9}b\"}",
            "{\"sub\":\"a\nb\"}",
            "\u{feff}{}",
            r#"{"sub":"\x"}"#,
            r#"{"sub":"\u12"}"#,
            r#"{"sub":"abc"#,
            r#"{"iss":"a""#,
        ] {
            same(json);
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_claims(deep.as_bytes()).is_err());
        let ok = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(parse_claims(ok.as_bytes()).is_ok());
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(parse_claims(b"{\"sub\":\"\xff\"}").is_err());
        assert!(parse_claims(b"{\"sub\":\"\xed\xa0\x80\"}").is_err());
    }

    mod differential {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn find_special_is_the_first_special_byte(
                bytes in prop::collection::vec(
                    prop_oneof![4 => 0x20u8..=0xff, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20],
                    0..64,
                ),
                from in 0usize..8,
            ) {
                let from = from.min(bytes.len());
                let naive = bytes
                    .iter()
                    .skip(from)
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                    .map_or(bytes.len(), |p| p + from);
                prop_assert_eq!(find_special(&bytes, from), naive);
            }
        }

        /// JSON texts of any value, nested a little, with escapes, numbers of every shape.
        fn json_value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("false".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| format!("{f:e}")),
                "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
                any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
                r#""([a-z/:.]|\\[nt"\\/]|\\u[0-9a-fA-F]{4}){0,12}""#,
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    prop::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| {
                        let members: Vec<String> =
                            v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                        format!("{{{}}}", members.join(","))
                    }),
                ]
            })
        }

        fn claims_object() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                Just("iss"),
                Just("sub"),
                Just("aud"),
                Just("exp"),
                Just("nbf"),
                Just("iat"),
                Just("jti"),
                Just("body"),
                Just("x"),
                Just("\\u0065xp"),
            ];
            prop::collection::vec((name, json_value(), " {0,2}"), 0..10).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            })
        }

        /// Payloads of QStash's shape with values of every kind (escapes, floats, big and
        /// negative numbers), so both paths are exercised.
        fn qstash_like() -> impl Strategy<Value = String> {
            let string = prop_oneof![
                3 => "[a-zA-Z0-9_:/.=-]{0,40}".prop_map(|s| format!("\"{s}\"")),
                1 => r#""([a-z]|\\[nt"\\/]|\\u00[2-7][0-9a-f]){0,8}""#,
                1 => json_value(),
            ];
            let int = prop_oneof![
                3 => any::<i64>().prop_map(|n| n.to_string()),
                1 => json_value(),
            ];
            (
                string.clone(),
                string.clone(),
                int.clone(),
                int.clone(),
                string.clone(),
                string.clone(),
                int,
                string,
            )
                .prop_map(|(aud, body, exp, iat, iss, jti, nbf, sub)| {
                    format!(
                        r#"{{"aud":{aud},"body":{body},"exp":{exp},"iat":{iat},"iss":{iss},"jti":{jti},"nbf":{nbf},"sub":{sub}}}"#
                    )
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn fast_path_agrees_with_the_general_reader(json in qstash_like()) {
                let general = outcome(parse_any(&json));
                if let Some(fast) = qstash_shape(&json) {
                    prop_assert_eq!(outcome(Ok(fast)), general.clone(), "{}", json);
                }
                prop_assert_eq!(
                    outcome(parse_claims(json.as_bytes())),
                    outcome(RawClaims::parse_with_serde(json.as_bytes())),
                    "{}", json
                );
            }

            #[test]
            fn valid_objects_parse_the_same(json in claims_object()) {
                prop_assert_eq!(
                    outcome(parse_claims(json.as_bytes())),
                    outcome(RawClaims::parse_with_serde(json.as_bytes())),
                    "{}", json
                );
            }

            #[test]
            fn mutated_objects_parse_the_same(
                json in claims_object(),
                at in any::<prop::sample::Index>(),
                byte in prop::sample::select(b"{}[]\":,.-+eE0123456789\\u tnfa\x00\x7f".to_vec()),
                op in 0..3u8,
            ) {
                let mut bytes = json.into_bytes();
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => bytes.push(byte),
                }
                let ours = outcome(parse_claims(&bytes));
                let reference = outcome(RawClaims::parse_with_serde(&bytes));
                if std::str::from_utf8(&bytes).is_ok() {
                    prop_assert_eq!(ours, reference, "{}", String::from_utf8_lossy(&bytes));
                } else {
                    // Invalid UTF-8 anywhere is refused up front (the policy: claims are UTF-8
                    // JSON). serde_json skips an ignored member's bytes unchecked, so it may accept.
                    prop_assert_eq!(ours, Err("malformed".to_owned()));
                }
            }
        }
    }
}
