//! Histograms, per-block records and the ratio math.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value a histogram records (1 minute in ns); larger samples saturate to it.
pub const HIGHEST_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds")
}

/// Records one sample; 0 ns (clock granularity) is counted as 1 ns.
#[inline]
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(ns);
}

/// The distribution of one scenario (all blocks merged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    pub count: u64,
}

pub fn summarize(h: &Histogram<u64>) -> Summary {
    Summary {
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        p9999_ns: h.value_at_quantile(0.9999),
        max_ns: h.max(),
        mean_ns: round2(h.mean()),
        count: h.len(),
    }
}

/// One measured block of one scenario.
#[derive(Debug, Clone)]
pub struct Block {
    /// Start, relative to the start of the run.
    pub start: Duration,
    /// Measured time (warm-up excluded).
    pub elapsed: Duration,
    /// Operations done (samples × ops per sample).
    pub ops: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    /// Only kept when histogram logs are written.
    pub hist: Option<Histogram<u64>>,
}

impl Block {
    pub fn ops_per_sec(&self) -> f64 {
        per_sec(self.ops, self.elapsed)
    }
}

pub fn per_sec(ops: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        ops as f64 / s
    } else {
        0.0
    }
}

/// Median; the mean of the two middle values for an even count. `None` when empty or when a
/// value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A same-run ratio of a subject to its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// median(subject per-block values) / median(baseline per-block values).
    pub value: f64,
    /// Smallest and largest ratio of paired blocks (block i of the subject to block i of the
    /// baseline, which ran right before it): the spread.
    pub min: f64,
    pub max: f64,
    /// Median of the paired-block ratios: robust when the core placement changes during the
    /// run (each pair compares blocks that ran back to back).
    pub pair_median: f64,
    /// Paired blocks.
    pub blocks: usize,
}

/// The ratio of medians of per-block values, with the spread of per-block ratios.
pub fn ratio_of_medians(subject: &[f64], baseline: &[f64]) -> Option<Ratio> {
    let value = median(subject)? / median(baseline)?;
    let pairs: Vec<f64> = subject
        .iter()
        .zip(baseline)
        .filter(|(_, b)| **b > 0.0)
        .map(|(s, b)| s / b)
        .collect();
    if !value.is_finite() || pairs.is_empty() {
        return None;
    }
    let min = pairs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = pairs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pair_median = median(&pairs)?;
    Some(Ratio {
        value,
        min,
        max,
        pair_median,
        blocks: pairs.len(),
    })
}

/// How much a subject's p50 exceeds its baseline's, in ns and in units of a reference
/// scenario's p50 (all medians of per-block p50s, as the ratios use).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Excess {
    pub subject_p50_ns: f64,
    pub baseline_p50_ns: f64,
    pub reference_p50_ns: f64,
    /// subject - baseline.
    pub excess_ns: f64,
    /// Median of (subject block i - baseline block i), the blocks that ran back to back.
    pub excess_pair_median_ns: f64,
    /// excess_ns / reference_p50_ns.
    pub excess_vs_reference: f64,
    /// Median of (subject_i - baseline_i) / reference_i over blocks i: the three ran back to
    /// back, so this holds up when the cores' placement changes during the run.
    pub excess_vs_reference_pair_median: f64,
    /// excess_ns - reference_p50_ns: what the subject adds beyond one reference (e.g. the
    /// ring hop), and its per-block median.
    pub beyond_reference_ns: f64,
    pub beyond_reference_pair_median_ns: f64,
    /// subject / baseline - 1.
    pub over_baseline: f64,
}

pub fn excess(subject: &[f64], baseline: &[f64], reference: &[f64]) -> Option<Excess> {
    let (s, b, r) = (median(subject)?, median(baseline)?, median(reference)?);
    if b <= 0.0 || r <= 0.0 {
        return None;
    }
    let blocks = subject.iter().zip(baseline).zip(reference);
    let pairs: Vec<f64> = blocks.clone().map(|((s, b), _)| s - b).collect();
    let in_reference: Vec<f64> = blocks
        .clone()
        .filter(|(_, r)| **r > 0.0)
        .map(|((s, b), r)| (s - b) / r)
        .collect();
    let beyond: Vec<f64> = blocks.map(|((s, b), r)| s - b - r).collect();
    Some(Excess {
        subject_p50_ns: s,
        baseline_p50_ns: b,
        reference_p50_ns: r,
        excess_ns: s - b,
        excess_pair_median_ns: median(&pairs)?,
        excess_vs_reference: (s - b) / r,
        excess_vs_reference_pair_median: median(&in_reference)?,
        beyond_reference_ns: s - b - r,
        beyond_reference_pair_median_ns: median(&beyond)?,
        over_baseline: s / b - 1.0,
    })
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Three decimals, or three significant digits below 1, so that a positive ratio never
/// prints as 0 (under load one descheduled baseline block can make a ratio 0.0004).
pub fn round3(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() || x.abs() >= 1.0 {
        return (x * 1000.0).round() / 1000.0;
    }
    let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round3_keeps_small_positive_values_positive() {
        assert_eq!(round3(1.23456), 1.235);
        assert_eq!(round3(0.5), 0.5);
        assert_eq!(round3(0.000123456), 0.000123);
        assert!(round3(0.0004) > 0.0);
        assert_eq!(round3(0.0), 0.0);
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_is_of_medians_and_spread_is_of_pairs() {
        // Block p50s drift upwards on both sides; the ratio of medians ignores the drift.
        let base = [100.0, 150.0, 200.0];
        let subj = [130.0, 180.0, 300.0];
        let r = ratio_of_medians(&subj, &base).unwrap();
        assert!((r.value - 180.0 / 150.0).abs() < 1e-12);
        assert!((r.min - 1.2).abs() < 1e-12);
        assert!((r.max - 1.5).abs() < 1e-12);
        assert!((r.pair_median - 1.3).abs() < 1e-12);
        assert_eq!(r.blocks, 3);
    }

    #[test]
    fn excess_is_a_difference_of_medians_in_reference_units() {
        let base = [1000.0, 1100.0, 900.0];
        let subj = [1500.0, 1400.0, 1700.0];
        let reference = [250.0, 240.0, 260.0];
        let e = excess(&subj, &base, &reference).unwrap();
        assert_eq!(e.subject_p50_ns, 1500.0);
        assert_eq!(e.baseline_p50_ns, 1000.0);
        assert_eq!(e.reference_p50_ns, 250.0);
        assert_eq!(e.excess_ns, 500.0);
        // Pairs: 500, 300, 800.
        assert_eq!(e.excess_pair_median_ns, 500.0);
        assert!((e.excess_vs_reference - 2.0).abs() < 1e-12);
        // Per block: 500/250, 300/240, 800/260; beyond: 250, 60, 540.
        assert!((e.excess_vs_reference_pair_median - 2.0).abs() < 1e-12);
        assert_eq!(e.beyond_reference_ns, 250.0);
        assert_eq!(e.beyond_reference_pair_median_ns, 250.0);
        assert!((e.over_baseline - 0.5).abs() < 1e-12);
        // A placement change half-way: the pairs see the engine's constant extra cost.
        let e = excess(
            &[1900.0, 1900.0, 2400.0, 2400.0, 2400.0],
            &[1100.0, 1100.0, 1100.0, 1100.0, 1100.0],
            &[200.0, 200.0, 700.0, 700.0, 700.0],
        )
        .unwrap();
        assert_eq!(e.beyond_reference_ns, 600.0);
        assert_eq!(e.beyond_reference_pair_median_ns, 600.0);
        assert!((e.excess_vs_reference_pair_median - 1300.0 / 700.0).abs() < 1e-12);
        // Faster than the baseline: a negative excess, not an error.
        let e = excess(&[900.0], &[1000.0], &[100.0]).unwrap();
        assert_eq!(e.excess_vs_reference, -1.0);
        assert_eq!(excess(&[], &base, &reference), None);
        assert_eq!(excess(&subj, &base, &[0.0]), None);
    }

    #[test]
    fn ratio_needs_data() {
        assert_eq!(ratio_of_medians(&[], &[1.0]), None);
        assert_eq!(ratio_of_medians(&[1.0], &[0.0]), None);
    }

    #[test]
    fn summary_reads_the_histogram() {
        let mut h = new_histogram();
        for ns in 1..=1000u64 {
            record(&mut h, Duration::from_nanos(ns));
        }
        record(&mut h, Duration::ZERO); // counted as 1 ns
        record(&mut h, Duration::from_secs(3600)); // saturates
        let s = summarize(&h);
        assert_eq!(s.count, 1002);
        assert_eq!(s.p50_ns, 500);
        assert!((989..=991).contains(&s.p99_ns), "{}", s.p99_ns);
        assert!(h.equivalent(s.max_ns, HIGHEST_NS));
    }

    #[test]
    fn block_throughput() {
        let b = Block {
            start: Duration::ZERO,
            elapsed: Duration::from_millis(500),
            ops: 32_000,
            p50_ns: 1,
            p99_ns: 1,
            p999_ns: 1,
            hist: None,
        };
        assert_eq!(b.ops_per_sec(), 64_000.0);
        assert_eq!(per_sec(5, Duration::ZERO), 0.0);
    }
}
