//! Named tensors to and from safetensors bytes (loadable with `safetensors.torch.load`).

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

struct Raw {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.bytes[..]).into()
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises float tensors (copied to the CPU as f32) with their names.
pub fn to_safetensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, String> {
    to_safetensors_with_metadata(tensors, None)
}

/// As `to_safetensors`, with string metadata in the header.
pub fn to_safetensors_with_metadata(
    tensors: &[(String, Tensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let raws: Vec<(String, Raw)> = tensors
        .iter()
        .map(|(name, t)| {
            let t = t
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            let numel = t.numel();
            let mut values = vec![0f32; numel];
            t.f_copy_data(&mut values, numel)
                .map_err(|e| format!("{name}: {e}"))?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((
                name.clone(),
                Raw {
                    shape: t.size().iter().map(|&d| d as usize).collect(),
                    bytes,
                },
            ))
        })
        .collect::<Result<_, String>>()?;
    safetensors::tensor::serialize(raws.iter().map(|(n, r)| (n.as_str(), r)), &metadata)
        .map_err(|e| e.to_string())
}

/// Parses safetensors bytes into named f32 CPU tensors, checking every header field.
pub fn from_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    from_safetensors_with_metadata(bytes).map(|(t, _)| t)
}

/// As `from_safetensors`, also returning the header's metadata.
#[allow(clippy::type_complexity)]
pub fn from_safetensors_with_metadata(
    bytes: &[u8],
) -> Result<(Vec<(String, Tensor)>, std::collections::HashMap<String, String>), String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor {name}: dtype {:?}, expected F32", view.dtype()));
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push((name, Tensor::from_slice(&values).view(shape.as_slice())));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, metadata))
}
