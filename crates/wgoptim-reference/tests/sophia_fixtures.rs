//! The CPU reference of SophiaG against sophia-opt 0.2.2's `SophiaG`, recorded by
//! `scripts/torch_fixtures/gen_sophia.py` into `tests/fixtures/sophia/`: the parameters after every step,
//! the Hessian estimate after every `update_hessian()`, and the final state, all bit for bit (every
//! operation of the rule is correctly rounded in both, see `wgoptim_reference::sophia`).
//!
//! Run with `--nocapture` to see how many updates each case clipped.

use wgoptim_reference::fixtures::{case_names_in, fixtures_dir, load_inputs};
use wgoptim_reference::max_ulp_diff;
use wgoptim_reference::sophia::fixtures::{load_case, load_hessian_grads};
use wgoptim_reference::sophia::{self, SophiaState};

#[test]
fn sophia_cases_match_sophia_opt_bit_for_bit() {
    let inputs = load_inputs().unwrap();
    let hgrads = load_hessian_grads().unwrap();
    let names = case_names_in(&fixtures_dir("sophia"));
    assert!(names.len() >= 4, "SophiaG fixtures missing: {names:?}");
    for name in names {
        let case = load_case(&name).unwrap();
        assert!(
            case.case
                .reference
                .starts_with("sophia-opt==0.2.2 sophia_opt.SophiaG")
        );
        let mut params = inputs.init.clone();
        let mut states: Vec<SophiaState> = inputs
            .tensors
            .iter()
            .map(|t| SophiaState::new(t.len()))
            .collect();
        let (mut clipped, mut total) = (0usize, 0usize);
        let refresh = |states: &mut Vec<SophiaState>, s: usize| {
            for (i, t) in inputs.tensors.iter().enumerate() {
                let cfg = case.config(t.group).unwrap();
                sophia::update_hessian(&hgrads[s][i], &mut states[i], &cfg).unwrap();
                let want = &case.hessian[&s][i];
                assert_eq!(
                    max_ulp_diff(&states[i].hessian, want),
                    0,
                    "{name}: hessian of {} after step {s}",
                    t.name
                );
            }
        };
        if case.hessian_after.contains(&0) {
            refresh(&mut states, 0);
        }
        for s in 1..=inputs.steps() {
            for (i, t) in inputs.tensors.iter().enumerate() {
                let cfg = case.config(t.group).unwrap();
                let lr = case.case.lr(&inputs, s, t.group).unwrap();
                sophia::step(
                    &mut params[i],
                    &inputs.grads[s - 1][i],
                    &mut states[i],
                    &cfg,
                    lr,
                    case.bs[s - 1],
                )
                .unwrap();
                let rho_bs = (cfg.rho * case.bs[s - 1]) as f32;
                for (m, h) in states[i].exp_avg.iter().zip(&states[i].hessian) {
                    total += 1;
                    clipped += usize::from(m.abs() >= h * rho_bs + 1e-15);
                }
                let want = &case.case.params[s - 1][i];
                assert_eq!(
                    max_ulp_diff(&params[i], want),
                    0,
                    "{name}: param {} after step {s}",
                    t.name
                );
            }
            if case.hessian_after.contains(&s) {
                refresh(&mut states, s);
            }
        }
        for (key, want) in &case.case.final_state {
            for (i, w) in want.iter().enumerate() {
                let got = match key.as_str() {
                    "exp_avg" => &states[i].exp_avg,
                    "hessian" => &states[i].hessian,
                    other => panic!("{name}: unexpected state {other}"),
                };
                assert_eq!(max_ulp_diff(got, w), 0, "{name}: final {key}");
            }
        }
        assert_eq!(
            case.case.final_state.len(),
            2,
            "{name}: exp_avg and hessian"
        );
        // Both branches of the clip must occur, or the case tests only one of them.
        assert!(
            clipped > 0 && clipped < total,
            "{name}: {clipped} of {total} updates clipped"
        );
        println!("{name:24} bit for bit; {clipped} of {total} updates clipped");
    }
}
