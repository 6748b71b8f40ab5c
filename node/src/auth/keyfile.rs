//! A secret key file sealed with a passphrase (what `mesh fleet encrypt` makes of
//! `fleet.key`), pure: bytes and a passphrase in, bytes out.
//!
//! Format, version 1 (integers big-endian):
//!
//! ```text
//! "camesh-sealed-key\n" | version u8 = 1 | kdf u8 = 1 (PBKDF2-HMAC-SHA256) | iterations u32
//!   | salt [16] | nonce [12] | AES-256-GCM(key, nonce, aad = everything before) of the secret | tag [16]
//! ```
//!
//! The key is PBKDF2-HMAC-SHA256(passphrase, salt, iterations), [`ITERATIONS`] when
//! sealing (OWASP's figure for PBKDF2-HMAC-SHA256); the header is authenticated, so a
//! lowered iteration count or a changed salt fails like a wrong passphrase. Both
//! primitives are ring's, already in the build for the media cipher ([`super::media_key`])
//! and QUIC's TLS, so sealing adds no crate. A wrong passphrase and an altered file are
//! the same failure (the tag does not verify) and are reported as one.

use std::num::NonZeroU32;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::pbkdf2;

/// The first bytes of a sealed key file (a plain `fleet.key` is a protobuf key, which
/// never starts so).
pub const MAGIC: &[u8] = b"camesh-sealed-key\n";
pub const VERSION: u8 = 1;
const KDF_PBKDF2_SHA256: u8 = 1;
/// PBKDF2 rounds when sealing.
pub const ITERATIONS: u32 = 600_000;
/// Rounds accepted when opening (a file asking for more would hang the command).
const MAX_ITERATIONS: u32 = 50_000_000;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + 1 + 4 + SALT_LEN + NONCE_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("wrong passphrase (or the file was altered)")]
    WrongPassphrase,
    #[error("not a sealed key file: {0}")]
    Malformed(&'static str),
    #[error("sealed key file version {0} is not known to this build (it knows {VERSION})")]
    Version(u8),
    #[error("an empty passphrase is not accepted")]
    EmptyPassphrase,
}

/// Whether `bytes` are a sealed key file (rather than a plain key).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Seals `secret` with `passphrase` ([`ITERATIONS`] rounds, a fresh salt and nonce).
pub fn seal(secret: &[u8], passphrase: &str) -> Result<Vec<u8>, KeyFileError> {
    seal_with(secret, passphrase, ITERATIONS)
}

/// [`seal`] with a chosen number of rounds (tests use fewer).
pub fn seal_with(secret: &[u8], passphrase: &str, iterations: u32) -> Result<Vec<u8>, KeyFileError> {
    if passphrase.is_empty() {
        return Err(KeyFileError::EmptyPassphrase);
    }
    let rounds = NonZeroU32::new(iterations.clamp(1, MAX_ITERATIONS)).ok_or(KeyFileError::Malformed("rounds"))?;
    let salt: [u8; SALT_LEN] = rand::random();
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut out = Vec::with_capacity(HEADER_LEN + secret.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(KDF_PBKDF2_SHA256);
    out.extend_from_slice(&rounds.get().to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = derive(passphrase, &salt, rounds);
    let mut body = secret.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&out[..]), &mut body)
        .map_err(|_| KeyFileError::Malformed("secret too long to seal"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a sealed key file with `passphrase`: the secret, or why not.
pub fn open(bytes: &[u8], passphrase: &str) -> Result<Vec<u8>, KeyFileError> {
    if !is_sealed(bytes) {
        return Err(KeyFileError::Malformed("no header"));
    }
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(KeyFileError::Malformed("too short"));
    }
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let mut at = MAGIC.len();
    if header[at] != VERSION {
        return Err(KeyFileError::Version(header[at]));
    }
    at += 1;
    if header[at] != KDF_PBKDF2_SHA256 {
        return Err(KeyFileError::Malformed("unknown key derivation"));
    }
    at += 1;
    let mut n = [0u8; 4];
    n.copy_from_slice(&header[at..at + 4]);
    let rounds = NonZeroU32::new(u32::from_be_bytes(n))
        .filter(|r| r.get() <= MAX_ITERATIONS)
        .ok_or(KeyFileError::Malformed("round count out of range"))?;
    at += 4;
    let salt = &header[at..at + SALT_LEN];
    at += SALT_LEN;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[at..at + NONCE_LEN]);
    let key = derive(passphrase, salt, rounds);
    let mut body = sealed.to_vec();
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(header), &mut body)
        .map_err(|_| KeyFileError::WrongPassphrase)?;
    Ok(plain.to_vec())
}

fn derive(passphrase: &str, salt: &[u8], rounds: NonZeroU32) -> LessSafeKey {
    let mut k = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, passphrase.as_bytes(), &mut k);
    // 32 bytes is always a valid AES-256 key; ring only rejects a wrong length.
    let key = UnboundKey::new(&AES_256_GCM, &k).expect("a 32-byte key");
    k.fill(0);
    LessSafeKey::new(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: u32 = 1_000;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let secret = b"the fleet root key".to_vec();
        let sealed = seal_with(&secret, "correct horse", FAST).expect("sealed");
        assert!(is_sealed(&sealed));
        assert!(
            !sealed.windows(secret.len()).any(|w| w == secret),
            "no plaintext in the file"
        );
        assert_eq!(open(&sealed, "correct horse").expect("opens"), secret);
        assert_eq!(open(&sealed, "wrong horse"), Err(KeyFileError::WrongPassphrase));
        assert_eq!(open(&sealed, ""), Err(KeyFileError::WrongPassphrase));
        // Fresh salt and nonce every time.
        assert_ne!(seal_with(&secret, "correct horse", FAST).expect("sealed"), sealed);
    }

    #[test]
    fn the_header_is_authenticated() {
        let sealed = seal_with(b"k", "pw", FAST).expect("sealed");
        // Fewer rounds (an attacker making guesses cheaper), another salt, another nonce.
        for at in [MAGIC.len() + 5, MAGIC.len() + 6, HEADER_LEN - 1, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert_eq!(open(&bad, "pw"), Err(KeyFileError::WrongPassphrase), "byte {at}");
        }
    }

    #[test]
    fn malformed_files_are_refused_with_a_reason() {
        let sealed = seal_with(b"k", "pw", FAST).expect("sealed");
        let mut v2 = sealed.clone();
        v2[MAGIC.len()] = 2;
        assert_eq!(open(&v2, "pw"), Err(KeyFileError::Version(2)));
        assert!(matches!(
            open(&sealed[..HEADER_LEN], "pw"),
            Err(KeyFileError::Malformed(_))
        ));
        assert!(matches!(
            open(b"\x08\x01\x12\x40", "pw"),
            Err(KeyFileError::Malformed(_))
        ));
        let mut huge = sealed.clone();
        huge[MAGIC.len() + 2..MAGIC.len() + 6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(open(&huge, "pw"), Err(KeyFileError::Malformed(_))));
        assert_eq!(seal(b"k", ""), Err(KeyFileError::EmptyPassphrase));
    }

    #[test]
    fn sealing_uses_the_full_round_count() {
        let sealed = seal(b"k", "pw").expect("sealed");
        let rounds = &sealed[MAGIC.len() + 2..MAGIC.len() + 6];
        assert_eq!(u32::from_be_bytes(rounds.try_into().expect("4 bytes")), ITERATIONS);
        const { assert!(ITERATIONS >= 600_000) };
    }
}
