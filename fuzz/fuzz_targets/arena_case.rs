//! One `arena_registration` case: decodes fuzz bytes into registrations and device limits, drives
//! `ArenaBuilder::add` and `ArenaBuilder::plan`, and checks what they return. Shared by the fuzz target and
//! by `tests/fuzz_regressions.rs`, which replays the committed crash inputs without cargo-fuzz.
//!
//! Byte format (every read past the end yields zeros, so every input decodes):
//! - limits: a value for `max_storage_buffer_binding_size`, one for `max_buffer_size`, a u16 for
//!   `max_compute_workgroups_per_dimension`, and an optional `max_chunk_bytes`;
//! - then registrations until the bytes run out: a name (length byte, then bytes read as lossy UTF-8, with
//!   a flag that reuses an earlier name), up to 7 dimensions, and a group.
//!
//! Values are drawn through `value`, which maps a tag byte to an edge (0, 1, block and chunk boundaries,
//! 2^32, `usize::MAX`) or to raw bytes, so the fuzzer reaches overflow cases quickly.

use wgoptim::{ArenaBuilder, Error};

/// Reads the fuzz input front to back; past the end it yields zeros.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    /// A tag byte, then an edge value or raw little-endian bytes.
    pub fn value(&mut self) -> u64 {
        match self.byte() % 16 {
            0 => 0,
            1 => 1,
            2 => 255,
            3 => 256,
            4 => 257,
            5 => 1024,
            6 => 4096,
            7 => 128 << 20,
            8 => u32::MAX as u64,
            9 => 1 << 32,
            10 => u64::MAX,
            11 => usize::MAX as u64,
            12 => self.byte() as u64,
            13 => u16::from_le_bytes([self.byte(), self.byte()]) as u64,
            14 => u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()]) as u64,
            _ => self.u64(),
        }
    }
}

/// What `ArenaBuilder::add` must answer, decided independently of it.
fn expected_add(names: &[String], name: &str, shape: &[usize], group: u32) -> Option<&'static str> {
    if name.is_empty() {
        return Some("EmptyName");
    }
    if names.iter().any(|n| n == name) {
        return Some("DuplicateTensor");
    }
    if group >= ArenaBuilder::MAX_GROUPS {
        return Some("GroupOutOfRange");
    }
    let mut numel: u128 = 1;
    for &d in shape {
        numel = numel.saturating_mul(d as u128);
    }
    if numel == 0 {
        return Some("EmptyTensor");
    }
    if numel > u32::MAX as u128 {
        return Some("TooLarge");
    }
    None
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::EmptyName => "EmptyName",
        Error::DuplicateTensor(_) => "DuplicateTensor",
        Error::GroupOutOfRange { .. } => "GroupOutOfRange",
        Error::EmptyTensor { .. } => "EmptyTensor",
        Error::TooLarge { .. } => "TooLarge",
        Error::EmptyArena => "EmptyArena",
        _ => "other",
    }
}

/// Runs one case. Returns a description of the first broken rule; a panic inside the crate is itself the
/// finding for the fuzzer.
pub fn run(data: &[u8]) -> Result<(), String> {
    let mut bytes = Bytes::new(data);
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: bytes.value(),
        max_buffer_size: bytes.value(),
        max_compute_workgroups_per_dimension: u16::from_le_bytes([bytes.byte(), bytes.byte()])
            as u32,
        ..wgpu::Limits::default()
    };
    let chunk_bytes = match bytes.byte() % 2 {
        0 => None,
        _ => Some(bytes.value()),
    };
    let mut builder = ArenaBuilder::new();
    if let Some(c) = chunk_bytes {
        builder.max_chunk_bytes(c);
    }
    // The registrations that were accepted: (name, shape, group).
    let mut accepted: Vec<(String, Vec<usize>, u32)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    while !bytes.is_empty() {
        let head = bytes.byte();
        let name = if head & 0x80 != 0 && !names.is_empty() {
            names[head as usize % names.len()].clone()
        } else {
            let len = (head & 0x3f) as usize;
            String::from_utf8_lossy(bytes.take(len)).into_owned()
        };
        let dims = (bytes.byte() % 8) as usize;
        let shape: Vec<usize> = (0..dims).map(|_| bytes.value() as usize).collect();
        let group = bytes.value() as u32;
        let want = expected_add(&names, &name, &shape, group);
        let before = builder.len();
        match (builder.add(&name, &shape, group), want) {
            (Ok(_), None) => {
                names.push(name.clone());
                accepted.push((name, shape, group));
            }
            (Ok(_), Some(w)) => {
                return Err(format!(
                    "add({name:?}, {shape:?}, {group}) accepted; want {w}"
                ));
            }
            (Err(e), None) => {
                return Err(format!("add({name:?}, {shape:?}, {group}) refused: {e}"));
            }
            (Err(e), Some(w)) => {
                if kind(&e) != w {
                    return Err(format!(
                        "add({name:?}, {shape:?}, {group}): {e:?}, want {w}"
                    ));
                }
                if builder.len() != before {
                    return Err(format!("refused add({name:?}) changed the builder"));
                }
            }
        }
    }
    match builder.plan(&limits) {
        Ok(plan) => check_plan(&plan, &accepted, &limits, chunk_bytes),
        Err(e) => match e {
            Error::EmptyArena if accepted.is_empty() => Ok(()),
            Error::TooLarge { .. } if !accepted.is_empty() => Ok(()),
            e => Err(format!("plan refused with an unexpected error: {e:?}")),
        },
    }
}

/// The rules every accepted layout keeps.
fn check_plan(
    plan: &wgoptim::ArenaPlan,
    accepted: &[(String, Vec<usize>, u32)],
    limits: &wgpu::Limits,
    chunk_bytes: Option<u64>,
) -> Result<(), String> {
    const BLOCK: u64 = wgoptim::BLOCK as u64;
    let binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let cap = chunk_bytes.unwrap_or(binding).min(binding);
    let chunks = plan.chunk_elements();
    if chunks.len() != plan.chunk_count() || chunks.len() > ArenaBuilder::MAX_CHUNKS {
        return Err(format!("{} chunks", chunks.len()));
    }
    if let Some(c) = chunks
        .iter()
        .find(|&&c| c == 0 || c % BLOCK != 0 || c * 4 > cap)
    {
        return Err(format!("chunk of {c} elements (cap {cap} bytes)"));
    }
    let mut chunk_start = Vec::with_capacity(chunks.len());
    let mut total = 0u64;
    for &c in &chunks {
        chunk_start.push(total);
        total += c;
    }
    if total != plan.padded_elements() {
        return Err(format!(
            "chunks hold {total}, padded {}",
            plan.padded_elements()
        ));
    }
    if plan.layout_bytes() > binding {
        return Err("layout table larger than a binding".into());
    }
    let tensors = plan.tensors();
    if tensors.len() != accepted.len() {
        return Err(format!(
            "{} tensors planned, {} accepted",
            tensors.len(),
            accepted.len()
        ));
    }
    let groups = accepted.iter().map(|a| a.2 + 1).max().unwrap_or(0);
    if plan.groups() != groups {
        return Err(format!("{} groups, want {groups}", plan.groups()));
    }
    let mut next_block = 0u64;
    let max_chunk = chunks.iter().copied().max().unwrap_or(0);
    for (t, (name, shape, group)) in tensors.iter().zip(accepted) {
        let numel: u64 = shape.iter().map(|&d| d as u64).product();
        if &t.name != name || &t.shape != shape || t.group != *group || t.numel != numel {
            return Err(format!("tensor {name:?} recorded as {t:?}"));
        }
        if t.first_block as u64 != next_block {
            return Err(format!(
                "{name:?} starts at block {}, want {next_block}",
                t.first_block
            ));
        }
        let mut offset = 0u64;
        for s in &t.segments {
            let Some(&len) = chunks.get(s.chunk) else {
                return Err(format!(
                    "{name:?}: segment in chunk {} of {}",
                    s.chunk,
                    chunks.len()
                ));
            };
            if s.chunk_offset % BLOCK != 0 || s.len == 0 || s.chunk_offset + s.len > len {
                return Err(format!("{name:?}: segment {s:?} in a chunk of {len}"));
            }
            if s.tensor_offset != offset
                || chunk_start[s.chunk] + s.chunk_offset != t.first_block as u64 * BLOCK + offset
            {
                return Err(format!("{name:?}: segment {s:?} out of place"));
            }
            offset += s.len;
        }
        if offset != numel {
            return Err(format!("{name:?}: segments hold {offset} of {numel}"));
        }
        // A tensor that fits a chunk is never split.
        if numel.div_ceil(BLOCK) * BLOCK <= max_chunk && t.segments.len() != 1 {
            return Err(format!("{name:?} split over {} segments", t.segments.len()));
        }
        next_block += numel.div_ceil(BLOCK);
    }
    if next_block * BLOCK != plan.padded_elements() {
        return Err("tensors do not fill the padded arena".into());
    }
    Ok(())
}
