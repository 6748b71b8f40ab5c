//! libav's own log messages as `tracing` events (target `libav`), with the camera they
//! are about, instead of raw lines on stderr between the node's log lines.
//!
//! [`install`] (run by [`super::init_ffmpeg`]) sets ffmpeg's log callback once per
//! process. A thread that works for one camera (the RTSP reader) names it with
//! [`camera_scope`]; messages from other threads carry `camera="-"`. libav's levels map
//! down: camesh reports what matters about a source itself (a refused login, a stalled
//! camera, a missing video stream), so libav's errors and warnings ("co located POCs
//! unavailable", lost RTP packets) are `debug`, its info `debug`, its verbose and debug
//! `trace`; only fatal messages are `warn`. libav formats nothing the filter would drop:
//! its own level follows what `tracing` lets through for target `libav`
//! (`--log info,libav=debug` shows them).
//!
//! The callback formats with `av_log_format_line2` (ffmpeg-sys-next 9: `va_list` is
//! `*mut __va_list_tag` on x86-64 Linux, the target camesh builds for), joins partial
//! lines per thread (bounded), and strips the `[h264 @ 0x55…] ` prefix into a field.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

use ffmpeg_next::ffi;

/// A line longer than this is cut (libav's own limit is 1 KiB per call).
const MAX_LINE: usize = 4096;

thread_local! {
    static CAMERA: RefCell<String> = const { RefCell::new(String::new()) };
    /// A line libav has not finished yet, and `print_prefix` for `av_log_format_line2`.
    static PARTIAL: RefCell<(String, c_int)> = const { RefCell::new((String::new(), 1)) };
}

/// While alive, libav messages logged on this thread name `camera`.
#[derive(Debug)]
pub struct CameraScope(());

impl Drop for CameraScope {
    fn drop(&mut self) {
        CAMERA.with(|c| c.borrow_mut().clear());
    }
}

/// Names the camera this thread works for in libav's messages (see [`CameraScope`]).
pub fn camera_scope(camera: &str) -> CameraScope {
    CAMERA.with(|c| *c.borrow_mut() = camera.to_owned());
    CameraScope(())
}

/// libav's log level that lets through what `tracing` would show for target `libav`.
fn av_level() -> c_int {
    if tracing::enabled!(target: "libav", tracing::Level::TRACE) {
        ffi::AV_LOG_DEBUG
    } else if tracing::enabled!(target: "libav", tracing::Level::DEBUG) {
        ffi::AV_LOG_INFO
    } else if tracing::enabled!(target: "libav", tracing::Level::WARN) {
        ffi::AV_LOG_FATAL
    } else {
        ffi::AV_LOG_QUIET
    }
}

/// Routes libav's messages into `tracing` (once per process; later calls do nothing).
#[allow(unsafe_code)]
pub(super) fn install() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: both only store a value in libavutil's globals; the callback below is
        // a plain `extern "C"` function that lives as long as the process.
        unsafe {
            ffi::av_log_set_level(av_level());
            ffi::av_log_set_callback(Some(callback));
        }
    });
}

#[allow(unsafe_code)]
unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: *mut ffi::__va_list_tag) {
    // SAFETY: a plain read of libavutil's level.
    if level > unsafe { ffi::av_log_get_level() } || fmt.is_null() {
        return;
    }
    let mut buf = [0 as c_char; 1024];
    // `try_with`: a thread being torn down has no thread-locals; a panic here would
    // cross into C.
    let text = PARTIAL.try_with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else {
            return None;
        };
        let (partial, print_prefix) = &mut *p;
        // SAFETY: `avcl`, `fmt` and `vl` are what libav passed to this callback, and
        // `buf` is a writable buffer of the size given; the result is NUL-terminated.
        let n = unsafe { ffi::av_log_format_line2(avcl, level, fmt, vl, buf.as_mut_ptr(), 1024, print_prefix) };
        if n < 0 {
            return None;
        }
        // SAFETY: av_log_format_line2 always NUL-terminates within the buffer.
        let piece = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        if partial.len() + piece.len() <= MAX_LINE {
            partial.push_str(&piece);
        }
        if partial.ends_with('\n') || partial.len() >= MAX_LINE {
            Some(std::mem::take(partial))
        } else {
            None
        }
    });
    if let Ok(Some(text)) = text {
        emit(level, &text);
    }
}

/// Splits libav's `[name @ 0x…] ` prefixes off a line: (component, message).
pub(crate) fn split_prefix(line: &str) -> (&str, &str) {
    let mut rest = line.trim_end();
    let mut component = "";
    while let Some(tail) = rest.strip_prefix('[') {
        let Some(end) = tail.find("] ") else { break };
        if component.is_empty() {
            component = tail[..end].split(" @ ").next().unwrap_or("");
        }
        rest = &tail[end + 2..];
    }
    (component, rest)
}

/// One event per line of the message (libav logs an SDP, for one, as many lines), so a
/// log file holds log lines only.
fn emit(level: c_int, text: &str) {
    let (component, message) = split_prefix(text);
    let camera = CAMERA
        .try_with(|c| c.try_borrow().map(|c| c.clone()).unwrap_or_default())
        .unwrap_or_default();
    let camera = if camera.is_empty() { "-".to_owned() } else { camera };
    for line in message.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if level <= ffi::AV_LOG_FATAL {
            tracing::warn!(target: "libav", %camera, component, "{line}");
        } else if level <= ffi::AV_LOG_INFO {
            tracing::debug!(target: "libav", %camera, component, "{line}");
        } else {
            tracing::trace!(target: "libav", %camera, component, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_the_component() {
        assert_eq!(
            split_prefix("[h264 @ 0x55d0c0a3b2c0] co located POCs unavailable\n"),
            ("h264", "co located POCs unavailable")
        );
        assert_eq!(split_prefix("[rtsp @ 0x1] [sub @ 0x2] SDP:\n"), ("rtsp", "SDP:"));
        assert_eq!(split_prefix("plain text\n"), ("", "plain text"));
        assert_eq!(split_prefix("[unterminated"), ("", "[unterminated"));
    }

    #[test]
    fn a_camera_scope_ends_with_its_guard() {
        {
            let _g = camera_scope("cam1");
            assert_eq!(CAMERA.with(|c| c.borrow().clone()), "cam1");
        }
        assert_eq!(CAMERA.with(|c| c.borrow().clone()), "");
    }
}
