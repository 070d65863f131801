//! `NoDecayRule`: which tensors skip weight decay, decided by shape and name when they are registered.
//!
//! The usual recipe (timm's `param_groups_weight_decay`, nanoGPT's `configure_optimizers`) decays the
//! weight matrices and leaves biases and normalisation gains alone: a tensor with at most one dimension, or
//! whose name ends in `.bias`, goes to the no-decay group; names containing a pattern the caller adds (an
//! embedding, a position table) join it. The rule only chooses a group number; give that group
//! [`crate::GroupConfig::no_decay`] on the optimizer.

/// Sorts tensors into a decay group and a no-decay group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoDecayRule {
    one_dim: bool,
    suffixes: Vec<String>,
    patterns: Vec<String>,
}

impl Default for NoDecayRule {
    /// Tensors of at most one dimension and names ending in `.bias` skip decay.
    fn default() -> Self {
        Self {
            one_dim: true,
            suffixes: vec![".bias".to_string()],
            patterns: Vec::new(),
        }
    }
}

impl NoDecayRule {
    /// The default rule: at most one dimension, or a name ending in `.bias`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also leaves out every tensor whose name contains `pattern` (case-sensitive), e.g. `"norm"`,
    /// `"embed"`.
    pub fn pattern(mut self, pattern: &str) -> Self {
        self.patterns.push(pattern.to_string());
        self
    }

    /// Decides by name alone: tensors of one dimension are decayed unless a name rule matches.
    pub fn names_only(mut self) -> Self {
        self.one_dim = false;
        self
    }

    /// Whether the tensor `name` of shape `shape` skips weight decay.
    pub fn matches(&self, name: &str, shape: &[usize]) -> bool {
        (self.one_dim && shape.len() <= 1)
            || self.suffixes.iter().any(|s| name.ends_with(s.as_str()))
            || self.patterns.iter().any(|p| name.contains(p.as_str()))
    }

    /// `no_decay` when the tensor skips decay, else `decay`: the group to register it under.
    pub fn group(&self, name: &str, shape: &[usize], decay: u32, no_decay: u32) -> u32 {
        if self.matches(name, shape) {
            no_decay
        } else {
            decay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NoDecayRule;

    #[test]
    fn default_rule_leaves_out_biases_and_gains() {
        let rule = NoDecayRule::new();
        assert!(rule.matches("h.0.attn.c_attn.bias", &[2304]));
        assert!(rule.matches("h.0.ln_1.weight", &[768]));
        assert!(rule.matches("scalar", &[]));
        assert!(!rule.matches("h.0.attn.c_attn.weight", &[768, 2304]));
        assert!(!rule.matches("wte.weight", &[50257, 768]));
        assert_eq!(rule.group("h.0.mlp.c_fc.weight", &[768, 3072], 0, 1), 0);
        assert_eq!(rule.group("h.0.mlp.c_fc.bias", &[3072], 0, 1), 1);
    }

    #[test]
    fn patterns_and_names_only() {
        let rule = NoDecayRule::new().pattern("embed");
        assert!(rule.matches("pos_embed", &[1, 197, 768]));
        assert!(!rule.matches("blocks.0.attn.qkv.weight", &[2304, 768]));
        let names = NoDecayRule::new().names_only();
        assert!(!names.matches("h.0.ln_1.weight", &[768]));
        assert!(names.matches("h.0.ln_1.bias", &[768]));
    }
}
