//! Tensor lists of well-known models, for benchmarks and tests that need a realistic tensor count.

/// The 148 parameter tensors of GPT-2 small (124M parameters), with every dimension divided by `divisor`
/// (rounded up), so that tests can keep the tensor count and mix of shapes at a fraction of the size.
/// `divisor` 1 gives the real shapes. Biases and LayerNorm parameters come in group 1, matrices in group 0,
/// the usual no-decay split.
pub fn gpt2_small(divisor: usize) -> Vec<(String, Vec<usize>, u32)> {
    let d = divisor.max(1);
    let s = |n: usize| n.div_ceil(d);
    let (vocab, ctx, width, layers) = (50257, 1024, 768, 12);
    let mut t = vec![
        ("wte.weight".to_string(), vec![s(vocab), s(width)], 0),
        ("wpe.weight".to_string(), vec![s(ctx), s(width)], 0),
    ];
    for l in 0..layers {
        let p = |n: &str| format!("h.{l}.{n}");
        t.push((p("ln_1.weight"), vec![s(width)], 1));
        t.push((p("ln_1.bias"), vec![s(width)], 1));
        t.push((p("attn.c_attn.weight"), vec![s(width), s(3 * width)], 0));
        t.push((p("attn.c_attn.bias"), vec![s(3 * width)], 1));
        t.push((p("attn.c_proj.weight"), vec![s(width), s(width)], 0));
        t.push((p("attn.c_proj.bias"), vec![s(width)], 1));
        t.push((p("ln_2.weight"), vec![s(width)], 1));
        t.push((p("ln_2.bias"), vec![s(width)], 1));
        t.push((p("mlp.c_fc.weight"), vec![s(width), s(4 * width)], 0));
        t.push((p("mlp.c_fc.bias"), vec![s(4 * width)], 1));
        t.push((p("mlp.c_proj.weight"), vec![s(4 * width), s(width)], 0));
        t.push((p("mlp.c_proj.bias"), vec![s(width)], 1));
    }
    t.push(("ln_f.weight".to_string(), vec![s(width)], 1));
    t.push(("ln_f.bias".to_string(), vec![s(width)], 1));
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn gpt2_small_has_148_tensors_and_124m_parameters() {
        let t = super::gpt2_small(1);
        assert_eq!(t.len(), 148);
        let n: usize = t.iter().map(|(_, s, _)| s.iter().product::<usize>()).sum();
        assert_eq!(n, 124_439_808);
    }
}
