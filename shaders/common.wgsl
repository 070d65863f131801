// Shared by every kernel family: block geometry and the arena's layout table.
//
// Binding convention for every family: 0 = layout table, 1 = chunk uniform, 2 = per-group hyperparameters,
// 3 and up = the family's own buffers.

const BLOCK: u32 = 256u;
const LAYOUT_HEADER_WORDS: u32 = 4u;
const TENSOR_RECORD_WORDS: u32 = 4u;

// The chunk a dispatch steps: a run of whole blocks, and the workgroup grid's width.
struct ChunkInfo {
    first_block: u32,
    blocks: u32,
    groups_x: u32,
    pad: u32,
}

// Layout table: [tensor count, block count, 0, 0], then per tensor [first block, length, group, 0], then per
// block its tensor.
@group(0) @binding(0) var<storage, read> arena_layout: array<u32>;
@group(0) @binding(1) var<uniform> chunk_info: ChunkInfo;

// Where one invocation's element lies.
struct Element {
    // Index into the chunk's buffers.
    index: u32,
    tensor: u32,
    group: u32,
    // Index inside the tensor.
    offset: u32,
    // False for padding past a tensor's end and for workgroups past the chunk's end.
    valid: bool,
}

fn locate(wg: vec3<u32>, lid: u32) -> Element {
    var e: Element;
    e.valid = false;
    let local_block = wg.y * chunk_info.groups_x + wg.x;
    if (local_block >= chunk_info.blocks) {
        return e;
    }
    let block = chunk_info.first_block + local_block;
    let tensors = arena_layout[0];
    e.tensor = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensors + block];
    let record = LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * e.tensor;
    let first = arena_layout[record];
    let len = arena_layout[record + 1u];
    e.group = arena_layout[record + 2u];
    e.offset = (block - first) * BLOCK + lid;
    e.index = local_block * BLOCK + lid;
    e.valid = e.offset < len;
    return e;
}

// PyTorch's CPU lerp (vectorised path): fma(w, end - start, start) for |w| < 0.5, otherwise
// fma(w - 1, end - start, end), which keeps full precision near either end.
fn torch_lerp(start: f32, end: f32, w: f32) -> f32 {
    let diff = end - start;
    if (abs(w) < 0.5) {
        return fma(w, diff, start);
    }
    return fma(w - 1.0, diff, end);
}
