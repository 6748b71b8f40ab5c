//! The results: one [`Figure`] per measured number, printed as a table and written as
//! JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::procstat::Machine;

/// Whether a figure meets its DESIGN.md target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Miss,
    /// Informational, or a baseline: no target applies.
    Info,
    /// Cannot be measured yet (e.g. forwarding does not exist).
    Na,
}

impl Verdict {
    pub fn check(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::Info => "-",
            Verdict::Na => "n/a",
        }
    }
}

/// One number the harness measured.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub section: String,
    pub name: String,
    /// Machine-readable value (`null` when not measured).
    pub value: Option<f64>,
    pub unit: String,
    /// What the table shows.
    pub shown: String,
    /// DESIGN.md's target, in words (empty when none applies).
    pub target: String,
    pub verdict: Verdict,
    /// The baseline measured in the same run, in words, and this figure divided by it.
    pub baseline: String,
    pub ratio: Option<f64>,
    pub note: String,
}

impl Figure {
    pub fn new(section: &str, name: &str, value: f64, unit: &str) -> Self {
        let shown = fmt_value(value, unit);
        Figure {
            section: section.into(),
            name: name.into(),
            value: value.is_finite().then_some(value),
            unit: unit.into(),
            shown,
            target: String::new(),
            verdict: Verdict::Info,
            baseline: String::new(),
            ratio: None,
            note: String::new(),
        }
    }

    /// A row that cannot be measured yet.
    pub fn na(section: &str, name: &str, why: &str) -> Self {
        Figure {
            section: section.into(),
            name: name.into(),
            value: None,
            unit: String::new(),
            shown: format!("n/a ({why})"),
            target: String::new(),
            verdict: Verdict::Na,
            baseline: String::new(),
            ratio: None,
            note: String::new(),
        }
    }

    pub fn target(mut self, target: &str, ok: bool) -> Self {
        self.target = target.into();
        if self.verdict != Verdict::Na {
            self.verdict = if self.value.is_some() {
                Verdict::check(ok)
            } else {
                Verdict::Miss
            };
        }
        self
    }

    /// Target text without a verdict (n/a rows, or targets checked elsewhere).
    pub fn target_text(mut self, target: &str) -> Self {
        self.target = target.into();
        self
    }

    pub fn baseline(mut self, what: &str, base: f64) -> Self {
        self.baseline = what.into();
        self.ratio = match self.value {
            Some(v) if base.is_finite() && base != 0.0 => Some(v / base),
            _ => None,
        };
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn shown(mut self, shown: impl Into<String>) -> Self {
        self.shown = shown.into();
        self
    }
}

/// `2.50x`, or `1/480` for small ratios.
pub fn fmt_ratio(r: f64) -> String {
    if r > 0.0 && r < 0.1 {
        format!("1/{:.0}", 1.0 / r)
    } else {
        format!("{r:.2}x")
    }
}

pub fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    if unit.is_empty() {
        format!("{v:.digits$}")
    } else {
        format!("{v:.digits$} {unit}")
    }
}

/// Everything one run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub mode: String,
    pub command: String,
    pub started_unix_s: u64,
    pub duration_s: f64,
    pub figures: Vec<Figure>,
    /// Raw numbers per section (steps of the ramps, every join, ...).
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let headers = ["section", "figure", "measured", "target", "result", "baseline", "ratio"];
        let rows: Vec<[String; 7]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.section.clone(),
                    f.name.clone(),
                    f.shown.clone(),
                    f.target.clone(),
                    f.verdict.label().to_string(),
                    f.baseline.clone(),
                    f.ratio.map_or_else(String::new, fmt_ratio),
                ]
            })
            .collect();
        let mut width = headers.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in cells.iter().zip(width) {
                let pad = w - c.chars().count();
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&mut out, &headers.map(String::from));
        let mut sep = String::from("|");
        for w in width {
            let _ = write!(sep, "{}|", "-".repeat(w + 2));
        }
        out.push_str(&sep);
        out.push('\n');
        for r in &rows {
            line(&mut out, r);
        }
        let notes: Vec<_> = self.figures.iter().filter(|f| !f.note.is_empty()).collect();
        if !notes.is_empty() {
            out.push_str("\nNotes (what limits each figure):\n");
            for f in notes {
                let _ = writeln!(out, "- {} / {}: {}", f.section, f.name, f.note);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_ratios() {
        let f = Figure::new("s", "lat", 4.0, "ms")
            .target("< 5 ms", 4.0 < 5.0)
            .baseline("quinn", 2.0);
        assert_eq!(f.verdict, Verdict::Pass);
        assert_eq!(f.ratio, Some(2.0));
        assert_eq!(f.shown, "4.00 ms");
        let n = Figure::na("s", "hop", "no forwarding yet").target_text("< 2 ms");
        assert_eq!(n.verdict, Verdict::Na);
        assert!(n.shown.starts_with("n/a"));
    }
}
