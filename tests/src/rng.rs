//! The one seeded random generator of the randomized cross-process tests (soak, churn,
//! hostile): each run draws a seed (or takes it from `SWRING_TEST_SEED`), prints it at the
//! start, and again if the test fails, with the command line that replays it.
//!
//! ```no_run
//! let seed = integration_tests::rng::Seed::from_env("my_test");
//! let mut rng = seed.rng();
//! let delay_us = rng.below(3000);
//! ```
//!
//! The generator is xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift
//! generators", 2016), written out here rather than taken from `rand` or `fastrand`: a
//! seed must replay the same run for as long as the test exists, and a crate is free to
//! change its algorithm (or how a seed is expanded) in any release. It is not for anything
//! cryptographic; it is fast, has 2^64 - 1 states, and passes the tests a test's choices need.

/// The environment variable that replays a run: `SWRING_TEST_SEED=N cargo test ...`.
pub const SEED_ENV: &str = "SWRING_TEST_SEED";

/// `2^64 / φ`: spreads stream numbers over the seed's bits.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64*: reproducible from its seed.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    /// The generator for `seed` (any value: the state is never 0).
    pub fn new(seed: u64) -> Self {
        TestRng(seed | 1)
    }

    /// An independent generator for stream `n` of `seed` (one per session, per thread...).
    pub fn stream(seed: u64, n: u64) -> Self {
        TestRng::new(seed ^ n.wrapping_mul(GOLDEN))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform (up to a modulo bias of at most n / 2^64) in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    /// Uniform in `0..100`.
    pub fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

/// A test run's seed. Keep it alive for the whole test: if the test panics while it is alive
/// (on its own thread, or on a scoped thread whose panic reaches it), dropping it prints the
/// seed and how to replay the run.
#[derive(Debug)]
pub struct Seed {
    test: String,
    value: u64,
}

impl Seed {
    /// `SWRING_TEST_SEED` if set (a decimal u64; anything else is an error, not a random
    /// run), else a seed drawn from the clock. Prints it, named after `test`.
    pub fn from_env(test: &str) -> Seed {
        let value = match std::env::var(SEED_ENV) {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("{test}: {SEED_ENV}={value}");
        Seed {
            test: test.to_string(),
            value,
        }
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    /// The generator of this seed.
    pub fn rng(&self) -> TestRng {
        TestRng::new(self.value)
    }

    /// Stream `n` of this seed ([`TestRng::stream`]).
    pub fn stream(&self, n: u64) -> TestRng {
        TestRng::stream(self.value, n)
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}; replay it with {SEED_ENV}={} (and the same other settings)",
                self.test, self.value, self.value
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_numbers_and_streams_differ() {
        let a: Vec<u64> = (0..8).scan(TestRng::new(42), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(TestRng::new(42), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        // Pinned: the same seed must give the same run in every later version of the tests.
        assert_eq!(TestRng::new(42).next_u64(), 0x9eb3_1902_fb08_80bd);
        let mut s1 = TestRng::stream(42, 1);
        let mut s2 = TestRng::stream(42, 2);
        assert_ne!(s1.next_u64(), s2.next_u64());
        // Seed 0 still moves.
        let mut z = TestRng::new(0);
        assert_ne!(z.next_u64(), z.next_u64());
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = TestRng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(3) < 3);
            assert_eq!(r.below(0), 0);
            let x = r.range(5, 9);
            assert!((5..=9).contains(&x));
            assert_eq!(r.range(4, 4), 4);
            assert!(r.percent() < 100);
        }
    }
}
