//! Datasets on a candle device, and the batches of an epoch.

use candle_core::{Device, Tensor};

use super::{DataError, Dataset, ImageShape};

/// A dataset uploaded to a device once, so a batch is one on-device gather.
#[derive(Debug, Clone)]
pub struct DeviceData {
    x: Tensor,
    y: Tensor,
    image: Option<ImageShape>,
    len: usize,
}

impl DeviceData {
    /// Copies `dataset` to `device` as x `[N, F]` f32 and y `[N]` u32.
    pub fn new(dataset: &Dataset, device: &Device) -> Result<Self, DataError> {
        let n = dataset.len();
        if u32::try_from(n).is_err() {
            return Err(DataError::Request(format!(
                "{n} examples are more than a u32 index can address"
            )));
        }
        let x = Tensor::from_slice(dataset.features(), (n, dataset.num_features()), device)?;
        let y = Tensor::from_slice(dataset.labels(), n, device)?;
        Ok(Self {
            x,
            y,
            image: dataset.image_shape(),
            len: n,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The examples at `indices`: x `[B, F]` (or `[B, C, H, W]` for images) and y u32 `[B]`.
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor), DataError> {
        let idx = indices
            .iter()
            .map(|&i| match u32::try_from(i) {
                Ok(v) if i < self.len => Ok(v),
                _ => Err(DataError::Request(format!(
                    "example index {i} is out of range 0..{}",
                    self.len
                ))),
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let idx = Tensor::from_vec(idx, indices.len(), self.x.device())?;
        let x = self.x.index_select(&idx, 0)?;
        Ok((self.shaped(x)?, self.y.index_select(&idx, 0)?))
    }

    /// The `len` examples starting at `start`, in order (no gather: for evaluation).
    pub fn range(&self, start: usize, len: usize) -> Result<(Tensor, Tensor), DataError> {
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(DataError::Request(format!(
                "examples {start}..+{len} are out of range 0..{}",
                self.len
            )));
        }
        Ok((
            self.shaped(self.x.narrow(0, start, len)?)?,
            self.y.narrow(0, start, len)?,
        ))
    }

    fn shaped(&self, x: Tensor) -> Result<Tensor, DataError> {
        Ok(match self.image {
            Some(s) => x.reshape((x.dim(0)?, s.channels, s.height, s.width))?,
            None => x,
        })
    }

    /// Batches of `batch_size` in `order` (e.g. an [`epoch_permutation`]); the last may be smaller.
    pub fn batches<'a>(
        &'a self,
        order: &'a [usize],
        batch_size: usize,
    ) -> Result<Batches<'a>, DataError> {
        if batch_size == 0 {
            return Err(DataError::Request("batch size must be at least 1".into()));
        }
        Ok(Batches {
            data: self,
            chunks: order.chunks(batch_size),
        })
    }
}

/// Iterator over the batches of one epoch; see [`DeviceData::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a DeviceData,
    chunks: std::slice::Chunks<'a, usize>,
}

impl Iterator for Batches<'_> {
    type Item = Result<(Tensor, Tensor), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.chunks.next().map(|indices| self.data.batch(indices))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, epoch_permutation};

    #[test]
    fn batches_cover_the_order_and_keep_the_last_partial_batch() {
        let ds: Dataset = "synthetic:samples=10,features=3,classes=2"
            .parse::<DataSpec>()
            .unwrap()
            .load()
            .unwrap();
        let data = DeviceData::new(&ds, &Device::Cpu).unwrap();
        let order = epoch_permutation(data.len(), 5, 0);
        let batches: Vec<_> = data
            .batches(&order, 4)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            batches
                .iter()
                .map(|(x, _)| x.dims().to_vec())
                .collect::<Vec<_>>(),
            [vec![4, 3], vec![4, 3], vec![2, 3]]
        );
        let (x, y) = &batches[2];
        let rows: Vec<Vec<f32>> = x.to_vec2().unwrap();
        for (k, &i) in order[8..].iter().enumerate() {
            assert_eq!(rows[k], ds.features()[i * 3..i * 3 + 3]);
            assert_eq!(y.to_vec1::<u32>().unwrap()[k], ds.labels()[i]);
        }
        assert!(data.batches(&order, 0).is_err());
        assert!(data.batch(&[10]).is_err());
    }

    #[test]
    fn image_data_comes_in_nchw_batches() {
        let ds = DataSpec::Digits.load().unwrap();
        let data = DeviceData::new(&ds, &Device::Cpu).unwrap();
        let (x, y) = data.batch(&[0, 5, 9]).unwrap();
        assert_eq!((x.dims(), y.dims()), (&[3, 1, 8, 8][..], &[3][..]));
        let (x, _) = data.range(1790, 7).unwrap();
        assert_eq!(x.dims(), &[7, 1, 8, 8]);
        assert!(data.range(1790, 8).is_err());
    }
}
