//! A scrambled Zipfian key generator, as in YCSB.
//!
//! Real key popularity is skewed: a few keys take most requests. YCSB models that with a
//! Zipfian distribution of constant 0.99 over ranks, drawn with the method of Gray et al.,
//! "Quickly Generating Billion-Record Synthetic Databases" (SIGMOD 1994), which costs O(1)
//! per draw after computing `zeta(n)` once. Rank 0 is the hottest key.
//!
//! Left as is, the hot keys would be the first indices, which hash to arbitrary partitions
//! anyway in quorumkv but sit next to each other in etcd's ordered key space. YCSB scrambles
//! ranks with a hash; we use an affine permutation of `0..n` instead (`rank * a + b mod n`
//! with `a` coprime to `n`), which spreads the hot keys just as well and, being a bijection,
//! keeps the distribution exact (a hash would merge some ranks and leave keys unused).

use rand::Rng;

/// YCSB's default Zipfian constant.
pub const YCSB_ZIPFIAN_CONSTANT: f64 = 0.99;

/// Zipfian ranks over `0..items`, scrambled by a fixed permutation.
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    items: u64,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
    /// `1 + 0.5^theta`: the cumulative weight of ranks 0 and 1, in units of rank 0's.
    two_ranks: f64,
    multiplier: u64,
    offset: u64,
}

impl ScrambledZipfian {
    /// A generator over `items` keys (at least one) with constant `theta` in `(0, 1)`.
    pub fn new(items: u64, theta: f64) -> Self {
        let items = items.max(1);
        let zeta_n = zeta(items, theta);
        let zeta_2 = zeta(2.min(items), theta);
        let eta = if items > 1 {
            (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            0.0
        };
        Self {
            items,
            zeta_n,
            alpha: 1.0 / (1.0 - theta),
            eta,
            two_ranks: 1.0 + 0.5f64.powf(theta),
            multiplier: coprime_multiplier(items),
            offset: 0x5bd1_e995 % items,
        }
    }

    /// The next rank, before scrambling: 0 is the most popular.
    pub fn next_rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.two_ranks {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }

    /// The key index of a rank: a fixed permutation of `0..items`.
    pub fn scramble(&self, rank: u64) -> u64 {
        let mixed = u128::from(rank) * u128::from(self.multiplier) + u128::from(self.offset);
        // Below `items`, so it fits in a u64.
        (mixed % u128::from(self.items)) as u64
    }

    /// The next key index.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        self.scramble(self.next_rank(rng))
    }
}

/// `sum_{i=1..=n} 1 / i^theta`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// A large multiplier coprime to `n`, so that `x * m mod n` permutes `0..n`.
fn coprime_multiplier(n: u64) -> u64 {
    // Start from a 64-bit golden-ratio constant so that neighbouring ranks land far apart.
    let mut m = 0x9e37_79b9_7f4a_7c15 % n.max(1);
    while gcd(m, n) != 1 {
        m = (m + 1) % n;
    }
    m.max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn scrambling_is_a_permutation() {
        for items in [1u64, 2, 10, 1000, 4096, 100_000] {
            let zipf = ScrambledZipfian::new(items, YCSB_ZIPFIAN_CONSTANT);
            let mut seen = vec![false; usize::try_from(items).expect("small")];
            for rank in 0..items {
                let index = usize::try_from(zipf.scramble(rank)).expect("small");
                assert!(!seen[index], "{items} items: index {index} twice");
                seen[index] = true;
            }
        }
    }

    /// Ranks 0 and 1 are drawn with their exact Zipfian probabilities; above them Gray's
    /// method follows a continuous approximation of the law (YCSB's behaviour too), close
    /// but not exact for the first few ranks. The head of the distribution carries the
    /// weight it should.
    #[test]
    fn ranks_follow_the_zipfian_law() {
        let items = 1000;
        let zipf = ScrambledZipfian::new(items, YCSB_ZIPFIAN_CONSTANT);
        let mut rng = StdRng::seed_from_u64(42);
        let draws = 200_000u32;
        let mut counts = vec![0u32; 1000];
        for _ in 0..draws {
            let rank = zipf.next_rank(&mut rng);
            assert!(rank < items);
            counts[usize::try_from(rank).expect("small")] += 1;
        }
        let zeta_n = zeta(items, YCSB_ZIPFIAN_CONSTANT);
        for (rank, tolerance) in [(0u64, 0.05), (1, 0.05), (2, 0.25), (9, 0.25), (99, 0.25)] {
            let observed =
                f64::from(counts[usize::try_from(rank).expect("small")]) / f64::from(draws);
            let expected = 1.0 / ((rank + 1) as f64).powf(YCSB_ZIPFIAN_CONSTANT) / zeta_n;
            assert!(
                (observed - expected).abs() < tolerance * expected,
                "rank {rank}: observed {observed:.4}, expected {expected:.4}"
            );
        }
        // With theta = 0.99 over 1000 keys, the top 1% of keys take about 40% of requests.
        let head: u32 = counts[..10].iter().sum();
        let share = f64::from(head) / f64::from(draws);
        assert!((0.35..0.45).contains(&share), "top 1% share {share}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
    }

    #[test]
    fn one_key_is_always_key_zero() {
        let zipf = ScrambledZipfian::new(1, YCSB_ZIPFIAN_CONSTANT);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| zipf.next(&mut rng) == 0));
    }
}
