//! The element-wise primitives of PyTorch's CPU kernels for `float32`, written
//! out so that the optimizers read like the Python they mirror.
//!
//! PyTorch's x86 CPU kernels are compiled with FMA enabled (AVX2 / AVX-512
//! builds), and the formulas below are the ones its `float` kernels compute,
//! fused where they are fused. A tensor-scalar operation receives its Python
//! float scalar rounded to `f32` first; callers pass that `f32`.

/// `self.add(other, alpha=alpha)`: `self + alpha * other`, one fused
/// multiply-add (PyTorch's `add` kernel is `fmadd(other, alpha, self)`).
#[inline]
pub fn add(this: f32, other: f32, alpha: f32) -> f32 {
    other.mul_add(alpha, this)
}

/// `self.lerp(end, weight)` with a scalar weight: `self + weight * (end -
/// self)` when `|weight| < 0.5`, else `end - (end - self) * (1 - weight)`, each
/// one fused multiply-add.
#[inline]
pub fn lerp(this: f32, end: f32, weight: f32) -> f32 {
    let diff = end - this;
    if weight.abs() < 0.5 {
        weight.mul_add(diff, this)
    } else {
        (weight - 1.0).mul_add(diff, end)
    }
}

/// `self.addcmul(t1, t2, value=value)`: `self + value * t1 * t2`, the product
/// `value * t1` rounded, then one fused multiply-add with `t2`.
#[inline]
pub fn addcmul(this: f32, t1: f32, t2: f32, value: f32) -> f32 {
    (value * t1).mul_add(t2, this)
}

/// `self.addcdiv(t1, t2, value=value)`: `self + value * t1 / t2`, each
/// operation rounded (a division does not fuse).
#[inline]
pub fn addcdiv(this: f32, t1: f32, t2: f32, value: f32) -> f32 {
    this + value * t1 / t2
}

/// A Python float scalar as a `float32` kernel receives it.
#[inline]
pub fn scalar(x: f64) -> f32 {
    x as f32
}
