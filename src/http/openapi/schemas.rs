//! Schemas for the types whose JSON form is a constrained string (an address, an endpoint,
//! a match id, a name), written by hand because their rules live in parsing code rather
//! than in the type's shape. The patterns say exactly what the parsers accept where a
//! regular expression can, so that a client (or a fuzzer) generating from the document sends
//! what the hub takes.

use crate::domain::{Address, Endpoint, MatchId};
use std::borrow::Cow;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// [`Endpoint`]'s grammar (see `endpoint_syntax` in `domain::miner`).
pub const ENDPOINT_PATTERN: &str = concat!(
    r"^[hH][tT][tT][pP][sS]?://",
    // A DNS name, its last label starting with a letter ...
    r"(([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?",
    // ... or a dotted quad.
    r"|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?",
    r"(/[A-Za-z0-9._~-]*)*$",
);

/// A printable name with no surrounding whitespace or control characters, 1 to 128
/// characters: what [`crate::domain::miner::validate_name`] accepts.
pub const NAME_PATTERN: &str =
    r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$";

fn string(description: &str, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
}

impl PartialSchema for Address {
    fn schema() -> RefOr<Schema> {
        string(
            "An Ethereum-style address: 0x and 40 hexadecimal digits (case-insensitive; the \
             hub answers in lowercase).",
            "^0[xX][0-9a-fA-F]{40}$",
        )
        .examples(["0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c"])
        .into()
    }
}
impl ToSchema for Address {}

impl PartialSchema for Endpoint {
    fn schema() -> RefOr<Schema> {
        string(
            "The miner's base URL, at most 2048 characters: http or https; a DNS name whose \
             last label starts with a letter, or an IPv4 address (an IPv6 literal in brackets \
             is accepted too); an optional port; a path of unreserved characters; no \
             credentials, query or fragment.",
            ENDPOINT_PATTERN,
        )
        .max_length(Some(2048))
        .examples(["http://miner-1.example:8080"])
        .into()
    }
}
impl ToSchema for Endpoint {}

impl PartialSchema for MatchId {
    fn schema() -> RefOr<Schema> {
        string(
            "A match's id: 32 lowercase hexadecimal digits, unguessable.",
            "^[0-9a-f]{32}$",
        )
        .into()
    }
}
impl ToSchema for MatchId {}

/// A model or job-type name (the schema of [`NAME_PATTERN`]).
pub struct Name;

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        string(
            "A model or job-type name: 1 to 128 characters, no control characters, no \
             surrounding whitespace.",
            NAME_PATTERN,
        )
        .min_length(Some(1))
        .max_length(Some(128))
        .into()
    }
}
impl ToSchema for Name {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Name")
    }
}

/// An address a miner can register by (or prove): any address outside the range reserved
/// for miners registered by name ([`crate::domain::profile`]'s `0xa17bc0de…`).
pub struct OwnAddress;

impl PartialSchema for OwnAddress {
    fn schema() -> RefOr<Schema> {
        string(
            "An Ethereum-style address (0x and 40 hexadecimal digits) outside 0xa17bc0de…, \
             the range reserved for miners registered by name.",
            &not_prefixed("a17bc0de"),
        )
        .into()
    }
}
impl ToSchema for OwnAddress {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OwnAddress")
    }
}

/// A pattern for `0x` + 40 hex digits whose first digits are not `prefix` (any case),
/// without lookahead (which not every JSON Schema tool supports): one alternative per
/// position at which the digits first differ from the prefix.
fn not_prefixed(prefix: &str) -> String {
    let either = |c: char| {
        if c.is_ascii_alphabetic() {
            format!("{}{}", c.to_ascii_lowercase(), c.to_ascii_uppercase())
        } else {
            c.to_string()
        }
    };
    let alternatives: Vec<String> = prefix
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let same: String = prefix
                .chars()
                .take(i)
                .map(|p| format!("[{}]", either(p)))
                .collect();
            let other: String = "0123456789abcdefABCDEF"
                .chars()
                .filter(|d| !d.eq_ignore_ascii_case(&c))
                .collect();
            format!("{same}[{other}][0-9a-fA-F]{{{}}}", 39 - i)
        })
        .collect();
    format!("^0[xX]({})$", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::not_prefixed;

    /// The pattern, checked without a regex engine: each alternative is a run of fixed
    /// character classes and one repeat, which is what `not_prefixed` writes.
    #[test]
    fn not_prefixed_excludes_the_prefix_and_only_it() {
        let p = not_prefixed("a17bc0de");
        assert!(p.starts_with("^0[xX](") && p.ends_with(")$"));
        assert_eq!(
            p.matches('|').count(),
            7,
            "one alternative per prefix digit: {p}"
        );
        // The first alternative: anything but a/A first.
        assert!(p.contains("([0123456789bcdefBCDEF][0-9a-fA-F]{39}|"));
        // The last: the first seven agree, the eighth is not e/E.
        assert!(p.contains("[aA][1][7][bB][cC][0][dD][0123456789abcdfABCDF][0-9a-fA-F]{32})$"));
    }
}
