//! The compact binary rows of the redb file (row format version 4).
//!
//! Loading the index parsed three JSON rows per miner, and re-parsed each endpoint as a URL:
//! at 100,000 miners that was most of the start-up time, and the JSON field names were most
//! of the file. The per-miner rows (miner, statistics, availability) and the outcome rows
//! are now written as fixed-layout little-endian bytes:
//!
//! * the first byte is the row's format version, [`BINARY_VERSION`]. A JSON row (versions
//!   0 to 3, `store::rows`) always starts with `{` (0x7B), so one byte tells the two apart
//!   and every older row still reads. A first byte above [`BINARY_VERSION`] that is not `{`
//!   is a newer layout: refused ([`RowError::Newer`]), never misread;
//! * strings are a `u32` length and UTF-8 bytes; numbers are fixed-width little-endian;
//! * the rare, open-ended part (the profile of a miner registered by name) stays JSON inside
//!   the binary row, behind a flag.
//!
//! PostgreSQL keeps JSON rows (its JSONB columns are meant to be read by people and SQL).
//! The redb store upgrades a file's per-miner rows to this format in place when it opens
//! one written before (`redb::tables::upgrade_rows`); older outcome rows stay JSON and are
//! read as such until pruning retires them.
//!
//! To change a layout: bump [`BINARY_VERSION`], keep decoding every older one here, and add
//! a golden test with the new bytes.

use super::rows::{self, ProfileRow, RowError};
use crate::domain::scoring::{Availability, MinerStats};
use crate::domain::{Address, Capabilities, Endpoint, Miner, OutcomeRecord};

/// The binary row format this build writes and reads (JSON rows are versions 0 to 3).
pub const BINARY_VERSION: u8 = 4;

/// Whether `bytes` is a JSON row of an earlier format (which starts with `{`).
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, v: &[String]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for s in v {
        put_str(out, s);
    }
}

/// Reads a binary row front to back; running past its end is a malformed row.
struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version byte and positions after it.
    fn open(what: &'static str, bytes: &'a [u8]) -> Result<Self, RowError> {
        match bytes.first() {
            Some(&BINARY_VERSION) => Ok(Self {
                what,
                rest: &bytes[1..],
            }),
            Some(&v) if v > BINARY_VERSION => Err(RowError::Newer {
                what,
                found: u32::from(v),
            }),
            _ => Err(RowError::Binary {
                what,
                message: "unknown format version byte",
            }),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RowError> {
        if self.rest.len() < n {
            return Err(RowError::Binary {
                what: self.what,
                message: "the row ends early",
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RowError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, RowError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RowError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, RowError> {
        self.array().map(u64::from_le_bytes)
    }

    fn f64(&mut self) -> Result<f64, RowError> {
        self.array().map(f64::from_le_bytes)
    }

    fn str(&mut self) -> Result<String, RowError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| RowError::Binary {
            what: self.what,
            message: "a string is not UTF-8",
        })
    }

    fn strs(&mut self) -> Result<Vec<String>, RowError> {
        let n = self.u32()? as usize;
        // Each string takes at least its 4-byte length: a count the row cannot hold is
        // refused before anything is allocated for it.
        if n > self.rest.len() / 4 {
            return Err(RowError::Binary {
                what: self.what,
                message: "a list is longer than the row",
            });
        }
        (0..n).map(|_| self.str()).collect()
    }

    /// Nothing may follow the last field.
    fn end(self) -> Result<(), RowError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(RowError::Binary {
                what: self.what,
                message: "bytes after the last field",
            })
        }
    }
}

const PROVEN: u8 = 1;
const HAS_PROFILE: u8 = 2;

/// A miner as its binary row.
pub fn encode_miner(m: &Miner) -> Result<Vec<u8>, RowError> {
    let mut out = Vec::with_capacity(160);
    out.push(BINARY_VERSION);
    out.extend_from_slice(m.address.as_bytes());
    put_str(&mut out, m.endpoint.as_str());
    put_strs(&mut out, &m.capabilities.models);
    out.extend_from_slice(&m.capabilities.gpu_memory.to_le_bytes());
    out.extend_from_slice(&m.capabilities.max_concurrent_jobs.to_le_bytes());
    put_strs(&mut out, &m.capabilities.job_types);
    out.extend_from_slice(&m.stake.to_le_bytes());
    put_str(&mut out, &m.token_hash);
    out.extend_from_slice(&m.registered_at.to_le_bytes());
    out.extend_from_slice(&m.updated_at.to_le_bytes());
    let flags =
        if m.proven { PROVEN } else { 0 } | if m.profile.is_some() { HAS_PROFILE } else { 0 };
    out.push(flags);
    if let Some(p) = &m.profile {
        put_str(&mut out, &rows::encode(&ProfileRow::from(&**p))?);
    }
    Ok(out)
}

/// A miner from its row, binary or JSON.
pub fn decode_miner(bytes: &[u8]) -> Result<Miner, RowError> {
    if is_json(bytes) {
        return rows::decode_miner(bytes);
    }
    const WHAT: &str = "miner";
    let mut r = Reader::open(WHAT, bytes)?;
    let address = Address::from_bytes(r.array()?);
    let endpoint = Endpoint::from_stored(r.str()?).map_err(|e| RowError::Invalid {
        what: WHAT,
        field: e.field,
        message: e.message,
    })?;
    let models = r.strs()?;
    let gpu_memory = r.u64()?;
    let max_concurrent_jobs = r.u32()?;
    let job_types = r.strs()?;
    let stake = r.u64()?;
    let token_hash = r.str()?;
    let registered_at = r.u64()?;
    let updated_at = r.u64()?;
    let flags = r.u8()?;
    let profile = if flags & HAS_PROFILE != 0 {
        let json = r.str()?;
        Some(Box::new(
            rows::decode::<ProfileRow>(json.as_bytes())?.into(),
        ))
    } else {
        None
    };
    r.end()?;
    Ok(Miner {
        address,
        endpoint,
        capabilities: Capabilities {
            models,
            gpu_memory,
            max_concurrent_jobs,
            job_types,
        },
        stake,
        token_hash,
        registered_at,
        updated_at,
        proven: flags & PROVEN != 0,
        profile,
    })
}

/// Statistics as their binary row (77 bytes).
pub fn encode_stats(s: &MinerStats) -> Vec<u8> {
    let mut out = Vec::with_capacity(77);
    out.push(BINARY_VERSION);
    for f in [s.successes, s.failures, s.latency_sum_ms, s.latency_count] {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out.extend_from_slice(&s.consecutive_failures.to_le_bytes());
    for n in [
        s.last_failure_at,
        s.jobs_total,
        s.jobs_succeeded,
        s.jobs_failed,
        s.as_of,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

/// Statistics from their row, binary or JSON.
pub fn decode_stats(bytes: &[u8]) -> Result<MinerStats, RowError> {
    if is_json(bytes) {
        return rows::decode_stats(bytes);
    }
    let mut r = Reader::open("stats", bytes)?;
    let s = MinerStats {
        successes: r.f64()?,
        failures: r.f64()?,
        latency_sum_ms: r.f64()?,
        latency_count: r.f64()?,
        consecutive_failures: r.u32()?,
        last_failure_at: r.u64()?,
        jobs_total: r.u64()?,
        jobs_succeeded: r.u64()?,
        jobs_failed: r.u64()?,
        as_of: r.u64()?,
    };
    r.end()?;
    Ok(s)
}

/// An availability checkpoint as its binary row (25 bytes).
pub fn encode_availability(a: &Availability) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(BINARY_VERSION);
    out.extend_from_slice(&a.up.to_le_bytes());
    out.extend_from_slice(&a.total.to_le_bytes());
    out.extend_from_slice(&a.as_of.to_le_bytes());
    out
}

/// An availability checkpoint from its row, binary or JSON.
pub fn decode_availability(bytes: &[u8]) -> Result<Availability, RowError> {
    if is_json(bytes) {
        return rows::decode_availability(bytes);
    }
    let mut r = Reader::open("availability", bytes)?;
    let a = Availability {
        up: r.f64()?,
        total: r.f64()?,
        as_of: r.u64()?,
    };
    r.end()?;
    Ok(a)
}

const SUCCESS: u8 = 1;
const HAS_LATENCY: u8 = 2;
const HAS_ERROR: u8 = 4;

/// An outcome as its binary row.
pub fn encode_outcome(o: &OutcomeRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.push(BINARY_VERSION);
    put_str(&mut out, &o.match_id);
    out.extend_from_slice(o.address.as_bytes());
    let flags = if o.success { SUCCESS } else { 0 }
        | if o.latency_ms.is_some() {
            HAS_LATENCY
        } else {
            0
        }
        | if o.error.is_some() { HAS_ERROR } else { 0 };
    out.push(flags);
    if let Some(l) = o.latency_ms {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(&o.at.to_le_bytes());
    if let Some(e) = &o.error {
        put_str(&mut out, e);
    }
    out
}

/// An outcome from its row, binary or JSON.
pub fn decode_outcome(bytes: &[u8]) -> Result<OutcomeRecord, RowError> {
    if is_json(bytes) {
        return rows::decode_outcome(bytes);
    }
    let mut r = Reader::open("outcome", bytes)?;
    let match_id = r.str()?;
    let address = Address::from_bytes(r.array()?);
    let flags = r.u8()?;
    let latency_ms = if flags & HAS_LATENCY != 0 {
        Some(r.f64()?)
    } else {
        None
    };
    let at = r.u64()?;
    let error = if flags & HAS_ERROR != 0 {
        Some(r.str()?)
    } else {
        None
    };
    r.end()?;
    Ok(OutcomeRecord {
        match_id,
        address,
        success: flags & SUCCESS != 0,
        latency_ms,
        at,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fixtures::{address, miner, named_miner};

    fn le(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn s(v: &str) -> Vec<u8> {
        le(&[&(v.len() as u32).to_le_bytes(), v.as_bytes()])
    }

    /// The layout, spelled out field by field: a change to the encoder that moves a byte
    /// fails here, and must come with a new version.
    #[test]
    fn a_miner_row_is_pinned_byte_for_byte() {
        let m = miner(1, "h");
        let want = le(&[
            &[BINARY_VERSION],
            address(1).as_bytes(),
            &s("http://m1.example.com:8080"),
            &1u32.to_le_bytes(),
            &s("llama3.2"),
            &16384u64.to_le_bytes(),
            &4u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &s("inference"),
            &100u64.to_le_bytes(),
            &s("h"),
            &1000u64.to_le_bytes(),
            &1000u64.to_le_bytes(),
            &[0],
        ]);
        assert_eq!(encode_miner(&m).unwrap(), want);
        assert_eq!(decode_miner(&want).unwrap(), m);
    }

    #[test]
    fn stats_availability_and_outcome_rows_are_pinned() {
        let st = MinerStats {
            successes: 1.5,
            failures: 0.25,
            latency_sum_ms: 900.0,
            latency_count: 2.0,
            consecutive_failures: 3,
            last_failure_at: 4,
            jobs_total: 5,
            jobs_succeeded: 6,
            jobs_failed: 7,
            as_of: 8,
        };
        let want = le(&[
            &[BINARY_VERSION],
            &1.5f64.to_le_bytes(),
            &0.25f64.to_le_bytes(),
            &900f64.to_le_bytes(),
            &2f64.to_le_bytes(),
            &3u32.to_le_bytes(),
            &4u64.to_le_bytes(),
            &5u64.to_le_bytes(),
            &6u64.to_le_bytes(),
            &7u64.to_le_bytes(),
            &8u64.to_le_bytes(),
        ]);
        assert_eq!(encode_stats(&st), want);
        assert_eq!(want.len(), 77);
        assert_eq!(decode_stats(&want).unwrap(), st);

        let av = Availability {
            up: 3.0,
            total: 4.0,
            as_of: 77,
        };
        let want = le(&[
            &[BINARY_VERSION],
            &3f64.to_le_bytes(),
            &4f64.to_le_bytes(),
            &77u64.to_le_bytes(),
        ]);
        assert_eq!(encode_availability(&av), want);
        assert_eq!(decode_availability(&want).unwrap(), av);

        let o = OutcomeRecord {
            match_id: "0000000000000000000000000000000a".into(),
            address: address(1),
            success: false,
            latency_ms: Some(250.0),
            at: 10,
            error: Some("oom".into()),
        };
        let want = le(&[
            &[BINARY_VERSION],
            &s("0000000000000000000000000000000a"),
            address(1).as_bytes(),
            &[HAS_LATENCY | HAS_ERROR],
            &250f64.to_le_bytes(),
            &10u64.to_le_bytes(),
            &s("oom"),
        ]);
        assert_eq!(encode_outcome(&o), want);
        assert_eq!(decode_outcome(&want).unwrap(), o);
    }

    #[test]
    fn a_named_miner_keeps_its_profile_and_a_proven_one_its_flag() {
        let m = named_miner("rig-7", "h");
        assert_eq!(decode_miner(&encode_miner(&m).unwrap()).unwrap(), m);
        let mut p = miner(2, "t");
        p.proven = true;
        assert_eq!(decode_miner(&encode_miner(&p).unwrap()).unwrap(), p);
    }

    #[test]
    fn json_rows_of_earlier_formats_still_read() {
        let m = miner(3, "h");
        let json = rows::encode_miner(&m).unwrap();
        assert!(is_json(json.as_bytes()));
        assert_eq!(decode_miner(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn damaged_and_newer_rows_are_refused_not_misread() {
        let row = encode_miner(&miner(1, "h")).unwrap();
        for cut in [0, 1, 20, 30, row.len() - 1] {
            assert!(decode_miner(&row[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = row.clone();
        longer.push(0);
        assert!(matches!(
            decode_miner(&longer),
            Err(RowError::Binary { .. })
        ));
        let mut newer = row.clone();
        newer[0] = BINARY_VERSION + 1;
        let e = decode_miner(&newer).unwrap_err();
        assert!(e.to_string().contains("format version 5"), "{e}");
        // A list count the row cannot hold is refused before anything is allocated.
        let mut huge = row;
        let at = 1 + 20 + 4 + "http://m1.example.com:8080".len();
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_miner(&huge).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_stats_round_trip(
            a in proptest::num::f64::ANY, b in 0.0f64..1e9, c in 0u32..u32::MAX,
            d in proptest::num::u64::ANY, e in proptest::num::u64::ANY,
        ) {
            let st = MinerStats {
                successes: a, failures: b, latency_sum_ms: b, latency_count: a,
                consecutive_failures: c, last_failure_at: d, jobs_total: e,
                jobs_succeeded: d, jobs_failed: e, as_of: d,
            };
            let back = decode_stats(&encode_stats(&st)).unwrap();
            // Bit for bit, NaN included.
            proptest::prop_assert_eq!(back.successes.to_bits(), a.to_bits());
            proptest::prop_assert_eq!(back.consecutive_failures, c);
            proptest::prop_assert_eq!(back.jobs_total, e);
        }

        #[test]
        fn any_bytes_decode_to_a_row_or_an_error_never_a_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let mut b = bytes;
            if let Some(first) = b.first_mut() { *first = BINARY_VERSION; }
            let _ = decode_miner(&b);
            let _ = decode_stats(&b);
            let _ = decode_availability(&b);
            let _ = decode_outcome(&b);
        }
    }
}
