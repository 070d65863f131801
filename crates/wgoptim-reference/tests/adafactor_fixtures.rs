//! The Adafactor oracle against transformers' (and timm's) recorded trajectories in
//! `tests/fixtures/transformers_adafactor`.
//!
//! The oracle sums in wgoptim's order, torch in its own (vectorised cascades over a row, sequences over a
//! column), so the row and column means, the mean of the row averages and the two RMS norms differ by the f32
//! rounding of sums of at most 530 positive terms; everything else is transformers' element-wise rule in f32.
//! The bound and its derivation are in `ADAFACTOR_TOL` (`docs/adafactor.md` states it). timm's rule differs
//! from transformers' in rounding only on these cases (it lerps the averages and the first moment), which the
//! same bound covers.

use wgoptim_reference::adafactor::{self, AdafactorState, step};

/// Bound on |oracle − reference| relative to the largest magnitude the reference tensor has reached (the
/// state: to its own). See `docs/adafactor.md`: the differing sums carry a relative error of at most about
/// (log2(n) + 8)·2^-24 each (both orders are trees or cascades of that depth: ≈ 1e-6 for n ≤ 1024); the update
/// inherits a few of those (rsqrt halves them, the RMS clip and the parameter scale add one each), ≈ 4e-6 of
/// the update, and an update is at most 1e-2 of the parameters' scale, so a step adds ≈ 4e-8 of the scale:
/// 10 steps 4e-7, held to 1e-6. The averages themselves carry the means' error, ≈ 1e-6 of their size, held to
/// 4e-6.
pub const PARAM_RTOL: f32 = 1e-6;
pub const STATE_RTOL: f32 = 4e-6;

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

#[test]
fn oracle_follows_every_adafactor_fixture() {
    let names = adafactor::case_names();
    assert!(names.len() >= 10, "fixtures missing: {names:?}");
    for name in names {
        let case = adafactor::load_case(&name).unwrap();
        let mut params: Vec<Vec<f32>> = (0..case.tensors.len()).map(|t| case.init(t)).collect();
        let mut states: Vec<AdafactorState> = case
            .tensors
            .iter()
            .map(|t| AdafactorState::new(&t.shape, &case.config))
            .collect();
        let mut scales: Vec<f32> = params.iter().map(|p| max_abs(p)).collect();
        let mut worst = 0f32;
        for s in 1..=case.steps() {
            for (t, spec) in case.tensors.iter().enumerate() {
                let group = case.groups[spec.group as usize];
                let lr = case.step_lr(s) * group.lr_scale;
                let grad = case.grad(s, t);
                step(
                    &case.config,
                    &spec.shape,
                    &mut params[t],
                    &grad,
                    &mut states[t],
                    s as u64,
                    lr,
                    group.weight_decay,
                );
            }
            if let Some((_, want)) = case.params.iter().find(|(rs, _)| *rs == s) {
                for (t, spec) in case.tensors.iter().enumerate() {
                    scales[t] = scales[t].max(max_abs(&want[t]));
                    let e = wgoptim_reference::max_abs_err(&params[t], &want[t]) / scales[t];
                    assert!(
                        e <= PARAM_RTOL,
                        "{name} ({}) step {s} `{}`: error {e:e} of the scale",
                        case.reference,
                        spec.name
                    );
                    worst = worst.max(e);
                }
            }
        }
        for (key, per_tensor) in &case.final_state {
            for (t, want) in per_tensor.iter().enumerate() {
                let Some(want) = want else { continue };
                let got = match key.as_str() {
                    "exp_avg_sq_row" => &states[t].exp_avg_sq_row,
                    "exp_avg_sq_col" => &states[t].exp_avg_sq_col,
                    "exp_avg_sq" => &states[t].exp_avg_sq,
                    _ => &states[t].exp_avg,
                };
                let e = wgoptim_reference::max_abs_err(got, want)
                    / max_abs(want).max(f32::MIN_POSITIVE);
                assert!(
                    e <= STATE_RTOL,
                    "{name}: final {key} of `{}`: {e:e}",
                    case.tensors[t].name
                );
            }
        }
        println!(
            "{name}: worst parameter error {worst:e} of the scale ({})",
            case.reference
        );
    }
}
