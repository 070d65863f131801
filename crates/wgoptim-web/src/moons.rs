//! The data set: two interleaving half circles ("two moons"), generated from a seed so that the page, the
//! host test and any rerun see the same points, and the cubic feature map that lets a linear classifier
//! separate them.
//!
//! The shape follows scikit-learn's `make_moons`: the upper moon is `(cos t, sin t)`, the lower one
//! `(1 - cos t, 1 - sin t - 0.5)`, for `t` evenly spaced over `[0, π]`, each point moved by Gaussian noise.

/// Features per sample: the ten monomials of degree 1 to 3 in (x, y) but the constant, which the bias
/// stands for.
pub const FEATURES: usize = 9;

/// A deterministic generator (SplitMix64): the same stream on every platform, with no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]`: never 0, so that its logarithm is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; one of the pair is dropped to keep the stream simple).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Labelled points and their standardised features.
#[derive(Clone, Debug)]
pub struct Moons {
    /// The points, `(x, y)`.
    pub points: Vec<[f64; 2]>,
    /// 0 for the upper moon, 1 for the lower.
    pub labels: Vec<f32>,
    /// Row-major `points.len() × FEATURES`, each column scaled to mean 0 and standard deviation 1.
    pub features: Vec<f32>,
    /// Each column's mean and standard deviation before scaling, to map new points the same way.
    pub scaling: Vec<(f64, f64)>,
}

/// The monomials of degree 1 to 3 of a point.
pub fn monomials([x, y]: [f64; 2]) -> [f64; FEATURES] {
    [
        x,
        y,
        x * x,
        x * y,
        y * y,
        x * x * x,
        x * x * y,
        x * y * y,
        y * y * y,
    ]
}

impl Moons {
    /// `n` points (half per moon, the upper one taking the odd one out) with noise of standard deviation
    /// `noise`.
    pub fn generate(n: usize, noise: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let upper = n - n / 2;
        let lower = n / 2;
        let mut points = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let spaced = |i: usize, count: usize| {
            if count > 1 {
                std::f64::consts::PI * i as f64 / (count - 1) as f64
            } else {
                0.0
            }
        };
        for i in 0..upper {
            let t = spaced(i, upper);
            points.push([t.cos(), t.sin()]);
            labels.push(0.0);
        }
        for i in 0..lower {
            let t = spaced(i, lower);
            points.push([1.0 - t.cos(), 1.0 - t.sin() - 0.5]);
            labels.push(1.0);
        }
        for p in &mut points {
            p[0] += noise * rng.normal();
            p[1] += noise * rng.normal();
        }
        let raw: Vec<[f64; FEATURES]> = points.iter().map(|&p| monomials(p)).collect();
        let scaling: Vec<(f64, f64)> = (0..FEATURES)
            .map(|j| {
                let count = raw.len().max(1) as f64;
                let mean = raw.iter().map(|r| r[j]).sum::<f64>() / count;
                let var = raw.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / count;
                // A constant column (only with fewer than two points) keeps its values instead of dividing by 0.
                (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
            })
            .collect();
        let features = raw
            .iter()
            .flat_map(|r| {
                r.iter()
                    .zip(&scaling)
                    .map(|(v, (mean, sd))| ((v - mean) / sd) as f32)
            })
            .collect();
        Self {
            points,
            labels,
            features,
            scaling,
        }
    }

    /// Samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Sample `i`'s features.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * FEATURES..(i + 1) * FEATURES]
    }

    /// The standardised features of any point, for drawing the decision boundary.
    pub fn featurize(&self, point: [f64; 2]) -> [f32; FEATURES] {
        let m = monomials(point);
        std::array::from_fn(|j| ((m[j] - self.scaling[j].0) / self.scaling[j].1) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_points_other_seed_other_noise() {
        let a = Moons::generate(64, 0.1, 7);
        let b = Moons::generate(64, 0.1, 7);
        let c = Moons::generate(64, 0.1, 8);
        assert_eq!(a.features, b.features);
        assert_eq!(a.points, b.points);
        assert_ne!(a.points, c.points);
        assert_eq!(a.labels, c.labels);
    }

    #[test]
    fn noiseless_points_lie_on_the_two_half_circles() {
        let m = Moons::generate(11, 0.0, 1);
        assert_eq!(m.labels.iter().filter(|&&l| l == 0.0).count(), 6);
        for (p, &l) in m.points.iter().zip(&m.labels) {
            let (cx, cy) = if l == 0.0 { (0.0, 0.0) } else { (1.0, 0.5) };
            let r = ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt();
            assert!((r - 1.0).abs() < 1e-12, "{p:?} is {r} from its centre");
            // The upper moon bulges up, the lower one down.
            if l == 0.0 {
                assert!(p[1] >= -1e-12);
            } else {
                assert!(p[1] <= 0.5 + 1e-12);
            }
        }
    }

    #[test]
    fn features_are_standardised() {
        let m = Moons::generate(400, 0.1, 3);
        for j in 0..FEATURES {
            let col: Vec<f64> = (0..m.len()).map(|i| m.row(i)[j] as f64).collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(mean.abs() < 1e-6, "column {j} mean {mean}");
            assert!((var - 1.0).abs() < 1e-5, "column {j} variance {var}");
        }
        // A training point mapped again gives its own row.
        assert_eq!(m.featurize(m.points[5]).as_slice(), m.row(5));
    }

    #[test]
    fn normal_draws_have_unit_variance() {
        let mut rng = Rng::new(42);
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) ≈ 0.007 for the mean, sqrt(2/n) ≈ 0.01 for the variance.
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
