//! One `checkpoint_loader` case, shared by the fuzz target and by `tests/fuzz_regressions.rs` (which replays
//! the seeds and the committed crash inputs without cargo-fuzz).
//!
//! Each input is tried twice:
//!
//! 1. as it is, which exercises the framing and the integrity checks;
//! 2. re-sealed, when it parses as a safetensors file: the checksums of the entries (in the metadata) and
//!    of the metadata (in the header) are recomputed, so a mutation of the metadata or of the data gets past
//!    the CRCs and reaches the checks behind them (the tensor list, shapes, state entries, configs).
//!
//! `Checkpoint::from_bytes` must answer with a checkpoint or a typed error, never a panic; whatever it
//! accepts must encode again with `to_bytes`, and that encoding must load.

use std::collections::HashMap;

use wgoptim::Checkpoint;

/// Whether each of the two tries was accepted: `(as it is, re-sealed)`; `None` for a try not made.
pub type Accepted = (bool, Option<bool>);

fn check(bytes: &[u8]) -> Result<bool, String> {
    let Ok(ckpt) = Checkpoint::from_bytes(bytes) else {
        return Ok(false);
    };
    let again = ckpt
        .to_bytes()
        .map_err(|e| format!("an accepted checkpoint does not encode: {e}"))?;
    Checkpoint::from_bytes(&again)
        .map_err(|e| format!("the encoding of an accepted checkpoint does not load: {e}"))?;
    Ok(true)
}

/// The input with every checksum recomputed, or `None` when it is not a safetensors file.
pub fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    let file = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let mut fields: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let tensors = file.tensors();
    if let Some(meta) = fields.get("meta")
        && let Ok(mut value) = serde_json::from_str::<serde_json::Value>(meta)
    {
        if let Some(map) = value.as_object_mut() {
            let sums: serde_json::Map<String, serde_json::Value> = tensors
                .iter()
                .map(|(k, v)| (k.clone(), crc32fast::hash(v.data()).into()))
                .collect();
            map.insert("checksums".into(), sums.into());
        }
        fields.insert("meta".into(), value.to_string());
    }
    if let Some(meta) = fields.get("meta") {
        let crc = crc32fast::hash(meta.as_bytes()).to_string();
        fields.insert("meta_crc32".into(), crc);
    }
    safetensors::serialize(tensors, Some(fields)).ok()
}

/// Runs one case; the error names the first broken rule.
pub fn run(data: &[u8]) -> Result<Accepted, String> {
    let raw = check(data)?;
    let resealed = match reseal(data) {
        Some(bytes) => Some(check(&bytes).map_err(|e| format!("re-sealed: {e}"))?),
        None => None,
    };
    Ok((raw, resealed))
}
