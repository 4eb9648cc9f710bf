//! `cargo xtask bench`'s SVG plots of its [`Results`], beside results.json.
//!
//! - `ns-per-frame.svg`: the device model's ns/frame against frame size,
//!   chroma, rust-vmm's `virtio-queue` and a plain copy, a panel per batch;
//! - `throughput.svg`: VM-to-VM throughput of the bare-metal and the Linux
//!   pair, chroma beside plain QEMU;
//! - `boot.svg`: the probe guest's first line and the Linux boot, chroma
//!   beside plain QEMU;
//! - `traps-per-packet.svg`: traps and interrupts per packet of each NIC
//!   under chroma.
//!
//! A plot whose figures the run does not have (a board without a peer, a
//! section that failed) is drawn with what there is, or not at all. The
//! data is picked first ([`plots`], plain values the tests check) and drawn
//! after ([`draw`]) with plotters' SVG backend, whose text is SVG `<text>`
//! (no font files: plotters sizes labels by its own estimate).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench_results::{format_value, names, Better, Figure, Results};
use crate::Result;

/// The series of chroma's own values.
pub const CHROMA: &str = "chroma";
/// The size of one panel, in pixels.
const PANEL: (u32, u32) = (480, 420);
/// The font family of every label (the viewer picks the font).
const FONT: &str = "sans-serif";
/// The series' colours, in order.
const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
];

/// A named series of values.
#[derive(Clone, Debug, PartialEq)]
pub struct Series<T> {
    /// Its name in the legend.
    pub name: String,
    /// Its values.
    pub values: Vec<T>,
}

/// One panel of a plot.
#[derive(Clone, Debug, PartialEq)]
pub enum Panel {
    /// Lines through (x, y) points.
    Lines {
        /// The panel's caption.
        title: String,
        /// The x axis's description.
        x_desc: String,
        /// The y axis's description.
        y_desc: String,
        /// The lines.
        series: Vec<Series<(f64, f64)>>,
    },
    /// Bars grouped by category, one per series in each.
    Bars {
        /// The panel's caption.
        title: String,
        /// The y axis's description.
        y_desc: String,
        /// The groups along the x axis.
        categories: Vec<String>,
        /// Each series' value per category (none: no bar).
        series: Vec<Series<Option<f64>>>,
    },
}

/// One SVG file.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// Its file name.
    pub file: &'static str,
    /// Its title.
    pub title: String,
    /// Its panels, side by side.
    pub panels: Vec<Panel>,
}

/// The plots `results` has figures for.
pub fn plots(results: &Results) -> Vec<Plot> {
    let board = &results.meta.board;
    let mut plots = Vec::new();
    let device_model = device_model_panels(results);
    if !device_model.is_empty() {
        plots.push(Plot {
            file: "ns-per-frame.svg",
            title: "device model: ns per frame, device -> switch -> device (host)".to_owned(),
            panels: device_model,
        });
    }
    let throughput: Vec<Panel> = bars(
        results,
        "VM-to-VM throughput",
        &[
            (names::VM_TO_VM_THROUGHPUT, "bare-metal pair"),
            (names::LINUX_VM_TO_VM_THROUGHPUT, "Linux pair (TCP)"),
        ],
    )
    .into_iter()
    .collect();
    if !throughput.is_empty() {
        plots.push(Plot {
            file: "throughput.svg",
            title: format!("VM-to-VM throughput on {board}"),
            panels: throughput,
        });
    }
    let boot: Vec<Panel> = [
        bars(
            results,
            "first guest line",
            &[(names::FIRST_LINE, "probe guest")],
        ),
        bars(
            results,
            "Linux boot, from QEMU's start",
            &[
                (names::LINUX_BOOT_FIRST_LINE, "kernel's first line"),
                (names::LINUX_BOOT_INIT, "init"),
            ],
        ),
        bars(
            results,
            "Linux: the kernel's clock at init",
            &[(names::LINUX_BOOT_KERNEL_CLOCK, "init")],
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !boot.is_empty() {
        plots.push(Plot {
            file: "boot.svg",
            title: format!("boot times on {board}"),
            panels: boot,
        });
    }
    if let Some(traps) = traps_panel(results) {
        plots.push(Plot {
            file: "traps-per-packet.svg",
            title: format!("traps and interrupts per packet on {board}"),
            panels: vec![traps],
        });
    }
    plots
}

/// The device model's ns/frame against frame size, a panel per batch size.
fn device_model_panels(results: &Results) -> Vec<Panel> {
    let points: Vec<(&Figure, u64, u64)> = results
        .figures
        .iter()
        .filter(|figure| figure.name.starts_with(names::DEVICE_MODEL_PREFIX))
        .filter_map(|figure| {
            Some((
                figure,
                *figure.params.get("frame_bytes")?,
                *figure.params.get("batch")?,
            ))
        })
        .collect();
    let mut batches: Vec<u64> = points.iter().map(|&(_, _, batch)| batch).collect();
    batches.sort_unstable();
    batches.dedup();
    batches
        .into_iter()
        .map(|batch| {
            let mut series: Vec<Series<(f64, f64)>> = Vec::new();
            for &(figure, bytes, _) in points.iter().filter(|point| point.2 == batch) {
                let x = bytes as f64;
                let values = std::iter::once((CHROMA, figure.value)).chain(
                    figure
                        .peers
                        .iter()
                        .map(|peer| (peer.name.as_str(), peer.value)),
                );
                for (name, y) in values {
                    add_point(&mut series, name, (x, y));
                }
            }
            for line in &mut series {
                line.values.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            Panel::Lines {
                title: format!("batch {batch}"),
                x_desc: "frame size (bytes)".to_owned(),
                y_desc: "ns/frame".to_owned(),
                series,
            }
        })
        .collect()
}

/// Adds `point` to the series `name`, which is added when new.
fn add_point(series: &mut Vec<Series<(f64, f64)>>, name: &str, point: (f64, f64)) {
    match series.iter_mut().find(|line| line.name == name) {
        Some(line) => line.values.push(point),
        None => series.push(Series {
            name: name.to_owned(),
            values: vec![point],
        }),
    }
}

/// A bar panel of the figures `entries` names (figure, category), chroma
/// beside each peer; none when the run has none of them. The unit is the
/// first figure's.
fn bars(results: &Results, title: &str, entries: &[(&str, &str)]) -> Option<Panel> {
    let found: Vec<(&Figure, &str)> = entries
        .iter()
        .filter_map(|&(name, category)| Some((results.get(name)?, category)))
        .collect();
    let first = found.first()?.0;
    let unit = first.unit.clone();
    let better = match first.better {
        Better::Lower => "lower",
        Better::Higher => "higher",
    };
    let mut series_names = vec![CHROMA.to_owned()];
    for (figure, _) in &found {
        for peer in &figure.peers {
            if !series_names.contains(&peer.name) {
                series_names.push(peer.name.clone());
            }
        }
    }
    let series = series_names
        .into_iter()
        .map(|name| Series {
            values: found
                .iter()
                .map(|(figure, _)| {
                    if name == CHROMA {
                        Some(figure.value)
                    } else {
                        figure.peer_value(&name)
                    }
                })
                .collect(),
            name,
        })
        .collect();
    Some(Panel::Bars {
        title: format!("{title} ({better} is better)"),
        y_desc: unit,
        categories: found
            .iter()
            .map(|(_, category)| (*category).to_owned())
            .collect(),
        series,
    })
}

/// Traps and interrupts per packet of every NIC of both pairs.
fn traps_panel(results: &Results) -> Option<Panel> {
    let suffix = ".traps_per_packet";
    let mut categories = Vec::new();
    let mut traps = Vec::new();
    let mut irqs = Vec::new();
    for (pair, words) in [
        (names::BARE_METAL_PAIR, "bare-metal"),
        (names::LINUX_PAIR, "Linux"),
    ] {
        let prefix = format!("{pair}.");
        for figure in &results.figures {
            let Some(vm) = figure
                .name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
            else {
                continue;
            };
            categories.push(format!("{words} {vm}"));
            traps.push(Some(figure.value));
            irqs.push(
                results
                    .get(&names::irqs_per_packet(pair, vm))
                    .map(|figure| figure.value),
            );
        }
    }
    if categories.is_empty() {
        return None;
    }
    Some(Panel::Bars {
        title: "each NIC under chroma (lower is better)".to_owned(),
        y_desc: "per packet".to_owned(),
        categories,
        series: vec![
            Series {
                name: "traps/packet".to_owned(),
                values: traps,
            },
            Series {
                name: "irqs/packet".to_owned(),
                values: irqs,
            },
        ],
    })
}

/// Draws every plot of `results` into `dir`; returns the files written.
pub fn draw_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for plot in plots(results) {
        let path = dir.join(plot.file);
        draw(&plot, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// A drawing step's outcome (plotters' errors, boxed).
type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// Writes `plot` as an SVG file at `path`.
pub fn draw(plot: &Plot, path: &Path) -> Result<()> {
    draw_svg(plot, path).map_err(|error| format!("{}: {error}", path.display()))
}

fn draw_svg(plot: &Plot, path: &Path) -> Drawn {
    let count = u32::try_from(plot.panels.len().max(1))?;
    // Wide enough for the panel with the most categories.
    let mut width = PANEL.0;
    for panel in &plot.panels {
        if let Panel::Bars { categories, .. } = panel {
            width = width.max(140 * u32::try_from(categories.len())? + 120);
        }
    }
    let root = SVGBackend::new(path, (width * count, PANEL.1 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&plot.title, (FONT, 20))?;
    for (area, panel) in root
        .split_evenly((1, plot.panels.len()))
        .iter()
        .zip(&plot.panels)
    {
        match panel {
            Panel::Lines {
                title,
                x_desc,
                y_desc,
                series,
            } => draw_lines(area, title, x_desc, y_desc, series)?,
            Panel::Bars {
                title,
                y_desc,
                categories,
                series,
            } => draw_bars(area, title, y_desc, categories, series)?,
        }
    }
    root.present()?;
    Ok(())
}

/// The top of a y axis that starts at zero and leaves room above `values`
/// for the legend.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.4
    } else {
        1.0
    }
}

fn draw_lines(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<(f64, f64)>],
) -> Drawn {
    let points = || series.iter().flat_map(|line| line.values.iter());
    let x_max = points().map(|p| p.0).fold(0.0, f64::max) * 1.08;
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_top(points().map(|p| p.1)))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format_value(*y))
        .draw()?;
    for (index, line) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                line.values.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.values
                .iter()
                .map(|&point| Circle::new(point, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The width of one category on a bar panel's x axis (integer units, so
/// that the axis can carry its own key points and labels).
const GROUP: i32 = 1000;

fn draw_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[Series<Option<f64>>],
) -> Drawn {
    let groups = i32::try_from(categories.len().max(1))?;
    let centers: Vec<i32> = (0..groups).map(|group| group * GROUP + GROUP / 2).collect();
    let top = y_top(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..groups * GROUP).with_key_points(centers), 0.0..top)?;
    // The category whose centre `x` is.
    let category = |x: &i32| {
        usize::try_from(x / GROUP)
            .ok()
            .and_then(|group| categories.get(group))
            .cloned()
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&category)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format_value(*y))
        .draw()?;
    // The bars of a category fill its middle 80%, each series a slot of it.
    let slot = GROUP * 8 / 10 / i32::try_from(series.len().max(1))?;
    let label_style = (FONT, 12)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (index, bar_series) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let offset = GROUP / 10 + i32::try_from(index)? * slot;
        let mut bars = Vec::new();
        for (group, value) in bar_series.values.iter().enumerate() {
            if let Some(value) = value {
                bars.push((i32::try_from(group)? * GROUP + offset, *value));
            }
        }
        chart
            .draw_series(bars.iter().map(|&(left, value)| {
                Rectangle::new([(left, 0.0), (left + slot * 9 / 10, value)], color.filled())
            }))?
            .label(bar_series.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart.draw_series(bars.iter().map(|&(left, value)| {
            Text::new(
                format_value(value),
                (left + slot * 9 / 20, value),
                label_style.clone(),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_results::tests::sample;

    /// The text of every `<text>` element of the SVG at `path`, after
    /// checking that it is well-formed XML with an `<svg>` root.
    fn svg_texts(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        let document = roxmltree::Document::parse(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        document
            .descendants()
            .filter(|node| node.has_tag_name("text"))
            .filter_map(|node| node.text())
            .map(|text| text.trim().to_owned())
            .collect()
    }

    #[test]
    fn every_plot_is_well_formed_svg_with_its_series_named() {
        let dir = std::env::temp_dir().join(format!("xtask-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = draw_all(&sample(), &dir).unwrap();
        let files: Vec<String> = written
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files,
            [
                "ns-per-frame.svg",
                "throughput.svg",
                "boot.svg",
                "traps-per-packet.svg"
            ]
        );
        let expected: [&[&str]; 4] = [
            &[
                "chroma",
                "virtio-queue",
                "copy",
                "batch 1",
                "batch 32",
                "frame size (bytes)",
                "ns/frame",
            ],
            &[
                "chroma",
                "plain QEMU",
                "bare-metal pair",
                "Linux pair (TCP)",
                "KiB/s",
                "40000",
            ],
            &[
                "chroma",
                "plain QEMU",
                "first guest line (lower is better)",
                "probe guest",
                "init",
                "ms",
                "s",
            ],
            &[
                "traps/packet",
                "irqs/packet",
                "bare-metal client",
                "bare-metal server",
                "Linux client",
                "0.087",
            ],
        ];
        for (path, labels) in written.iter().zip(expected) {
            let texts = svg_texts(path);
            for label in labels {
                assert!(
                    texts.iter().any(|text| text == label),
                    "{}: no {label:?} in {texts:?}",
                    path.display()
                );
            }
        }
        // Negative control: a label that is not there is not found.
        assert!(!svg_texts(&written[0])
            .iter()
            .any(|text| text == "plain QEMU"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_plots_hold_the_figures_and_skip_what_is_missing() {
        let results = sample();
        let plots = plots(&results);
        let Panel::Lines { series, .. } = &plots[0].panels[0] else {
            panic!("{plots:?}")
        };
        assert_eq!(
            series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["chroma", "virtio-queue", "copy"]
        );
        assert_eq!(series[0].values, [(64.0, 90.0), (1500.0, 180.0)]);
        assert_eq!(series[2].values, [(64.0, 20.0), (1500.0, 80.0)]);
        let Panel::Bars {
            categories, series, ..
        } = &plots[3].panels[0]
        else {
            panic!("{plots:?}")
        };
        assert_eq!(
            categories,
            &["bare-metal client", "bare-metal server", "Linux client"]
        );
        assert_eq!(series[1].values, [Some(0.179), Some(0.5), Some(0.3)]);

        // A Pi's run: no device model, no peers for the transfers.
        let mut pi = Results::new(results.meta.clone());
        pi.push(Figure::new(
            names::VM_TO_VM_THROUGHPUT,
            100.0,
            "KiB/s",
            Better::Higher,
        ));
        let plots = super::plots(&pi);
        assert_eq!(plots.len(), 1, "{plots:?}");
        assert_eq!(
            plots[0].panels,
            [Panel::Bars {
                title: "VM-to-VM throughput (higher is better)".to_owned(),
                y_desc: "KiB/s".to_owned(),
                categories: vec!["bare-metal pair".to_owned()],
                series: vec![Series {
                    name: "chroma".to_owned(),
                    values: vec![Some(100.0)]
                }],
            }]
        );
        // Nothing measured, nothing drawn.
        assert!(super::plots(&Results::new(results.meta)).is_empty());
    }

    #[test]
    fn a_plot_that_cannot_be_written_says_where() {
        let plot = &plots(&sample())[0];
        let error = draw(plot, Path::new("/nonexistent/dir/plot.svg")).unwrap_err();
        assert!(error.starts_with("/nonexistent/dir/plot.svg: "), "{error}");
    }
}
