//! GPU time from timestamp queries, without touching the code being timed: an empty compute pass that writes
//! a timestamp at its beginning goes before the work, and one that writes at its end goes after it, in the
//! same encoder. Backends write pass timestamps once all earlier commands have finished, so the difference
//! is the work's execution time.

use wgoptim::Gpu;

use crate::error::{BenchError, Result};

/// Timestamp slots for up to `capacity` timed intervals.
pub struct GpuTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    capacity: u32,
    period_ns: f64,
}

/// How many intervals one timer can hold (two queries each, within wgpu's per-set limit).
pub const MAX_INTERVALS: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

impl GpuTimer {
    /// A timer for `intervals` intervals, or `None` when the device has no timestamp queries.
    pub fn new(gpu: &Gpu, intervals: u32) -> Option<Self> {
        if !gpu.has_timestamps() || intervals == 0 || intervals > MAX_INTERVALS {
            return None;
        }
        let device = gpu.device();
        let bytes = intervals as u64 * 2 * 8;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: intervals * 2,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench timestamps resolved"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench timestamps readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Self {
            queries,
            resolve,
            readback,
            capacity: intervals,
            period_ns: gpu.queue().get_timestamp_period() as f64,
        })
    }

    fn marker(&self, encoder: &mut wgpu::CommandEncoder, begin: Option<u32>, end: Option<u32>) {
        let _pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench timestamp"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: begin,
                end_of_pass_write_index: end,
            }),
        });
    }

    /// Marks the start of interval `i` (call before encoding the work).
    pub fn begin(&self, encoder: &mut wgpu::CommandEncoder, i: u32) {
        self.marker(encoder, Some(2 * i), None);
    }

    /// Marks the end of interval `i` (call after encoding the work).
    pub fn end(&self, encoder: &mut wgpu::CommandEncoder, i: u32) {
        self.marker(encoder, None, Some(2 * i + 1));
    }

    /// Waits for the GPU and returns the first `count` intervals, in nanoseconds.
    pub fn read(&self, gpu: &Gpu, count: u32) -> Result<Vec<f64>> {
        let count = count.min(self.capacity);
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = count as u64 * 16;
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench timestamps resolve"),
            });
        encoder.resolve_query_set(&self.queries, 0..count * 2, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, bytes);
        gpu.queue().submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        self.readback
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                // The receiver waits below; a failed send only means it already gave up.
                let _ = tx.send(r);
            });
        gpu.wait_device()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BenchError::fatal(format!("reading timestamps: {e}"))),
            Err(_) => return Err(BenchError::fatal("the timestamp readback never completed")),
        }
        let ticks: Vec<u64> = {
            let view = self
                .readback
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| BenchError::fatal(format!("reading timestamps: {e}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        self.readback.unmap();
        Ok(ticks
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * self.period_ns)
            .collect())
    }
}
