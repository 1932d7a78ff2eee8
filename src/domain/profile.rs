//! Miners known by a free-form name (AITBC's `miner_id`) rather than by an Ethereum address.
//!
//! Such a miner lives in the same registry, stores and index as every other one, under an
//! address derived from its name: [`Address::for_miner_id`]. The derived addresses are a
//! reserved range (they start with [`RESERVED_PREFIX`]) that the address-keyed routes refuse,
//! so nobody can register, sign for or take over the address of a named miner by the other
//! door. Everything a named miner declared beyond poolhub's own capabilities is kept in its
//! [`Profile`], stored with it and shown by the API.

use super::miner::{validate_name, Address, Invalid, MAX_NAME_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The first four bytes of every derived address (`0xa17bc0de…`, "AITBC code"). An honest
/// Ethereum address starts with them once in 2^32; the address-keyed routes refuse them.
pub const RESERVED_PREFIX: [u8; 4] = [0xa1, 0x7b, 0xc0, 0xde];
/// Shortest accepted miner key: a shorter one can be guessed.
pub const MIN_API_KEY_LEN: usize = 16;
/// Longest accepted miner key.
pub const MAX_API_KEY_LEN: usize = 512;
/// Most tags one miner may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag value, free text (a driver version, a platform name).
pub const MAX_TAG_VALUE_LEN: usize = 512;

/// Domain separation for the derivation, so the hash of a name can never be mistaken for
/// any other SHA-256 the hub computes.
const DERIVATION_DOMAIN: &[u8] = b"poolhub/miner-id/v1\0";

impl Address {
    /// The address a named miner is kept under: [`RESERVED_PREFIX`] followed by the first 16
    /// bytes of SHA-256 over the name. The same name gives the same address on every hub and
    /// every backend, so hubs sharing a store agree without coordinating.
    pub fn for_miner_id(miner_id: &str) -> Address {
        let digest = Sha256::new()
            .chain_update(DERIVATION_DOMAIN)
            .chain_update(miner_id.as_bytes())
            .finalize();
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&RESERVED_PREFIX);
        bytes[4..].copy_from_slice(&digest[..16]);
        Address::from_bytes(bytes)
    }

    /// Whether the address is in the range kept for named miners.
    pub fn is_reserved(&self) -> bool {
        self.as_bytes()[..4] == RESERVED_PREFIX
    }

    /// Refuses a reserved address where an Ethereum address is expected (registration,
    /// challenges, takeovers and token recovery by address).
    pub fn check_not_reserved(&self) -> Result<(), Invalid> {
        if self.is_reserved() {
            return Err(Invalid::new(
                "address",
                "addresses starting with 0xa17bc0de are reserved for miners registered by \
                 miner_id (POST /v1/miners/register)",
            ));
        }
        Ok(())
    }
}

/// Checks a miner's name: 1 to 128 characters, printable, no surrounding whitespace, and
/// reachable in a path (`/api/v1/miners/{miner_id}`): not starting with `0x` (an address)
/// and not `register` (a route of its own).
pub fn validate_miner_id(miner_id: &str) -> Result<(), Invalid> {
    validate_name("miner_id", miner_id)?;
    if miner_id.starts_with("0x") || miner_id.starts_with("0X") || miner_id == "register" {
        return Err(Invalid::new(
            "miner_id",
            "must not start with 0x (that names an address) or be \"register\"",
        ));
    }
    if miner_id.contains('/') {
        return Err(Invalid::new("miner_id", "must not contain '/'"));
    }
    Ok(())
}

/// Checks a miner's chosen key (its bearer token): long enough not to be guessed, printable.
pub fn validate_api_key(key: &str) -> Result<(), Invalid> {
    let n = key.chars().count();
    if n < MIN_API_KEY_LEN {
        return Err(Invalid::new(
            "api_key",
            "must be at least 16 characters (a shorter key can be guessed)",
        ));
    }
    if n > MAX_API_KEY_LEN {
        return Err(Invalid::new("api_key", "must be at most 512 characters"));
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Invalid::new(
            "api_key",
            "must not contain whitespace or control characters (it travels in a header)",
        ));
    }
    Ok(())
}

/// What a named miner declared beyond poolhub's capabilities: stored and shown, and read by
/// the AITBC match (`ram_gb`, `region`, `base_price`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub miner_id: String,
    /// The protocol the miner declared (`http` or `https`), as given.
    pub proto: String,
    pub gpu_name: Option<String>,
    pub cpu_cores: Option<u32>,
    pub ram_gb: Option<f64>,
    /// Price per job as the miner wrote it (a decimal string); see [`Profile::price`].
    pub base_price: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub region: Option<String>,
}

fn check_text(field: &str, value: &Option<String>) -> Result<(), Invalid> {
    match value {
        Some(v) => validate_name(field, v),
        None => Ok(()),
    }
}

impl Profile {
    /// Validates every field, naming the first that is wrong.
    pub fn validated(self) -> Result<Self, Invalid> {
        validate_miner_id(&self.miner_id)?;
        if !matches!(self.proto.as_str(), "http" | "https") {
            return Err(Invalid::new("proto", "must be \"http\" or \"https\""));
        }
        check_text("gpu_name", &self.gpu_name)?;
        check_text("region", &self.region)?;
        if let Some(r) = self.ram_gb {
            if !r.is_finite() || !(0.0..=1_048_576.0).contains(&r) {
                return Err(Invalid::new(
                    "ram_gb",
                    "must be a number between 0 and 1048576",
                ));
            }
        }
        if self.cpu_cores.is_some_and(|c| c > 1_000_000) {
            return Err(Invalid::new("cpu_cores", "must be at most 1000000"));
        }
        if let Some(p) = &self.base_price {
            let ok = p.len() <= 64
                && p.parse::<f64>()
                    .is_ok_and(|v| v.is_finite() && v >= 0.0 && !p.trim().is_empty());
            if !ok {
                return Err(Invalid::new(
                    "base_price",
                    "must be a non-negative decimal number, like \"0.01\"",
                ));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(Invalid::new("tags", "must hold at most 64 entries"));
        }
        for (k, v) in &self.tags {
            validate_name("tags", k)?;
            if v.chars().count() > MAX_TAG_VALUE_LEN || v.chars().any(char::is_control) {
                return Err(Invalid::new(
                    format!("tags.{k}"),
                    "must be at most 512 characters, without control characters",
                ));
            }
        }
        debug_assert!(self.miner_id.chars().count() <= MAX_NAME_LEN);
        Ok(self)
    }

    /// The declared price as a number, for the AITBC match answer.
    pub fn price(&self) -> Option<f64> {
        self.base_price.as_deref().and_then(|p| p.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn profile() -> Profile {
        Profile {
            miner_id: "aitbc-miner-1".into(),
            proto: "http".into(),
            gpu_name: Some("NVIDIA GeForce RTX 4090".into()),
            cpu_cores: Some(16),
            ram_gb: Some(64.0),
            base_price: Some("0.01".into()),
            tags: BTreeMap::from([("cuda".into(), "12.4".into())]),
            region: Some("eu-west".into()),
        }
    }

    #[test]
    fn a_name_has_one_reserved_address() {
        let a = Address::for_miner_id("aitbc-miner-1");
        assert_eq!(a, Address::for_miner_id("aitbc-miner-1"));
        assert_ne!(a, Address::for_miner_id("aitbc-miner-2"));
        assert!(a.is_reserved());
        assert!(a.to_string().starts_with("0xa17bc0de"));
        assert_eq!(a.check_not_reserved().unwrap_err().field, "address");
        let plain: Address = "0xab00000000000000000000000000000000000001"
            .parse()
            .unwrap();
        assert!(!plain.is_reserved());
        assert!(plain.check_not_reserved().is_ok());
    }

    #[test]
    fn keys_are_long_printable_and_bounded() {
        assert!(validate_api_key("0123456789abcdef").is_ok());
        assert_eq!(validate_api_key("short-key").unwrap_err().field, "api_key");
        assert!(validate_api_key("0123456789 abcdef").is_err());
        assert!(validate_api_key(&"k".repeat(513)).is_err());
    }

    #[test]
    fn profile_fields_are_checked_by_name() {
        assert!(profile().validated().is_ok());
        let bad = |f: fn(&mut Profile)| {
            let mut p = profile();
            f(&mut p);
            p.validated().unwrap_err().field
        };
        assert_eq!(bad(|p| p.proto = "grpc".into()), "proto");
        assert_eq!(bad(|p| p.miner_id = " x".into()), "miner_id");
        assert_eq!(bad(|p| p.miner_id = "0xabc".into()), "miner_id");
        assert_eq!(bad(|p| p.miner_id = "register".into()), "miner_id");
        assert_eq!(bad(|p| p.miner_id = "a/b".into()), "miner_id");
        assert_eq!(bad(|p| p.ram_gb = Some(f64::NAN)), "ram_gb");
        assert_eq!(bad(|p| p.base_price = Some("cheap".into())), "base_price");
        assert_eq!(bad(|p| p.base_price = Some("-1".into())), "base_price");
        assert_eq!(
            bad(|p| {
                p.tags.insert("x".into(), "a\u{7}".into());
            }),
            "tags.x"
        );
        assert_eq!(profile().price(), Some(0.01));
    }

    proptest! {
        /// Every name lands in the reserved range, and distinct names in distinct addresses.
        #[test]
        fn derived_addresses_are_reserved_and_distinct(a in "[ -~]{1,40}", b in "[ -~]{1,40}") {
            let (x, y) = (Address::for_miner_id(&a), Address::for_miner_id(&b));
            prop_assert!(x.is_reserved() && y.is_reserved());
            prop_assert_eq!(a == b, x == y);
        }
    }
}
