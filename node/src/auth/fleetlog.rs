//! The fleet-state log, pure: what every member must know even if it was offline when
//! an admin acted (revocations, admin certificates, invite redemptions).
//!
//! # Format
//! An entry is a `Signed` of kind `fleet-entry` over a [`pb::FleetEntryBody`]. Its
//! issuer is its signer: the fleet root, or an admin whose root-signed admin certificate
//! is embedded (`admin`). Each issuer numbers its entries 1, 2, 3, … (`seq`) and links
//! each to the SHA-256 of its previous entry's body (`prev`, empty for 1): the log is one
//! append-only hash chain per issuer. An entry's identity is the SHA-256 of its body.
//!
//! # Acceptance (the same on every node, whatever it saw before)
//! An entry is accepted when it is at most [`MAX_ENTRY_BYTES`], its signature verifies,
//! it is for this fleet, its issuer may issue its kind (admin certificates: the root only;
//! revocations: the root or an admin with `may_revoke`; invite redemptions: the root or an
//! admin with `may_admit`), and it is the next of its issuer's chain: `seq` one more than
//! the last and `prev` that entry's hash. Otherwise it is refused with a reason
//! ([`LogError`]: forged, duplicate, out of order, fork, oversize, full, not allowed) and
//! the log is unchanged. Time plays no part, so all members converge to the same log;
//! an admin's expiry or revocation ends what it may sign from then on (grants,
//! certificates: see [`super::revocation`]), never the entries already in its chain,
//! which can only take rights away or record a use.
//!
//! # Reconciliation
//! A summary is the head of every chain (issuer, seq, hash). Given another member's
//! summary, [`FleetLog::missing_for`] lists what it lacks, root chain first, in order,
//! within a byte budget; [`FleetLog::lag`] counts how far apart the two are. The protocol
//! that carries this is [`crate::fleetsync`].

use std::collections::{BTreeMap, HashMap, HashSet};

use camesh_proto::pb;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use prost::Message;
use sha2::{Digest, Sha256};

use super::admin::{self, AdminInfo};
use super::revocation::{self, RevocationSet};
use super::signed::{self, Kind};
use super::{AuthError, MAX_SIGNED_BYTES};

/// Largest entry (encoded `Signed`).
pub const MAX_ENTRY_BYTES: usize = MAX_SIGNED_BYTES;
/// Most entries a log holds.
pub const MAX_ENTRIES: usize = 20_000;
/// Most bytes a log holds.
pub const MAX_LOG_BYTES: usize = 16 << 20;
/// Most issuers (the root and admins).
pub const MAX_ISSUERS: usize = 1024;
/// Longest invite token recorded.
const MAX_TOKEN_BYTES: usize = 64;

pub type Hash = [u8; 32];

/// Why an entry was refused. The log is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("fleet-state entry refused: {0}")]
    Invalid(#[from] AuthError),
    #[error("fleet-state entry {seq} of {issuer} is already in the log")]
    Duplicate { issuer: PeerId, seq: u64 },
    #[error("fleet-state entry {got} of {issuer} is out of order: the next is {expected}")]
    Gap { issuer: PeerId, expected: u64, got: u64 },
    #[error("fleet-state entry {seq} of {issuer} conflicts with the one in the log (a fork)")]
    Fork { issuer: PeerId, seq: u64 },
    #[error("fleet-state entry of {bytes} bytes is larger than {MAX_ENTRY_BYTES}")]
    Oversize { bytes: usize },
    #[error("the fleet-state log is full: {0}")]
    Full(String),
    #[error("{issuer} may not issue {what}")]
    NotAllowed { issuer: PeerId, what: &'static str },
    #[error("fleet-state log not stored: {0}")]
    Store(String),
}

impl LogError {
    /// Refusals that are part of normal operation (the same entry arriving twice, by
    /// gossip and by sync) rather than a peer's fault.
    pub fn is_benign(&self) -> bool {
        matches!(self, LogError::Duplicate { .. } | LogError::Gap { .. })
    }
}

/// What an accepted entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Revocation {
        peers: Vec<PeerId>,
        grants: Vec<u64>,
        reason: String,
    },
    Admin(Box<AdminInfo>),
    Redeemed {
        token: Vec<u8>,
        peer: PeerId,
    },
}

/// An entry that passed [`FleetLog::check`], ready to [`FleetLog::append`].
#[derive(Debug, Clone)]
pub struct Checked {
    pub issuer: PeerId,
    pub seq: u64,
    pub hash: Hash,
    pub issued_unix_s: i64,
    pub effect: Effect,
    pub signed: pb::Signed,
    bytes: usize,
}

/// SHA-256 of an entry's signed body: its identity and what the next entry links to.
pub fn entry_hash(s: &pb::Signed) -> Hash {
    Sha256::digest(&s.body).into()
}

/// Signs entry `seq` of `signer`'s chain (`prev`: the hash of entry `seq - 1`).
#[allow(clippy::too_many_arguments)]
pub fn issue(
    signer: &Keypair,
    admin: Option<&pb::Signed>,
    fleet_id: &str,
    seq: u64,
    prev: Option<Hash>,
    entry: pb::fleet_entry_body::Entry,
    now: i64,
) -> pb::Signed {
    let body = pb::FleetEntryBody {
        fleet_id: fleet_id.to_owned(),
        seq,
        prev: prev.map(|h| h.to_vec()).unwrap_or_default().into(),
        issued_unix_s: now,
        admin: admin.cloned(),
        entry: Some(entry),
    };
    signed::sign(Kind::FleetEntry, &body, signer)
}

/// One issuer's chain: its entries in order (entry `seq` at index `seq - 1`).
#[derive(Debug, Clone, Default)]
struct Chain {
    entries: Vec<(pb::Signed, Hash)>,
}

impl Chain {
    fn seq(&self) -> u64 {
        self.entries.len() as u64
    }

    fn head(&self) -> Option<Hash> {
        self.entries.last().map(|(_, h)| *h)
    }
}

/// How far two logs are apart, in entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Entries we have that the other lacks.
    pub they_lack: u64,
    /// Entries the other has that we lack.
    pub we_lack: u64,
}

/// A node's copy of the fleet-state log and what it adds up to.
#[derive(Debug, Clone)]
pub struct FleetLog {
    fleet_id: String,
    root: PublicKey,
    chains: BTreeMap<PeerId, Chain>,
    count: usize,
    bytes: usize,
    revoked: RevocationSet,
    admins: HashMap<PeerId, AdminInfo>,
    redeemed: HashSet<Vec<u8>>,
}

impl FleetLog {
    pub fn new(fleet_id: &str, root: PublicKey) -> Self {
        Self {
            fleet_id: fleet_id.to_owned(),
            root,
            chains: BTreeMap::new(),
            count: 0,
            bytes: 0,
            revoked: RevocationSet::default(),
            admins: HashMap::new(),
            redeemed: HashSet::new(),
        }
    }

    pub fn root_peer(&self) -> PeerId {
        self.root.to_peer_id()
    }

    /// Entries in the log.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn revoked(&self) -> &RevocationSet {
        &self.revoked
    }

    /// Admins the root has certified, by peer id.
    pub fn admins(&self) -> &HashMap<PeerId, AdminInfo> {
        &self.admins
    }

    pub fn was_redeemed(&self, token: &[u8]) -> bool {
        self.redeemed.contains(token)
    }

    /// Where `issuer`'s next entry goes: its seq and the hash it must link to.
    pub fn next(&self, issuer: &PeerId) -> (u64, Option<Hash>) {
        match self.chains.get(issuer) {
            Some(c) => (c.seq() + 1, c.head()),
            None => (1, None),
        }
    }

    /// Every entry, chain by chain, in order (what is stored and replayed).
    pub fn entries(&self) -> impl Iterator<Item = &pb::Signed> {
        self.chains.values().flat_map(|c| c.entries.iter().map(|(s, _)| s))
    }

    /// Judges an entry without changing anything.
    pub fn check(&self, s: &pb::Signed) -> Result<Checked, LogError> {
        let bytes = s.encoded_len();
        if bytes > MAX_ENTRY_BYTES {
            return Err(LogError::Oversize { bytes });
        }
        let (signer, body): (_, pb::FleetEntryBody) = signed::open("fleet-state entry", Kind::FleetEntry, s)?;
        if body.fleet_id != self.fleet_id {
            return Err(AuthError::WrongFleet {
                what: "fleet-state entry",
                got: body.fleet_id.chars().take(64).collect(),
                expected: self.fleet_id.clone(),
            }
            .into());
        }
        let admin = admin::signer(
            "fleet-state entry",
            &signer,
            body.admin.as_ref(),
            &self.root,
            &self.fleet_id,
        )?;
        let issuer = signer.to_peer_id();
        let not_allowed = |what| LogError::NotAllowed { issuer, what };
        let effect = match body.entry {
            Some(pb::fleet_entry_body::Entry::Revocation(r)) => {
                if admin.as_ref().is_some_and(|a| !a.may_revoke) {
                    return Err(not_allowed("revocations"));
                }
                let peers = revocation::check(&r, &self.fleet_id)?;
                Effect::Revocation {
                    peers,
                    grants: r.grant_serials,
                    reason: r.reason.chars().take(200).collect(),
                }
            }
            Some(pb::fleet_entry_body::Entry::AdminCert(c)) => {
                if admin.is_some() {
                    return Err(not_allowed("admin certificates"));
                }
                Effect::Admin(Box::new(admin::open(&c, &self.root, &self.fleet_id)?))
            }
            Some(pb::fleet_entry_body::Entry::Redeemed(r)) => {
                if admin.as_ref().is_some_and(|a| !a.may_admit) {
                    return Err(not_allowed("invite redemptions"));
                }
                if r.token.is_empty() || r.token.len() > MAX_TOKEN_BYTES {
                    return Err(AuthError::Malformed {
                        what: "invite redemption",
                        reason: format!("token of {} bytes", r.token.len()),
                    }
                    .into());
                }
                Effect::Redeemed {
                    token: r.token.to_vec(),
                    peer: signed::peer_from("invite redemption", &r.peer)?,
                }
            }
            None => {
                return Err(AuthError::Malformed {
                    what: "fleet-state entry",
                    reason: "empty".into(),
                }
                .into())
            }
        };
        let hash = entry_hash(s);
        let chain = self.chains.get(&issuer);
        let have = chain.map_or(0, Chain::seq);
        if body.seq == 0 || body.seq <= have {
            let same = chain
                .and_then(|c| c.entries.get(usize::try_from(body.seq).ok()?.checked_sub(1)?))
                .is_some_and(|(_, h)| *h == hash);
            return Err(if same {
                LogError::Duplicate { issuer, seq: body.seq }
            } else {
                LogError::Fork { issuer, seq: body.seq }
            });
        }
        if body.seq != have + 1 {
            return Err(LogError::Gap {
                issuer,
                expected: have + 1,
                got: body.seq,
            });
        }
        let linked = match chain.and_then(Chain::head) {
            Some(h) => body.prev.as_ref() == h.as_slice(),
            None => body.prev.is_empty(),
        };
        if !linked {
            return Err(LogError::Fork { issuer, seq: body.seq });
        }
        if self.count >= MAX_ENTRIES || self.bytes + bytes > MAX_LOG_BYTES {
            return Err(LogError::Full(format!("{} entries, {} bytes", self.count, self.bytes)));
        }
        if chain.is_none() && self.chains.len() >= MAX_ISSUERS {
            return Err(LogError::Full(format!("{MAX_ISSUERS} issuers")));
        }
        if let Effect::Revocation { peers, grants, .. } = &effect {
            if !self.revoked.has_room(peers.len() + grants.len()) {
                return Err(LogError::Full("revocation list".into()));
            }
        }
        Ok(Checked {
            issuer,
            seq: body.seq,
            hash,
            issued_unix_s: body.issued_unix_s,
            effect,
            signed: s.clone(),
            bytes,
        })
    }

    /// Appends a checked entry. It must be the next of its chain (as `check` found it,
    /// with nothing appended in between); returns false and changes nothing otherwise.
    pub fn append(&mut self, c: Checked) -> bool {
        let chain = self.chains.entry(c.issuer).or_default();
        if chain.seq() + 1 != c.seq {
            return false;
        }
        chain.entries.push((c.signed, c.hash));
        self.count += 1;
        self.bytes += c.bytes;
        match c.effect {
            Effect::Revocation { peers, grants, .. } => {
                self.revoked.add(&peers, &grants);
            }
            Effect::Admin(a) => {
                self.admins.insert(a.admin, *a);
            }
            Effect::Redeemed { token, .. } => {
                self.redeemed.insert(token);
            }
        }
        true
    }

    /// Checks and appends.
    pub fn apply(&mut self, s: &pb::Signed) -> Result<Checked, LogError> {
        let c = self.check(s)?;
        self.append(c.clone());
        Ok(c)
    }

    /// The head of every chain.
    pub fn summary(&self) -> pb::FleetSummary {
        pb::FleetSummary {
            heads: self
                .chains
                .iter()
                .map(|(issuer, c)| pb::FleetHead {
                    issuer: issuer.to_bytes().into(),
                    seq: c.seq(),
                    head: c.head().map(|h| h.to_vec()).unwrap_or_default().into(),
                })
                .collect(),
        }
    }

    fn their_seqs(theirs: &pb::FleetSummary) -> HashMap<PeerId, u64> {
        theirs
            .heads
            .iter()
            .take(MAX_ISSUERS)
            .filter_map(|h| Some((PeerId::from_bytes(&h.issuer).ok()?, h.seq)))
            .collect()
    }

    /// The entries a member with summary `theirs` lacks, root chain first and each chain
    /// in order, up to `budget` bytes (at least one entry when any is missing); and
    /// whether more remain.
    pub fn missing_for(&self, theirs: &pb::FleetSummary, budget: usize) -> (Vec<pb::Signed>, bool) {
        let seqs = Self::their_seqs(theirs);
        let root = self.root_peer();
        let order = self
            .chains
            .get_key_value(&root)
            .into_iter()
            .chain(self.chains.iter().filter(|(p, _)| **p != root));
        let (mut out, mut used) = (Vec::new(), 0usize);
        for (issuer, chain) in order {
            let from = usize::try_from(seqs.get(issuer).copied().unwrap_or(0)).unwrap_or(usize::MAX);
            for (s, _) in chain.entries.iter().skip(from) {
                let n = s.encoded_len();
                if !out.is_empty() && used + n > budget {
                    return (out, true);
                }
                used += n;
                out.push(s.clone());
            }
        }
        (out, false)
    }

    /// How far a member with summary `theirs` is from us.
    pub fn lag(&self, theirs: &pb::FleetSummary) -> Lag {
        let seqs = Self::their_seqs(theirs);
        let mut lag = Lag::default();
        for (issuer, chain) in &self.chains {
            lag.they_lack += chain.seq().saturating_sub(seqs.get(issuer).copied().unwrap_or(0));
        }
        for (issuer, seq) in &seqs {
            let ours = self.chains.get(issuer).map_or(0, Chain::seq);
            lag.we_lack += seq.saturating_sub(ours).min(MAX_ENTRIES as u64);
        }
        lag
    }
}

/// One line per entry, for people (`mesh fleet state`): issuer, seq, time, what.
pub fn describe(entries: &[pb::Signed]) -> Vec<String> {
    entries
        .iter()
        .map(|s| {
            let Ok((signer, body)) = signed::open::<pb::FleetEntryBody>("fleet-state entry", Kind::FleetEntry, s)
            else {
                return "(an entry that does not verify)".into();
            };
            let by = if body.admin.is_some() { "admin" } else { "root" };
            let what = match body.entry {
                Some(pb::fleet_entry_body::Entry::Revocation(r)) => {
                    let peers: Vec<String> = r
                        .peers
                        .iter()
                        .map(|p| PeerId::from_bytes(p).map_or("?".into(), |p| p.to_string()))
                        .collect();
                    let serials: Vec<String> = r.grant_serials.iter().map(|g| format!("{g:016x}")).collect();
                    format!(
                        "revoked {}{}",
                        [peers, serials].concat().join(", "),
                        if r.reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", r.reason)
                        }
                    )
                }
                Some(pb::fleet_entry_body::Entry::AdminCert(c)) => match admin::open(&c, &signer, &body.fleet_id) {
                    Ok(a) => format!(
                        "admin {} {} on {} grants {}{}{}",
                        a.name,
                        a.admin,
                        [a.cameras, a.tags.iter().map(|t| format!("tag:{t}")).collect()]
                            .concat()
                            .join(","),
                        a.rights,
                        if a.may_revoke { ", may revoke" } else { "" },
                        if a.may_admit { ", may admit" } else { "" }
                    ),
                    Err(e) => format!("admin certificate: {e}"),
                },
                Some(pb::fleet_entry_body::Entry::Redeemed(r)) => format!(
                    "invite redeemed by {}",
                    PeerId::from_bytes(&r.peer).map_or("?".into(), |p| p.to_string())
                ),
                None => "(empty)".into(),
            };
            format!(
                "{} {by} {} #{}: {what}",
                crate::clock::rfc3339_s(body.issued_unix_s),
                signer.to_peer_id(),
                body.seq
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
