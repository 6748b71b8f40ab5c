//! Criterion benches of camesh's per-frame hot paths:
//! - Annex B parsing (MB/s) of the fixture clips: start-code split, access-unit assembly;
//! - frame encode (the prefix the sender writes before the payload) and decode;
//! - fan-out: one frame into N subscriber queues (pure), and the hub's publish (seal once,
//!   GOP cache, N queues) with every subscriber popping;
//! - AEAD per frame: camesh's `MediaKey` (sealed once at the source, opened by viewers)
//!   next to ring's AES-GCM and ChaCha20-Poly1305 on the same sizes.
//!
//! `cargo bench -p camesh-bench` (or `make bench`). Numbers land in target/criterion.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use camesh_bench::synth::{self, SynthSpec};
use camesh_node::auth::media_key::MediaKey;
use camesh_node::media::h264::{split_annexb, AccessUnitAssembler};
use camesh_node::stream::fanout::{QueueLimits, SubscriberQueue};
use camesh_node::stream::hub::Hub;
use camesh_node::PeerId;
use camesh_proto::{pb, LengthCodec, MediaFrame};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

fn annexb(c: &mut Criterion) {
    let mut g = c.benchmark_group("annexb");
    for name in ["cam-1280x720-30fps-gop1s.h264", "cam-640x360-30fps-gop10s.h264"] {
        let Ok(data) = std::fs::read(camesh_bench::fixture(name)) else {
            eprintln!("fixture {name} missing; skipped");
            continue;
        };
        let data = Bytes::from(data);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("split_annexb", name), &data, |b, d| {
            b.iter(|| split_annexb(black_box(d)).count())
        });
        g.bench_with_input(BenchmarkId::new("split+assemble", name), &data, |b, d| {
            b.iter(|| {
                let mut asm = AccessUnitAssembler::new();
                let mut aus = 0usize;
                for nal in split_annexb(d) {
                    if asm.push(d.slice_ref(nal)).is_some() {
                        aus += 1;
                    }
                }
                aus + usize::from(asm.finish().is_some())
            })
        });
    }
    g.finish();
}

fn frame(size_n: u64) -> MediaFrame {
    let spec = SynthSpec::standard();
    let au = synth::access_unit(&spec, &synth::codec_params(), size_n);
    MediaFrame {
        header: pb::FrameHeader {
            sequence: 123_456,
            pts_90k: au.pts_90k,
            dts_90k: au.dts_90k,
            capture_unix_us: 1_700_000_000_000_000,
            keyframe: au.keyframe,
            key_epoch: 1,
            ..Default::default()
        },
        payload: au.data,
        wire: None,
    }
}

fn framing(c: &mut Criterion) {
    let codec = LengthCodec::new(4 << 20);
    let mut g = c.benchmark_group("frame");
    for (label, n) in [("P 14 KB", 1u64), ("IDR 150 KB", 0)] {
        let f = frame(n);
        g.throughput(Throughput::Bytes(f.payload.len() as u64));
        g.bench_function(BenchmarkId::new("encode_prefix (zero-copy send)", label), |b| {
            let mut scratch = BytesMut::with_capacity(64);
            b.iter(|| {
                scratch.clear();
                black_box(&f).encode_prefix_into(&codec, &mut scratch).expect("fits");
                scratch.len()
            })
        });
        g.bench_function(BenchmarkId::new("encode (copying)", label), |b| {
            b.iter(|| black_box(&f).encode(&codec).expect("fits").len())
        });
        let wire = f.encode(&codec).expect("fits");
        g.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    let body = codec.decode(&mut buf).expect("valid").expect("complete");
                    MediaFrame::decode(body).expect("valid").payload.len()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let spec = SynthSpec::standard();
    let params = synth::codec_params();
    let gop: Vec<_> = (0..u64::from(spec.gop_frames))
        .map(|n| synth::access_unit(&spec, &params, n))
        .collect();
    let limits = QueueLimits {
        max_frames: 90,
        max_bytes: 8 << 20,
    };
    let mut g = c.benchmark_group("fanout");
    // The pure fan-out: one (already sealed) frame cloned into N subscriber queues and
    // popped from each: a refcount per subscriber, no payload copy.
    let frames: Vec<MediaFrame> = (0..u64::from(spec.gop_frames)).map(frame).collect();
    for n in [1usize, 10, 50, 250] {
        let mut queues: Vec<SubscriberQueue> = (0..n).map(|_| SubscriberQueue::new(limits, &[])).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("queue push+pop, per frame", n), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let f = &frames[i % frames.len()];
                i += 1;
                let mut popped = 0;
                for q in &mut queues {
                    q.push(f.clone());
                    while let Some(f) = q.pop() {
                        popped += f.payload.len();
                    }
                }
                popped
            })
        });
    }
    // The hub's publish: number the frame, seal it once (MediaKey), update the GOP cache,
    // push to every subscriber and wake it; then every subscriber pops it.
    for n in [1usize, 10, 50, 250] {
        let hub = Hub::new("bench", "bench", Vec::new(), 16 << 20);
        hub.set_params(params.clone());
        let subs: Vec<_> = (0..n)
            .map(|_| hub.subscribe(PeerId::random(), limits).expect("live").1)
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("hub publish (seal once)+pop, per frame", n), |b| {
            let mut i = 0usize;
            b.iter(|| {
                hub.publish(gop[i % gop.len()].clone());
                i += 1;
                let mut popped = 0;
                for s in &subs {
                    while let Some(f) = s.try_pop() {
                        popped += f.payload.len();
                    }
                }
                popped
            })
        });
    }
    g.finish();
}

fn aead(c: &mut Criterion) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
    let header = [0u8; 24];
    let mut g = c.benchmark_group("aead");
    for (label, size) in [("P 14 KB", 14_400usize), ("IDR 150 KB", 150_000)] {
        g.throughput(Throughput::Bytes(size as u64));
        for (alg_name, alg) in [
            ("AES-128-GCM", &AES_128_GCM),
            ("AES-256-GCM", &AES_256_GCM),
            ("ChaCha20-Poly1305", &CHACHA20_POLY1305),
        ] {
            let key_bytes = vec![7u8; alg.key_len()];
            let key = LessSafeKey::new(UnboundKey::new(alg, &key_bytes).expect("key length"));
            let mut buf = synth::random_bytes(size).to_vec();
            g.bench_function(BenchmarkId::new(format!("seal {alg_name}"), label), |b| {
                b.iter(|| {
                    let nonce = Nonce::assume_unique_for_key([1u8; 12]);
                    key.seal_in_place_separate_tag(nonce, Aad::from(&header), &mut buf)
                        .expect("seal")
                })
            });
        }
    }
    // camesh's own sealing (MediaKey: AES-256-GCM, nonce from the sequence, header as
    // associated data), once per frame at the source; and opening at the viewer.
    for (label, n) in [("P 14 KB", 1u64), ("IDR 150 KB", 0)] {
        let f = frame(n);
        let key = MediaKey::generate(f.header.key_epoch);
        g.throughput(Throughput::Bytes(f.payload.len() as u64));
        g.bench_function(BenchmarkId::new("camesh MediaKey::seal", label), |b| {
            b.iter(|| key.seal(black_box(&f.header), black_box(&f.payload)).len())
        });
        let sealed = key.seal(&f.header, &f.payload);
        g.bench_function(BenchmarkId::new("camesh MediaKey::open", label), |b| {
            b.iter(|| key.open(black_box(&f.header), black_box(&sealed)).expect("opens").len())
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = annexb, framing, fanout, aead
}
criterion_main!(benches);
