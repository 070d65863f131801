//! Choosing the adapter to measure, from `--backend` and `--adapter`, with messages that say what exists
//! when nothing matches.

use serde::Serialize;
use wgoptim::{Gpu, GpuOptions};

use crate::error::{BenchError, Result};

/// Parses `vulkan`, `gl`, `metal`, `dx12`, `webgpu` or `all`, comma-separated.
pub fn parse_backends(list: &str) -> Result<wgpu::Backends> {
    let mut backends = wgpu::Backends::empty();
    for name in list.split(',').map(|s| s.trim().to_lowercase()) {
        backends |= match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
            "all" => wgpu::Backends::all(),
            other => {
                return Err(BenchError::fatal(format!(
                    "unknown backend `{other}` (known: vulkan, gl, metal, dx12, webgpu, all)"
                )));
            }
        };
    }
    Ok(backends)
}

/// The options `--backend` and `--adapter` ask for; unset ones fall back to `WGPU_BACKEND` and
/// `WGPU_ADAPTER_NAME`, as the library does.
pub fn options(backend: Option<&str>, adapter: Option<&str>) -> Result<GpuOptions> {
    Ok(GpuOptions {
        backends: backend.map(parse_backends).transpose()?,
        adapter_name: adapter.map(str::to_string),
    })
}

/// One line per adapter present, whatever the filters.
pub fn describe_all() -> Vec<String> {
    let everything = GpuOptions {
        backends: Some(wgpu::Backends::all()),
        adapter_name: Some(String::new()),
    };
    Gpu::adapters(&everything)
        .iter()
        .map(|a| {
            let i = a.get_info();
            let l = a.limits();
            let ts = a.features().contains(wgpu::Features::TIMESTAMP_QUERY);
            format!(
                "{} ({:?}, {:?}, {} {}); max storage binding {} MiB, max buffer {} MiB, timestamps {}",
                i.name,
                i.backend,
                i.device_type,
                i.driver,
                i.driver_info,
                l.max_storage_buffer_binding_size >> 20,
                l.max_buffer_size >> 20,
                if ts { "yes" } else { "no" }
            )
        })
        .collect()
}

/// Opens the best adapter matching `options`. When none does, the error lists the adapters present.
pub fn open(options: &GpuOptions) -> Result<Gpu> {
    Gpu::new(options).map_err(|e| {
        let present = describe_all();
        let list = if present.is_empty() {
            "no adapters are present at all".to_string()
        } else {
            format!("adapters present:\n  {}", present.join("\n  "))
        };
        BenchError::fatal(format!("{e}\n{list}"))
    })
}

/// What the report says about the adapter a run used.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub timestamps: bool,
    pub max_binding_bytes: u64,
}

impl AdapterReport {
    /// The driver's name and version, whichever of the two the backend reports.
    pub fn driver_text(&self) -> String {
        [self.driver.trim(), self.driver_info.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The adapter behind `gpu`.
    pub fn of(gpu: &Gpu) -> Self {
        let i = gpu.info();
        Self {
            name: i.name.clone(),
            backend: format!("{:?}", i.backend),
            device_type: format!("{:?}", i.device_type),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            timestamps: gpu.has_timestamps(),
            max_binding_bytes: gpu.max_binding_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_unknown_ones_are_refused() {
        assert_eq!(parse_backends("vulkan").unwrap(), wgpu::Backends::VULKAN);
        assert_eq!(
            parse_backends("GL, vk").unwrap(),
            wgpu::Backends::GL | wgpu::Backends::VULKAN
        );
        let e = parse_backends("cuda").unwrap_err().to_string();
        assert!(e.contains("unknown backend `cuda`"), "{e}");
    }
}
