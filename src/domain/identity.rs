//! Proof that a party holds an address's key: Sign-In with Ethereum (EIP-4361) messages,
//! signed with `personal_sign` (EIP-191), checked by recovering the secp256k1 public key.
//!
//! A miner's address is an Ethereum address, so the only party that can prove it owns one is
//! the holder of its private key. The hub writes a challenge message naming itself (the
//! domain), the address and a single-use nonce; the miner signs it with its wallet; the hub
//! recovers the signer from the signature and compares. Everything here is pure: the caller
//! supplies the time, the nonce and the stored message, and keeps the nonce single-use.
//!
//! The cryptography is RustCrypto's (`k256` for ECDSA public-key recovery, `sha3` for
//! Keccak-256); nothing here implements a primitive. The tests check against signatures made
//! by eth-account (`tests/vectors/`), not only against this module's own output.

use super::Address;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};
use std::time::{Duration, UNIX_EPOCH};

/// Why a signature does not prove ownership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature must be 0x followed by 130 hexadecimal digits (65 bytes: r, s, v)")]
    Malformed,
    #[error("signature's recovery byte v must be 27, 28, 0 or 1")]
    BadRecoveryId,
    #[error("signature does not verify")]
    Invalid,
}

/// A 65-byte `r || s || v` signature as `personal_sign` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSignature([u8; 65]);

impl std::str::FromStr for RawSignature {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix("0x").ok_or(SignatureError::Malformed)?;
        let mut bytes = [0u8; 65];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| SignatureError::Malformed)?;
        Ok(Self(bytes))
    }
}

/// The EIP-55 mixed-case checksum form of an address, which EIP-4361 requires in the message.
pub fn checksummed(address: &Address) -> String {
    let lower = hex::encode(address.as_bytes());
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Ethereum address of a public key: the last 20 bytes of the Keccak-256 of its
/// uncompressed encoding without the `0x04` tag.
fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(&hash[12..]);
    Address::from_bytes(bytes)
}

/// The EIP-191 (version 0x45) hash that `personal_sign` signs.
pub fn personal_message_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The address whose key made `signature` over `message` with `personal_sign`.
///
/// Accepts `v` as 27/28 (what wallets return) or 0/1. A high-`s` signature (the malleable
/// twin of a valid one) is normalised rather than refused: it proves the same key, and the
/// caller's single-use nonce is what stops replays.
pub fn recover_signer(message: &[u8], signature: &RawSignature) -> Result<Address, SignatureError> {
    let raw = &signature.0;
    let v = match raw[64] {
        27 | 28 => raw[64] - 27,
        0 | 1 => raw[64],
        _ => return Err(SignatureError::BadRecoveryId),
    };
    let mut sig = Signature::from_slice(&raw[..64]).map_err(|_| SignatureError::Invalid)?;
    let mut recid = RecoveryId::from_byte(v).ok_or(SignatureError::BadRecoveryId)?;
    if let Some(low) = sig.normalize_s() {
        sig = low;
        recid = RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced());
    }
    let key = VerifyingKey::recover_from_prehash(&personal_message_hash(message), &sig, recid)
        .map_err(|_| SignatureError::Invalid)?;
    Ok(address_of(&key))
}

/// An address the operator barred from the pool: it cannot register, and its miner (if
/// any) is removed when the ban is placed, so it is never matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub address: Address,
    /// The operator's note, shown in the ban list (never to the miner).
    pub reason: Option<String>,
    /// Unix ms.
    pub banned_at: u64,
}

/// An EIP-4361 sign-in request for one address, as the hub issues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The hub, as the authority the miner signs in to (the `Host` it is reached at).
    pub domain: String,
    pub address: Address,
    /// What the signature will be used for, in words the wallet shows the operator.
    pub statement: String,
    /// The resource the sign-in is for (an RFC 3986 URI).
    pub uri: String,
    pub chain_id: u64,
    /// Single-use, at least 8 alphanumeric characters (EIP-4361).
    pub nonce: String,
    /// Unix ms.
    pub issued_at: u64,
    /// Unix ms; the signature is refused after this.
    pub expires_at: u64,
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

impl Challenge {
    /// The message text, in EIP-4361's exact layout: this is what the wallet signs.
    pub fn message(&self) -> String {
        format!(
            "{domain} wants you to sign in with your Ethereum account:\n\
             {address}\n\
             \n\
             {statement}\n\
             \n\
             URI: {uri}\n\
             Version: 1\n\
             Chain ID: {chain}\n\
             Nonce: {nonce}\n\
             Issued At: {issued}\n\
             Expiration Time: {expires}",
            domain = self.domain,
            address = checksummed(&self.address),
            statement = self.statement,
            uri = self.uri,
            chain = self.chain_id,
            nonce = self.nonce,
            issued = rfc3339(self.issued_at),
            expires = rfc3339(self.expires_at),
        )
    }

    /// Whether `signature` over this challenge's message was made by its address's key at
    /// `now` (unix ms), before the challenge expired.
    pub fn verify(&self, signature: &RawSignature, now: u64) -> Result<(), SignatureError> {
        if now > self.expires_at {
            return Err(SignatureError::Invalid);
        }
        let signer = recover_signer(self.message().as_bytes(), signature)?;
        if signer == self.address {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Signatures made by eth-account (see tests/vectors/gen_eip191.py for how).
    #[derive(Deserialize)]
    struct Vectors {
        personal_sign: Vec<Signed>,
        checksum: Vec<Checksum>,
    }

    #[derive(Deserialize)]
    struct Signed {
        address: String,
        message: String,
        signature: String,
    }

    #[derive(Deserialize)]
    struct Checksum {
        lower: String,
        checksummed: String,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../../tests/vectors/eip191.json")).expect("vectors")
    }

    fn addr(s: &str) -> Address {
        s.parse().expect("address")
    }

    #[test]
    fn recovers_the_signer_of_eth_account_signatures() {
        let v = vectors();
        assert!(v.personal_sign.len() >= 5);
        for s in &v.personal_sign {
            let sig: RawSignature = s.signature.parse().expect("signature");
            let signer = recover_signer(s.message.as_bytes(), &sig).expect("recovers");
            assert_eq!(signer, addr(&s.address), "message {:?}", s.message);
        }
    }

    #[test]
    fn a_changed_message_or_signature_names_another_signer() {
        let v = vectors();
        let s = &v.personal_sign[0];
        let sig: RawSignature = s.signature.parse().expect("signature");
        let other = format!("{} ", s.message);
        assert_ne!(
            recover_signer(other.as_bytes(), &sig).ok(),
            Some(addr(&s.address))
        );
        let mut bytes = sig.0;
        bytes[10] ^= 1;
        assert_ne!(
            recover_signer(s.message.as_bytes(), &RawSignature(bytes)).ok(),
            Some(addr(&s.address))
        );
    }

    #[test]
    fn the_malleable_high_s_twin_proves_the_same_key() {
        use k256::elliptic_curve::ops::Neg;
        let v = vectors();
        let s = &v.personal_sign[0];
        let sig: RawSignature = s.signature.parse().expect("signature");
        let parsed = Signature::from_slice(&sig.0[..64]).expect("sig");
        let (r, low_s) = parsed.split_scalars();
        let high = Signature::from_scalars(r, low_s.neg()).expect("high-s");
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&high.to_bytes());
        bytes[64] = if sig.0[64] == 27 { 28 } else { 27 };
        let signer = recover_signer(s.message.as_bytes(), &RawSignature(bytes)).expect("ok");
        assert_eq!(signer, addr(&s.address));
    }

    #[test]
    fn malformed_signatures_are_named() {
        assert_eq!(
            "0x1234".parse::<RawSignature>(),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            "ab".repeat(65).parse::<RawSignature>(),
            Err(SignatureError::Malformed)
        );
        let v = vectors();
        let s = &v.personal_sign[0];
        let mut sig: RawSignature = s.signature.parse().expect("signature");
        sig.0[64] = 29;
        assert_eq!(
            recover_signer(s.message.as_bytes(), &sig),
            Err(SignatureError::BadRecoveryId)
        );
        let zero = RawSignature([0u8; 65]);
        assert_eq!(recover_signer(b"x", &zero), Err(SignatureError::Invalid));
    }

    #[test]
    fn checksums_match_eip55() {
        for c in vectors().checksum {
            assert_eq!(checksummed(&addr(&c.lower)), c.checksummed);
        }
    }

    #[test]
    fn challenge_message_has_the_eip4361_layout_and_verifies_a_wallet_signature() {
        let v = vectors();
        let s = v
            .personal_sign
            .iter()
            .find(|s| s.message.contains("wants you to sign in"))
            .expect("a SIWE vector");
        let c = Challenge {
            domain: "pool.example:8000".into(),
            address: addr(&s.address),
            statement: "Register this address with the pool hub.".into(),
            uri: "http://pool.example:8000/api/v1/miners/register".into(),
            chain_id: 1,
            nonce: "k3Xv9QmN2pLw7RtA".into(),
            issued_at: 1_767_225_600_000,
            expires_at: 1_767_225_900_000,
        };
        // The vector was signed over exactly this text by eth-account.
        assert_eq!(c.message(), s.message);
        let sig: RawSignature = s.signature.parse().expect("signature");
        assert_eq!(c.verify(&sig, c.issued_at + 1), Ok(()));
        assert_eq!(
            c.verify(&sig, c.expires_at + 1),
            Err(SignatureError::Invalid),
            "expired"
        );
        let mut other = c.clone();
        other.nonce = "differentNonce12".into();
        assert_eq!(
            other.verify(&sig, c.issued_at),
            Err(SignatureError::Invalid)
        );
        let mut wrong = c.clone();
        wrong.address = addr("0x00000000000000000000000000000000000000aa");
        assert_eq!(
            wrong.verify(&sig, c.issued_at),
            Err(SignatureError::Invalid)
        );
    }
}
