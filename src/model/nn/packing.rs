//! Per-position layers on a stream's real items only.
//!
//! Streams are left-padded to the batch's length, and most positions are padding (on
//! food-kitchen at length 50: 58% of the merged stream's positions, 80% of each domain's). The
//! models mask every padding position to zero, so whatever a per-position layer (linear, SwiGLU,
//! layer norm, dropout, the adapters) computes there is discarded. A [`Packing`] lists the rows
//! that matter; [`Packing::pack`] gathers them from a `[b, l, w]` tensor into `[n, w]`, the
//! layers run on those `n` rows, and [`Packing::unpack`] scatters them back (zeros elsewhere)
//! where a layer mixes positions (attention). Each row gets the values it had in the padded
//! layout: [`Packing::dropout`] draws the mask element of its padded position.
//!
//! Both are one graph node ([`gather_rows`], a row gather whose gradient is the gather by the
//! inverse index), parallel over rows.

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fused::{kernel_op, run_f32_f64, Elem, Kernel};

/// Marks an output row of [`gather_rows`] that reads no source row (it is zero).
pub const NO_ROW: u32 = u32::MAX;

/// Output rows per parallel task of the gather.
const ROWS_PER_TASK: usize = 256;

/// The rows of a `[batch, len]` grid that a stream's per-position layers compute, in
/// ascending order of their flat index `b * len + t`.
#[derive(Clone, Debug)]
pub struct Packing {
    batch: usize,
    len: usize,
    /// Flat index of each packed row, ascending.
    rows: Arc<[u32]>,
    /// Packed row of each flat index, [`NO_ROW`] where it is not packed.
    slot: Arc<[u32]>,
}

impl Packing {
    /// The valid positions of a stream (`valid[b][t]`).
    pub fn of_valid(valid: &[Vec<bool>]) -> Self {
        let len = valid.first().map_or(0, Vec::len);
        let rows = valid
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, &v)| v)
            .map(|(i, _)| i as u32)
            .collect();
        Self::of_rows(valid.len(), len, rows).expect("ascending valid rows")
    }

    /// Given rows (flat indices, strictly ascending, below `batch * len`).
    pub fn of_rows(batch: usize, len: usize, rows: Vec<u32>) -> Result<Self> {
        let cells = batch * len;
        if cells >= NO_ROW as usize {
            bail!("packing: {batch} x {len} positions exceed the 32-bit row index");
        }
        if rows.windows(2).any(|w| w[0] >= w[1])
            || rows.last().is_some_and(|&r| r as usize >= cells)
        {
            bail!("packing: rows must ascend strictly and lie below {batch} x {len}");
        }
        let mut slot = vec![NO_ROW; cells];
        for (i, &r) in rows.iter().enumerate() {
            slot[r as usize] = i as u32;
        }
        Ok(Self {
            batch,
            len,
            rows: rows.into(),
            slot: slot.into(),
        })
    }

    /// Number of packed rows.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Flat index `b * len + t` of each packed row.
    pub fn flat_rows(&self) -> &[u32] {
        &self.rows
    }

    /// The packed rows of `dense` (`[batch, len, w]` or `[batch * len, w]`): `[n, w]`.
    pub fn pack(&self, dense: &Tensor) -> Result<Tensor> {
        let w = dense.dims().last().copied().unwrap_or(1);
        if dense.elem_count() != self.batch * self.len * w {
            bail!(
                "packing: a tensor of shape {:?} is not {} x {} rows",
                dense.dims(),
                self.batch,
                self.len
            );
        }
        gather_rows(&dense.reshape((self.batch * self.len, w))?, &self.rows)
    }

    /// `[batch, len, w]` with the rows of `packed` (`[n, w]`) at their positions, zeros elsewhere.
    pub fn unpack(&self, packed: &Tensor) -> Result<Tensor> {
        let (n, w) = packed.dims2()?;
        if n != self.rows.len() {
            bail!(
                "packing: {n} rows to unpack, the packing has {}",
                self.rows.len()
            );
        }
        gather_rows(packed, &self.slot)?.reshape((self.batch, self.len, w))
    }

    /// The rows of `self` taken from `packed`, a tensor packed by `source` (a packing of the
    /// same grid): zeros for the rows `source` does not hold.
    pub fn gather_from(&self, source: &Packing, packed: &Tensor) -> Result<Tensor> {
        if (source.batch, source.len) != (self.batch, self.len) {
            bail!(
                "packing: rows of a {} x {} grid gathered from a {} x {} one",
                self.batch,
                self.len,
                source.batch,
                source.len
            );
        }
        let index: Vec<u32> = self.rows.iter().map(|&r| source.slot[r as usize]).collect();
        gather_rows(packed, &index.into())
    }

    /// The packed rows of a host `[batch * len]` array (item ids, positions).
    pub fn pack_host<T: Copy>(&self, dense: &[T]) -> Vec<T> {
        self.rows.iter().map(|&r| dense[r as usize]).collect()
    }

    /// Inverted dropout of packed rows with the mask their elements have in the padded
    /// layout ([`super::dropout`] of the `[batch, len, w]` tensor with the same seed).
    pub fn dropout(&self, packed: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
        super::fused::dropout_of_rows(packed, p, seed, &self.rows)
    }
}

/// `[index.len(), w]`: row `i` is row `index[i]` of `src` (`[n_src, w]`), or zeros where
/// `index[i]` is [`NO_ROW`]. Each source row may be read once at most (the gradient is the
/// gather by the inverse index).
pub fn gather_rows(src: &Tensor, index: &Arc<[u32]>) -> Result<Tensor> {
    let (n_src, w) = src.dims2()?;
    if let Some(&bad) = index.iter().find(|&&i| i != NO_ROW && i as usize >= n_src) {
        bail!("gather_rows: row {bad} of a {n_src}-row tensor");
    }
    let op = RowGather {
        index: index.clone(),
        n_src,
        w,
    };
    if !src.device().is_cpu() {
        // A zero row at the end stands for the missing ones.
        let zero = Tensor::zeros((1, w), src.dtype(), src.device())?;
        let ids: Vec<u32> = index
            .iter()
            .map(|&i| if i == NO_ROW { n_src as u32 } else { i })
            .collect();
        let ids = Tensor::from_vec(ids, index.len(), src.device())?;
        return Tensor::cat(&[src, &zero], 0)?.index_select(&ids, 0);
    }
    src.contiguous()?.apply_op1(op)
}

struct RowGather {
    index: Arc<[u32]>,
    n_src: usize,
    w: usize,
}

impl Kernel for RowGather {
    fn run<T: Elem>(&self, inputs: &[&[T]], _layouts: &[&Layout]) -> Result<Vec<T>> {
        let (src, w) = (inputs[0], self.w);
        let mut out: Vec<T> = Vec::with_capacity(self.index.len() * w);
        out.spare_capacity_mut()[..self.index.len() * w]
            .par_chunks_mut(ROWS_PER_TASK * w.max(1))
            .enumerate()
            .for_each(|(task, chunk)| {
                let first = task * ROWS_PER_TASK;
                for (o, &i) in chunk.chunks_mut(w).zip(&self.index[first..]) {
                    if i == NO_ROW {
                        o.fill(MaybeUninit::new(T::zero()));
                    } else {
                        let s = &src[i as usize * w..(i as usize + 1) * w];
                        for (o, &s) in o.iter_mut().zip(s) {
                            o.write(s);
                        }
                    }
                }
            });
        // SAFETY: every row of every chunk was written above.
        unsafe { out.set_len(self.index.len() * w) };
        Ok(out)
    }

    fn out_shape(&self, _layouts: &[&Layout]) -> Shape {
        Shape::from((self.index.len(), self.w))
    }
}

impl CustomOp1 for RowGather {
    kernel_op!(1, "gather_rows");

    fn bwd(&self, _src: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mut inverse = vec![NO_ROW; self.n_src];
        for (o, &i) in self.index.iter().enumerate() {
            if i == NO_ROW {
                continue;
            }
            if inverse[i as usize] != NO_ROW {
                bail!("gather_rows: source row {i} is read twice (no gradient for that)");
            }
            inverse[i as usize] = o as u32;
        }
        Ok(Some(gather_rows(grad, &inverse.into())?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_tensors::{gap, seeded};
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Pack, unpack and gather against index_select on the padded layout, and their gradients
    /// against the same with candle's ops, in f64.
    #[test]
    fn pack_and_unpack_match_the_padded_rows_and_their_gradients() {
        let valid = vec![
            vec![false, false, true, true],
            vec![false, true, false, true],
            vec![false, false, false, false],
        ];
        let pk = Packing::of_valid(&valid);
        assert_eq!(pk.flat_rows(), &[2, 3, 5, 7]);
        let x = Var::from_tensor(&seeded(&[3, 4, 5], 41)).unwrap();
        let packed = pk.pack(x.as_tensor()).unwrap();
        let ids = Tensor::new(&[2u32, 3, 5, 7], &Device::Cpu).unwrap();
        let expect = x
            .as_tensor()
            .reshape((12, 5))
            .unwrap()
            .index_select(&ids, 0)
            .unwrap();
        assert_eq!(gap(&packed, &expect), 0.0);
        // Unpacked: the rows back in place, zeros at padding.
        let dense = pk.unpack(&packed).unwrap();
        let mask = Tensor::from_vec(
            valid
                .iter()
                .flatten()
                .map(|&v| if v { 1.0f64 } else { 0.0 })
                .collect::<Vec<_>>(),
            (3, 4, 1),
            &Device::Cpu,
        )
        .unwrap();
        let masked = x.as_tensor().broadcast_mul(&mask).unwrap();
        assert_eq!(gap(&dense, &masked), 0.0);
        // Gradients: a weighted sum of the unpacked tensor reaches x at the valid rows only.
        let w = seeded(&[3, 4, 5], 42);
        let g = (&dense * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let expect = w.broadcast_mul(&mask).unwrap();
        assert_eq!(gap(g.get(&x).unwrap(), &expect), 0.0);
        // Gathering a packing's rows from another: rows the source lacks are zero.
        let targets = Packing::of_rows(3, 4, vec![1, 3, 7]).unwrap();
        let got = targets.gather_from(&pk, &packed).unwrap();
        let flat = x.as_tensor().reshape((12, 5)).unwrap();
        assert_eq!(
            gap(
                &got.get(0).unwrap(),
                &flat.get(1).unwrap().zeros_like().unwrap()
            ),
            0.0
        );
        assert_eq!(gap(&got.get(1).unwrap(), &flat.get(3).unwrap()), 0.0);
        assert_eq!(gap(&got.get(2).unwrap(), &flat.get(7).unwrap()), 0.0);
        assert!(Packing::of_rows(3, 4, vec![3, 3]).is_err());
        assert!(Packing::of_rows(3, 4, vec![12]).is_err());
    }

    /// Bad indices are refused with the op named: a row past the source, a source row read
    /// twice (no gradient for it), rows that do not fit their packing or dropout's row list.
    #[test]
    fn bad_rows_are_refused_naming_the_op() {
        let src = Var::from_tensor(&seeded(&[4, 3], 44)).unwrap();
        let err = gather_rows(src.as_tensor(), &vec![0, 4].into()).unwrap_err();
        assert!(
            err.to_string()
                .contains("gather_rows: row 4 of a 4-row tensor"),
            "{err}"
        );
        let twice = gather_rows(src.as_tensor(), &vec![1, 1].into()).unwrap();
        let err = twice.sum_all().unwrap().backward().unwrap_err();
        assert!(
            err.to_string().contains("source row 1 is read twice"),
            "{err}"
        );
        let pk = Packing::of_rows(2, 3, vec![0, 4]).unwrap();
        let err = pk.unpack(src.as_tensor()).unwrap_err();
        assert!(
            err.to_string()
                .contains("4 rows to unpack, the packing has 2"),
            "{err}"
        );
        let err = pk.pack(src.as_tensor()).unwrap_err();
        assert!(err.to_string().contains("is not 2 x 3 rows"), "{err}");
        let x = seeded(&[3, 3], 45);
        let err = pk.dropout(&x, 0.5, 1).unwrap_err();
        assert!(
            err.to_string().contains("9 elements are not 2 rows"),
            "{err}"
        );
        let err = pk.dropout(&seeded(&[2, 2], 46), 1.0, 1).unwrap_err();
        assert!(err.to_string().contains("outside [0, 1)"), "{err}");
    }

    /// Dropout of packed rows drops exactly what dropout of the padded tensor drops there.
    #[test]
    fn dropout_of_packed_rows_is_the_padded_layouts_mask() {
        let valid: Vec<Vec<bool>> = (0..6)
            .map(|b| (0..50).map(|t| (t * 7 + b) % 3 != 0).collect())
            .collect();
        let pk = Packing::of_valid(&valid);
        let x = seeded(&[6, 50, 9], 43).to_dtype(DType::F32).unwrap();
        let dense = super::super::dropout(&x, 0.4, 977).unwrap();
        let packed = pk.dropout(&pk.pack(&x).unwrap(), 0.4, 977).unwrap();
        let expect = pk.pack(&dense).unwrap();
        let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        assert_eq!(gap(&f64(&packed), &f64(&expect)), 0.0);
    }
}
