//! What a person would rather look at than read: `timeline.svg` (one row per
//! service: its p99 latency as closedloop stored it, the detector's band around
//! it, the latency objective, the faults' true spans, the alerts' firing spans, and
//! markers for actions, refusals and approvals) and `report.html` tying the figures
//! and the picture together.
//!
//! Invariants: the picture is drawn from what the pipeline stored (queried with the
//! engine) and from the report; drawing never fails the run (a plotting error
//! leaves a note in the SVG instead).

use std::collections::BTreeMap;

use plotters::prelude::*;

use super::measure::{Actor, Report};
use super::pipeline::{AlertChange, Pipeline};
use super::scenario::ServiceKind;
use super::world::World;

/// The picture samples the store this often.
const SAMPLE_EVERY_MS: i64 = 60_000;

#[derive(Debug, Default, Clone)]
struct Row {
    service: String,
    slo_s: f64,
    /// (hours, value) of the stored p99 latency, and of the band.
    latency: Vec<(f64, f64)>,
    upper: Vec<(f64, f64)>,
    lower: Vec<(f64, f64)>,
    /// Alert firing spans (hours).
    alerts: Vec<(f64, Option<f64>)>,
    faults: Vec<(f64, f64, String)>,
    /// (hours, label, kind) markers.
    marks: Vec<(f64, String, Mark)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Action,
    Refusal,
    Approval,
}

/// The data behind the picture, collected while the run goes.
pub struct Timeline {
    rows: Vec<Row>,
    start_ms: i64,
    end_h: f64,
    open: BTreeMap<(String, BTreeMap<String, String>), (usize, usize)>,
}

fn hours(ms: i64) -> f64 {
    ms as f64 / 3_600_000.0
}

impl Timeline {
    pub fn new(world: &World, start_ms: i64) -> Timeline {
        let sc = world.scenario();
        let rows = sc
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind != ServiceKind::External)
            .map(|(i, s)| Row {
                service: s.name.clone(),
                slo_s: world.slo_latency_s()[i],
                ..Row::default()
            })
            .collect();
        Timeline {
            rows,
            start_ms,
            end_h: hours(sc.duration.as_millis()),
            open: BTreeMap::new(),
        }
    }

    fn row(&mut self, service: &str) -> Option<usize> {
        self.rows.iter().position(|r| r.service == service)
    }

    /// After each step at `t` (ms since the start).
    pub fn observe(&mut self, _world: &World, pipe: &Pipeline, changes: &[AlertChange], t: i64) {
        let h = hours(t);
        for c in changes {
            let Some(r) = c.labels.get("service").and_then(|s| self.row(s)) else {
                continue;
            };
            let key = (c.rule.clone(), c.labels.clone());
            if c.firing {
                self.rows[r].alerts.push((h, None));
                let idx = self.rows[r].alerts.len() - 1;
                self.open.insert(key, (r, idx));
            } else if let Some((r, i)) = self.open.remove(&key) {
                self.rows[r].alerts[i].1 = Some(h);
            }
        }
        if t % SAMPLE_EVERY_MS != 0 {
            return;
        }
        let at = self.start_ms + t;
        for (q, which) in [
            ("http_request_duration_seconds{quantile=\"0.99\"}", 0),
            ("max by (service) (anomaly_upper{quantile=\"0.99\"})", 1),
            ("max by (service) (anomaly_lower{quantile=\"0.99\"})", 2),
        ] {
            for s in pipe.query(q, at) {
                let Some(svc) = s.labels.get("service") else {
                    continue;
                };
                let Some(r) = self.row(svc) else {
                    continue;
                };
                if !s.v.is_finite() {
                    continue;
                }
                let row = &mut self.rows[r];
                match which {
                    0 => row.latency.push((h, s.v)),
                    1 => row.upper.push((h, s.v)),
                    _ => row.lower.push((h, s.v)),
                }
            }
        }
    }

    /// Adds what only the end knows: fault spans and action markers.
    pub fn finish(&mut self, world: &World, report: &Report) {
        let end = self.end_h;
        for f in &report.faults {
            let Some(r) = self.row(&f.service) else {
                // An external service's fault shows on the services it touched.
                for s in &f.affected {
                    if let Some(r) = self.row(s) {
                        let span = (
                            f.start_s / 3600.0,
                            f.recovered_s.map(|x| x / 3600.0).unwrap_or(end),
                            f.name.clone(),
                        );
                        self.rows[r].faults.push(span);
                    }
                }
                continue;
            };
            let stop = f
                .recovered_s
                .map(|x| x / 3600.0)
                .or_else(|| {
                    world
                        .faults()
                        .iter()
                        .find(|w| w.spec.name == f.name)
                        .and_then(|w| w.ended.as_ref().map(|e| hours(e.0)))
                })
                .unwrap_or(end);
            self.rows[r]
                .faults
                .push((f.start_s / 3600.0, stop, f.name.clone()));
        }
        for a in &report.actions {
            let service = a.target.rsplit('/').next().unwrap_or("").to_string();
            let r = self
                .row(&service)
                .or_else(|| {
                    self.rows
                        .iter()
                        .position(|r| service.starts_with(&format!("{}-", r.service)))
                })
                .unwrap_or(0);
            let mark = if a.actor == Actor::LoopApproved {
                Mark::Approval
            } else {
                Mark::Action
            };
            self.rows[r]
                .marks
                .push((a.at_s / 3600.0, format!("{} {}", a.action, a.target), mark));
        }
        for rf in &report.refused {
            let service = rf.target.rsplit('/').next().unwrap_or("").to_string();
            let r = self.row(&service).unwrap_or(0);
            self.rows[r].marks.push((
                rf.at_s / 3600.0,
                format!("refused {}", rf.action),
                Mark::Refusal,
            ));
        }
    }

    /// The picture as SVG text.
    pub fn svg(&self) -> String {
        let mut out = String::new();
        let height = 70 + 170 * self.rows.len().max(1) as u32;
        {
            let root = SVGBackend::with_string(&mut out, (1400, height)).into_drawing_area();
            if let Err(e) = self.draw(&root) {
                let _ = root.draw(&Text::new(
                    format!("timeline could not be drawn: {e}"),
                    (20, 20),
                    ("sans-serif", 16).into_font(),
                ));
            }
            let _ = root.present();
        }
        out
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (header, body) = root.split_vertically(60);
        header
            .draw(&Text::new(
                "hours of simulated time; p99 latency as stored (blue), detector band (grey), objective (dashed red); true fault spans (red), alerts firing (orange); ▲ action, ● approved action, ✕ refused",
                (20, 22),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(e)?;
        let areas = body.split_evenly((self.rows.len().max(1), 1));
        for (row, area) in self.rows.iter().zip(areas.iter()) {
            let max_v = row
                .latency
                .iter()
                .chain(&row.upper)
                .map(|p| p.1)
                .fold(row.slo_s * 1.5, f64::max)
                .max(1e-3);
            let min_v = row
                .latency
                .iter()
                .map(|p| p.1)
                .chain(row.lower.iter().map(|p| p.1).filter(|v| *v > 0.0))
                .fold(max_v, f64::min)
                .max(1e-4)
                * 0.8;
            let mut chart = ChartBuilder::on(area)
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(70)
                .caption(&row.service, ("sans-serif", 14))
                .build_cartesian_2d(0.0..self.end_h, (min_v..max_v * 1.2).log_scale())
                .map_err(e)?;
            chart
                .configure_mesh()
                .y_desc("p99 (s)")
                .x_labels(13)
                .y_labels(4)
                .light_line_style(WHITE)
                .draw()
                .map_err(e)?;
            let top = max_v * 1.2;
            for (s, stop, _) in &row.faults {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(*s, min_v), (*stop, top)],
                        RGBColor(220, 40, 40).mix(0.12).filled(),
                    )))
                    .map_err(e)?;
            }
            for (s, stop) in &row.alerts {
                let stop = stop.unwrap_or(self.end_h);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(*s, top / 1.12), (stop.max(*s + 0.01), top)],
                        RGBColor(255, 140, 0).mix(0.8).filled(),
                    )))
                    .map_err(e)?;
            }
            // The band, drawn as one polygon per stretch without gaps.
            let mut band: Vec<(f64, f64, f64)> = Vec::new();
            let lower: BTreeMap<i64, f64> = row
                .lower
                .iter()
                .map(|(h, v)| ((h * 3600.0) as i64, *v))
                .collect();
            for (h, u) in &row.upper {
                if let Some(l) = lower.get(&((h * 3600.0) as i64)) {
                    band.push((*h, l.max(min_v), u.min(top)));
                }
            }
            for stretch in band.chunk_by(|a, b| b.0 - a.0 < 2.5 / 60.0) {
                let mut poly: Vec<(f64, f64)> = stretch.iter().map(|p| (p.0, p.2)).collect();
                poly.extend(stretch.iter().rev().map(|p| (p.0, p.1)));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        RGBColor(120, 120, 120).mix(0.25).filled(),
                    )))
                    .map_err(e)?;
            }
            chart
                .draw_series(LineSeries::new(
                    row.latency.iter().map(|p| (p.0, p.1.clamp(min_v, top))),
                    RGBColor(30, 90, 200).stroke_width(1),
                ))
                .map_err(e)?;
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, row.slo_s), (self.end_h, row.slo_s)],
                    6,
                    4,
                    RGBColor(200, 30, 30).stroke_width(1),
                ))
                .map_err(e)?;
            for (h, _, mark) in &row.marks {
                let y = top / 1.5;
                match mark {
                    Mark::Action => chart
                        .draw_series(std::iter::once(TriangleMarker::new(
                            (*h, y),
                            7,
                            RGBColor(0, 150, 60).filled(),
                        )))
                        .map(|_| ()),
                    Mark::Approval => chart
                        .draw_series(std::iter::once(Circle::new(
                            (*h, y),
                            6,
                            RGBColor(130, 40, 170).filled(),
                        )))
                        .map(|_| ()),
                    Mark::Refusal => chart
                        .draw_series(std::iter::once(Cross::new(
                            (*h, y),
                            6,
                            RGBColor(200, 0, 0).stroke_width(2),
                        )))
                        .map(|_| ()),
                }
                .map_err(e)?;
            }
        }
        Ok(())
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `report.html`: the figures against their targets, the timeline, and the tables.
pub fn html(report: &Report, svg: &str) -> String {
    use std::fmt::Write;
    let mut h = String::new();
    let secs = |v: Option<f64>| v.map(|v| format!("{v:.0} s")).unwrap_or_else(|| "–".into());
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.1} %", v * 100.0))
            .unwrap_or_else(|| "–".into())
    };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>closedloop simulate: {}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.met{{color:#070}}.missed{{color:#b00;font-weight:bold}}\
         svg{{max-width:100%;height:auto}}dt{{font-weight:bold;margin-top:.5em}}</style></head><body>",
        esc(&report.scenario)
    );
    let _ = write!(
        h,
        "<h1>closedloop simulate — scenario {}, seed {}</h1><p>{:.1} simulated hours in {:.1} s ({} steps).</p>",
        esc(&report.scenario),
        report.seed,
        report.simulated_seconds / 3600.0,
        report.wall_seconds,
        report.steps
    );
    h.push_str("<h2>Figures against targets</h2><table><tr><th>figure</th><th>value</th><th>target</th><th></th></tr>");
    for t in &report.targets {
        let f = |v: Option<f64>| {
            if t.name.ends_with("_seconds") {
                secs(v)
            } else {
                pct(v)
            }
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} {}</td><td class=\"{}\">{}</td></tr>",
            t.name,
            f(t.value),
            esc(t.op),
            f(Some(t.target)),
            if t.met { "met" } else { "missed" },
            if t.met { "met" } else { "missed" }
        );
    }
    h.push_str("</table>");
    for n in &report.notes {
        let _ = write!(h, "<p><em>Note: {}</em></p>", esc(n));
    }
    h.push_str("<h2>Timeline</h2>");
    h.push_str(svg);
    h.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>kind</th><th>service</th><th>start</th><th>detected in</th><th>recovered in</th><th>resolution</th><th>affected</th><th>fixed by</th></tr>");
    for f in &report.faults {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2} h</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            f.kind,
            esc(&f.service),
            f.start_s / 3600.0,
            secs(f.detection_seconds),
            secs(f.recovery_seconds),
            f.resolution,
            esc(&f.affected.join(", ")),
            esc(&f.fixed_by.join("; "))
        );
    }
    h.push_str("</table><h2>Alerts</h2><table><tr><th>alert</th><th>service</th><th>fired</th><th>resolved</th><th>attributed to</th></tr>");
    for i in &report.incidents {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2} h</td><td>{}</td><td>{}</td></tr>",
            esc(&i.rule),
            esc(i.service.as_deref().unwrap_or("–")),
            i.fired_s / 3600.0,
            i.resolved_s
                .map(|r| format!("{:.2} h", r / 3600.0))
                .unwrap_or_else(|| "–".into()),
            match (&i.fault, &i.during_benign) {
                (Some(f), _) => esc(f),
                (None, Some(b)) => format!(
                    "<span class=\"missed\">false positive</span> (during {})",
                    esc(b)
                ),
                (None, None) => "<span class=\"missed\">false positive</span>".into(),
            }
        );
    }
    h.push_str("</table><h2>Actions</h2><table><tr><th>at</th><th>rule</th><th>action</th><th>target</th><th>by</th><th>outcome</th><th>fixes</th><th>success</th></tr>");
    for a in &report.actions {
        let _ = write!(
            h,
            "<tr><td>{:.2} h</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.at_s / 3600.0,
            esc(&a.rule),
            esc(&a.action),
            esc(&a.target),
            a.actor,
            esc(&a.outcome),
            esc(&a.fixes.join(", ")),
            match a.success {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            }
        );
    }
    h.push_str("</table><h2>Refused</h2><table><tr><th>at</th><th>rule</th><th>action</th><th>target</th><th>reason</th></tr>");
    for r in &report.refused {
        let _ = write!(
            h,
            "<tr><td>{:.2} h</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.at_s / 3600.0,
            esc(&r.rule),
            esc(&r.action),
            esc(&r.target),
            esc(&r.reason)
        );
    }
    h.push_str("</table><h2>Definitions</h2><dl>");
    for (k, v) in &report.definitions {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    h.push_str("</dl></body></html>\n");
    h
}
