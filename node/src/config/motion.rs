//! Motion detection of one camera (`[camera.motion]`): how sensitive, where to look, how
//! often to look. The camera node decodes the camera's sub stream (the main one when there
//! is no sub) at this rate and differences the pictures (`media::motion`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionSection {
    /// 0.0 (only large, strong changes) to 1.0 (the smallest).
    pub sensitivity: f32,
    /// Watched rectangles `[x, y, w, h]` in fractions of the picture; empty: all of it.
    /// E.g. `zones = [[0.0, 0.5, 1.0, 0.5]]` watches the lower half.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<[f32; 4]>,
    /// Pictures looked at per second (1 to 15).
    pub fps: u32,
    /// Pictures in a row that must show motion before an event starts (1 to 30).
    pub confirm: u32,
    /// How long motion lasts after the last picture that showed it, in milliseconds.
    pub hold_ms: u64,
}

impl Default for MotionSection {
    fn default() -> Self {
        Self {
            sensitivity: 0.5,
            zones: Vec::new(),
            fps: 5,
            confirm: 2,
            hold_ms: 2000,
        }
    }
}

impl MotionSection {
    /// `Err((field, reason))` for a value out of range.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sensitivity) {
            return Err(("sensitivity", format!("{} is outside 0.0..=1.0", self.sensitivity)));
        }
        if !(1..=15).contains(&self.fps) {
            return Err(("fps", format!("{} is outside 1..=15", self.fps)));
        }
        if !(1..=30).contains(&self.confirm) {
            return Err(("confirm", format!("{} is outside 1..=30", self.confirm)));
        }
        if self.hold_ms > 600_000 {
            return Err(("hold_ms", format!("{} is more than 10 minutes", self.hold_ms)));
        }
        if self.zones.len() > 16 {
            return Err(("zones", format!("{} zones; at most 16", self.zones.len())));
        }
        for z in &self.zones {
            let inside = z.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v));
            if !inside || z[2] <= 0.0 || z[3] <= 0.0 {
                return Err((
                    "zones",
                    format!("{z:?}: x, y, w, h are fractions 0..1, w and h above 0"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_named() {
        assert!(MotionSection::default().check().is_ok());
        let bad = |f: fn(&mut MotionSection)| {
            let mut m = MotionSection::default();
            f(&mut m);
            m.check().unwrap_err().0
        };
        assert_eq!(bad(|m| m.sensitivity = 1.5), "sensitivity");
        assert_eq!(bad(|m| m.fps = 0), "fps");
        assert_eq!(bad(|m| m.confirm = 0), "confirm");
        assert_eq!(bad(|m| m.zones = vec![[0.0, 0.0, 0.0, 1.0]]), "zones");
        assert_eq!(bad(|m| m.zones = vec![[0.0, f32::NAN, 1.0, 1.0]]), "zones");
        let toml = "sensitivity = 0.7\nzones = [[0.0, 0.5, 1.0, 0.5]]\n";
        let m: MotionSection = toml::from_str(toml).expect("parses");
        assert_eq!(m.zones, vec![[0.0, 0.5, 1.0, 0.5]]);
        assert_eq!(m.fps, 5);
    }
}
