//! The red wine quality data set (Cortez et al., 2009; UCI), as `linfa-datasets` bundles it: 1599 wines, 11
//! physico-chemical measurements each, and a quality grade from 3 to 8 given by tasters. The task is to
//! predict the grade, a six-way classification with a strong imbalance (grades 5 and 6 make up 82% of the
//! wines), so a model has to beat always answering the commonest grade to have learnt anything.

use super::rng::SplitMix64;

/// Seeds the train/test split of [`Dataset::wine_quality`] in the example and its test.
pub const SPLIT_SEED: u64 = 2009;
/// Share of each grade's wines held out for testing.
pub const TEST_FRACTION: f64 = 0.2;

/// One split: row-major features (already standardised) and class indices.
#[derive(Clone, Debug)]
pub struct Split {
    /// `rows × features` values.
    pub x: Vec<f32>,
    /// One class index per row.
    pub y: Vec<u32>,
}

impl Split {
    /// Rows in the split.
    pub fn rows(&self) -> usize {
        self.y.len()
    }
}

/// A classification data set split into training and test rows.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// What the data set is, for reports.
    pub name: &'static str,
    /// Features per row.
    pub features: usize,
    /// A readable name per class.
    pub class_names: Vec<String>,
    /// Rows the model learns from.
    pub train: Split,
    /// Rows held out to measure generalisation.
    pub test: Split,
}

impl Dataset {
    /// Red wine quality, split per grade so that every grade keeps about `test_fraction` of its wines in
    /// the test split (a plain shuffle could leave the ten grade-3 wines out of one split), shuffled with
    /// `seed`. Features are standardised with the training split's mean and standard deviation only, so that
    /// nothing of the test split leaks into training.
    pub fn wine_quality(seed: u64, test_fraction: f64) -> Self {
        let wine = linfa_datasets::winequality();
        let features = wine.records.shape()[1];
        let values: Vec<f32> = wine.records.iter().map(|&v| v as f32).collect();
        let grades: Vec<usize> = wine.targets.iter().copied().collect();
        let lowest = grades.iter().copied().min().unwrap_or(0);
        let highest = grades.iter().copied().max().unwrap_or(0);
        let classes = highest - lowest + 1;

        let mut rng = SplitMix64::new(seed);
        let mut train_rows = Vec::new();
        let mut test_rows = Vec::new();
        for class in 0..classes {
            let mut rows: Vec<usize> = (0..grades.len())
                .filter(|&r| grades[r] - lowest == class)
                .collect();
            rng.shuffle(&mut rows);
            let held_out = (rows.len() as f64 * test_fraction).round() as usize;
            test_rows.extend_from_slice(&rows[..held_out]);
            train_rows.extend_from_slice(&rows[held_out..]);
        }
        rng.shuffle(&mut train_rows);
        rng.shuffle(&mut test_rows);

        let (mean, std) = column_stats(&values, features, &train_rows);
        let (values, mean, std) = (&values, &mean, &std);
        let take = |rows: &[usize]| Split {
            x: rows
                .iter()
                .flat_map(|&r| {
                    (0..features).map(move |f| (values[r * features + f] - mean[f]) / std[f])
                })
                .collect(),
            y: rows.iter().map(|&r| (grades[r] - lowest) as u32).collect(),
        };
        Self {
            name: "red wine quality (UCI, 1599 wines, 11 features, grades 3-8)",
            features,
            class_names: (lowest..=highest).map(|g| format!("grade {g}")).collect(),
            train: take(&train_rows),
            test: take(&test_rows),
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The commonest class of the training split and the test accuracy of always predicting it: the bar a
    /// model must clear.
    pub fn majority_baseline(&self) -> (usize, f64) {
        let mut counts = vec![0usize; self.classes()];
        for &y in &self.train.y {
            counts[y as usize] += 1;
        }
        let majority = (0..counts.len())
            .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
            .unwrap_or(0);
        let hits = self
            .test
            .y
            .iter()
            .filter(|&&y| y as usize == majority)
            .count();
        (majority, hits as f64 / self.test.rows().max(1) as f64)
    }
}

/// Mean and standard deviation (population) of each column over `rows`; a constant column gets a
/// deviation of 1 so that standardising leaves it at 0 instead of dividing by zero.
fn column_stats(values: &[f32], features: usize, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0f64; features];
    for &r in rows {
        for (f, m) in mean.iter_mut().enumerate() {
            *m += values[r * features + f] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; features];
    for &r in rows {
        for (f, v) in var.iter_mut().enumerate() {
            let d = values[r * features + f] as f64 - mean[f];
            *v += d * d;
        }
    }
    let std = var
        .iter()
        .map(|v| {
            let s = (v / n).sqrt();
            if s > 0.0 { s as f32 } else { 1.0 }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}
