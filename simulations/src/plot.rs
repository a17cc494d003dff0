//! `--out DIR`: the per-node CSV and an SVG plot of the completion CDF of
//! the staying leechers, with the fluid bound `T_min` drawn as a vertical
//! line (a run that met the bound would be a step at `T_min`).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::outcome::Outcome;

/// Writes `completions.csv` and `cdf.svg` into `dir` (created if needed).
pub fn write_outputs(out: &Outcome, title: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv = dir.join("completions.csv");
    std::fs::write(&csv, out.csv()).with_context(|| format!("writing {}", csv.display()))?;
    let svg = dir.join("cdf.svg");
    std::fs::write(&svg, cdf_svg(out, title)?)
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok(())
}

/// The completion CDF as an SVG document.
pub fn cdf_svg(out: &Outcome, title: &str) -> anyhow::Result<String> {
    let mut times: Vec<f64> = out
        .completions_us()
        .into_iter()
        .flatten()
        .map(|t| t as f64 / 1e6)
        .collect();
    times.sort_by(f64::total_cmp);
    let staying = out.completions_us().len().max(1) as f64;
    let last = times.last().copied().unwrap_or(0.0);
    let x_max = (last.max(out.t_min) * 1.1).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("fraction of staying leechers complete")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // A step function: each completion raises the curve by 1/N.
        let mut pts = vec![(0.0, 0.0)];
        for (k, &t) in times.iter().enumerate() {
            pts.push((t, k as f64 / staying));
            pts.push((t, (k + 1) as f64 / staying));
        }
        chart
            .draw_series(LineSeries::new(pts, &BLUE))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("completed")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new([(out.t_min, 0.0), (out.t_min, 1.0)], &RED))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(format!("T_min = {:.3} s", out.t_min))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}
