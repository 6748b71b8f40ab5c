//! ffmpeg's tools as the judges of video files: `ffprobe` for what a file holds, `ffmpeg`
//! for whether every frame decodes. Both must be installed (scripts/setup.sh).

use std::path::Path;
use std::process::{Command, Output};

/// `ffprobe -v error -of json <args> <path>`, parsed; a failing ffprobe fails the test.
pub fn ffprobe_json(path: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// Decodes every frame of `path` (`ffmpeg -v error -i <path> -f null -`): what ffmpeg
/// says goes to its stderr, nothing when every frame decodes.
pub fn ffmpeg_decode(path: &Path) -> Output {
    Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs")
}
