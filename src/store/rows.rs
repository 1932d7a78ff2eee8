//! What the durable stores write, kept apart from the domain types.
//!
//! redb and PostgreSQL store these row types, never the domain types themselves, so renaming
//! a domain field (or changing how the API renders it) no longer changes the bytes on disk.
//! Every conversion between a row and its domain type is here, once.
//!
//! Each JSON row carries its format version in `"v"`. Rows written before the field existed
//! have none and read as version 0, whose layout is the same as version 1. A row with a
//! version newer than [`FORMAT_VERSION`] is refused ([`RowError::Newer`], which the stores
//! report as `Corrupt`) rather than misread. Older builds ignore the `"v"` field, so a file
//! written by this build still opens in the previous one.
//!
//! Version 2 added `proven` to the miner row (registered with a signature by the address's
//! key); a miner row of version 0 or 1 reads as unproven. The other rows are unchanged, and
//! the ban row is new in version 2.
//!
//! Version 3 added `profile` to the miner row (a miner registered by name, AITBC's
//! `miner_id`). Only miner rows that carry a profile are written as version 3; every other
//! row is still written as version 2, so a file without named miners still opens in the
//! build before, and one with them is refused there by its version rather than misread.
//!
//! Version 4 is the compact binary layout of the redb file's miner, statistics, availability
//! and outcome rows (`store::binrow`); those rows are read here only when a file written
//! before it still holds them. PostgreSQL keeps these JSON rows.
//!
//! To change a row's layout: bump [`FORMAT_VERSION`], keep reading every older version here,
//! and add a golden test with the new encoding.

use super::OutcomeRecord;
use crate::auth::{ApiKey, Role};
use crate::domain::identity::Ban;
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Capabilities, Endpoint, Miner, Profile};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The newest row format this build reads (and writes, for rows that need it).
pub const FORMAT_VERSION: u32 = 3;

/// The version written for rows whose layout did not change since version 2.
const BASE_VERSION: u32 = 2;

/// The job type of a miner row written before rows listed job types (version 0). A constant
/// of the row format, not the domain's default: changing that must not change old rows.
const V0_JOB_TYPE: &str = "inference";

/// Why a stored row cannot be read (the stores map it to `StoreError::Corrupt`).
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(
        "{what} row has format version {found}; this poolhub reads up to version \
         {FORMAT_VERSION}: use a newer poolhub"
    )]
    Newer { what: &'static str, found: u32 },
    #[error("{what} row is not valid JSON of its format")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} row holds an invalid {field}: {message}")]
    Invalid {
        what: &'static str,
        field: String,
        message: String,
    },
    #[error("{what} row is not valid binary of its format: {message}")]
    Binary {
        what: &'static str,
        message: &'static str,
    },
    #[error("{what} row cannot be encoded")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A stored row type; its name makes "which row could not be read" plain in errors.
pub trait Row: Serialize + DeserializeOwned {
    /// What the row holds ("miner", "stats", ...), for error messages.
    const WHAT: &'static str;
}

/// Only the version, read before the rest so that a newer layout is refused by its version
/// and not by whatever field it happens to trip over first.
#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default)]
    v: u32,
}

fn current() -> u32 {
    BASE_VERSION
}

/// The row as JSON text (PostgreSQL's JSONB columns take text, redb stores its bytes).
pub fn encode<R: Row>(row: &R) -> Result<String, RowError> {
    serde_json::to_string(row).map_err(|source| RowError::Encode {
        what: R::WHAT,
        source,
    })
}

/// Reads a row of any version this build knows.
pub fn decode<R: Row>(bytes: &[u8]) -> Result<R, RowError> {
    let malformed = |source| RowError::Malformed {
        what: R::WHAT,
        source,
    };
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(malformed)?;
    if probe.v > FORMAT_VERSION {
        return Err(RowError::Newer {
            what: R::WHAT,
            found: probe.v,
        });
    }
    serde_json::from_slice(bytes).map_err(malformed)
}

/// A registered miner as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerRow {
    #[serde(default, rename = "v")]
    pub version: u32,
    /// `0x` + 40 lowercase hex digits.
    pub address: String,
    pub endpoint: String,
    pub capabilities: CapabilitiesRow,
    pub stake: u64,
    pub token_hash: String,
    pub registered_at: u64,
    pub updated_at: u64,
    /// Since version 2; older rows were never proven by a signature.
    #[serde(default)]
    pub proven: bool,
    /// Since version 3, and only for a miner registered by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileRow>,
}

/// What a miner registered by name declared (inside its [`MinerRow`], version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRow {
    pub miner_id: String,
    pub proto: String,
    #[serde(default)]
    pub gpu_name: Option<String>,
    #[serde(default)]
    pub cpu_cores: Option<u32>,
    #[serde(default)]
    pub ram_gb: Option<f64>,
    #[serde(default)]
    pub base_price: Option<String>,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub region: Option<String>,
}

impl Row for ProfileRow {
    const WHAT: &'static str = "profile";
}

impl From<&Profile> for ProfileRow {
    fn from(p: &Profile) -> Self {
        Self {
            miner_id: p.miner_id.clone(),
            proto: p.proto.clone(),
            gpu_name: p.gpu_name.clone(),
            cpu_cores: p.cpu_cores,
            ram_gb: p.ram_gb,
            base_price: p.base_price.clone(),
            tags: p.tags.clone(),
            region: p.region.clone(),
        }
    }
}

impl From<ProfileRow> for Profile {
    fn from(r: ProfileRow) -> Self {
        Self {
            miner_id: r.miner_id,
            proto: r.proto,
            gpu_name: r.gpu_name,
            cpu_cores: r.cpu_cores,
            ram_gb: r.ram_gb,
            base_price: r.base_price,
            tags: r.tags,
            region: r.region,
        }
    }
}

/// A miner's declared capabilities as stored (inside its [`MinerRow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilitiesRow {
    pub models: Vec<String>,
    pub gpu_memory: u64,
    pub max_concurrent_jobs: u32,
    #[serde(default = "v0_job_types")]
    pub job_types: Vec<String>,
}

fn v0_job_types() -> Vec<String> {
    vec![V0_JOB_TYPE.to_string()]
}

impl Row for MinerRow {
    const WHAT: &'static str = "miner";
}

impl From<&Miner> for MinerRow {
    fn from(m: &Miner) -> Self {
        Self {
            // Version 3 only where its one addition is used (see the module doc).
            version: if m.profile.is_some() {
                FORMAT_VERSION
            } else {
                current()
            },
            address: m.address.to_string(),
            endpoint: m.endpoint.as_str().to_string(),
            capabilities: CapabilitiesRow {
                models: m.capabilities.models.clone(),
                gpu_memory: m.capabilities.gpu_memory,
                max_concurrent_jobs: m.capabilities.max_concurrent_jobs,
                job_types: m.capabilities.job_types.clone(),
            },
            stake: m.stake,
            token_hash: m.token_hash.clone(),
            registered_at: m.registered_at,
            updated_at: m.updated_at,
            proven: m.proven,
            profile: m.profile.as_deref().map(ProfileRow::from),
        }
    }
}

impl TryFrom<MinerRow> for Miner {
    type Error = RowError;

    fn try_from(r: MinerRow) -> Result<Self, RowError> {
        let invalid = |e: crate::domain::Invalid| RowError::Invalid {
            what: MinerRow::WHAT,
            field: e.field,
            message: e.message,
        };
        Ok(Miner {
            address: parse_address(MinerRow::WHAT, &r.address)?,
            endpoint: Endpoint::try_from(r.endpoint).map_err(invalid)?,
            capabilities: Capabilities {
                models: r.capabilities.models,
                gpu_memory: r.capabilities.gpu_memory,
                max_concurrent_jobs: r.capabilities.max_concurrent_jobs,
                job_types: r.capabilities.job_types,
            },
            stake: r.stake,
            token_hash: r.token_hash,
            registered_at: r.registered_at,
            updated_at: r.updated_at,
            proven: r.proven,
            profile: r.profile.map(|p| Box::new(Profile::from(p))),
        })
    }
}

fn parse_address(what: &'static str, s: &str) -> Result<Address, RowError> {
    s.parse()
        .map_err(|e: crate::domain::Invalid| RowError::Invalid {
            what,
            field: e.field,
            message: e.message,
        })
}

/// A miner's outcome statistics as stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    #[serde(default, rename = "v")]
    pub version: u32,
    pub successes: f64,
    pub failures: f64,
    pub latency_sum_ms: f64,
    pub latency_count: f64,
    pub consecutive_failures: u32,
    pub last_failure_at: u64,
    pub jobs_total: u64,
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    pub as_of: u64,
}

impl Row for StatsRow {
    const WHAT: &'static str = "stats";
}

impl From<&MinerStats> for StatsRow {
    fn from(s: &MinerStats) -> Self {
        Self {
            version: current(),
            successes: s.successes,
            failures: s.failures,
            latency_sum_ms: s.latency_sum_ms,
            latency_count: s.latency_count,
            consecutive_failures: s.consecutive_failures,
            last_failure_at: s.last_failure_at,
            jobs_total: s.jobs_total,
            jobs_succeeded: s.jobs_succeeded,
            jobs_failed: s.jobs_failed,
            as_of: s.as_of,
        }
    }
}

impl From<StatsRow> for MinerStats {
    fn from(r: StatsRow) -> Self {
        Self {
            successes: r.successes,
            failures: r.failures,
            latency_sum_ms: r.latency_sum_ms,
            latency_count: r.latency_count,
            consecutive_failures: r.consecutive_failures,
            last_failure_at: r.last_failure_at,
            jobs_total: r.jobs_total,
            jobs_succeeded: r.jobs_succeeded,
            jobs_failed: r.jobs_failed,
            as_of: r.as_of,
        }
    }
}

/// A miner's availability checkpoint as stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityRow {
    #[serde(default, rename = "v")]
    pub version: u32,
    pub up: f64,
    pub total: f64,
    pub as_of: u64,
}

impl Row for AvailabilityRow {
    const WHAT: &'static str = "availability";
}

impl From<&Availability> for AvailabilityRow {
    fn from(a: &Availability) -> Self {
        Self {
            version: current(),
            up: a.up,
            total: a.total,
            as_of: a.as_of,
        }
    }
}

impl From<AvailabilityRow> for Availability {
    fn from(r: AvailabilityRow) -> Self {
        Self {
            up: r.up,
            total: r.total,
            as_of: r.as_of,
        }
    }
}

/// One outcome of the history as stored: a JSON row in redb, the columns of
/// `outcomes` in PostgreSQL (whose schema version covers its layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRow {
    #[serde(default, rename = "v")]
    pub version: u32,
    pub match_id: String,
    pub address: String,
    pub success: bool,
    pub latency_ms: Option<f64>,
    pub at: u64,
    pub error: Option<String>,
}

impl Row for OutcomeRow {
    const WHAT: &'static str = "outcome";
}

impl From<&OutcomeRecord> for OutcomeRow {
    fn from(o: &OutcomeRecord) -> Self {
        Self {
            version: current(),
            match_id: o.match_id.to_string(),
            address: o.address.to_string(),
            success: o.success,
            latency_ms: o.latency_ms,
            at: o.at,
            error: o.error.clone(),
        }
    }
}

impl TryFrom<OutcomeRow> for OutcomeRecord {
    type Error = RowError;

    fn try_from(r: OutcomeRow) -> Result<Self, RowError> {
        Ok(OutcomeRecord {
            address: parse_address(OutcomeRow::WHAT, &r.address)?,
            match_id: r.match_id,
            success: r.success,
            latency_ms: r.latency_ms,
            at: r.at,
            error: r.error,
        })
    }
}

/// A client or admin key as stored: its digest, never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRow {
    #[serde(default, rename = "v")]
    pub version: u32,
    pub id: u64,
    pub name: String,
    /// `"admin"` or `"client"`.
    pub role: String,
    pub created_at: u64,
    /// SHA-256 of the secret, 64 lowercase hex digits.
    pub digest: String,
}

impl Row for KeyRow {
    const WHAT: &'static str = "key";
}

impl From<&ApiKey> for KeyRow {
    fn from(k: &ApiKey) -> Self {
        Self {
            version: current(),
            id: k.id,
            name: k.name.clone(),
            role: match k.role {
                Role::Admin => "admin",
                Role::Client => "client",
            }
            .to_string(),
            created_at: k.created_at,
            digest: hex::encode(k.digest),
        }
    }
}

/// A ban as stored (redb; PostgreSQL stores its columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanRow {
    #[serde(default, rename = "v")]
    pub version: u32,
    pub address: String,
    pub reason: Option<String>,
    pub banned_at: u64,
}

impl Row for BanRow {
    const WHAT: &'static str = "ban";
}

impl From<&Ban> for BanRow {
    fn from(b: &Ban) -> Self {
        Self {
            version: current(),
            address: b.address.to_string(),
            reason: b.reason.clone(),
            banned_at: b.banned_at,
        }
    }
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = RowError;

    fn try_from(r: KeyRow) -> Result<Self, RowError> {
        let invalid = |field: &str, message: String| RowError::Invalid {
            what: KeyRow::WHAT,
            field: field.to_string(),
            message,
        };
        let role = r.role.parse::<Role>().map_err(|m| invalid("role", m))?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&r.digest, &mut digest)
            .map_err(|e| invalid("digest", format!("not 32 hex bytes: {e}")))?;
        Ok(ApiKey {
            id: r.id,
            name: r.name,
            role,
            created_at: r.created_at,
            digest,
        })
    }
}

impl TryFrom<BanRow> for Ban {
    type Error = RowError;

    fn try_from(r: BanRow) -> Result<Self, RowError> {
        Ok(Ban {
            address: parse_address(BanRow::WHAT, &r.address)?,
            reason: r.reason,
            banned_at: r.banned_at,
        })
    }
}

/// A ban as its JSON row.
pub fn encode_ban(b: &Ban) -> Result<String, RowError> {
    encode(&BanRow::from(b))
}

/// A ban from its JSON row.
pub fn decode_ban(bytes: &[u8]) -> Result<Ban, RowError> {
    Ban::try_from(decode::<BanRow>(bytes)?)
}

// Shorthands the stores use: domain value to JSON row, and back, so a store never names a
// row type and cannot bypass the conversion.

/// A miner as its JSON row.
pub fn encode_miner(m: &Miner) -> Result<String, RowError> {
    encode(&MinerRow::from(m))
}

/// A miner from its JSON row (of any version this build reads).
pub fn decode_miner(bytes: &[u8]) -> Result<Miner, RowError> {
    Miner::try_from(decode::<MinerRow>(bytes)?)
}

/// Statistics as their JSON row.
pub fn encode_stats(s: &MinerStats) -> Result<String, RowError> {
    encode(&StatsRow::from(s))
}

/// Statistics from their JSON row.
pub fn decode_stats(bytes: &[u8]) -> Result<MinerStats, RowError> {
    decode::<StatsRow>(bytes).map(MinerStats::from)
}

/// An availability checkpoint as its JSON row.
pub fn encode_availability(a: &Availability) -> Result<String, RowError> {
    encode(&AvailabilityRow::from(a))
}

/// An availability checkpoint from its JSON row.
pub fn decode_availability(bytes: &[u8]) -> Result<Availability, RowError> {
    decode::<AvailabilityRow>(bytes).map(Availability::from)
}

/// An outcome as its JSON row (redb; PostgreSQL stores the [`OutcomeRow`] as columns).
pub fn encode_outcome(o: &OutcomeRecord) -> Result<String, RowError> {
    encode(&OutcomeRow::from(o))
}

/// An outcome from its JSON row.
pub fn decode_outcome(bytes: &[u8]) -> Result<OutcomeRecord, RowError> {
    OutcomeRecord::try_from(decode::<OutcomeRow>(bytes)?)
}

/// A key as its JSON row.
pub fn encode_key(k: &ApiKey) -> Result<String, RowError> {
    encode(&KeyRow::from(k))
}

/// A key from its JSON row.
pub fn decode_key(bytes: &[u8]) -> Result<ApiKey, RowError> {
    ApiKey::try_from(decode::<KeyRow>(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner() -> Miner {
        Miner {
            address: "0xab00000000000000000000000000000000000001"
                .parse()
                .unwrap(),
            endpoint: Endpoint::try_from("http://m1.example.com:8080".to_string()).unwrap(),
            capabilities: Capabilities {
                models: vec!["llama3.2".into()],
                gpu_memory: 16384,
                max_concurrent_jobs: 4,
                job_types: vec!["inference".into()],
            },
            stake: 100,
            token_hash: "h1".into(),
            registered_at: 1_000,
            updated_at: 2_000,
            proven: false,
            profile: None,
        }
    }

    /// The bytes the stores write, pinned: a change here is a change of the stored format
    /// and needs a new FORMAT_VERSION, whatever happened to the domain types.
    #[test]
    fn rows_are_written_in_the_pinned_format() {
        assert_eq!(
            encode_miner(&miner()).unwrap(),
            r#"{"v":2,"address":"0xab00000000000000000000000000000000000001","endpoint":"http://m1.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4,"job_types":["inference"]},"stake":100,"token_hash":"h1","registered_at":1000,"updated_at":2000,"proven":false}"#
        );
        let stats = MinerStats {
            successes: 1.5,
            failures: 0.5,
            latency_sum_ms: 250.0,
            latency_count: 1.0,
            consecutive_failures: 2,
            last_failure_at: 7,
            jobs_total: 3,
            jobs_succeeded: 1,
            jobs_failed: 2,
            as_of: 9,
        };
        assert_eq!(
            encode_stats(&stats).unwrap(),
            r#"{"v":2,"successes":1.5,"failures":0.5,"latency_sum_ms":250.0,"latency_count":1.0,"consecutive_failures":2,"last_failure_at":7,"jobs_total":3,"jobs_succeeded":1,"jobs_failed":2,"as_of":9}"#
        );
        let av = Availability {
            up: 3.0,
            total: 4.0,
            as_of: 77,
        };
        assert_eq!(
            encode_availability(&av).unwrap(),
            r#"{"v":2,"up":3.0,"total":4.0,"as_of":77}"#
        );
        let o = OutcomeRecord {
            match_id: format!("{:032x}", 42),
            address: miner().address,
            success: false,
            latency_ms: None,
            at: 5,
            error: Some("timeout".into()),
        };
        assert_eq!(
            encode_outcome(&o).unwrap(),
            r#"{"v":2,"match_id":"0000000000000000000000000000002a","address":"0xab00000000000000000000000000000000000001","success":false,"latency_ms":null,"at":5,"error":"timeout"}"#
        );
        assert_eq!(
            decode_miner(encode_miner(&miner()).unwrap().as_bytes()).unwrap(),
            miner()
        );
        assert_eq!(
            decode_stats(encode_stats(&stats).unwrap().as_bytes()).unwrap(),
            stats
        );
        assert_eq!(
            decode_availability(encode_availability(&av).unwrap().as_bytes()).unwrap(),
            av
        );
        assert_eq!(
            decode_outcome(encode_outcome(&o).unwrap().as_bytes()).unwrap(),
            o
        );
    }

    /// A miner registered by name is written as version 3 with its profile, pinned; a miner
    /// without one is still written as version 2 (above), which the build before reads.
    #[test]
    fn named_miner_rows_are_version_3_and_pinned() {
        let mut m = miner();
        m.address = Address::for_miner_id("aitbc-miner-1");
        m.capabilities.models = Vec::new();
        m.capabilities.gpu_memory = 0;
        m.profile = Some(Box::new(Profile {
            miner_id: "aitbc-miner-1".into(),
            proto: "http".into(),
            gpu_name: None,
            cpu_cores: Some(16),
            ram_gb: Some(64.0),
            base_price: Some("0.01".into()),
            tags: [("cuda".to_string(), "12.4".to_string())].into(),
            region: Some("eu".into()),
        }));
        let text = encode_miner(&m).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"v":3,"address":"{}","endpoint":"http://m1.example.com:8080","capabilities":{{"models":[],"gpu_memory":0,"max_concurrent_jobs":4,"job_types":["inference"]}},"stake":100,"token_hash":"h1","registered_at":1000,"updated_at":2000,"proven":false,"profile":{{"miner_id":"aitbc-miner-1","proto":"http","gpu_name":null,"cpu_cores":16,"ram_gb":64.0,"base_price":"0.01","tags":{{"cuda":"12.4"}},"region":"eu"}}}}"#,
                m.address
            )
        );
        assert_eq!(decode_miner(text.as_bytes()).unwrap(), m);
        assert!(encode_miner(&miner()).unwrap().starts_with(r#"{"v":2,"#));
    }

    /// A key row is pinned like the others, holds the digest (never a secret), and a
    /// row naming an unknown role or a short digest is refused, not half-read.
    #[test]
    fn key_rows_are_pinned_and_checked() {
        let k = ApiKey {
            id: 7,
            name: "coordinator-1".into(),
            role: Role::Client,
            created_at: 1_700_000_000_000,
            digest: [0xab; 32],
        };
        let text = encode_key(&k).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"v":2,"id":7,"name":"coordinator-1","role":"client","created_at":1700000000000,"digest":"{}"}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(decode_key(text.as_bytes()).unwrap(), k);
        let root = text.replace("\"client\"", "\"root\"");
        assert!(matches!(
            decode_key(root.as_bytes()),
            Err(RowError::Invalid { field, .. }) if field == "role"
        ));
        let short = text.replace(&"ab".repeat(32), "abab");
        assert!(matches!(
            decode_key(short.as_bytes()),
            Err(RowError::Invalid { field, .. }) if field == "digest"
        ));
        let newer = text.replace("\"v\":2", "\"v\":9");
        assert!(matches!(
            decode_key(newer.as_bytes()),
            Err(RowError::Newer { .. })
        ));
    }

    /// Rows as the code before format versions wrote them (serde of the domain types).
    #[test]
    fn rows_without_a_version_still_read() {
        let m = decode_miner(br#"{"address":"0xAB00000000000000000000000000000000000001","endpoint":"http://m1.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4,"job_types":["inference"]},"stake":100,"token_hash":"h1","registered_at":1000,"updated_at":2000}"#).unwrap();
        assert_eq!(m, miner());
        // Before job types existed, a miner served inference.
        let m = decode_miner(br#"{"address":"0xab00000000000000000000000000000000000001","endpoint":"http://m1.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4},"stake":100,"token_hash":"h1","registered_at":1000,"updated_at":2000}"#).unwrap();
        assert_eq!(m.capabilities.job_types, vec!["inference".to_string()]);
        let s = decode_stats(br#"{"successes":1.0,"failures":0.0,"latency_sum_ms":0.0,"latency_count":0.0,"consecutive_failures":0,"last_failure_at":0,"jobs_total":1,"jobs_succeeded":1,"jobs_failed":0,"as_of":3}"#).unwrap();
        assert_eq!((s.jobs_total, s.as_of), (1, 3));
        let a = decode_availability(br#"{"up":1.0,"total":2.0,"as_of":9}"#).unwrap();
        assert_eq!(a.total, 2.0);
        let o = decode_outcome(br#"{"match_id":"0000000000000000000000000000002a","address":"0xab00000000000000000000000000000000000001","success":true,"latency_ms":250.0,"at":5,"error":null}"#).unwrap();
        assert_eq!((o.success, o.at, o.latency_ms), (true, 5, Some(250.0)));
    }

    /// A version-1 miner row (written before signatures) reads as unproven; a proven miner
    /// round-trips its flag.
    #[test]
    fn miner_rows_before_version_2_read_as_unproven() {
        let m = decode_miner(br#"{"v":1,"address":"0xab00000000000000000000000000000000000001","endpoint":"http://m1.example.com:8080","capabilities":{"models":["llama3.2"],"gpu_memory":16384,"max_concurrent_jobs":4,"job_types":["inference"]},"stake":100,"token_hash":"h1","registered_at":1000,"updated_at":2000}"#).unwrap();
        assert!(!m.proven);
        let proven = Miner {
            proven: true,
            ..miner()
        };
        let text = encode_miner(&proven).unwrap();
        assert!(
            text.starts_with(r#"{"v":2,"#) && text.ends_with(r#""proven":true}"#),
            "{text}"
        );
        assert!(decode_miner(text.as_bytes()).unwrap().proven);
    }

    /// Decayed statistics are arbitrary doubles: a reload must give back the very value
    /// stored, or `poolhub migrate`'s record-for-record check fails on real data.
    #[test]
    fn decayed_values_read_back_exactly() {
        let stats = MinerStats {
            failures: 0.9999999940632761,
            latency_sum_ms: 499.999998515819,
            latency_count: 1.999999994063276,
            ..MinerStats::default()
        };
        let text = encode_stats(&stats).unwrap();
        assert_eq!(decode_stats(text.as_bytes()).unwrap(), stats, "{text}");
    }

    #[test]
    fn a_newer_row_is_refused_by_its_version() {
        // Version 4 may have moved every field: the version is what is reported.
        let e = decode_miner(br#"{"v":4,"id":"0xab","endpoints":[]}"#).unwrap_err();
        assert!(
            matches!(
                e,
                RowError::Newer {
                    what: "miner",
                    found: 4
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "miner row has format version 4; this poolhub reads up to version 3: use a newer poolhub"
        );
        assert!(matches!(
            decode_stats(br#"{"v":99}"#),
            Err(RowError::Newer {
                what: "stats",
                found: 99
            })
        ));
        assert!(matches!(
            decode_outcome(b"not json"),
            Err(RowError::Malformed {
                what: "outcome",
                ..
            })
        ));
        assert!(matches!(
            decode_outcome(br#"{"match_id":"x","address":"nope","success":true,"latency_ms":null,"at":5,"error":null}"#),
            Err(RowError::Invalid { what: "outcome", .. })
        ));
    }
}
