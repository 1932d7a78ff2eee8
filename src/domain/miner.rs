//! The miner's identity, what it can run and what it reports about itself.
//!
//! Every type here validates on construction, so code past the HTTP layer never sees an
//! address that is not 20 bytes or a URL that is not http(s).

use super::profile::Profile;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest accepted endpoint URL: longer ones are abuse, not configuration.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// Longest accepted model or job-type name.
pub const MAX_NAME_LEN: usize = 128;
/// Most models (and job types) one miner may declare; bounds the index per miner.
pub const MAX_MODELS: usize = 256;
/// The largest GPU memory we believe (MiB): 16 TiB is far beyond any single host today.
pub const MAX_GPU_MEMORY_MIB: u64 = 16 * 1024 * 1024;
/// The largest concurrency a miner may declare.
pub const MAX_CONCURRENT_JOBS: u32 = 100_000;
/// Job type a miner serves when it declares none: the network is for inference.
pub const DEFAULT_JOB_TYPE: &str = "inference";

/// A validation failure: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// Dotted path of the offending field, as the client sent it.
    pub field: String,
    /// What is wrong, in words a client developer can act on.
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An Ethereum-style address: the miner's identity.
///
/// Stored as its 20 bytes so that comparison is case-insensitive by construction and the
/// index keys are small and fast to compare; rendered as lowercase `0x` + 40 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address([u8; 20]);

impl Address {
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl FromStr for Address {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            Invalid::new(
                "address",
                "must be 0x followed by 40 hexadecimal digits (an Ethereum-style address)",
            )
        };
        let hex_part = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or_else(bad)?;
        if hex_part.len() != 40 {
            return Err(bad());
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl Address {
    /// `0x` and the 40 hex digits, written into `buf` without the formatting machinery
    /// (a match answer writes five of them per request).
    pub fn encode<'b>(&self, buf: &'b mut [u8; 42]) -> &'b str {
        buf[0] = b'0';
        buf[1] = b'x';
        // Cannot fail: the slice is exactly twice the input's length, and hex is ASCII.
        let _ = hex::encode_to_slice(self.0, &mut buf[2..]);
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0; 42]))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.encode(&mut [0; 42]))
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e: Invalid| serde::de::Error::custom(e.message))
    }
}

/// Where clients reach the miner: an absolute http or https URL with a host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Endpoint {
    type Error = Invalid;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = |m: &str| Invalid::new("endpoint", m);
        if s.len() > MAX_ENDPOINT_LEN {
            return Err(bad("is longer than 2048 characters"));
        }
        let url = url::Url::parse(&s).map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must use the http or https scheme"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry credentials"));
        }
        if !url.host_str().is_some_and(|h| h.starts_with('[')) {
            endpoint_syntax(&s).map_err(bad)?;
        }
        Ok(Self(s))
    }
}

/// The base URL grammar the API documents (and `http::openapi` states as a pattern): a
/// scheme, a DNS name whose last label starts with a letter or a dotted-quad IPv4 address,
/// an optional port (0 to 65535, no leading zero) and a path of unreserved characters; no
/// query or fragment. Stricter than a URL parser, which takes hosts such as `a*` or `1.2.3`
/// (read as 1.2.0.3); an IPv6 literal is left to the URL parser.
fn endpoint_syntax(s: &str) -> Result<(), &'static str> {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return Err("must start with http:// or https://");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if !(dns_name(host) || ipv4(host)) {
        return Err("must name its host as a DNS name (letters, digits, hyphens; the last label starting with a letter) or an IPv4 address");
    }
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits
            || (p.len() > 1 && p.starts_with('0'))
            || p.parse::<u32>().map_or(true, |n| n > 65_535)
        {
            return Err("must give its port as a number from 0 to 65535");
        }
    }
    let unreserved =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-' | b'/');
    if !path.bytes().all(unreserved) {
        return Err("may have a path of letters, digits and . _ ~ - / only (no query or fragment)");
    }
    Ok(())
}

fn dns_name(host: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    let mut labels = host.split('.');
    let Some(last) = labels.next_back() else {
        return false;
    };
    label(last) && last.as_bytes()[0].is_ascii_alphabetic() && labels.all(label)
}

fn ipv4(host: &str) -> bool {
    let octets: Vec<&str> = host.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| {
            !o.is_empty()
                && o.len() <= 3
                && o.bytes().all(|b| b.is_ascii_digit())
                && !(o.len() > 1 && o.starts_with('0'))
                && o.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

impl Endpoint {
    /// An endpoint read back from a row this build's binary format wrote, which it wrote
    /// only from a validated [`Endpoint`]: loading 100,000 miners re-parsed every URL, a
    /// tenth of the start-up time. What cannot be an endpoint at all (too long, another
    /// scheme) is still refused, so a damaged row does not pass as one.
    pub fn from_stored(s: String) -> Result<Self, Invalid> {
        if s.len() > MAX_ENDPOINT_LEN || !(s.starts_with("http://") || s.starts_with("https://")) {
            return Self::try_from(s);
        }
        Ok(Self(s))
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> Self {
        e.0
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a miner can run. `gpu_memory` is MiB, as in the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    #[schema(value_type = Vec<crate::http::openapi::Name>, min_items = 1, max_items = 256,
        example = json!(["llama3.2", "mistral-7b"]))]
    pub models: Vec<String>,
    /// MiB.
    #[schema(minimum = 1, maximum = 16777216)]
    pub gpu_memory: u64,
    #[schema(minimum = 1, maximum = 100000)]
    pub max_concurrent_jobs: u32,
    /// Job types the miner accepts; the seed only knows "inference", which is the default.
    #[serde(default = "default_job_types")]
    #[schema(value_type = Vec<crate::http::openapi::Name>, min_items = 1, max_items = 256)]
    pub job_types: Vec<String>,
}

fn default_job_types() -> Vec<String> {
    vec![DEFAULT_JOB_TYPE.to_string()]
}

/// Checks a model or job-type name: non-empty, bounded, printable, no surrounding spaces.
pub fn validate_name(field: &str, name: &str) -> Result<(), Invalid> {
    // Characters, not bytes: the API documents (and a client counts) characters.
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(Invalid::new(field, "must be 1 to 128 characters long"));
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            "must not contain control characters or surrounding whitespace",
        ));
    }
    Ok(())
}

impl Capabilities {
    /// Validates and normalises (sorts, de-duplicates) the lists.
    pub fn validated(self) -> Result<Self, Invalid> {
        self.checked(false)
    }

    /// As [`Capabilities::validated`] for a miner registered by name (AITBC's registration):
    /// it may list no models (it then takes part only in matches by requirements, never in a
    /// match for a named model) and may have no GPU memory (a CPU miner).
    pub fn validated_named(self) -> Result<Self, Invalid> {
        self.checked(true)
    }

    fn checked(mut self, named: bool) -> Result<Self, Invalid> {
        if self.models.is_empty() && !named {
            return Err(Invalid::new(
                "capabilities.models",
                "must list at least one model",
            ));
        }
        if self.models.len() > MAX_MODELS {
            return Err(Invalid::new(
                "capabilities.models",
                "must list at most 256 models",
            ));
        }
        for m in &self.models {
            validate_name("capabilities.models", m)?;
        }
        if self.job_types.is_empty() || self.job_types.len() > MAX_MODELS {
            return Err(Invalid::new(
                "capabilities.job_types",
                "must list 1 to 256 job types",
            ));
        }
        for j in &self.job_types {
            validate_name("capabilities.job_types", j)?;
        }
        if (self.gpu_memory == 0 && !named) || self.gpu_memory > MAX_GPU_MEMORY_MIB {
            return Err(Invalid::new(
                "capabilities.gpu_memory",
                "must be between 1 and 16777216 MiB",
            ));
        }
        if self.max_concurrent_jobs == 0 || self.max_concurrent_jobs > MAX_CONCURRENT_JOBS {
            return Err(Invalid::new(
                "capabilities.max_concurrent_jobs",
                "must be between 1 and 100000",
            ));
        }
        self.models.sort();
        self.models.dedup();
        self.job_types.sort();
        self.job_types.dedup();
        Ok(self)
    }
}

/// A registered miner: what it declared, and the hash of its secret token.
///
/// The token itself is never stored: only its SHA-256, which is enough to check a presented
/// token and useless to anyone who reads the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Miner {
    pub address: Address,
    pub endpoint: Endpoint,
    pub capabilities: Capabilities,
    pub stake: u64,
    /// SHA-256 of the miner's bearer token, hex-encoded.
    pub token_hash: String,
    /// Unix milliseconds of the first registration.
    pub registered_at: u64,
    /// Unix milliseconds of the latest (re-)registration.
    pub updated_at: u64,
    /// Registered (or taken over, or its token reissued) with a signature by the address's
    /// key. An unproven record may be taken over by whoever proves the key; a proven one
    /// changes only with its token or a fresh signature.
    #[serde(default)]
    pub proven: bool,
    /// Set for a miner registered by name (AITBC's `miner_id`), whose address is derived
    /// from it ([`Address::for_miner_id`]); what it declared beyond the capabilities.
    /// Boxed: most miners have none, and inline it cost every miner 160 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Box<Profile>>,
}

impl Miner {
    pub fn serves_model(&self, model: &str) -> bool {
        self.capabilities
            .models
            .binary_search_by(|m| m.as_str().cmp(model))
            .is_ok()
    }

    /// The name the miner is known by: its `miner_id` if it registered by name, else its
    /// address.
    pub fn display_id(&self) -> String {
        match &self.profile {
            Some(p) => p.miner_id.clone(),
            None => self.address.to_string(),
        }
    }

    pub fn serves_job_type(&self, job_type: &str) -> bool {
        self.capabilities
            .job_types
            .binary_search_by(|m| m.as_str().cmp(job_type))
            .is_ok()
    }
}

/// Live status a miner reports; also its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MinerStatus {
    pub available: bool,
    pub current_load: u32,
    /// Fraction of the GPU in use, 0..=1.
    pub gpu_utilization: f64,
    /// Degrees Celsius, when the miner reports it.
    pub temperature: Option<f64>,
    /// Unix milliseconds at which the hub received it.
    pub reported_at: u64,
    /// Memory and network figures, when the miner reports them (AITBC's heartbeat does);
    /// rendered beside the other fields, and only those reported.
    #[serde(default, flatten)]
    pub resources: Resources,
}

/// Figures a miner may report beside its status; shown, not scored.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// GPU memory in use, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_mb: Option<u64>,
    /// GPU memory in all, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total_mb: Option<u64>,
    /// The miner's own measure of its network latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_latency_ms: Option<f64>,
}

impl Resources {
    fn validate(&self) -> Result<(), Invalid> {
        for (field, v) in [
            ("memory_used", self.memory_used_mb),
            ("memory_total", self.memory_total_mb),
        ] {
            if v.is_some_and(|v| v > MAX_GPU_MEMORY_MIB) {
                return Err(Invalid::new(field, "must be at most 16777216 MiB"));
            }
        }
        if let Some(l) = self.network_latency_ms {
            if !l.is_finite() || !(0.0..=3_600_000.0).contains(&l) {
                return Err(Invalid::new(
                    "network_latency_ms",
                    "must be between 0 and 3600000 ms (or negative for unknown)",
                ));
            }
        }
        Ok(())
    }
}

impl MinerStatus {
    /// Validates what a client sent; `reported_at` is the hub's clock, not the client's.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.gpu_utilization.is_finite() || !(0.0..=1.0).contains(&self.gpu_utilization) {
            return Err(Invalid::new(
                "gpu_utilization",
                "must be a number between 0 and 1",
            ));
        }
        if let Some(t) = self.temperature {
            if !t.is_finite() || !(-60.0..=200.0).contains(&t) {
                return Err(Invalid::new(
                    "temperature",
                    "must be between -60 and 200 degrees Celsius",
                ));
            }
        }
        if self.current_load > MAX_CONCURRENT_JOBS {
            return Err(Invalid::new("current_load", "must be at most 100000"));
        }
        self.resources.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_documented_grammar() {
        for ok in [
            "http://miner-1.example:8080",
            "https://10.0.0.1/api/v1",
            "HTTP://A.B",
            "http://localhost",
            "http://[::1]:80",
            "http://a.b:65535/x_y~z.-",
            "http://a:0",
        ] {
            assert!(Endpoint::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in [
            "http://a*",
            "http://1.2.3",
            "http://256.1.1.1",
            "http://a:",
            "http://a:080",
            "http://a:65536",
            "http://a/?q=1",
            "http://a/#f",
            "http://a.1b",
            "http://-a",
            "http://a-.b",
            "http://a..b",
            "ftp://a",
            "http://user@a",
        ] {
            assert!(Endpoint::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn address_is_case_insensitive_and_renders_lowercase() {
        let a: Address = "0xABCDEF0123456789abcdef0123456789ABCDEF01"
            .parse()
            .unwrap();
        let b: Address = "0xabcdef0123456789abcdef0123456789abcdef01"
            .parse()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0xabcdef0123456789abcdef0123456789abcdef01");
    }

    #[test]
    fn address_rejects_bad_forms() {
        for s in [
            "",
            "0x",
            "abcdef0123456789abcdef0123456789abcdef01",
            "0xabcdef0123456789abcdef0123456789abcdef0",
            "0xabcdef0123456789abcdef0123456789abcdef012",
            "0xgbcdef0123456789abcdef0123456789abcdef01",
        ] {
            assert!(s.parse::<Address>().is_err(), "{s} accepted");
        }
    }

    #[test]
    fn endpoint_rules() {
        assert!(Endpoint::try_from("http://miner.example.com:8080".to_string()).is_ok());
        assert!(Endpoint::try_from("https://10.0.0.1/x".to_string()).is_ok());
        assert!(Endpoint::try_from("ftp://miner".to_string()).is_err());
        assert!(Endpoint::try_from("not a url".to_string()).is_err());
        assert!(Endpoint::try_from("http://u:p@host".to_string()).is_err());
        assert!(Endpoint::try_from(format!("http://h/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn capabilities_validate_and_normalise() {
        let c = Capabilities {
            models: vec!["b".into(), "a".into(), "b".into()],
            gpu_memory: 16384,
            max_concurrent_jobs: 4,
            job_types: default_job_types(),
        }
        .validated()
        .unwrap();
        assert_eq!(c.models, vec!["a", "b"]);
        let mut bad = c.clone();
        bad.gpu_memory = 0;
        assert_eq!(
            bad.validated().unwrap_err().field,
            "capabilities.gpu_memory"
        );
        let mut bad = c.clone();
        bad.models = vec![" x".into()];
        assert!(bad.validated().is_err());
        let mut bad = c;
        bad.max_concurrent_jobs = 0;
        assert!(bad.validated().is_err());
    }

    #[test]
    fn status_bounds() {
        let mut s = MinerStatus {
            available: true,
            current_load: 1,
            gpu_utilization: 0.5,
            temperature: Some(60.0),
            reported_at: 0,
            resources: Resources::default(),
        };
        assert!(s.validate().is_ok());
        s.gpu_utilization = 1.5;
        assert_eq!(s.validate().unwrap_err().field, "gpu_utilization");
        s.gpu_utilization = f64::NAN;
        assert!(s.validate().is_err());
        s.gpu_utilization = 0.1;
        s.temperature = Some(1e9);
        assert!(s.validate().is_err());
    }
}
