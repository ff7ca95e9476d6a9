//! Named tensors of a run (`tensors.safetensors`): a small owned set for writing, and a
//! memory-mapped file for reading without loading it into memory; and a memory-mapped `.npy`
//! array ([`map_npy_f32`]), the tensors of runs recorded by other tools.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::{ArrayViewD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};

use super::error::RunError;

/// The element data of one tensor to write.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// One owned tensor: data in row-major (C) order plus its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        match self.data {
            TensorData::F32(_) => Dtype::F32,
            TensorData::U8(_) => Dtype::U8,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match &self.data {
            TensorData::F32(v) => {
                let mut out = Vec::with_capacity(v.len() * 4);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                Cow::Owned(out)
            }
            TensorData::U8(v) => Cow::Borrowed(v),
        }
    }
    fn data_len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len() * 4,
            TensorData::U8(v) => v.len(),
        }
    }
}

/// Named tensors to write with [`crate::runs::RunWriter::write_tensors`].
///
/// Names follow the run format (`gca.0.A.x`, `gca.0.A.x_prime`, `gca.0.A.y`, `gca.0.A.mask`,
/// ...); the set itself accepts any name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorSet {
    tensors: BTreeMap<String, Tensor>,
}

impl TensorSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an f32 tensor from row-major data; errors when `data.len()` disagrees with `shape`.
    pub fn add_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Vec<f32>,
    ) -> Result<&mut Self, RunError> {
        self.insert(name, shape, data.len(), TensorData::F32(data))
    }

    /// Adds a u8 tensor (masks) from row-major data.
    pub fn add_u8(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Vec<u8>,
    ) -> Result<&mut Self, RunError> {
        self.insert(name, shape, data.len(), TensorData::U8(data))
    }

    fn insert(
        &mut self,
        name: &str,
        shape: &[usize],
        len: usize,
        data: TensorData,
    ) -> Result<&mut Self, RunError> {
        check_len(name, shape, len)?;
        self.tensors.insert(
            name.to_owned(),
            Tensor {
                shape: shape.to_vec(),
                data,
            },
        );
        Ok(self)
    }

    /// Adds an f32 tensor from any ndarray view (copied in row-major order).
    pub fn add_array<D: ndarray::Dimension>(
        &mut self,
        name: &str,
        array: ndarray::ArrayView<'_, f32, D>,
    ) -> &mut Self {
        let shape = array.shape().to_vec();
        let data: Vec<f32> = array.iter().copied().collect();
        self.tensors.insert(
            name.to_owned(),
            Tensor {
                shape,
                data: TensorData::F32(data),
            },
        );
        self
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Writes the set as safetensors, atomically (a temporary sibling file, then a rename).
    pub fn write(&self, path: &Path) -> Result<(), RunError> {
        let bytes =
            safetensors::serialize(self.tensors.iter(), None).map_err(|e| RunError::Tensors {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        super::write_atomic(path, &bytes)
    }
}

fn check_len(name: &str, shape: &[usize], len: usize) -> Result<(), RunError> {
    let expected: usize = shape.iter().product();
    if expected != len {
        return Err(RunError::TensorShape {
            name: name.to_owned(),
            reason: format!("shape {shape:?} needs {expected} elements, got {len}"),
        });
    }
    Ok(())
}

/// A safetensors file mapped into memory: tensors are borrowed, never copied, so files larger
/// than memory can be analysed (the OS pages the data in and out).
pub struct MappedTensors {
    path: PathBuf,
    // The map must outlive every view handed out; views borrow from `self`.
    mmap: memmap2::Mmap,
}

impl MappedTensors {
    pub fn open(path: &Path) -> Result<Self, RunError> {
        let file = File::open(path).map_err(|e| RunError::io(path, e))?;
        // SAFETY: the run format writes tensors by rename, so a mapped file is never modified
        // in place by this crate's writers.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| RunError::io(path, e))?;
        // Validate the header once so later accessors can only fail on missing names.
        SafeTensors::deserialize(&mmap).map_err(|e| RunError::Tensors {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(MappedTensors {
            path: path.to_owned(),
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("header validated in open")
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.st().names().into_iter().map(str::to_owned).collect();
        names.sort();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    fn view(&self, name: &str) -> Result<TensorView<'_>, RunError> {
        self.st().tensor(name).map_err(|_| RunError::Tensors {
            path: self.path.clone(),
            reason: format!("no tensor named `{name}`"),
        })
    }

    /// Borrows an f32 tensor as an ndarray view (zero-copy when the data is 4-byte aligned,
    /// which safetensors' 8-byte-padded header guarantees for files this crate writes).
    pub fn f32(&self, name: &str) -> Result<ArrayViewD<'_, f32>, RunError> {
        let v = self.view(name)?;
        if v.dtype() != Dtype::F32 {
            return Err(RunError::Tensors {
                path: self.path.clone(),
                reason: format!("tensor `{name}` is {:?}, expected F32", v.dtype()),
            });
        }
        let bytes = v.data();
        let floats: &[f32] = bytemuck::try_cast_slice(bytes).map_err(|e| RunError::Tensors {
            path: self.path.clone(),
            reason: format!("tensor `{name}` data is not f32-aligned: {e}"),
        })?;
        ArrayViewD::from_shape(IxDyn(v.shape()), floats).map_err(|e| RunError::Tensors {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })
    }

    /// Borrows a u8 tensor (masks) as an ndarray view. An f32 or bool tensor is refused.
    pub fn u8(&self, name: &str) -> Result<ArrayViewD<'_, u8>, RunError> {
        let v = self.view(name)?;
        if v.dtype() != Dtype::U8 && v.dtype() != Dtype::BOOL {
            return Err(RunError::Tensors {
                path: self.path.clone(),
                reason: format!("tensor `{name}` is {:?}, expected U8", v.dtype()),
            });
        }
        ArrayViewD::from_shape(IxDyn(v.shape()), v.data()).map_err(|e| RunError::Tensors {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })
    }

    /// The shape of a tensor.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, RunError> {
        Ok(self.view(name)?.shape().to_vec())
    }
}

/// A `.npy` file mapped into memory (C order, little-endian); view it with
/// [`MappedNpy::view`] (f32) or [`MappedNpy::view_u8`] (masks).
pub struct MappedNpy {
    path: PathBuf,
    mmap: memmap2::Mmap,
}

/// Maps an f32 `.npy` file so that it can be analysed without reading it into memory.
pub fn map_npy_f32(path: &Path) -> Result<MappedNpy, RunError> {
    let m = MappedNpy::open_any(path)?;
    m.view()?; // validate the header and dtype once
    Ok(m)
}

impl MappedNpy {
    /// Maps a `.npy` file without checking its dtype.
    pub fn open_any(path: &Path) -> Result<MappedNpy, RunError> {
        let io = |e| RunError::Io {
            path: path.to_owned(),
            source: e,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the file is only read; writers in this crate replace files by rename.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(MappedNpy {
            path: path.to_owned(),
            mmap,
        })
    }

    /// The array as f32, borrowed from the map (zero-copy).
    pub fn view(&self) -> Result<ndarray::ArrayViewD<'_, f32>, RunError> {
        use ndarray_npy::ViewNpyExt;
        ndarray::ArrayViewD::<f32>::view_npy(&self.mmap).map_err(|e| RunError::Tensors {
            path: self.path.clone(),
            reason: format!("not a C-order little-endian f32 .npy: {e}"),
        })
    }

    /// The array as u8 (a `uint8` or `bool` mask), borrowed from the map.
    pub fn view_u8(&self) -> Result<ndarray::ArrayViewD<'_, u8>, RunError> {
        use ndarray_npy::ViewNpyExt;
        if let Ok(v) = ndarray::ArrayViewD::<u8>::view_npy(&self.mmap) {
            return Ok(v);
        }
        let b =
            ndarray::ArrayViewD::<bool>::view_npy(&self.mmap).map_err(|e| RunError::Tensors {
                path: self.path.clone(),
                reason: format!("not a C-order uint8 or bool .npy mask: {e}"),
            })?;
        let shape = b.raw_dim();
        let bytes: &[u8] = bytemuck::cast_slice(b.to_slice().expect("C order checked by view_npy"));
        ndarray::ArrayViewD::from_shape(shape, bytes).map_err(|e| RunError::Tensors {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}
