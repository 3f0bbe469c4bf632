//! Tracking and line counting, all in memory: a frame's detections go in, the crossings of the
//! site's counting lines come out, as `(line, class, direction)` and nothing else.
//!
//! Track ids, boxes and trajectories live in this crate's memory only. [`Counter::update`]
//! returns [`Crossing`]s, which name a line and a class by index and a direction: no
//! position, no time, no track. A track's memory is dropped a few frames after the tracker
//! drops the track, so what is held is bounded by the objects in view.
//!
//! An object counts once per line and direction, when its box has **wholly** crossed the
//! line: the box was entirely on one side, then is entirely on the other, and the path of its
//! centre between those two moments cuts the line's segment (not the line's extension beyond
//! its ends). An object that reaches the line and turns back is not counted; one that crosses,
//! turns back and crosses again counts once in each direction, never more (the bound on what
//! one object adds to a window's counts, which the privacy noise relies on). The tracker is
//! ByteTrack ([`trackforge`]): a Kalman filter per track, detections matched by IoU in two
//! passes (confident ones first, then weak ones to keep occluded objects).

use std::collections::HashMap;

use trackforge::trackers::byte_track::{ByteTrack, ByteTrackParams};
use trackforge::trackers::common::CommonParams;

/// A point in frame pixels: x to the right, y down.
pub type Point = [f32; 2];

/// A box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl Rect {
    pub fn centre(&self) -> Point {
        [(self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0]
    }

    fn corners(&self) -> [Point; 4] {
        [
            [self.x1, self.y1],
            [self.x2, self.y1],
            [self.x2, self.y2],
            [self.x1, self.y2],
        ]
    }

    /// Finite, with a positive area.
    pub fn is_valid(&self) -> bool {
        [self.x1, self.y1, self.x2, self.y2]
            .iter()
            .all(|v| v.is_finite())
            && self.x2 > self.x1
            && self.y2 > self.y1
    }
}

/// One object found in a frame: its box, the detector's score and its class (an index into
/// the pipeline's published classes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub rect: Rect,
    pub score: f32,
    pub class: usize,
}

/// A side of a line, as seen on the image by someone walking from its `from` point to its
/// `to` point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// A counting line or zone set for the site: what is counted is objects crossing it, per
/// class and direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    /// The classes it counts (indices into the published classes); empty: all of them.
    pub classes: Vec<usize>,
    pub shape: Shape,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A segment: crossing into `in_side` counts as "in", into the other side as "out".
    Segment {
        from: Point,
        to: Point,
        in_side: Side,
    },
    /// A zone (a simple polygon): entering it counts as "in", leaving it as "out".
    Zone { points: Vec<Point> },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LineError {
    #[error("line `{0}`: its points must be finite numbers")]
    NotFinite(String),
    #[error("line `{0}`: its two points are the same (a line needs a length)")]
    Degenerate(String),
    #[error("zone `{0}`: it needs at least 3 points enclosing an area")]
    NoArea(String),
}

impl Line {
    pub fn new(
        name: &str,
        from: Point,
        to: Point,
        classes: Vec<usize>,
        in_side: Side,
    ) -> Result<Line, LineError> {
        if !from.iter().chain(&to).all(|v| v.is_finite()) {
            return Err(LineError::NotFinite(name.into()));
        }
        if from == to {
            return Err(LineError::Degenerate(name.into()));
        }
        Ok(Line {
            name: name.into(),
            classes,
            shape: Shape::Segment { from, to, in_side },
        })
    }

    /// A zone: a polygon of at least 3 points (in order around it) with an area.
    pub fn zone(name: &str, points: Vec<Point>, classes: Vec<usize>) -> Result<Line, LineError> {
        if !points.iter().flatten().all(|v| v.is_finite()) {
            return Err(LineError::NotFinite(name.into()));
        }
        let area2: f32 = (0..points.len())
            .map(|i| {
                let (a, b) = (points[i], points[(i + 1) % points.len()]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum();
        if points.len() < 3 || area2.abs() < 1.0 {
            return Err(LineError::NoArea(name.into()));
        }
        Ok(Line {
            name: name.into(),
            classes,
            shape: Shape::Zone { points },
        })
    }

    /// The points that define it (a segment's two ends, a zone's corners).
    pub fn points(&self) -> Vec<Point> {
        match &self.shape {
            Shape::Segment { from, to, .. } => vec![*from, *to],
            Shape::Zone { points } => points.clone(),
        }
    }

    /// The segment's ends, or `None` for a zone.
    fn ends(&self) -> Option<(Point, Point)> {
        match self.shape {
            Shape::Segment { from, to, .. } => Some((from, to)),
            Shape::Zone { .. } => None,
        }
    }

    /// The signed area of (from, to, p): positive on the right side (y points down).
    fn cross(from: Point, to: Point, p: Point) -> f32 {
        let (d, e) = (
            [to[0] - from[0], to[1] - from[1]],
            [p[0] - from[0], p[1] - from[1]],
        );
        d[0] * e[1] - d[1] * e[0]
    }

    /// Where a box wholly is: for a segment, the side (`Left` / `Right`); for a zone, inside
    /// (`Left`) or outside (`Right`). `None` when the box is astride the segment's extension or
    /// the zone's edge.
    fn region(&self, r: &Rect) -> Option<Side> {
        match &self.shape {
            Shape::Segment { .. } => self.side_of(r),
            Shape::Zone { points } => {
                let inside = r.corners().map(|p| in_polygon(points, p));
                if inside.iter().all(|&i| i) {
                    Some(Side::Left)
                } else if inside.iter().all(|&i| !i) {
                    Some(Side::Right)
                } else {
                    None
                }
            }
        }
    }

    /// The side a box is wholly on, or `None` when the line's extension cuts it (or the line
    /// is a zone).
    pub fn side_of(&self, r: &Rect) -> Option<Side> {
        let (from, to) = self.ends()?;
        let c = r.corners().map(|p| Line::cross(from, to, p));
        if c.iter().all(|v| *v > 0.0) {
            Some(Side::Right)
        } else if c.iter().all(|v| *v < 0.0) {
            Some(Side::Left)
        } else {
            None
        }
    }

    /// Does the path from `p` to `q` cut the segment `from`-`to` (touching counts)?
    pub fn cut_by(&self, p: Point, q: Point) -> bool {
        let orient = |a: Point, b: Point, c: Point| {
            let v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
            if v > 0.0 {
                1
            } else if v < 0.0 {
                -1
            } else {
                0
            }
        };
        let on = |a: Point, b: Point, c: Point| {
            c[0] >= a[0].min(b[0])
                && c[0] <= a[0].max(b[0])
                && c[1] >= a[1].min(b[1])
                && c[1] <= a[1].max(b[1])
        };
        let Some((a, b)) = self.ends() else {
            return false;
        };
        let (o1, o2, o3, o4) = (
            orient(a, b, p),
            orient(a, b, q),
            orient(p, q, a),
            orient(p, q, b),
        );
        if o1 != o2 && o3 != o4 {
            return true;
        }
        (o1 == 0 && on(a, b, p))
            || (o2 == 0 && on(a, b, q))
            || (o3 == 0 && on(p, q, a))
            || (o4 == 0 && on(p, q, b))
    }

    fn counts(&self, class: usize) -> bool {
        self.classes.is_empty() || self.classes.contains(&class)
    }

    /// A move from wholly in `before` to wholly in `now` (different): is it a crossing, and is
    /// it inward? A segment's crossing must cut the segment between its ends.
    fn crossing(&self, before: Side, now: Side, from: Point, to: Point) -> Option<bool> {
        match &self.shape {
            Shape::Segment { in_side, .. } => self.cut_by(from, to).then_some(now == *in_side),
            Shape::Zone { .. } => Some(now == Side::Left && before == Side::Right),
        }
    }
}

/// Is `p` inside the polygon (even-odd rule; a point on an edge may fall either way)?
fn in_polygon(points: &[Point], p: Point) -> bool {
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let (a, b) = (points[i], points[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// An object that wholly crossed a line: which line, its class (the one the detector gave it
/// most often along its track, indices into the published classes), and whether it went in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Crossing {
    pub line: usize,
    pub class: usize,
    pub inward: bool,
}

/// The tracker's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Detections at or above this score are matched first and may start tracks (the
    /// pipeline's detection threshold); weaker ones only extend existing tracks.
    pub threshold: f32,
    /// Frames a track survives without a detection (an occlusion), e.g. one second's worth.
    pub keep_frames: usize,
}

/// The boxes' IoU a detection needs with a track's predicted box to extend it: ByteTrack's
/// usual 0.2 for the first pass.
const MATCH_IOU: f32 = 0.2;

/// What is remembered of a track, for counting: its class votes and, per line, the side it was
/// last wholly on and where.
struct Memo {
    votes: Vec<u32>,
    seen: u64,
    lines: Vec<LineMemo>,
}

#[derive(Clone, Copy, Default)]
struct LineMemo {
    side: Option<Side>,
    /// The box centre when it was last wholly on `side`.
    anchor: Point,
    counted_in: bool,
    counted_out: bool,
}

/// The tracker and the lines of one camera.
pub struct Counter {
    tracker: ByteTrack,
    lines: Vec<Line>,
    classes: usize,
    memos: HashMap<u64, Memo>,
    frame: u64,
    keep_frames: u64,
}

impl Counter {
    /// `classes`: how many published classes detections are indexed into.
    pub fn new(lines: Vec<Line>, classes: usize, settings: Settings) -> Counter {
        let threshold = settings.threshold.clamp(0.0, 1.0);
        let params = ByteTrackParams {
            common: CommonParams {
                max_age: settings.keep_frames.max(1),
                min_hits: 1,
            },
            track_thresh: threshold,
            match_thresh: 1.0 - MATCH_IOU,
            // A new track needs a detection a little more certain than the threshold.
            det_thresh: (threshold + 0.1).min(1.0),
            ..ByteTrackParams::default()
        };
        Counter {
            tracker: ByteTrack::from_params(params),
            lines,
            classes,
            memos: HashMap::new(),
            frame: 0,
            keep_frames: settings.keep_frames.max(1) as u64,
        }
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Tracks remembered now (live or recently lost).
    pub fn tracks(&self) -> usize {
        self.memos.len()
    }

    /// One frame's detections (every score the detector kept: weak ones help keep tracks
    /// through occlusions); returns the crossings completed in this frame. Invalid boxes and
    /// classes out of range are ignored.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<Crossing> {
        self.frame += 1;
        let kept: Vec<&Detection> = detections
            .iter()
            .filter(|d| d.rect.is_valid() && d.score.is_finite() && d.class < self.classes)
            .collect();
        let input = kept
            .iter()
            .map(|d| {
                let r = d.rect;
                (
                    [r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1],
                    d.score,
                    d.class as i64,
                )
            })
            .collect();
        let tracks = self.tracker.update(input);
        let mut out = Vec::new();
        for t in tracks {
            let Some(det) = t.det_ind.and_then(|i| kept.get(i)) else {
                continue;
            };
            let (n_lines, n_classes) = (self.lines.len(), self.classes);
            let memo = self.memos.entry(t.track_id).or_insert_with(|| Memo {
                votes: vec![0; n_classes],
                seen: 0,
                lines: vec![LineMemo::default(); n_lines],
            });
            memo.seen = self.frame;
            memo.votes[det.class] += 1;
            let class = majority(&memo.votes);
            let rect = det.rect;
            let centre = rect.centre();
            for (i, (line, m)) in self.lines.iter().zip(memo.lines.iter_mut()).enumerate() {
                let Some(side) = line.region(&rect) else {
                    continue; // astride the line (or its extension, or the zone's edge): wait
                };
                if let Some(before) = m.side
                    && before != side
                    && line.counts(class)
                    && let Some(inward) = line.crossing(before, side, m.anchor, centre)
                {
                    let done = if inward {
                        &mut m.counted_in
                    } else {
                        &mut m.counted_out
                    };
                    if !*done {
                        *done = true;
                        out.push(Crossing {
                            line: i,
                            class,
                            inward,
                        });
                    }
                }
                m.side = Some(side);
                m.anchor = centre;
            }
        }
        // Forget tracks the tracker has dropped (it keeps a lost one `keep_frames`).
        let (frame, keep) = (self.frame, self.keep_frames);
        self.memos.retain(|_, m| frame - m.seen <= keep + 1);
        out
    }
}

/// The class voted most often (the lowest index on a tie).
fn majority(votes: &[u32]) -> usize {
    let mut best = 0;
    for (i, v) in votes.iter().enumerate() {
        if *v > votes[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(cx: f32, cy: f32, w: f32, h: f32) -> Rect {
        Rect {
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
        }
    }

    /// A vertical line at x = 100 from y = 0 to y = 200, walked downwards: its left side
    /// (seen on the image) is x > 100.
    fn vertical() -> Line {
        Line::new("v", [100.0, 0.0], [100.0, 200.0], vec![], Side::Left).unwrap()
    }

    #[test]
    fn sides_follow_the_image_and_the_walking_direction() {
        let l = vertical();
        assert_eq!(l.side_of(&rect(150.0, 100.0, 20.0, 20.0)), Some(Side::Left));
        assert_eq!(l.side_of(&rect(50.0, 100.0, 20.0, 20.0)), Some(Side::Right));
        assert_eq!(l.side_of(&rect(95.0, 100.0, 20.0, 20.0)), None);
        let h = Line::new("h", [0.0, 50.0], [200.0, 50.0], vec![], Side::Left).unwrap();
        // Walking right along y = 50, "left" is up the image (smaller y).
        assert_eq!(h.side_of(&rect(100.0, 10.0, 10.0, 10.0)), Some(Side::Left));
    }

    #[test]
    fn a_path_cuts_the_segment_only_between_its_ends() {
        let l = vertical();
        assert!(l.cut_by([50.0, 100.0], [150.0, 100.0]));
        assert!(l.cut_by([50.0, 200.0], [150.0, 200.0])); // at the end point
        assert!(!l.cut_by([50.0, 250.0], [150.0, 250.0])); // below the segment
        assert!(!l.cut_by([50.0, 100.0], [90.0, 100.0])); // short of it
    }

    #[test]
    fn degenerate_and_non_finite_lines_are_refused() {
        assert_eq!(
            Line::new("a", [1.0, 1.0], [1.0, 1.0], vec![], Side::Left),
            Err(LineError::Degenerate("a".into()))
        );
        assert!(Line::new("b", [f32::NAN, 1.0], [1.0, 2.0], vec![], Side::Left).is_err());
    }

    fn counter(lines: Vec<Line>) -> Counter {
        Counter::new(
            lines,
            2,
            Settings {
                threshold: 0.5,
                keep_frames: 10,
            },
        )
    }

    fn det(cx: f32, cy: f32, class: usize) -> Detection {
        Detection {
            rect: rect(cx, cy, 20.0, 40.0),
            score: 0.9,
            class,
        }
    }

    /// Runs one object along `xs` (at y = 100); returns every crossing.
    fn walk(c: &mut Counter, xs: impl IntoIterator<Item = f32>, class: usize) -> Vec<Crossing> {
        xs.into_iter()
            .flat_map(|x| c.update(&[det(x, 100.0, class)]))
            .collect()
    }

    #[test]
    fn an_object_counts_once_when_it_has_wholly_crossed() {
        let mut c = counter(vec![vertical()]);
        let xs: Vec<f32> = (0..30).map(|i| 40.0 + 4.0 * i as f32).collect();
        let got = walk(&mut c, xs.iter().copied(), 1);
        assert_eq!(
            got,
            vec![Crossing {
                line: 0,
                class: 1,
                inward: true
            }]
        );
    }

    #[test]
    fn the_count_waits_until_the_box_has_left_the_line() {
        let mut c = counter(vec![vertical()]);
        // Up to x = 105: the box (20 wide) still touches the line.
        let got = walk(&mut c, (0..17).map(|i| 40.0 + 4.0 * i as f32), 0);
        assert!(got.is_empty(), "{got:?}");
        let got = walk(&mut c, [112.0], 0);
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn an_object_that_turns_back_at_the_line_is_not_counted() {
        let mut c = counter(vec![vertical()]);
        let there: Vec<f32> = (0..15).map(|i| 40.0 + 4.0 * i as f32).collect(); // to x = 96
        let back: Vec<f32> = there.iter().rev().copied().collect();
        let got = walk(&mut c, there.into_iter().chain(back), 0);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn crossing_back_counts_out_once_and_no_more() {
        let mut c = counter(vec![vertical()]);
        let over: Vec<f32> = (0..30).map(|i| 40.0 + 4.0 * i as f32).collect();
        let back: Vec<f32> = over.iter().rev().copied().collect();
        let got = walk(
            &mut c,
            over.iter().chain(&back).chain(&over).chain(&back).copied(),
            0,
        );
        let ins = got.iter().filter(|x| x.inward).count();
        let outs = got.iter().filter(|x| !x.inward).count();
        assert_eq!((ins, outs), (1, 1), "{got:?}");
    }

    #[test]
    fn passing_beyond_the_end_of_the_line_is_not_a_crossing() {
        let mut c = counter(vec![vertical()]);
        let got: Vec<Crossing> = (0..30)
            .flat_map(|i| c.update(&[det(40.0 + 4.0 * i as f32, 260.0, 0)]))
            .collect();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_line_counts_only_its_classes_and_the_track_s_majority_class() {
        let only_1 = Line::new("v", [100.0, 0.0], [100.0, 200.0], vec![1], Side::Right).unwrap();
        let mut c = counter(vec![only_1]);
        // Class 0 most of the way, class 1 for two frames: counted as 0, which the line skips.
        let got: Vec<Crossing> = (0..30)
            .flat_map(|i| {
                let class = if i == 10 || i == 11 { 1 } else { 0 };
                c.update(&[det(40.0 + 4.0 * i as f32, 100.0, class)])
            })
            .collect();
        assert!(got.is_empty(), "{got:?}");
        // Going from right (x < 100) to left is "out" for a line whose in-side is right.
        let mut c = counter(vec![
            Line::new("v", [100.0, 0.0], [100.0, 200.0], vec![1], Side::Right).unwrap(),
        ]);
        let got = walk(&mut c, (0..30).map(|i| 40.0 + 4.0 * i as f32), 1);
        assert_eq!(
            got,
            vec![Crossing {
                line: 0,
                class: 1,
                inward: false
            }]
        );
    }

    #[test]
    fn two_objects_side_by_side_count_twice_and_memory_is_released() {
        let mut c = counter(vec![vertical()]);
        let mut got = Vec::new();
        for i in 0..30 {
            let x = 40.0 + 4.0 * i as f32;
            got.extend(c.update(&[det(x, 60.0, 0), det(x, 140.0, 0)]));
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(c.tracks(), 2);
        for _ in 0..20 {
            c.update(&[]);
        }
        assert_eq!(c.tracks(), 0);
    }

    #[test]
    fn a_zone_counts_entries_and_exits_once_each() {
        // A square zone from x 150 to 250; an object walks through it, comes back into it and
        // leaves again the way it came.
        let zone = Line::zone(
            "z",
            vec![[150.0, 0.0], [250.0, 0.0], [250.0, 200.0], [150.0, 200.0]],
            vec![],
        )
        .unwrap();
        let mut c = counter(vec![zone]);
        let there: Vec<f32> = (0..60).map(|i| 60.0 + 4.0 * i as f32).collect();
        let back: Vec<f32> = there.iter().rev().copied().collect();
        let got = walk(&mut c, there.iter().chain(&back).copied(), 0);
        let ins = got.iter().filter(|x| x.inward).count();
        let outs = got.iter().filter(|x| !x.inward).count();
        assert_eq!((ins, outs), (1, 1), "{got:?}");
        assert!(Line::zone("flat", vec![[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]], vec![]).is_err());
        assert!(Line::zone("two", vec![[0.0, 0.0], [10.0, 0.0]], vec![]).is_err());
    }

    #[test]
    fn garbage_detections_are_ignored() {
        let mut c = counter(vec![vertical()]);
        let bad = [
            Detection {
                rect: Rect {
                    x1: f32::NAN,
                    y1: 0.0,
                    x2: 1.0,
                    y2: 1.0,
                },
                score: 0.9,
                class: 0,
            },
            Detection {
                rect: rect(10.0, 10.0, 5.0, 5.0),
                score: 0.9,
                class: 7,
            },
            Detection {
                rect: rect(10.0, 10.0, -5.0, 5.0),
                score: 0.9,
                class: 0,
            },
        ];
        assert!(c.update(&bad).is_empty());
        assert_eq!(c.tracks(), 0);
    }
}
