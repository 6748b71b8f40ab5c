//! Motion detection by frame differencing (pure): small grayscale pictures in (a camera's
//! sub stream decoded and scaled down, a few per second), motion events out. No IO and
//! no clock: the caller passes each picture's capture time.
//!
//! A pixel has changed when its brightness differs from the previous picture's by more
//! than a threshold the sensitivity sets; a picture shows motion when the changed share
//! of the watched zones reaches the minimum area. Motion starts after
//! [`MotionConfig::confirm`] pictures in a row show it (one noisy picture does not), and
//! ends once none has shown it for [`MotionConfig::hold_us`].

/// A watched rectangle, in fractions of the picture (0.0 to 1.0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zone {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Zone {
    pub const WHOLE: Zone = Zone {
        x: 0.0,
        y: 0.0,
        w: 1.0,
        h: 1.0,
    };

    /// Pixel bounds `(x0, y0, x1, y1)` (end exclusive) in a `w` x `h` picture.
    fn pixels(&self, w: usize, h: usize) -> (usize, usize, usize, usize) {
        let clamp = |v: f32| v.clamp(0.0, 1.0);
        let (x0, y0) = (clamp(self.x), clamp(self.y));
        let (x1, y1) = (clamp(self.x + self.w), clamp(self.y + self.h));
        let px = |f: f32, n: usize| ((f * n as f32).round() as usize).min(n);
        (px(x0, w), px(y0, h), px(x1, w), px(y1, h))
    }
}

/// What counts as motion.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionConfig {
    /// 0.0 (only large, strong changes) to 1.0 (the smallest).
    pub sensitivity: f32,
    /// Where to look; empty: the whole picture.
    pub zones: Vec<Zone>,
    /// Pictures in a row that must show motion before it starts.
    pub confirm: u32,
    /// How long motion lasts after the last picture that showed it, in microseconds.
    pub hold_us: i64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            sensitivity: 0.5,
            zones: Vec::new(),
            confirm: 2,
            hold_us: 2_000_000,
        }
    }
}

impl MotionConfig {
    /// Brightness difference (0-255) above which a pixel has changed.
    fn pixel_threshold(&self) -> u8 {
        (12.0 + (1.0 - self.sensitivity.clamp(0.0, 1.0)) * 40.0) as u8
    }

    /// Share of the watched pixels that must change (0.2% at full sensitivity, 5% at none).
    fn min_area(&self) -> f32 {
        0.002 + (1.0 - self.sensitivity.clamp(0.0, 1.0)) * 0.048
    }
}

/// A motion event.
#[derive(Clone, Debug, PartialEq)]
pub enum MotionEvent {
    /// Motion started at `at_us` (the first picture of the confirming run); `area` is the
    /// changed share of the watched zones then.
    Started { at_us: i64, area: f32 },
    /// Motion ended: the last picture that showed it was at `last_us`.
    Ended { started_us: i64, last_us: i64 },
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Still,
    /// Pictures with motion in a row so far, from `since_us`.
    Confirming {
        since_us: i64,
        count: u32,
        area: f32,
    },
    Moving {
        since_us: i64,
        last_us: i64,
    },
}

/// One camera's detector.
#[derive(Clone, Debug)]
pub struct MotionDetector {
    config: MotionConfig,
    prev: Option<(usize, usize, Vec<u8>)>,
    state: State,
}

impl MotionDetector {
    pub fn new(config: MotionConfig) -> Self {
        MotionDetector {
            config,
            prev: None,
            state: State::Still,
        }
    }

    /// Whether motion is going on now.
    pub fn moving(&self) -> bool {
        matches!(self.state, State::Moving { .. })
    }

    /// The changed share of the watched zones between two pictures of the same size.
    pub fn changed_area(&self, prev: &[u8], cur: &[u8], w: usize, h: usize) -> f32 {
        let thr = self.config.pixel_threshold();
        let whole = [Zone::WHOLE];
        let zones = if self.config.zones.is_empty() {
            &whole[..]
        } else {
            &self.config.zones[..]
        };
        let (mut changed, mut total) = (0usize, 0usize);
        for z in zones {
            let (x0, y0, x1, y1) = z.pixels(w, h);
            for y in y0..y1 {
                let row = y * w;
                for x in x0..x1 {
                    let (a, b) = (prev.get(row + x), cur.get(row + x));
                    if let (Some(&a), Some(&b)) = (a, b) {
                        total += 1;
                        changed += usize::from(a.abs_diff(b) > thr);
                    }
                }
            }
        }
        if total == 0 {
            0.0
        } else {
            changed as f32 / total as f32
        }
    }

    /// Feeds one grayscale picture (`w` x `h` bytes, row by row) captured at `t_us`.
    /// A picture of another size restarts the comparison.
    pub fn push(&mut self, t_us: i64, luma: &[u8], w: usize, h: usize) -> Option<MotionEvent> {
        if luma.len() < w.saturating_mul(h) {
            return None;
        }
        let area = match &self.prev {
            Some((pw, ph, prev)) if *pw == w && *ph == h => Some(self.changed_area(prev, luma, w, h)),
            _ => None,
        };
        match &mut self.prev {
            Some((pw, ph, prev)) if *pw == w && *ph == h => prev.copy_from_slice(&luma[..w * h]),
            p => *p = Some((w, h, luma[..w * h].to_vec())),
        }
        let motion = area.is_some_and(|a| a >= self.config.min_area());
        let area = area.unwrap_or(0.0);
        let (next, event) = match (self.state.clone(), motion) {
            (State::Still, false) => (State::Still, None),
            (State::Still, true) if self.config.confirm <= 1 => (
                State::Moving {
                    since_us: t_us,
                    last_us: t_us,
                },
                Some(MotionEvent::Started { at_us: t_us, area }),
            ),
            (State::Still, true) => (
                State::Confirming {
                    since_us: t_us,
                    count: 1,
                    area,
                },
                None,
            ),
            (State::Confirming { .. }, false) => (State::Still, None),
            (
                State::Confirming {
                    since_us,
                    count,
                    area: first,
                },
                true,
            ) => {
                if count + 1 >= self.config.confirm {
                    (
                        State::Moving {
                            since_us,
                            last_us: t_us,
                        },
                        Some(MotionEvent::Started {
                            at_us: since_us,
                            area: first.max(area),
                        }),
                    )
                } else {
                    (
                        State::Confirming {
                            since_us,
                            count: count + 1,
                            area: first.max(area),
                        },
                        None,
                    )
                }
            }
            (State::Moving { since_us, .. }, true) => (
                State::Moving {
                    since_us,
                    last_us: t_us,
                },
                None,
            ),
            (State::Moving { since_us, last_us }, false) => {
                if t_us.saturating_sub(last_us) >= self.config.hold_us {
                    (
                        State::Still,
                        Some(MotionEvent::Ended {
                            started_us: since_us,
                            last_us,
                        }),
                    )
                } else {
                    (State::Moving { since_us, last_us }, None)
                }
            }
        };
        self.state = next;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 64;
    const H: usize = 36;

    /// A grey picture with a white 8x8 box at `(x, y)` and a little sensor noise.
    fn picture(boxed: Option<(usize, usize)>, noise_seed: u32) -> Vec<u8> {
        let mut p = vec![100u8; W * H];
        let mut s = noise_seed.wrapping_mul(2_654_435_761).max(1);
        for v in p.iter_mut() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *v = v.wrapping_add((s % 7) as u8);
        }
        if let Some((x, y)) = boxed {
            for yy in y..(y + 8).min(H) {
                for xx in x..(x + 8).min(W) {
                    p[yy * W + xx] = 235;
                }
            }
        }
        p
    }

    #[test]
    fn a_moving_box_starts_and_ends_motion_and_noise_does_not() {
        let mut d = MotionDetector::new(MotionConfig::default());
        let mut events = Vec::new();
        // 2 s still (5 pictures a second), 2 s of a box moving, 3 s still.
        for i in 0..35i64 {
            let t = i * 200_000;
            let boxed = (10..20).contains(&i).then(|| (((i - 10) * 5) as usize, 10));
            if let Some(e) = d.push(t, &picture(boxed, i as u32), W, H) {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 2, "{events:?}");
        match events[0] {
            // The box appears at 2.0 s; confirmed by the next picture.
            MotionEvent::Started { at_us, area } => {
                assert_eq!(at_us, 2_000_000);
                assert!(area > 0.02, "{area}");
            }
            ref e => panic!("{e:?}"),
        }
        match events[1] {
            MotionEvent::Ended { started_us, last_us } => {
                assert_eq!(started_us, 2_000_000);
                // The box vanishing at 4.0 s is the last change.
                assert_eq!(last_us, 4_000_000);
            }
            ref e => panic!("{e:?}"),
        }
        assert!(!d.moving());
    }

    #[test]
    fn a_static_scene_with_noise_makes_no_event() {
        let mut d = MotionDetector::new(MotionConfig {
            sensitivity: 1.0,
            ..MotionConfig::default()
        });
        for i in 0..100i64 {
            assert_eq!(d.push(i * 200_000, &picture(None, i as u32), W, H), None);
        }
    }

    #[test]
    fn zones_limit_where_motion_counts() {
        // Watch only the right half: a box moving on the left is not motion.
        let mut d = MotionDetector::new(MotionConfig {
            zones: vec![Zone {
                x: 0.5,
                y: 0.0,
                w: 0.5,
                h: 1.0,
            }],
            ..MotionConfig::default()
        });
        for i in 0..20i64 {
            let boxed = Some(((i as usize % 3) * 6, 5));
            assert_eq!(d.push(i * 200_000, &picture(boxed, 7), W, H), None, "picture {i}");
        }
        // The same movement on the right is.
        let started = (0..20i64).find_map(|i| {
            d.push(
                5_000_000 + i * 200_000,
                &picture(Some((40 + (i as usize % 3) * 6, 5)), 7),
                W,
                H,
            )
        });
        assert!(matches!(started, Some(MotionEvent::Started { .. })), "{started:?}");
    }

    #[test]
    fn odd_input_is_ignored_or_restarts() {
        let mut d = MotionDetector::new(MotionConfig::default());
        assert_eq!(d.push(0, &[1, 2, 3], W, H), None, "too short");
        assert_eq!(d.push(0, &picture(None, 1), W, H), None);
        // A new size: compared from the next picture on.
        assert_eq!(d.push(1, &vec![0u8; 32 * 18], 32, 18), None);
        assert_eq!(d.push(2, &vec![0u8; 32 * 18], 32, 18), None);
        assert_eq!(
            Zone {
                x: -1.0,
                y: 0.5,
                w: 9.0,
                h: 9.0
            }
            .pixels(10, 10),
            (0, 5, 10, 10)
        );
        assert_eq!(d.changed_area(&[], &[], 0, 0), 0.0);
    }
}
