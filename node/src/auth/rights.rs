//! The rights a grant carries (a bit set on the wire) and their names on the command
//! line: a leaf that grants, admin certificates and every check share.

/// The rights a grant can carry (a bit set on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(pub u32);

impl Rights {
    pub const LIVE: Rights = Rights(1);
    pub const PLAYBACK: Rights = Rights(2);
    pub const EXPORT: Rights = Rights(4);
    pub const PTZ: Rights = Rights(8);
    pub const TALK: Rights = Rights(16);
    pub const RECORD: Rights = Rights(32);
    pub const FORWARD: Rights = Rights(64);
    pub const DELEGATE: Rights = Rights(128);
    /// Evidence locks on an NVR (lock and unlock), apart from `export`.
    pub const LOCK: Rights = Rights(256);
    /// Every right there is (a full-scope admin's).
    pub const ALL: Rights = Rights(511);
    const NAMES: [(&'static str, Rights); 9] = [
        ("live", Self::LIVE),
        ("playback", Self::PLAYBACK),
        ("export", Self::EXPORT),
        ("ptz", Self::PTZ),
        ("talk", Self::TALK),
        ("record", Self::RECORD),
        ("forward", Self::FORWARD),
        ("delegate", Self::DELEGATE),
        ("lock", Self::LOCK),
    ];

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Parses `live,playback,...`.
    pub fn parse(s: &str) -> Result<Rights, String> {
        let mut r = Rights(0);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (_, bit) = Self::NAMES.iter().find(|(n, _)| *n == part).ok_or_else(|| {
                format!("unknown right {part:?} (known: live, playback, export, lock, ptz, talk, record, forward, delegate)")
            })?;
            r = r.union(*bit);
        }
        Ok(r)
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = Self::NAMES
            .iter()
            .filter(|(_, b)| self.contains(*b))
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_and_print() {
        let r = Rights::parse("live, playback").expect("parse");
        assert!(r.contains(Rights::LIVE) && r.contains(Rights::PLAYBACK) && !r.contains(Rights::EXPORT));
        assert_eq!(r.to_string(), "live,playback");
        assert!(Rights::parse("root").is_err());
    }
}
