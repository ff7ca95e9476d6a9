//! Model inputs: token-id streams on the host, with their masks as tensors too.

use super::nn::{gather_rows, DType, Device, Packing, Result, Tensor, NO_ROW};

/// One left-padded stream of item ids (`0` = padding) for a batch.
pub struct StreamInput {
    /// `[b * l]` position indexed from the end: the last real item is 1, the one before 2, …;
    /// padding is 0 (ABXI's `get_absolute_pos_idx`).
    pub pos: Vec<u32>,
    /// `[b, l, 1]` 1.0 at real items.
    pub mask: Tensor,
    /// The validity, row per sample.
    pub valid: Vec<Vec<bool>>,
    /// The item ids, row per sample (models look up the packed ones, [`StreamInput::packed_ids`]).
    pub host_ids: Vec<Vec<u32>>,
}

impl StreamInput {
    /// `rows`: equal-length rows of ids. Positions above `max_pos` are clamped to it.
    /// The mask is made on `device`.
    pub fn new(rows: &[Vec<u32>], max_pos: usize, dtype: DType, device: &Device) -> Result<Self> {
        let b = rows.len();
        let l = rows.first().map_or(0, |r| r.len());
        if rows.iter().any(|r| r.len() != l) {
            super::nn::bail!("stream rows differ in length");
        }
        let mut pos = vec![0u32; b * l];
        let mut mask = vec![0f32; b * l];
        for (i, r) in rows.iter().enumerate() {
            let mut c = 0usize;
            for j in (0..l).rev() {
                if r[j] != 0 {
                    c += 1;
                    pos[i * l + j] = c.min(max_pos) as u32;
                    mask[i * l + j] = 1.0;
                }
            }
        }
        Ok(Self {
            pos,
            mask: Tensor::from_vec(mask, (b, l, 1), device)?.to_dtype(dtype)?,
            valid: rows
                .iter()
                .map(|r| r.iter().map(|&v| v != 0).collect())
                .collect(),
            host_ids: rows.to_vec(),
        })
    }

    pub fn batch(&self) -> usize {
        self.valid.len()
    }

    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The item ids and positions of the rows packed by `rows` (`[n]` u32 each, on `device`):
    /// what a model's embedding looks up for its packed stream.
    pub fn packed_ids(&self, rows: &Packing, device: &Device) -> Result<(Tensor, Tensor)> {
        let n = rows.rows();
        let ids = rows.pack_host(&self.host_ids.concat());
        let pos = rows.pack_host(&self.pos);
        Ok((
            Tensor::from_vec(ids, n, device)?,
            Tensor::from_vec(pos, n, device)?,
        ))
    }
}

/// A batch for a cross-domain sequence model: the merged stream x, the per-domain streams a
/// and b (timeline-aligned at training, per-domain subsequences at evaluation), and which
/// positions have a target in each domain.
pub struct SeqBatch {
    pub x: StreamInput,
    pub a: StreamInput,
    pub b: StreamInput,
    /// `[b, l, 1]` per domain: 1.0 where the position's target (the item to predict) lies in
    /// that domain. At evaluation every position of a sample carries its target's domain.
    pub target_domain: [Tensor; 2],
    /// Host copy of `target_domain`: per domain, the flat indices `b * l + t` of the positions
    /// whose target lies in it, ascending.
    pub target_rows: [Vec<u32>; 2],
}

impl SeqBatch {
    /// `target_domain[b][t]`: Some(0 | 1) where position t of sample b has a target.
    pub fn new(
        x: &[Vec<u32>],
        a: &[Vec<u32>],
        b: &[Vec<u32>],
        target_domain: &[Vec<Option<usize>>],
        max_pos: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bsz = x.len();
        let l = x.first().map_or(0, |r| r.len());
        let mut td = [vec![0f32; bsz * l], vec![0f32; bsz * l]];
        let mut target_rows = [Vec::new(), Vec::new()];
        for (i, r) in target_domain.iter().enumerate() {
            for (j, d) in r.iter().enumerate() {
                if let Some(d) = d {
                    td[*d][i * l + j] = 1.0;
                    target_rows[*d].push((i * l + j) as u32);
                }
            }
        }
        let [ta, tb] = td;
        Ok(Self {
            x: StreamInput::new(x, max_pos, dtype, device)?,
            a: StreamInput::new(a, max_pos, dtype, device)?,
            b: StreamInput::new(b, max_pos, dtype, device)?,
            target_domain: [
                Tensor::from_vec(ta, (bsz, l, 1), device)?.to_dtype(dtype)?,
                Tensor::from_vec(tb, (bsz, l, 1), device)?.to_dtype(dtype)?,
            ],
            target_rows,
        })
    }
}

impl SeqBatch {
    /// Per domain, the positions with a target there (only those at the last position when
    /// `last_only`: evaluation scores it alone).
    pub fn target_packings(&self, last_only: bool) -> Result<[Packing; 2]> {
        let (bsz, l) = (self.x.batch(), self.x.len());
        let rows = |d: usize| -> Result<Packing> {
            let all = self.target_rows[d].iter().copied();
            let rows = if last_only {
                all.filter(|r| r % l as u32 == l as u32 - 1).collect()
            } else {
                all.collect()
            };
            Packing::of_rows(bsz, l, rows)
        };
        Ok([rows(0)?, rows(1)?])
    }

    /// The model's output `[b, l, w]` (`[b, 1, w]` when `last_only`) from each domain's rows
    /// (`rows[d]`, packed by `targets[d]` of [`SeqBatch::target_packings`]): zero at the
    /// positions without a target.
    pub fn place_targets(
        &self,
        rows: [Tensor; 2],
        targets: &[Packing; 2],
        last_only: bool,
    ) -> Result<Tensor> {
        let (bsz, l) = (self.x.batch(), self.x.len());
        let joined = Tensor::cat(&rows, 0)?;
        let per_row = if last_only { l } else { 1 };
        let mut index = vec![NO_ROW; bsz * l / per_row];
        let placed = targets.iter().flat_map(|p| p.flat_rows());
        for (i, &flat) in placed.enumerate() {
            index[flat as usize / per_row] = i as u32;
        }
        let w = joined.dim(1)?;
        gather_rows(&joined, &index.into())?.reshape((bsz, l / per_row, w))
    }
}
