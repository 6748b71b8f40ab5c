//! The ISO BMFF box writer shared by the video and audio parts of [`super`]: nested
//! boxes whose sizes are patched when they close.

use bytes::{BufMut, BytesMut};

/// A tiny box writer: nested boxes with their sizes patched on close.
#[derive(Default)]
pub(super) struct Boxes {
    pub(super) buf: BytesMut,
    open: Vec<usize>,
}

impl Boxes {
    pub(super) fn open(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.put_u32(0);
        self.buf.put_slice(kind);
    }
    pub(super) fn full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.open(kind);
        self.buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    }
    pub(super) fn close(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
        }
    }
    pub(super) fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }
    pub(super) fn zeros(&mut self, n: usize) {
        self.buf.put_bytes(0, n);
    }
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }
    pub(super) fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }

    /// `dinf` with one `dref` entry: the media is in this file.
    pub(super) fn dinf(&mut self) {
        self.open(b"dinf");
        self.full(b"dref", 0, 0);
        self.u32(1);
        self.full(b"url ", 0, 1);
        self.close();
        self.close();
        self.close();
    }

    /// The sample tables of a fragmented track: all empty (the samples are in the
    /// fragments).
    pub(super) fn empty_sample_tables(&mut self) {
        for kind in [b"stts", b"stsc", b"stco"] {
            self.full(kind, 0, 0);
            self.u32(0);
            self.close();
        }
        self.full(b"stsz", 0, 0);
        self.u32(0);
        self.u32(0);
        self.close();
    }

    /// `mdhd` (this timescale, language "und") and `hdlr` (`handler`, named `name`).
    pub(super) fn media_header(&mut self, timescale: u32, handler: &[u8; 4], name: &str) {
        self.full(b"mdhd", 0, 0);
        self.u32(0);
        self.u32(0);
        self.u32(timescale);
        self.u32(0);
        self.u16(0x55c4); // language "und"
        self.u16(0);
        self.close();
        self.full(b"hdlr", 0, 0);
        self.u32(0);
        self.bytes(handler);
        self.zeros(12);
        self.bytes(name.as_bytes());
        self.u8(0);
        self.close();
    }
}
