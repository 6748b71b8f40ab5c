//! The NVR daemon of these tests: [`camesh_tests::nvr`] with this suite's camera, and a
//! check of the segment files it leaves behind.

use std::path::{Path, PathBuf};

use camesh_node::config::Config;
use camesh_node::record::segment::scan_segment;
use camesh_node::Multiaddr;

pub(crate) use camesh_tests::nvr::{log_text, start_nvr, NvrProc};

use super::CAM;

/// An NVR data folder recording [`CAM`], with its grant.
pub(crate) fn nvr_folder(dir: &Path, fleet_name: &str, cam: &Multiaddr, edit: impl FnOnce(&mut Config)) {
    camesh_tests::nvr::nvr_folder(dir, fleet_name, cam, CAM, edit);
}

/// [`nvr_folder`] without the grant: the NVR waits for one.
pub(crate) fn nvr_folder_without_grant(dir: &Path, fleet_name: &str, cam: &Multiaddr, edit: impl FnOnce(&mut Config)) {
    camesh_tests::nvr::nvr_folder_without_grant(dir, fleet_name, cam, CAM, edit);
}

/// Checks every segment file: all but the newest (being written) are sealed with every
/// record valid; the newest may end in a record being written. Returns the file count.
pub(crate) fn check_segments(recordings: &Path) -> usize {
    let dir = recordings.join("segments").join(CAM);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("segments folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        !files.iter().any(|p| p.extension().is_some_and(|e| e == "bad")),
        "a segment was quarantined as unreadable: {files:?}"
    );
    files.retain(|p| p.extension().is_some_and(|e| e == "cseg"));
    files.sort();
    let n = files.len();
    for (i, path) in files.iter().enumerate() {
        let scan = scan_segment(path, String::new()).expect("segment header readable");
        if i + 1 < n {
            assert!(scan.summary.sealed, "{} is not sealed", path.display());
            assert_eq!(scan.stop, None, "{} has a bad record", path.display());
        } else if let Some(stop) = &scan.stop {
            assert!(stop.truncated, "newest segment {} is corrupt: {stop:?}", path.display());
        }
    }
    n
}
