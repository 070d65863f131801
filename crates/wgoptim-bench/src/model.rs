//! The models the bench steps: a parameter count and how it is split into tensors.

use wgoptim::model_shapes::gpt2_small;

/// GPT-2 small's parameter count, which `gpt2_small(divisor)` scales by about `1 / divisor²`.
const GPT2_SMALL_PARAMS: f64 = 124_439_808.0;

/// How a model's parameters are split into tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// This many tensors of equal size (the remainder goes to the first), alternating between two
    /// parameter groups as a decay / no-decay split would.
    Split(usize),
    /// GPT-2 small's 148 tensors, every dimension divided so that the total comes near the target.
    Gpt2,
}

impl Layout {
    /// The name the CLI, the table and the JSON use: the tensor count, or `gpt2`.
    pub fn name(&self) -> String {
        match self {
            Layout::Split(n) => n.to_string(),
            Layout::Gpt2 => "gpt2".into(),
        }
    }

    /// Parses `16` or `gpt2`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("gpt2") {
            return Ok(Layout::Gpt2);
        }
        match parse_count(s) {
            Ok(0) => Err("a model needs at least one tensor".into()),
            Ok(n) => usize::try_from(n)
                .map(Layout::Split)
                .map_err(|_| format!("tensor count `{s}` is too large")),
            Err(_) => Err(format!(
                "`{s}` is not a tensor count (a number such as 16, or gpt2)"
            )),
        }
    }

    /// The tensors `(name, shape, group)` of a model of about `params` parameters.
    pub fn tensors(&self, params: u64) -> Result<Vec<(String, Vec<usize>, u32)>, String> {
        match *self {
            Layout::Split(n) => {
                let n64 = n as u64;
                if params < n64 {
                    return Err(format!(
                        "{params} parameters cannot be split into {n} tensors"
                    ));
                }
                let each = params / n64;
                let first = each + params % n64;
                (0..n)
                    .map(|i| {
                        let len = if i == 0 { first } else { each };
                        let len = usize::try_from(len)
                            .map_err(|_| format!("a tensor of {len} elements is too large"))?;
                        Ok((format!("t{i}"), vec![len], (i % 2) as u32))
                    })
                    .collect()
            }
            Layout::Gpt2 => {
                let divisor = (GPT2_SMALL_PARAMS / params.max(1) as f64).sqrt().round();
                Ok(gpt2_small(divisor.max(1.0) as usize))
            }
        }
    }
}

/// Parses a count with an optional decimal suffix: `1000`, `64K`, `16M`, `1.5G`, `1_000_000`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (digits, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('G') | Some('B') => (&t[..t.len() - 1], 1e9),
        _ => (t.as_str(), 1.0),
    };
    let bad = || format!("`{s}` is not a count (examples: 1000, 64K, 16M, 1.5G)");
    if digits.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = digits.parse::<u64>() {
        return n.checked_mul(scale as u64).ok_or_else(bad);
    }
    let x: f64 = digits.parse().map_err(|_| bad())?;
    let v = x * scale;
    if !(v.is_finite() && v >= 0.0 && v < u64::MAX as f64) || v.fract() != 0.0 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Formats a parameter count the way people write model sizes: `1M`, `16.8M`, `124M`, `1.2G`.
pub fn human_count(n: u64) -> String {
    let x = n as f64;
    let (v, suffix) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "K")
    } else {
        return n.to_string();
    };
    if (v - v.round()).abs() < 0.05 || v >= 100.0 {
        format!("{:.0}{suffix}", v)
    } else {
        format!("{:.1}{suffix}", v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_decimal_suffixes_and_reject_junk() {
        assert_eq!(parse_count("1000"), Ok(1000));
        assert_eq!(parse_count("64k"), Ok(64_000));
        assert_eq!(parse_count("16M"), Ok(16_000_000));
        assert_eq!(parse_count("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        for bad in [
            "",
            "M",
            "12Q",
            "-3",
            "1.5",
            "abc",
            "1e400M",
            "99999999999999999999G",
        ] {
            assert!(parse_count(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn layouts_hit_their_targets() {
        let split = Layout::Split(16).tensors(1_000_003).unwrap();
        assert_eq!(split.len(), 16);
        let total: usize = split.iter().map(|(_, s, _)| s[0]).sum();
        assert_eq!(total, 1_000_003);
        assert_eq!(split.iter().filter(|t| t.2 == 1).count(), 8);

        let gpt2 = Layout::Gpt2.tensors(1_000_000).unwrap();
        assert_eq!(gpt2.len(), 148);
        let total: usize = gpt2
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum();
        assert!((800_000..1_300_000).contains(&total), "{total}");
        assert_eq!(Layout::Gpt2.tensors(200_000_000).unwrap().len(), 148);

        assert!(Layout::Split(1000).tensors(10).is_err());
        assert_eq!(Layout::parse("GPT2"), Ok(Layout::Gpt2));
        assert_eq!(Layout::parse("1k"), Ok(Layout::Split(1000)));
        assert!(Layout::parse("0").is_err());
        assert!(Layout::parse("many").is_err());
    }

    #[test]
    fn counts_print_as_model_sizes() {
        assert_eq!(human_count(1_000_000), "1M");
        assert_eq!(human_count(13_824_000), "13.8M");
        assert_eq!(human_count(124_439_808), "124M");
        assert_eq!(human_count(256), "256");
    }
}
