//! Copies GPU ranges back to the host. Every read waits for the queue, so it is for inspection, checkpoints
//! and tests, never for the inside of a step.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Reads the byte ranges `(buffer, offset, size)` in order and returns them as one f32 vector.
pub(crate) fn read_f32(gpu: &Gpu, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Result<Vec<f32>> {
    let bytes = read_bytes(gpu, ranges)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Reads the byte ranges `(buffer, offset, size)` in order, concatenated.
pub(crate) fn read_bytes(gpu: &Gpu, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Result<Vec<u8>> {
    gpu.check()?;
    let total: u64 = ranges.iter().map(|r| r.2).sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    let device = gpu.device();
    let staging = gpu.scoped(|| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })?;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("readback"),
    });
    let mut at = 0;
    for &(buffer, offset, size) in ranges {
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, at, size);
        at += size;
    }
    gpu.queue().submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        // The receiver outlives the wait below; a send can only fail if that wait already returned.
        let _ = tx.send(r);
    });
    gpu.wait()?;
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Gpu(format!("mapping a readback buffer failed: {e}"))),
        Err(_) => return Err(Error::DeviceLost("the readback was never completed".into())),
    }
    let data = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("reading a mapped readback buffer failed: {e}")))?
        .to_vec();
    staging.unmap();
    Ok(data)
}
