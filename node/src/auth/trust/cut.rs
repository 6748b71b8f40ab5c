//! When an authorization ends: the checks that open streams, NVR playback and exports
//! re-run on every trust change (a revocation anywhere in a grant's chain, the grant's
//! own expiry, allowing the configured clock skew), so a session is cut as soon as this
//! node learns it must be.

use std::time::Duration;

use libp2p::PeerId;

use super::super::grant::GrantInfo;
use super::super::{check_validity, AuthError};
use super::Trust;

impl Trust {
    /// Whether `peer` may still use `grant`: not revoked (itself, any serial of the chain,
    /// a delegator or the admin that signed it) and not expired.
    pub fn still_authorized(&self, peer: &PeerId, grant: &GrantInfo) -> Result<(), AuthError> {
        if self.peer_revoked(peer) {
            return Err(AuthError::Revoked(format!("peer {peer}")));
        }
        if let Some(what) = self.grant_revoked(grant) {
            return Err(AuthError::Revoked(what));
        }
        check_validity("grant", grant.not_before_unix_s, grant.not_after_unix_s, self.at())
    }

    /// Resolves when `peer`'s use of `grant` ends: checked on every trust change and
    /// when the grant expires (plus the allowed skew).
    pub async fn until_unauthorized(&self, peer: &PeerId, grant: &GrantInfo) -> AuthError {
        let mut changes = self.subscribe();
        let left = grant.not_after_unix_s.saturating_add(self.skew_s()) - super::now_s() + 1;
        let expired = tokio::time::sleep(Duration::from_secs(u64::try_from(left).unwrap_or(0)));
        tokio::pin!(expired);
        loop {
            if let Err(e) = self.still_authorized(peer, grant) {
                return e;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { std::future::pending::<()>().await },
                () = &mut expired => {
                    // Expiry is judged again from the clock; wake once a second after.
                    expired.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::super::super::grant::{self, GrantRequest, Rights};
    use super::super::super::now_s;
    use super::*;

    #[tokio::test]
    async fn an_expiring_grant_ends_after_the_skew_and_a_revocation_at_once() {
        let root = Keypair::generate_ed25519();
        let camera = Trust::ephemeral("f", root.public(), PeerId::random());
        camera.set_skew(0);
        camera.set_root_key(root.clone()).expect("root");
        let viewer = PeerId::random();
        // A grant for `viewer` on cam1 valid for `valid_s` more seconds, as checked.
        let checked = |valid_s: i64| {
            let g = grant::issue(
                &root,
                "f",
                &GrantRequest {
                    holder: viewer,
                    cameras: vec!["cam1".into()],
                    tags: vec![],
                    rights: Rights::LIVE,
                    not_before_unix_s: 0,
                    not_after_unix_s: now_s() + valid_s,
                },
                None,
            );
            camera
                .check_grant(&viewer, &g, "cam1", &[], Rights::LIVE)
                .expect("valid")
        };
        let info = checked(1);
        let e = tokio::time::timeout(Duration::from_secs(5), camera.until_unauthorized(&viewer, &info))
            .await
            .expect("ends once expired");
        assert!(matches!(e, AuthError::Expired { .. }), "{e}");
        // A long grant, then a revocation of its holder.
        let info = checked(3600);
        let wait = camera.until_unauthorized(&viewer, &info);
        tokio::pin!(wait);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut wait)
            .await
            .is_err());
        camera.revoke(&[viewer], &[], "lost").expect("revoked");
        let e = tokio::time::timeout(Duration::from_secs(1), wait)
            .await
            .expect("cut at once");
        assert!(matches!(e, AuthError::Revoked(_)), "{e}");
    }
}
