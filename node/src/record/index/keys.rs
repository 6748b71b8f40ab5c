//! The index's sled keys: `cam_len:u8 | camera | start:u64be [| offset:u64be]`, where a
//! signed time is mapped to `u64` with its sign bit flipped so negative times sort first.
//! Keys sort by camera, then time, so a camera's segments are one prefix scan. Pure.

pub(super) fn sortable(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

pub(super) fn unsortable(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

pub(super) fn camera_prefix(camera: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + camera.len() + 16);
    // Camera ids are validated to at most 64 bytes before they get here.
    k.push(camera.len() as u8);
    k.extend_from_slice(camera.as_bytes());
    k
}

pub(super) fn segment_key(camera: &str, start_us: i64) -> Vec<u8> {
    let mut k = camera_prefix(camera);
    k.extend_from_slice(&sortable(start_us).to_be_bytes());
    k
}

pub(super) fn keyframe_key(camera: &str, start_us: i64, offset: u64) -> Vec<u8> {
    let mut k = segment_key(camera, start_us);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub(super) fn describe_key(key: &[u8]) -> String {
    let n = usize::from(key.first().copied().unwrap_or(0));
    let cam = key.get(1..1 + n).map(String::from_utf8_lossy).unwrap_or_default();
    let t = key
        .get(1 + n..9 + n)
        .and_then(|b| b.try_into().ok())
        .map(|b| unsortable(u64::from_be_bytes(b)));
    match t {
        Some(t) => format!("{cam}@{t}"),
        None => format!("{key:02x?}"),
    }
}
