//! `mesh talk`: talkback. Audio from a file or a microphone (through ffmpeg's input
//! devices), resampled to 8 kHz, encoded as the camera's backchannel asks (G.711) and sent
//! in real time to the camera's node, which plays it into the camera's speaker. Needs a
//! grant with the `talk` right; one talker per camera at a time.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use camesh_node::media::audio_in::AudioIn;
use camesh_node::media::g711;
use camesh_node::talk::backchannel::Codec;
use camesh_node::talk::client;
use camesh_node::NodeHandle;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  mesh talk cam1 --file hello.wav                 play a file into the camera's speaker\n  mesh talk cam1 --mic                            talk through the default microphone (PulseAudio) until Ctrl-C\n  mesh talk cam1 --mic --input-format alsa --device hw:1\n  mesh talk cam1 --input-format lavfi --device sine=frequency=1000:duration=3   a test tone\n\nThe camera's node needs `talkback` in the camera's [[camera]] entry (its RTSP URL that\noffers the ONVIF backchannel, or \"source\")."
)]
pub struct Args {
    /// Camera id (as `mesh cameras` lists it).
    camera: String,
    /// An audio file (any format ffmpeg reads: wav, mp3, ogg, ...).
    #[arg(long, conflicts_with_all = ["mic", "device"])]
    file: Option<String>,
    /// Talk through a microphone (ffmpeg input device; --input-format and --device choose
    /// which) until Ctrl-C.
    #[arg(long)]
    mic: bool,
    /// ffmpeg's input device format: pulse (default with --mic), alsa, lavfi, ...
    #[arg(long, value_name = "FORMAT")]
    input_format: Option<String>,
    /// The device (default with --mic: "default").
    #[arg(long)]
    device: Option<String>,
}

pub async fn run(node: &NodeHandle, a: &Args) -> Result<()> {
    let (input, format) = match (&a.file, a.mic, &a.device) {
        (Some(f), _, _) => (f.clone(), None),
        (None, true, d) => (
            d.clone().unwrap_or_else(|| "default".into()),
            Some(a.input_format.clone().unwrap_or_else(|| "pulse".into())),
        ),
        (None, false, Some(d)) => {
            let Some(fmt) = a.input_format.clone() else {
                bail!("--device needs --input-format (e.g. alsa, pulse, lavfi)");
            };
            (d.clone(), Some(fmt))
        }
        (None, false, None) => bail!("say what to send: --file <audio file>, or --mic"),
    };
    // Open the audio first: a bad file or device fails before the camera is bothered.
    let audio = tokio::task::spawn_blocking({
        let (input, format) = (input.clone(), format.clone());
        move || AudioIn::open(&input, format.as_deref())
    })
    .await
    .context("audio reader")??;
    let agent = format!("mesh/{} talk", env!("CARGO_PKG_VERSION"));
    let mut talk = client::start(node.reach(), &a.camera, &agent).await?;
    let a_law = talk.codec() == Codec::Pcma;
    eprintln!(
        "talking to {} through {} ({}, 8 kHz){}",
        a.camera,
        talk.peer(),
        talk.codec().name(),
        if format.is_some() { "; Ctrl-C ends" } else { "" }
    );
    // A thread reads and encodes; a bounded queue (1 s) feeds the real-time sender.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(50);
    let reader = std::thread::spawn(move || -> Result<(), String> {
        let mut audio = audio;
        while let Some(frame) = audio.next_frame().map_err(|e| e.to_string())? {
            if tx.blocking_send(g711::encode(&frame, a_law)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let Some(frame) = rx.recv().await else { break };
        talk.send(frame).await?;
        sent += 1;
        if sent.is_multiple_of(250) {
            eprintln!("  {:.0} s sent", sent as f64 * 0.02);
        }
    }
    drop(rx);
    let played = talk.finish().await?;
    match reader.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("reading {input}: {e} ({played} frames played before it)"),
        Err(_) => bail!("the audio reader stopped"),
    }
    eprintln!(
        "done: {sent} frames sent ({:.1} s), {played} played into {}",
        sent as f64 * 0.02,
        a.camera
    );
    Ok(())
}
