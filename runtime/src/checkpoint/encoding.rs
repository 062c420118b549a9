//! Tensor bytes for safetensors, and the checksum that guards them.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, View};

use super::CheckpointError;

/// Tensor bytes on the CPU, ready for safetensors.
pub(super) struct CpuTensor {
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    pub(super) bytes: Vec<u8>,
}

impl View for &CpuTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The tensor's values as little-endian bytes. `to_le` is generic rather than a `fn` pointer so
/// that it inlines: the loop then compiles to a plain copy on little-endian machines (through a
/// pointer, one call per value was most of a checkpoint's encoding time).
fn le_bytes<T: candle_core::WithDType, const N: usize>(
    t: &Tensor,
    to_le: impl Fn(T) -> [u8; N],
) -> candle_core::Result<Vec<u8>> {
    let values = t.flatten_all()?.to_vec1::<T>()?;
    let mut bytes = vec![0u8; values.len() * N];
    for (out, v) in bytes.chunks_exact_mut(N).zip(values) {
        out.copy_from_slice(&to_le(v));
    }
    Ok(bytes)
}

pub(super) fn to_cpu(path: &Path, name: &str, t: &Tensor) -> Result<CpuTensor, CheckpointError> {
    let err = |reason: String| CheckpointError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    let t = t.to_device(&Device::Cpu).map_err(|e| err(e.to_string()))?;
    let (dtype, bytes) = match t.dtype() {
        DType::F32 => (Dtype::F32, le_bytes(&t, f32::to_le_bytes)),
        DType::F64 => (Dtype::F64, le_bytes(&t, f64::to_le_bytes)),
        DType::I64 => (Dtype::I64, le_bytes(&t, i64::to_le_bytes)),
        DType::U32 => (Dtype::U32, le_bytes(&t, u32::to_le_bytes)),
        DType::U8 => (Dtype::U8, le_bytes(&t, u8::to_le_bytes)),
        other => {
            return Err(err(format!(
                "dtype {other:?} is not supported in checkpoints"
            )));
        }
    };
    Ok(CpuTensor {
        dtype,
        shape: t.dims().to_vec(),
        bytes: bytes.map_err(|e| err(e.to_string()))?,
    })
}

/// CRC-32 over the metadata JSON and each tensor's name, dtype, shape and bytes, in name order.
pub(super) fn checksum<'a>(
    meta_json: &str,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by_key(|t| t.0);
    let mut crc = flate2::Crc::new();
    crc.update(meta_json.as_bytes());
    for (name, dtype, shape, bytes) in sorted {
        crc.update(format!("\n{name}:{dtype:?}:{shape:?}\n").as_bytes());
        crc.update(bytes);
    }
    format!("{:08x}", crc.sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_bytes_are_each_value_little_endian_in_order() {
        let f = [
            0.0f32,
            -1.5,
            f32::MIN_POSITIVE,
            3.25e7,
            f32::NAN,
            f32::INFINITY,
        ];
        let t = Tensor::from_slice(&f, (2, 3), &Device::Cpu).unwrap();
        let cpu = to_cpu(Path::new("x"), "t", &t).unwrap();
        let expected: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!((cpu.dtype, cpu.shape.as_slice()), (Dtype::F32, &[2, 3][..]));
        assert_eq!(cpu.bytes, expected);

        let i = [i64::MIN, -1, 0, 1, i64::MAX];
        let t = Tensor::from_slice(&i, 5, &Device::Cpu).unwrap();
        let expected: Vec<u8> = i.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(to_cpu(Path::new("x"), "t", &t).unwrap().bytes, expected);

        // A transposed (strided) tensor is written in its logical, row-major order.
        let d = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let t = Tensor::from_slice(&d, (2, 3), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        let expected: Vec<u8> = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(to_cpu(Path::new("x"), "t", &t).unwrap().bytes, expected);
    }
}
