//! Names people type into a config or a command: camera and fleet ids, and the fleet
//! root public key in its text form (base58 of the protobuf encoding).
//!
//! A leaf: it imports nothing of this crate, so `config` validates with it and discovery,
//! auth and the gateway check peers' and users' input with the same rules.

use libp2p::identity::PublicKey;

/// Camera ids and fleet ids: short, lowercase, safe in file names, topics and keys.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Decodes a fleet root public key from its text form; the error says why it is not one.
pub fn root_key_from_text(s: &str) -> Result<PublicKey, String> {
    let bytes = bs58::decode(s.trim()).into_vec().map_err(|e| e.to_string())?;
    PublicKey::try_decode_protobuf(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_lowercase_and_file_safe() {
        for ok in ["cam1", "front-door", "a_b", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "Front", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn root_key_text_roundtrips_and_rejects_junk() {
        let key = libp2p::identity::Keypair::generate_ed25519().public();
        let text = bs58::encode(key.encode_protobuf()).into_string();
        assert_eq!(root_key_from_text(&format!(" {text}\n")).expect("parses"), key);
        assert!(root_key_from_text("not-base58-0OIl").is_err());
        assert!(root_key_from_text("3mJr7AoUXx2Wqd").is_err());
    }
}
