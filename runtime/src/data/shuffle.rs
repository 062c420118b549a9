//! Seeded randomness over datasets: keyed ChaCha8 streams, splits and epoch orders.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{DataError, Dataset};

/// RNG purposes, so different uses of one seed draw independent streams.
pub(crate) const PURPOSE_SYNTHETIC: u64 = 1;
pub(crate) const PURPOSE_SPLIT: u64 = 2;
pub(crate) const PURPOSE_EPOCH: u64 = 3;
pub(crate) const PURPOSE_INIT: u64 = 4;

/// A ChaCha8 generator keyed by `(seed, purpose, index)`: distinct keys give independent streams.
pub(crate) fn keyed_rng(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&purpose.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A uniform draw from `[0, 1)` with 53 random bits.
pub(crate) fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw from `0..n` (Lemire's multiply-shift; bias below 2^-64 * n, irrelevant here).
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// Shuffles `items` in place (Fisher-Yates).
fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

/// Splits `dataset` into (train, validation) at random: `round(len * val_fraction)` examples go to
/// validation. Deterministic for a seed; not stratified. Each part keeps the original row order.
pub fn split(
    dataset: &Dataset,
    val_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::Request(format!(
            "validation fraction {val_fraction} must be in [0, 1)"
        )));
    }
    let n = dataset.len();
    let n_val = ((n as f64) * val_fraction).round() as usize;
    if n_val >= n {
        return Err(DataError::Request(format!(
            "validation fraction {val_fraction} leaves no training examples out of {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut keyed_rng(seed, PURPOSE_SPLIT, 0));
    let (val, train) = order.split_at_mut(n_val);
    val.sort_unstable();
    train.sort_unstable();
    let name = dataset.name();
    Ok((
        dataset.subset(train, format!("{name}/train")),
        dataset.subset(val, format!("{name}/val")),
    ))
}

/// The order in which epoch `epoch` visits `len` examples: a pure function of `(seed, epoch)`.
pub fn epoch_permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    shuffle(&mut order, &mut keyed_rng(seed, PURPOSE_EPOCH, epoch));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows whose single feature is the row index, so subsets can be traced back.
    fn indexed(n: usize) -> Dataset {
        let features = (0..n).map(|i| i as f32).collect();
        let labels = (0..n).map(|i| (i % 3) as u32).collect();
        Dataset::new("indexed", features, labels, 1, 3, None).unwrap()
    }

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let ds = indexed(101);
        let (train, val) = split(&ds, 0.2, 7).unwrap();
        assert_eq!((train.len(), val.len()), (81, 20));
        assert_eq!(train.name(), "indexed/train");
        let mut all: Vec<f32> = train
            .features()
            .iter()
            .chain(val.features())
            .copied()
            .collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, ds.features(), "every row lands in exactly one part");
        for (x, &y) in train.features().iter().zip(train.labels()) {
            assert_eq!(y, (*x as u32) % 3, "labels travel with their rows");
        }
        let (train2, val2) = split(&ds, 0.2, 7).unwrap();
        assert_eq!(
            (train2.features(), val2.features()),
            (train.features(), val.features())
        );
        let (_, val3) = split(&ds, 0.2, 8).unwrap();
        assert_ne!(
            val3.features(),
            val.features(),
            "another seed, another split"
        );
        assert_eq!(split(&ds, 0.0, 1).unwrap().1.len(), 0);
        assert!(split(&ds, 1.0, 1).is_err());
        assert!(split(&indexed(1), 0.9, 1).is_err());
    }

    #[test]
    fn epoch_permutation_is_a_pure_function_of_seed_and_epoch() {
        let a = epoch_permutation(1000, 42, 3);
        assert_eq!(a, epoch_permutation(1000, 42, 3));
        assert_ne!(a, epoch_permutation(1000, 42, 4));
        assert_ne!(a, epoch_permutation(1000, 43, 3));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Pinned: if this changes, checkpoints of older builds no longer resume identically.
        assert_eq!(epoch_permutation(10, 1, 0), [2, 4, 8, 1, 3, 7, 6, 9, 0, 5]);
    }
}
