//! The batched matmul kernel (`shaders/matmul.wgsl`) against an f64 CPU product: odd shapes (1 × n, n × 1,
//! K = 1, sizes that are not multiples of the 64 × 64 tile or of 4), Bᵀ by indexing, the α/β epilogue, and a
//! batch of mixed shapes in one dispatch.
//!
//! Tolerance: the GPU sums K products in f32, so each output may differ from the exact value by the forward
//! error bound of a K-term dot product, γ_K · Σ|a_ik·b_kj| with γ_K = K·u/(1 − K·u), u = 2⁻²⁴ (Higham,
//! "Accuracy and Stability of Numerical Algorithms", §3.1), plus one rounding of the α/β epilogue. The test
//! allows that bound (it is what any f32 product may lose, whatever its order), not a tuned number.

use crate::harness::{GpuTest, test};
use crate::util::{err, noise};
use wgoptim::Gpu;
use wgoptim::matmul::{MatmulBatch, MatmulProblem};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("matmul_odd_shapes_match_cpu", matmul_odd_shapes_match_cpu),
        test(
            "matmul_transposed_b_and_epilogue_match_cpu",
            matmul_transposed_b_and_epilogue_match_cpu,
        ),
        test(
            "matmul_mixed_batch_is_one_dispatch_and_matches_alone",
            matmul_mixed_batch_is_one_dispatch_and_matches_alone,
        ),
        test("matmul_refuses_bad_problems", matmul_refuses_bad_problems),
    ]
}

/// A value no product writes, to check that nothing outside C changes.
const SENTINEL: f32 = 777.0;

/// One product laid out in a host buffer: where its operands are and their shapes.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: u32,
    n: u32,
    k: u32,
    b_transposed: bool,
}

fn round4(x: u32) -> u32 {
    x.div_ceil(4) * 4
}

/// Lays `cases` out in one buffer (each row padded to a multiple of 4, every padding element the sentinel),
/// with A, B and D filled with noise and C with the sentinel. Returns the data and the problems.
fn layout(cases: &[Case], seed: u64) -> (Vec<f32>, Vec<MatmulProblem>) {
    let mut data = Vec::new();
    let mut problems = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let (b_rows, b_cols) = if c.b_transposed {
            (c.n, c.k)
        } else {
            (c.k, c.n)
        };
        // Leading dimensions a little above the minimum, to exercise the strides.
        let lda = round4(c.k) + 4 * (i as u32 % 2);
        let ldb = round4(b_cols);
        let ldc = round4(c.n) + 4;
        let ldd = round4(c.n);
        let mut put = |rows: u32, cols: u32, ld: u32, fill: Option<u64>| -> u32 {
            let at = data.len() as u32;
            let values = fill.map(|s| noise(s, (rows * cols) as usize, 1.0));
            for r in 0..rows {
                for col in 0..ld {
                    let v = match (&values, col < cols) {
                        (Some(v), true) => v[(r * cols + col) as usize],
                        _ => SENTINEL,
                    };
                    data.push(v);
                }
            }
            at
        };
        let a = put(c.m, c.k, lda, Some(seed + 10 * i as u64));
        let b = put(b_rows, b_cols, ldb, Some(seed + 10 * i as u64 + 1));
        let d = put(c.m, c.n, ldd, Some(seed + 10 * i as u64 + 2));
        let cc = put(c.m, c.n, ldc, None);
        problems.push(MatmulProblem {
            m: c.m,
            n: c.n,
            k: c.k,
            a,
            lda,
            b,
            ldb,
            b_transposed: c.b_transposed,
            c: cc,
            ldc,
            d,
            ldd,
        });
    }
    // A trailing run of sentinels: nothing may write past the last matrix.
    data.extend(std::iter::repeat_n(SENTINEL, 16));
    (data, problems)
}

fn upload(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    gpu.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("matmul test data"),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

fn download(gpu: &Gpu, buffer: &wgpu::Buffer) -> Result<Vec<f32>, String> {
    let device = gpu.device();
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("matmul test readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    gpu.queue().submit([encoder.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    gpu.wait_device().map_err(err)?;
    let out = bytemuck::pod_collect_to_vec(&staging.slice(..).get_mapped_range().map_err(err)?);
    Ok(out)
}

/// Checks C of every problem against the f64 product (within the dot-product error bound) and every element
/// outside the C matrices (padding lanes included) against its value before the run.
fn check(
    before: &[f32],
    after: &[f32],
    problems: &[MatmulProblem],
    alpha: f32,
    beta: f32,
) -> Result<(), String> {
    let u = f64::powi(2.0, -24);
    let mut inside_c = vec![false; before.len()];
    for (pi, p) in problems.iter().enumerate() {
        let gamma = p.k as f64 * u / (1.0 - p.k as f64 * u);
        for i in 0..p.m {
            for j in 0..p.n {
                let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
                for k in 0..p.k {
                    let a = before[(p.a + i * p.lda + k) as usize] as f64;
                    let b = if p.b_transposed {
                        before[(p.b + j * p.ldb + k) as usize]
                    } else {
                        before[(p.b + k * p.ldb + j) as usize]
                    } as f64;
                    exact += a * b;
                    magnitude += (a * b).abs();
                }
                let d = if beta != 0.0 {
                    before[(p.d + i * p.ldd + j) as usize] as f64
                } else {
                    0.0
                };
                let want = alpha as f64 * exact + beta as f64 * d;
                let at = (p.c + i * p.ldc + j) as usize;
                inside_c[at] = true;
                let got = after[at] as f64;
                let bound = gamma * (alpha as f64).abs() * magnitude
                    + 2.0 * u * ((alpha as f64 * exact).abs() + (beta as f64 * d).abs())
                    + 1e-30;
                if (got - want).abs() > bound {
                    return Err(format!(
                        "problem {pi} ({}x{}x{}, transposed {}): C[{i}][{j}] = {got}, f64 gives {want}, \
                         bound {bound:e}",
                        p.m, p.n, p.k, p.b_transposed
                    ));
                }
            }
        }
    }
    for (at, (b, a)) in before.iter().zip(after).enumerate() {
        if !inside_c[at] && b.to_bits() != a.to_bits() {
            return Err(format!(
                "element {at} outside every C changed from {b} to {a}"
            ));
        }
    }
    Ok(())
}

fn run_cases(gpu: &Gpu, cases: &[Case], alpha: f32, beta: f32, seed: u64) -> Result<(), String> {
    let (data, problems) = layout(cases, seed);
    let buffer = upload(gpu, &data);
    let batch = MatmulBatch::new(gpu, &buffer, &problems, alpha, beta).map_err(err)?;
    batch.run(gpu).map_err(err)?;
    let after = download(gpu, &buffer)?;
    check(&data, &after, &problems, alpha, beta)
}

fn case(m: u32, n: u32, k: u32, b_transposed: bool) -> Case {
    Case {
        m,
        n,
        k,
        b_transposed,
    }
}

/// One shape per product, each alone in its batch.
fn matmul_odd_shapes_match_cpu(gpu: &Gpu) -> Result<(), String> {
    let shapes = [
        (1, 37, 19),
        (53, 1, 7),
        (1, 1, 1),
        (3, 5, 1),
        (67, 70, 129),
        (64, 64, 16),
        (65, 129, 33),
        (1, 200, 250),
        (130, 2, 3),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        run_cases(gpu, &[case(m, n, k, false)], 1.0, 0.0, 100 + i as u64)
            .map_err(|e| format!("{m}x{n}x{k}: {e}"))?;
    }
    Ok(())
}

/// Bᵀ read by indexing, and torch.addmm's `beta·input + alpha·(m1 @ m2)` with Muon's coefficients.
fn matmul_transposed_b_and_epilogue_match_cpu(gpu: &Gpu) -> Result<(), String> {
    let shapes = [(1, 1, 9), (7, 7, 130), (66, 66, 5), (3, 70, 1), (70, 3, 67)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        run_cases(gpu, &[case(m, n, k, true)], 1.0, 0.0, 200 + i as u64)
            .map_err(|e| format!("transposed {m}x{n}x{k}: {e}"))?;
        run_cases(gpu, &[case(m, n, k, false)], 2.0315, -4.775, 300 + i as u64)
            .map_err(|e| format!("epilogue {m}x{n}x{k}: {e}"))?;
    }
    Ok(())
}

/// A batch of mixed shapes is one dispatch, and each product in it comes out bit for bit as it does alone.
fn matmul_mixed_batch_is_one_dispatch_and_matches_alone(gpu: &Gpu) -> Result<(), String> {
    let cases = [
        case(1, 90, 33, true),
        case(90, 1, 33, false),
        case(70, 130, 66, false),
        case(5, 5, 200, true),
        case(128, 64, 17, false),
    ];
    let (data, problems) = layout(&cases, 400);
    let buffer = upload(gpu, &data);
    let batch = MatmulBatch::new(gpu, &buffer, &problems, 1.0, 3.4445).map_err(err)?;
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    let dispatches = {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        batch.record(&mut pass)
    };
    gpu.queue().submit([encoder.finish()]);
    if dispatches != 1 {
        return Err(format!("{dispatches} dispatches for one batch"));
    }
    let together = download(gpu, &buffer)?;
    check(&data, &together, &problems, 1.0, 3.4445)?;
    let expected_flops: u64 = cases
        .iter()
        .map(|c| 2 * c.m as u64 * c.n as u64 * c.k as u64)
        .sum();
    if batch.flops() != expected_flops {
        return Err(format!("flops {} != {expected_flops}", batch.flops()));
    }
    for (i, p) in problems.iter().enumerate() {
        let alone_buffer = upload(gpu, &data);
        MatmulBatch::new(gpu, &alone_buffer, &[*p], 1.0, 3.4445)
            .map_err(err)?
            .run(gpu)
            .map_err(err)?;
        let alone = download(gpu, &alone_buffer)?;
        for r in 0..p.m {
            let at = (p.c + r * p.ldc) as usize;
            let row = at..at + p.n as usize;
            if together[row.clone()]
                .iter()
                .zip(&alone[row])
                .any(|(x, y)| x.to_bits() != y.to_bits())
            {
                return Err(format!("product {i} row {r} differs in a batch and alone"));
            }
        }
    }
    Ok(())
}

fn matmul_refuses_bad_problems(gpu: &Gpu) -> Result<(), String> {
    let (data, problems) = layout(&[case(8, 8, 8, false)], 500);
    let buffer = upload(gpu, &data);
    let good = problems[0];
    let bad = [
        MatmulProblem { m: 0, ..good },
        MatmulProblem {
            a: good.a + 1,
            ..good
        },
        MatmulProblem { lda: 3, ..good },
        MatmulProblem { m: 10_000, ..good },
        MatmulProblem { c: good.a, ..good },
    ];
    for p in bad {
        if MatmulBatch::new(gpu, &buffer, &[p], 1.0, 0.0).is_ok() {
            return Err(format!("accepted {p:?}"));
        }
    }
    if MatmulBatch::new(gpu, &buffer, &[], 1.0, 0.0).is_ok() {
        return Err("accepted an empty batch".into());
    }
    if MatmulBatch::new(gpu, &buffer, &[good], f32::NAN, 0.0).is_ok() {
        return Err("accepted a NaN alpha".into());
    }
    Ok(())
}
