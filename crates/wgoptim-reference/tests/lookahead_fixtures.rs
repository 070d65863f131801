//! The CPU reference of Lookahead against torch-optimizer 0.3.0's `Lookahead` around torch 2.15.0's AdamW
//! and SGD (`foreach=False, fused=False`), recorded by `scripts/torch_fixtures/gen_lookahead.py` into
//! `tests/fixtures/lookahead/`, at every step.
//!
//! Around SGD every operation is reproduced, so the trajectories agree bit for bit. Around AdamW the inner
//! step is exact but for torch's float32 `sqrt` (see `wgoptim_reference::adamw`), so the bound is that of
//! the AdamW fixtures: 1e-6 of each tensor's running scale.

use wgoptim_reference::adamw::{self, AdamWState};
use wgoptim_reference::fixtures::{case_names_in, fixtures_dir, load_inputs};
use wgoptim_reference::lookahead::Lookahead;
use wgoptim_reference::lookahead::fixtures::load_case;
use wgoptim_reference::sgd::{self, SgdState};
use wgoptim_reference::{max_abs_err, max_ulp_diff};

const RTOL: f32 = 1e-6;

enum Inner {
    AdamW(Vec<AdamWState>),
    Sgd(Vec<SgdState>),
}

#[test]
fn lookahead_cases_match_torch_optimizer() {
    let inputs = load_inputs().unwrap();
    let names = case_names_in(&fixtures_dir("lookahead"));
    assert!(names.len() >= 4, "Lookahead fixtures missing: {names:?}");
    for name in names {
        let la = load_case(&name).unwrap();
        let case = &la.case;
        assert!(
            case.reference
                .starts_with("torch-optimizer==0.3.0 torch_optimizer.Lookahead")
        );
        let mut params = inputs.init.clone();
        let mut inner = match case.optimizer.as_str() {
            "adamw" => Inner::AdamW(
                inputs
                    .tensors
                    .iter()
                    .map(|t| AdamWState::new(t.len(), false))
                    .collect(),
            ),
            "sgd" => Inner::Sgd(inputs.tensors.iter().map(|_| SgdState::new()).collect()),
            other => panic!("{name}: inner optimizer {other}"),
        };
        let exact = matches!(inner, Inner::Sgd(_));
        let mut lookahead = Lookahead::new(la.lookahead, inputs.tensors.len());
        let mut scales: Vec<f32> = inputs
            .init
            .iter()
            .map(|x| x.iter().fold(0f32, |m, v| m.max(v.abs())))
            .collect();
        let mut worst = 0f32;
        for s in 1..=inputs.steps() {
            for (i, t) in inputs.tensors.iter().enumerate() {
                let lr = case.lr(&inputs, s, t.group).unwrap();
                let g = &inputs.grads[s - 1][i];
                match &mut inner {
                    Inner::AdamW(st) => {
                        let cfg = case.adamw_config(t.group).unwrap();
                        adamw::step(&mut params[i], g, &mut st[i], &cfg, lr, s as u64).unwrap()
                    }
                    Inner::Sgd(st) => {
                        let cfg = case.sgd_config(t.group).unwrap();
                        sgd::step(&mut params[i], g, &mut st[i], &cfg, lr).unwrap()
                    }
                }
            }
            lookahead.after_step(&mut params);
            for (i, t) in inputs.tensors.iter().enumerate() {
                let want = &case.params[s - 1][i];
                scales[i] = want.iter().fold(scales[i], |m, v| m.max(v.abs()));
                if exact {
                    assert_eq!(
                        max_ulp_diff(&params[i], want),
                        0,
                        "{name}: {} step {s}",
                        t.name
                    );
                }
                let e = max_abs_err(&params[i], want) / scales[i].max(f32::MIN_POSITIVE);
                worst = worst.max(e);
                assert!(e <= RTOL, "{name}: {} step {s}: {e:e} of its scale", t.name);
            }
        }
        for (i, w) in case.final_state["slow_param"].iter().enumerate() {
            let got = lookahead.slow[i].as_ref().unwrap();
            let e = max_abs_err(got, w) / scales[i].max(f32::MIN_POSITIVE);
            assert!(
                e <= RTOL && (!exact || max_ulp_diff(got, w) == 0),
                "{name}: slow {i}"
            );
        }
        assert!(
            la.counter.iter().all(|&c| c == lookahead.counter),
            "{name}: counter {} vs torch-optimizer's {:?}",
            lookahead.counter,
            la.counter
        );
        println!("{name:30} worst {worst:e} of scale (bit for bit: {exact})");
    }
}
