//! The charts of `make bench` (also `cargo xtask charts`, from the JSON already in
//! target/bench/): each path's throughput against its peer (peers.json) and DELETE latency
//! against fleet size (fleet.json). SVG only: plotters' SVG backend writes text as `<text>`
//! for the viewer to render, and without its `ttf` feature it measures text by a fixed
//! estimate, so drawing needs no font on this machine. Copies go to docs/bench/, which
//! BENCHMARKS.md links.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::fleet::{parse_fleet_json, FleetRow};
use super::parse;

const FONT: &str = "sans-serif";
const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PEER: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
const P50: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const P99: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const TARGET: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// The issue's target for DELETE p99 (at 20 instances).
const DELETE_P99_TARGET_MS: f64 = 10.0;

/// One path of peers.json: our median against the peer's.
#[derive(Debug, Clone, PartialEq)]
pub struct PathPeers {
    pub path: String,
    pub peer: String,
    pub ours_rps: f64,
    pub peer_rps: f64,
    pub ratio_median: f64,
    pub target: Option<f64>,
}

/// peers.json's text → its paths, each with the median of its rounds.
pub fn parse_peers_json(text: &str) -> Result<Vec<PathPeers>> {
    let value: Value = serde_json::from_str(text).context("peers.json is not JSON")?;
    let paths = value["paths"]
        .as_array()
        .context("no \"paths\" array in peers.json")?;
    paths
        .iter()
        .map(|entry| {
            let text = |name: &str| -> Result<String> {
                Ok(entry[name]
                    .as_str()
                    .with_context(|| format!("no {name} in {entry}"))?
                    .to_owned())
            };
            let median = |name: &str| -> Result<f64> {
                let rounds: Vec<f64> = entry[name]
                    .as_array()
                    .with_context(|| format!("no {name} array in {entry}"))?
                    .iter()
                    .filter_map(Value::as_f64)
                    .collect();
                ensure!(!rounds.is_empty(), "{name} holds no rounds in {entry}");
                Ok(parse::median(&rounds))
            };
            Ok(PathPeers {
                path: text("path")?,
                peer: text("peer")?,
                ours_rps: median("ours_rps")?,
                peer_rps: median("peer_rps")?,
                ratio_median: entry["ratio_median"]
                    .as_f64()
                    .with_context(|| format!("no ratio_median in {entry}"))?,
                target: entry["target"].as_f64(),
            })
        })
        .collect()
}

fn thousands(rps: f64) -> String {
    if rps == 0.0 {
        "0".to_owned()
    } else if rps >= 10_000.0 {
        format!("{:.0}k", rps / 1000.0)
    } else {
        format!("{:.1}k", rps / 1000.0)
    }
}

/// Grouped bars, ours beside the peer for each path (medians of the rounds), each group
/// topped by the ratio of medians and its target.
pub fn throughput_svg(paths: &[PathPeers]) -> Result<String> {
    ensure!(!paths.is_empty(), "no paths to draw");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = paths
            .iter()
            .map(|p| p.ours_rps.max(p.peer_rps))
            .fold(0.0, f64::max);
        // x in hundredths of a group (integers: plotters formats an i32 axis with custom key
        // points, not an f64 one): group i spans [100 i, 100 i + 100), its label at the middle.
        let groups = 100 * paths.len() as i32;
        let centers: Vec<i32> = (0..groups / 100).map(|i| 100 * i + 50).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Throughput against each path's peer (wrk -t1 -c32, one worker each)",
                (FONT, 20),
            )
            .margin(16)
            .margin_right(32)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((0..groups).with_key_points(centers), 0.0..top * 1.45)?;
        let name_at = |x: &i32| -> String {
            let i = (x / 100) as usize;
            paths
                .get(i)
                // "forwarded (proxy_pass)": the peer's name already says which.
                .map_or_else(String::new, |p| {
                    let path = p.path.split(" (").next().unwrap_or(&p.path);
                    format!("{path} vs {}", p.peer)
                })
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&name_at)
            .y_label_formatter(&|y| thousands(*y))
            .y_desc("requests/s, median of rounds")
            .light_line_style(TRANSPARENT)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        let bar = |i: usize, side: i32, rps: f64| {
            let x0 = 100 * i as i32 + 10 + side * 40;
            [(x0, 0.0), (x0 + 38, rps)]
        };
        chart
            .draw_series(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Rectangle::new(bar(i, 0, p.ours_rps), OURS.filled())),
            )?
            .label("LogStitch gateway")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], OURS.filled()));
        chart
            .draw_series(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Rectangle::new(bar(i, 1, p.peer_rps), PEER.filled())),
            )?
            .label("peer (named under its pair)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], PEER.filled()));
        let above =
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        let mut labels = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            for (side, rps) in [(0, p.ours_rps), (1, p.peer_rps)] {
                let x = 100 * i as i32 + 29 + side * 40;
                labels.push(Text::new(thousands(rps), (x, rps), above.clone()));
            }
            let target = p
                .target
                .map_or_else(String::new, |t| format!(" (target ≥ {t})"));
            labels.push(Text::new(
                format!("ratio {:.2}{target}", p.ratio_median),
                (100 * i as i32 + 50, top * 1.15),
                above.clone(),
            ));
        }
        chart.draw_series(labels)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// DELETE p50 and p99 against the number of instances, with the issue's 10 ms line.
pub fn fleet_svg(rows: &[FleetRow]) -> Result<String> {
    ensure!(!rows.is_empty(), "no fleet sizes to draw");
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.instances);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let widest = rows.last().map_or(2, |r| r.instances) as i32;
        let top = rows
            .iter()
            .map(|r| r.delete_p99_ms)
            .fold(DELETE_P99_TARGET_MS, f64::max);
        // An i32 axis: plotters formats one with custom key points (the sizes measured).
        let sizes: Vec<i32> = rows.iter().map(|r| r.instances as i32).collect();
        let right = widest + widest / 10 + 1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "DELETE latency against fleet size (acks included; one database)",
                (FONT, 20),
            )
            .margin(16)
            .margin_right(32)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((0..right).with_key_points(sizes), 0.0..top * 1.25)?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "instances on one database ({} revokes each)",
                rows[0].revokes
            ))
            .y_desc("DELETE latency, ms")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(TRANSPARENT)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for (name, color, value) in [
            (
                "p50",
                P50,
                (|r: &FleetRow| r.delete_p50_ms) as fn(&FleetRow) -> f64,
            ),
            ("p99", P99, |r: &FleetRow| r.delete_p99_ms),
        ] {
            let points: Vec<(i32, f64)> = rows
                .iter()
                .map(|r| (r.instances as i32, value(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(format!("DELETE {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&(x, y)| {
                EmptyElement::at((x, y))
                    + Circle::new((0, 0), 4, color.filled())
                    + Text::new(format!("{y:.1}"), (6, -16), (FONT, 12).into_font())
            }))?;
        }
        chart
            .draw_series(DashedLineSeries::new(
                [(0, DELETE_P99_TARGET_MS), (right, DELETE_P99_TARGET_MS)],
                8,
                6,
                TARGET.stroke_width(2),
            ))?
            .label("target: p99 ≤ 10 ms at 20 instances")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], TARGET.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Where the charts are committed, next to BENCHMARKS.md.
pub fn docs_dir() -> PathBuf {
    crate::repo().join("docs/bench")
}

/// Draws every chart whose JSON is in `bench_dir`, writing `*.svg` there and a copy to
/// `docs`; a chart whose JSON is missing is skipped with a message. Returns the files
/// written in `docs`.
pub fn draw(bench_dir: &Path, docs: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    type Chart = fn(&str) -> Result<String>;
    let charts: [(&str, &str, Chart); 2] = [
        ("peers.json", "throughput.svg", |text| {
            throughput_svg(&parse_peers_json(text)?)
        }),
        ("fleet.json", "fleet-delete-latency.svg", |text| {
            fleet_svg(&parse_fleet_json(text)?)
        }),
    ];
    for (input, output, chart) in charts {
        let source = bench_dir.join(input);
        let Ok(text) = std::fs::read_to_string(&source) else {
            eprintln!(
                "==> chart {output} skipped: no {} (its bench stage has not run)",
                source.display()
            );
            continue;
        };
        let svg =
            chart(&text).with_context(|| format!("drawing {output} from {}", source.display()))?;
        std::fs::write(bench_dir.join(output), &svg)?;
        std::fs::create_dir_all(docs)?;
        let copy = docs.join(output);
        std::fs::write(&copy, &svg)?;
        eprintln!("==> chart {} (from {})", copy.display(), source.display());
        written.push(copy);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// plotters writes each `<text>`'s content on a line of its own.
    fn has_text(svg: &str, label: &str) -> bool {
        svg.contains(&format!(">\n{label}\n</text>"))
    }

    const PEERS: &str = r#"{"paths":[
        {"path":"verify","ours":"gateway verify","peer":"bare actix-web","ours_rps":[100000,120000,110000],"peer_rps":[150000,140000,160000],"ratio_median":0.73,"target":0.9},
        {"path":"forwarded (proxy_pass)","ours":"gateway","peer":"nginx proxy_pass","ours_rps":[45000,47000],"peer_rps":[80000,76000],"ratio_median":0.59,"target":0.8}
    ]}"#;

    #[test]
    fn peers_json_gives_the_median_of_each_side() {
        let paths = parse_peers_json(PEERS).unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0].ours_rps, 110000.0);
        assert_eq!(paths[0].peer_rps, 150000.0);
        assert_eq!(paths[1].ours_rps, 46000.0);
        assert_eq!(paths[1].target, Some(0.8));
        assert!(parse_peers_json(r#"{"paths":[{"path":"x"}]}"#).is_err());
        assert!(parse_peers_json("{}").is_err());
    }

    #[test]
    fn the_throughput_chart_names_every_path_peer_and_ratio() {
        let svg = throughput_svg(&parse_peers_json(PEERS).unwrap()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for label in [
            "verify vs bare actix-web",
            "forwarded vs nginx proxy_pass",
            "150k",
            "110k",
            "78k",
            "ratio 0.73 (target ≥ 0.9)",
            "ratio 0.59 (target ≥ 0.8)",
        ] {
            assert!(has_text(&svg, label), "no text {label:?} in the SVG");
        }
        // The background, four bars, two legend swatches and the legend's box.
        assert!(svg.matches("<rect").count() >= 5);
    }

    #[test]
    fn the_fleet_chart_has_both_percentiles_and_the_target_line() {
        let rows = parse_fleet_json(
            r#"{"fleet":[
                {"instances":2,"revokes":50,"delete_p50_ms":2.1,"delete_p99_ms":9.0,"delete_max_ms":11.0,"still_accepting":0},
                {"instances":20,"revokes":50,"delete_p50_ms":8.4,"delete_p99_ms":23.5,"delete_max_ms":40.0,"still_accepting":0},
                {"instances":10,"revokes":50,"delete_p50_ms":5.0,"delete_p99_ms":14.2,"delete_max_ms":20.0,"still_accepting":0}
            ]}"#,
        )
        .unwrap();
        let svg = fleet_svg(&rows).unwrap();
        for label in [
            "DELETE p50",
            "DELETE p99",
            "target: p99 ≤ 10 ms at 20 instances",
            "instances on one database (50 revokes each)",
            "23.5",
            "14.2",
            "2.1",
            "20",
        ] {
            assert!(has_text(&svg, label), "no text {label:?} in the SVG");
        }
    }

    #[test]
    fn draw_skips_a_missing_input_and_writes_both_places() {
        let dir = crate::gateway::TempDir::new("charts-test").unwrap();
        let (bench, docs) = (dir.0.join("bench"), dir.0.join("docs"));
        std::fs::create_dir_all(&bench).unwrap();
        assert!(draw(&bench, &docs).unwrap().is_empty());
        std::fs::write(bench.join("peers.json"), PEERS).unwrap();
        let written = draw(&bench, &docs).unwrap();
        assert_eq!(written, vec![docs.join("throughput.svg")]);
        assert!(bench.join("throughput.svg").exists());
        assert!(!docs.join("fleet-delete-latency.svg").exists());
    }
}
