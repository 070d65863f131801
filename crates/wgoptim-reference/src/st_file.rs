//! A safetensors file read whole into memory, for the fixture loaders of
//! [`crate::averaging`] and [`crate::precision`]: metadata, f32 tensors and raw
//! 16-bit tensors, with the file's path in every error message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

pub(crate) struct StFile {
    path: PathBuf,
    bytes: Vec<u8>,
    header: Metadata,
    data_start: usize,
    meta: HashMap<String, String>,
}

impl StFile {
    pub(crate) fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Validates the header and that every tensor's data lies inside the file.
        let (header_len, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.to_owned(),
            bytes,
            header,
            data_start: 8 + header_len,
            meta,
        })
    }

    pub(crate) fn err(&self, msg: String) -> String {
        format!("{}: {msg}", self.path.display())
    }

    pub(crate) fn meta(&self, key: &str) -> Result<&str, String> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.err(format!("no metadata {key:?}")))
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        serde_json::from_str(self.meta(key)?)
            .map_err(|e| self.err(format!("metadata {key:?}: {e}")))
    }

    fn raw(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8], String> {
        let info = self
            .header
            .info(name)
            .ok_or_else(|| self.err(format!("no tensor {name}")))?;
        if info.dtype != dtype {
            return Err(self.err(format!("tensor {name} is {:?}, not {dtype:?}", info.dtype)));
        }
        if info.shape != shape {
            return Err(self.err(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                info.shape
            )));
        }
        let (begin, end) = info.data_offsets;
        self.bytes
            .get(self.data_start + begin..self.data_start + end)
            .ok_or_else(|| self.err(format!("tensor {name} lies outside the file")))
    }

    pub(crate) fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        Ok(self
            .raw(name, Dtype::F32, shape)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The bit patterns of a `BF16` or `F16` tensor.
    pub(crate) fn u16(
        &self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<Vec<u16>, String> {
        Ok(self
            .raw(name, dtype, shape)?
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect())
    }
}

/// `<workspace>/tests/fixtures/<dir>`.
pub(crate) fn fixtures_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("tests")
        .join("fixtures")
        .join(dir)
}
