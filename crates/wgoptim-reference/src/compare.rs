//! Error measures between a result and its reference, and a closeness check
//! that names the worst element.

use std::fmt;

/// The largest `|got - want|`; `f32::INFINITY` if the lengths differ or one
/// side is NaN where the other is not.
pub fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
    if got.len() != want.len() {
        return f32::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(&g, &w)| abs_err(g, w))
        .fold(0.0, f32::max)
}

/// The largest `|got - want| / (|want| + atol)`: relative error, with `atol`
/// keeping elements near zero from dominating. `f32::INFINITY` if the lengths
/// differ, one side is NaN where the other is not, or `atol` is 0 and an
/// element differs from a zero reference.
pub fn max_rel_err(got: &[f32], want: &[f32], atol: f32) -> f32 {
    if got.len() != want.len() {
        return f32::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(&g, &w)| ratio(abs_err(g, w), w.abs() + atol))
        .fold(0.0, f32::max)
}

/// The largest distance in units in the last place: the number of `f32`
/// values between `got` and `want` (0 when bit-equal, or `+0` against `-0`).
/// `u32::MAX` if the lengths differ or one side is NaN.
pub fn max_ulp_diff(got: &[f32], want: &[f32]) -> u32 {
    if got.len() != want.len() {
        return u32::MAX;
    }
    got.iter()
        .zip(want)
        .map(|(&g, &w)| ulp_diff(g, w))
        .max()
        .unwrap_or(0)
}

/// Where a comparison failed: the worst element against the tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Index of the worst element (0 when the lengths differ).
    pub index: usize,
    /// Its value in the result.
    pub got: f32,
    /// Its value in the reference.
    pub want: f32,
    /// How many elements are outside the tolerance.
    pub count: usize,
    /// Elements compared.
    pub len: usize,
    /// Set when the slices differ in length: (got, want).
    pub lengths: Option<(usize, usize)>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((g, w)) = self.lengths {
            return write!(f, "length {g}, reference length {w}");
        }
        write!(
            f,
            "{} of {} elements outside tolerance; worst at [{}]: got {:e}, want {:e} \
             (abs err {:e}, {} ulp)",
            self.count,
            self.len,
            self.index,
            self.got,
            self.want,
            abs_err(self.got, self.want),
            ulp_diff(self.got, self.want),
        )
    }
}

impl std::error::Error for Mismatch {}

/// Checks `|got - want| <= atol + rtol * |want|` element-wise (NaN matches
/// only NaN); on failure reports the element that exceeds its tolerance the
/// most. `rtol = atol = 0` asks for equality.
pub fn check_close(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> Result<(), Mismatch> {
    if got.len() != want.len() {
        return Err(Mismatch {
            index: 0,
            got: f32::NAN,
            want: f32::NAN,
            count: got.len().max(want.len()),
            len: got.len().min(want.len()),
            lengths: Some((got.len(), want.len())),
        });
    }
    let mut worst: Option<(f32, usize)> = None;
    let mut count = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = ratio(abs_err(g, w), atol + rtol * w.abs());
        if excess > 1.0 {
            count += 1;
            if worst.is_none_or(|(e, _)| excess > e) {
                worst = Some((excess, i));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((_, index)) => Err(Mismatch {
            index,
            got: got[index],
            want: want[index],
            count,
            len: got.len(),
            lengths: None,
        }),
    }
}

/// [`check_close`] for tests: panics with `context` and the worst element.
///
/// # Panics
/// When the check fails; that is its purpose.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32, context: &str) {
    if let Err(m) = check_close(got, want, rtol, atol) {
        panic!("{context}: {m} (rtol {rtol:e}, atol {atol:e})");
    }
}

fn abs_err(g: f32, w: f32) -> f32 {
    if g == w || (g.is_nan() && w.is_nan()) {
        0.0
    } else if g.is_nan() || w.is_nan() {
        f32::INFINITY
    } else {
        (g - w).abs()
    }
}

/// `err / tol`, with `0 / 0 = 0` and `x / 0 = inf`.
fn ratio(err: f32, tol: f32) -> f32 {
    if err == 0.0 {
        0.0
    } else if tol == 0.0 {
        f32::INFINITY
    } else {
        err / tol
    }
}

fn ulp_diff(g: f32, w: f32) -> u32 {
    if g.is_nan() || w.is_nan() {
        return if g.is_nan() && w.is_nan() {
            0
        } else {
            u32::MAX
        };
    }
    // Map the bit patterns onto a line where adjacent floats are adjacent
    // integers (and +0 and -0 coincide).
    fn key(x: f32) -> i64 {
        let b = x.to_bits() as i32;
        if b < 0 {
            -i64::from(b & i32::MAX)
        } else {
            i64::from(b)
        }
    }
    u32::try_from((key(g) - key(w)).unsigned_abs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures() {
        assert_eq!(max_ulp_diff(&[1.0, -0.0], &[1.0, 0.0]), 0);
        assert_eq!(max_ulp_diff(&[f32::from_bits(1)], &[-f32::from_bits(1)]), 2);
        assert_eq!(
            max_ulp_diff(&[1.0], &[f32::from_bits(1.0f32.to_bits() + 3)]),
            3
        );
        assert_eq!(max_abs_err(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert_eq!(max_rel_err(&[2.0], &[1.0], 0.0), 1.0);
        assert_eq!(max_rel_err(&[1.0], &[0.0], 0.0), f32::INFINITY);
        assert_eq!(max_abs_err(&[f32::NAN], &[f32::NAN]), 0.0);
        assert_eq!(max_abs_err(&[1.0], &[1.0, 2.0]), f32::INFINITY);
    }

    #[test]
    fn check_reports_worst() {
        let want = [1.0, 2.0, 3.0, 4.0];
        let got = [1.0, 2.1, 3.5, 4.0];
        let m = check_close(&got, &want, 0.0, 0.01).unwrap_err();
        assert_eq!((m.index, m.count), (2, 2));
        assert!(check_close(&got, &want, 0.2, 0.0).is_ok());
        assert!(check_close(&want, &want, 0.0, 0.0).is_ok());
        assert!(check_close(&got, &want[..3], 1.0, 1.0).is_err());
    }
}
