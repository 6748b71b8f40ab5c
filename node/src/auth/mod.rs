//! Fleet security: who may connect (layer 1), who may do what (layer 2), and the keys
//! that keep media private end to end.
//!
//! - [`signed`]: ed25519 signatures over typed, length-bounded protobuf bodies.
//! - [`cert`]: membership certificates, signed by the offline fleet root key; a peer
//!   without a valid one is disconnected and served nothing.
//! - [`grant`]: expiring capabilities bound to a holder's peer id, with delegation that
//!   can only narrow.
//! - [`admin`]: scoped admin certificates, so the root key can stay offline.
//! - [`revocation`]: what is revoked (peers, grant and admin serials), with the cascade.
//! - [`fleetlog`]: the fleet-state log (revocations, admins, invite redemptions): signed,
//!   ordered per issuer, reconciled between members; [`statefile`] keeps it on disk.
//! - [`invite`]: one-time enrolment invites.
//! - [`proof`]: the fleet proofs exchanged before either side of a connection shows
//!   its certificate.
//! - [`media_key`]: per-epoch AES-256-GCM keys; every frame is sealed once at the source.
//! - [`trust`]: a node's view of all of the above (members it verified, revocations it
//!   knows), shared by the tasks that enforce it, which picks up grants and certificates
//!   installed while the node runs; [`fleet`]: the root key files, which
//!   [`keyfile`] seals with a passphrase.
//! - [`audit`]: every admission, grant, revocation and refusal, appended to a log.
//!
//! Everything here except `audit`, `fleet` and the stored state in `trust` is pure:
//! bytes in, decisions out, bounded and never panicking on input.

pub mod admin;
pub mod audit;
pub mod cert;
pub mod fleet;
pub mod fleetlog;
pub mod grant;
pub mod invite;
pub mod keyfile;
pub mod media_key;
pub mod proof;
pub mod revocation;
pub mod rights;
pub mod signed;
pub mod statefile;
pub mod trust;

use std::time::{SystemTime, UNIX_EPOCH};

pub use cert::CertInfo;
pub use rights::Rights;
pub use trust::Trust;

/// A node's membership certificate, in its data folder: written when an admin enrols the
/// node ([`fleet::FleetRoot::enroll_dir`]), read and renewed by [`Trust`].
pub const CERT_FILE: &str = "membership.cert";
/// A node's folder of grants (one signed grant per file), beside [`CERT_FILE`].
pub const GRANTS_DIR: &str = "grants";

/// Largest signed object we decode (a grant with a delegation chain of depth 4 is ~2 KiB).
pub const MAX_SIGNED_BYTES: usize = 16 << 10;

/// Why something was refused. Messages are meant for people: they say what to do.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} signature does not verify")]
    BadSignature { what: &'static str },
    #[error("{what} is signed by {signer}, not by {expected}")]
    WrongSigner {
        what: &'static str,
        signer: String,
        expected: String,
    },
    #[error("{what} is for fleet {got:?}, not {expected:?}")]
    WrongFleet {
        what: &'static str,
        got: String,
        expected: String,
    },
    #[error("{what} belongs to {holder}, not to {presenter}")]
    WrongHolder {
        what: &'static str,
        holder: String,
        presenter: String,
    },
    #[error("{what} expired {ago_s} s ago")]
    Expired { what: &'static str, ago_s: i64 },
    #[error("{what} is not valid for another {in_s} s")]
    NotYetValid { what: &'static str, in_s: i64 },
    #[error("{0} has been revoked")]
    Revoked(String),
    #[error("grant does not cover {0}")]
    NotCovered(String),
    #[error("grant is wider than its issuer may give: {0}")]
    Wider(String),
    #[error("{0}")]
    Refused(String),
}

/// Seconds since the Unix epoch.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Clock skew allowed when none is configured (config `limits.clock_skew_s`).
pub const DEFAULT_SKEW_S: i64 = 60;

/// A moment to judge validity at: a time and the clock skew allowed around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub now: i64,
    pub skew_s: i64,
}

impl From<i64> for At {
    fn from(now: i64) -> Self {
        At {
            now,
            skew_s: DEFAULT_SKEW_S,
        }
    }
}

/// Checks `[not_before, not_after]` against `at` (with its clock skew allowed).
pub fn check_validity(what: &'static str, not_before: i64, not_after: i64, at: impl Into<At>) -> Result<(), AuthError> {
    let At { now, skew_s } = at.into();
    if now > not_after.saturating_add(skew_s) {
        return Err(AuthError::Expired {
            what,
            ago_s: now - not_after,
        });
    }
    if now.saturating_add(skew_s) < not_before {
        return Err(AuthError::NotYetValid {
            what,
            in_s: not_before - now,
        });
    }
    Ok(())
}
