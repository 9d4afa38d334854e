//! The files `--out DIR` writes besides the JSON lines: HDR interval logs, percentile
//! distributions and `latency.svg`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::ScenarioResult;
use crate::Result;

/// Writes `results.jsonl`, and per scenario `<name>.hlog` (HdrHistogram interval log, one
/// interval per block, V2 deflate encoding, ns) and `<name>.hgrm` (percentile distribution of
/// all blocks, the format of HdrHistogram's outputPercentileDistribution and its plotter).
pub fn write_out_dir(dir: &Path, lines: &[String], results: &[&ScenarioResult], run_start: SystemTime) -> Result<()> {
    let path = dir.join("results.jsonl");
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for l in lines {
        writeln!(f, "{l}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for r in results {
        let path = dir.join(format!("{}.hlog", r.spec.name));
        std::fs::write(&path, interval_log(r, run_start)?).map_err(|e| format!("{}: {e}", path.display()))?;
        let path = dir.join(format!("{}.hgrm", r.spec.name));
        std::fs::write(&path, percentile_distribution(&r.hist)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let path = dir.join("latency.svg");
    std::fs::write(&path, latency_plot(results, run_start)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// `latency.svg`: the percentile curves of every latency scenario of the run (the pipelined
/// bandwidth scenarios, whose samples are transfers among others in flight, are left out).
pub fn latency_plot(results: &[&ScenarioResult], run_start: SystemTime) -> String {
    let series: Vec<crate::plot::Series> = results
        .iter()
        .filter(|r| !r.spec.pipelined)
        .map(|r| crate::plot::Series {
            name: r.spec.name,
            hist: &r.hist,
        })
        .collect();
    let t = run_start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::plot::latency_svg(
        &series,
        &format!("bench latency percentiles (ns per sample; batch scenarios per batch), run started at unix time {t}"),
    )
}

pub(super) fn interval_log(r: &ScenarioResult, run_start: SystemTime) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "bench scenario {}: {} (values in ns, one interval per block)",
            r.spec.name, r.spec.about
        ))
        .add_comment(&format!("one value = one {}", r.spec.sample))
        .with_start_time(run_start)
        .with_base_time(run_start)
        .with_max_value_divisor(1.0)
        .begin_log_with(&mut buf, &mut serializer)
        .map_err(|e| format!("interval log: {e}"))?;
    let tag = Tag::new(r.spec.name);
    for b in &r.blocks {
        if let Some(h) = &b.hist {
            w.write_histogram(h, b.start, b.elapsed, tag)
                .map_err(|e| format!("interval log: {e:?}"))?;
        }
    }
    drop(w);
    Ok(buf)
}

/// HdrHistogram's classic percentile table (values in ns).
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{:12.3} {:2.12} {:10} {:14.2}",
                v.value_iterated_to() as f64,
                q,
                total,
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{:12.3} {:2.12} {:10}", v.value_iterated_to() as f64, q, total);
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    out
}
