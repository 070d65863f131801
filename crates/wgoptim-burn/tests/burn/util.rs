//! A small Burn model, generated data and host reads shared by the tests.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Two linear layers with a tanh between them: 4 parameter tensors of 2 shapes each.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(inputs: usize, hidden: usize, outputs: usize, device: &Device) -> Self {
        device.seed(7);
        Self {
            fc1: LinearConfig::new(inputs, hidden).init(device),
            fc2: LinearConfig::new(hidden, outputs).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(self.fc1.forward(x).tanh())
    }
}

pub const INPUTS: usize = 6;
pub const HIDDEN: usize = 24;
pub const OUTPUTS: usize = 3;

/// SplitMix64: the same numbers on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Batch `step` of a regression task: targets are a fixed smooth function of the inputs.
pub fn batch(step: u64, rows: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let mut rng = Rng::new(1000 + step);
    let x: Vec<f32> = (0..rows * INPUTS).map(|_| rng.uniform()).collect();
    let y: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let row = &x[r * INPUTS..(r + 1) * INPUTS];
            let s: f32 = row
                .iter()
                .enumerate()
                .map(|(i, v)| v * (i as f32 + 1.0) * 0.3)
                .sum();
            [s.sin(), (row[0] * row[1]).tanh(), row[2] - 0.5 * row[3]]
        })
        .collect();
    (
        Tensor::from_data(TensorData::new(x, [rows, INPUTS]), device),
        Tensor::from_data(TensorData::new(y, [rows, OUTPUTS]), device),
    )
}

/// The mean squared error of `model` on batch `step`, and its gradients.
pub fn loss_and_grads(model: &Mlp, step: u64, device: &Device) -> (Tensor<1>, GradientsParams) {
    let (x, y) = batch(step, 32, device);
    let loss = (model.forward(x) - y).powf_scalar(2.0).mean();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (loss, grads)
}

/// Every float parameter's values, in visiting order, with its record path.
pub fn params(model: &impl Module) -> Vec<(String, Vec<f32>)> {
    #[derive(Default)]
    struct Read {
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor for Read {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 parameters");
            self.out.push((self.path.join("."), v));
        }
    }
    let mut read = Read::default();
    model.visit(&mut read);
    read.out
}

/// The gradients of `model`'s parameters, in visiting order, read to the host (without taking them out).
pub fn grads_host(model: &Mlp, grads: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (name, layer) in [("fc1", &model.fc1), ("fc2", &model.fc2)] {
        let w: Tensor<2> = grads.get(layer.weight.id).expect("a weight gradient");
        out.push((
            format!("{name}.weight"),
            w.into_data().try_to_vec::<f32>().unwrap(),
        ));
        if let Some(b) = &layer.bias {
            let g: Tensor<1> = grads.get(b.id).expect("a bias gradient");
            out.push((
                format!("{name}.bias"),
                g.into_data().try_to_vec::<f32>().unwrap(),
            ));
        }
    }
    out
}

/// Largest |a - b| over every parameter, and where.
pub fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> (f32, String) {
    let mut worst = (0.0f32, String::new());
    for ((na, va), (_, vb)) in a.iter().zip(b) {
        for (i, (x, y)) in va.iter().zip(vb).enumerate() {
            let d = (x - y).abs();
            if d > worst.0 || d.is_nan() {
                worst = (d, format!("{na}[{i}]"));
            }
        }
    }
    worst
}

/// Bitwise equality of two parameter lists.
pub fn same_bits(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> Result<(), String> {
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        if na != nb || va.len() != vb.len() {
            return Err(format!("{na} vs {nb}"));
        }
        for (i, (x, y)) in va.iter().zip(vb).enumerate() {
            if x.to_bits() != y.to_bits() {
                return Err(format!("{na}[{i}]: {x:e} vs {y:e}"));
            }
        }
    }
    Ok(())
}

#[allow(dead_code)]
pub fn labels(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}
