//! Logistic regression on the host, in f64: the reference that the page's WGSL gradient kernel is checked
//! against, and the classifier that colours the decision-boundary plot.
//!
//! Loss: mean binary cross-entropy of the logits `z_i = w·x_i + b`,
//! `L = 1/n Σ_i [softplus(z_i) - y_i z_i]`, whose gradient is `∂L/∂w = 1/n Σ_i (σ(z_i) - y_i) x_i` and
//! `∂L/∂b = 1/n Σ_i (σ(z_i) - y_i)`.

use crate::moons::{FEATURES, Moons};

/// `log(1 + e^z)` without overflow or loss of precision for large `|z|`.
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The logit of one sample.
pub fn logit(weight: &[f32], bias: f32, x: &[f32]) -> f64 {
    weight
        .iter()
        .zip(x)
        .map(|(&w, &v)| w as f64 * v as f64)
        .sum::<f64>()
        + bias as f64
}

/// Loss and gradient at one point of parameter space, with the scale of each gradient component's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// `∂L/∂w`.
    pub grad_weight: Vec<f64>,
    /// `∂L/∂b`.
    pub grad_bias: f64,
    /// `1/n Σ_i |(σ(z_i) - y_i) x_ij|` for each weight, then the same for the bias: how large the summed
    /// terms are, which bounds the rounding error of summing them in f32.
    pub term_scale: Vec<f64>,
}

/// Evaluates the model `(weight, bias)` on every sample of `data`.
pub fn evaluate(data: &Moons, weight: &[f32], bias: f32) -> Evaluation {
    assert_eq!(weight.len(), FEATURES, "one weight per feature");
    let n = data.len().max(1) as f64;
    let mut loss = 0.0;
    let mut grad_weight = vec![0.0; FEATURES];
    let mut grad_bias = 0.0;
    let mut term_scale = vec![0.0; FEATURES + 1];
    for i in 0..data.len() {
        let x = data.row(i);
        let y = data.labels[i] as f64;
        let z = logit(weight, bias, x);
        loss += softplus(z) - y * z;
        let r = sigmoid(z) - y;
        for j in 0..FEATURES {
            grad_weight[j] += r * x[j] as f64;
            term_scale[j] += (r * x[j] as f64).abs();
        }
        grad_bias += r;
        term_scale[FEATURES] += r.abs();
    }
    for g in &mut grad_weight {
        *g /= n;
    }
    for s in &mut term_scale {
        *s /= n;
    }
    Evaluation {
        loss: loss / n,
        grad_weight,
        grad_bias: grad_bias / n,
        term_scale,
    }
}

/// The fraction of samples on the right side of the boundary.
pub fn accuracy(data: &Moons, weight: &[f32], bias: f32) -> f64 {
    let right = (0..data.len())
        .filter(|&i| (logit(weight, bias, data.row(i)) > 0.0) == (data.labels[i] > 0.5))
        .count();
    right as f64 / data.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_and_sigmoid_hold_at_the_extremes() {
        assert_eq!(softplus(800.0), 800.0);
        assert!(softplus(-800.0) >= 0.0 && softplus(-800.0) < 1e-300);
        assert!((softplus(0.0) - std::f64::consts::LN_2).abs() < 1e-15);
        assert_eq!(sigmoid(800.0), 1.0);
        assert_eq!(sigmoid(-800.0), 0.0);
        assert_eq!(sigmoid(0.0), 0.5);
    }

    #[test]
    fn zero_model_has_loss_ln2() {
        let data = Moons::generate(100, 0.1, 1);
        let e = evaluate(&data, &[0.0; FEATURES], 0.0);
        assert!((e.loss - std::f64::consts::LN_2).abs() < 1e-12);
        // Half the labels are 1, so σ(0) - y averages to 0 on the bias.
        assert!(e.grad_bias.abs() < 1e-12);
    }

    /// The analytic gradient against central differences of the loss.
    #[test]
    fn gradient_matches_finite_differences() {
        let data = Moons::generate(64, 0.2, 5);
        let mut rng = crate::moons::Rng::new(9);
        let weight: Vec<f32> = (0..FEATURES).map(|_| rng.normal() as f32 * 0.5).collect();
        let bias = 0.3f32;
        let e = evaluate(&data, &weight, bias);
        // f32 parameters limit the step: h = 2^-10 is exact in f32 around these values, and the truncation
        // error of a central difference, O(h²) ≈ 1e-6 times the third derivative, dominates.
        let h = 1.0 / 1024.0;
        for j in 0..FEATURES {
            let (mut up, mut down) = (weight.clone(), weight.clone());
            up[j] += h;
            down[j] -= h;
            let numeric = (evaluate(&data, &up, bias).loss - evaluate(&data, &down, bias).loss)
                / (2.0 * h as f64);
            assert!(
                (numeric - e.grad_weight[j]).abs() < 1e-5,
                "weight {j}: {numeric} vs {}",
                e.grad_weight[j]
            );
        }
        let numeric = (evaluate(&data, &weight, bias + h).loss
            - evaluate(&data, &weight, bias - h).loss)
            / (2.0 * h as f64);
        assert!((numeric - e.grad_bias).abs() < 1e-5);
    }
}
