//! Synthetic Gaussian blobs, sized for scale tests (e.g. 60000 x 784).

use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use super::shuffle::{PURPOSE_SYNTHETIC, keyed_rng, unit_f64};
use super::{DataError, Dataset, ImageShape};

/// Largest `samples * features` a synthetic dataset may have (4 GiB of f32).
const MAX_SYNTHETIC_ELEMENTS: usize = 1 << 30;

/// Parameters of a synthetic Gaussian-blob dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSpec {
    /// Number of examples (default 1000).
    pub samples: usize,
    /// Features per example (default 16).
    pub features: usize,
    /// Number of classes (default 4).
    pub classes: usize,
    /// Seed of the generator (default 0).
    pub seed: u64,
    /// Standard deviation of the noise around each class centre (default 1.0).
    pub noise: f32,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            samples: 1000,
            features: 16,
            classes: 4,
            seed: 0,
            noise: 1.0,
        }
    }
}

pub(super) fn parse_options(
    opts: &str,
    err: &impl Fn(String) -> DataError,
) -> Result<SyntheticSpec, DataError> {
    let mut spec = SyntheticSpec::default();
    for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| err(format!("`{kv}` is not key=value")))?;
        let bad = |_: std::num::ParseIntError| err(format!("`{v}` is not a valid value for {k}"));
        let bad_float =
            |_: std::num::ParseFloatError| err(format!("`{v}` is not a valid value for {k}"));
        match k {
            "samples" => spec.samples = v.parse().map_err(bad)?,
            "features" => spec.features = v.parse().map_err(bad)?,
            "classes" => spec.classes = v.parse().map_err(bad)?,
            "seed" => spec.seed = v.parse().map_err(bad)?,
            "noise" => spec.noise = v.parse().map_err(bad_float)?,
            _ => {
                return Err(err(format!(
                    "unknown key `{k}`; known: samples, features, classes, seed, noise"
                )));
            }
        }
    }
    if spec.samples == 0 || spec.features == 0 || spec.classes < 2 {
        return Err(err(
            "needs samples >= 1, features >= 1 and classes >= 2".into()
        ));
    }
    if !(spec.noise.is_finite() && spec.noise >= 0.0) {
        return Err(err("noise must be a finite number >= 0".into()));
    }
    if spec
        .samples
        .checked_mul(spec.features)
        .is_none_or(|n| n > MAX_SYNTHETIC_ELEMENTS)
    {
        return Err(err(format!(
            "samples x features must be at most {MAX_SYNTHETIC_ELEMENTS}"
        )));
    }
    Ok(spec)
}

/// An approximately standard-normal draw: the scaled sum of four 16-bit uniforms. Pure
/// arithmetic, so bitwise identical on every platform (unlike `ln`/`cos` from the system libm).
fn approx_normal(rng: &mut ChaCha8Rng) -> f32 {
    let r = rng.next_u64();
    let sum: u32 = (0..4).map(|i| ((r >> (16 * i)) & 0xffff) as u32).sum();
    // Each uniform has variance 1/12, so the sum of four has 1/3; scale by sqrt(3).
    (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
}

pub(super) fn generate(spec: &SyntheticSpec) -> Dataset {
    let (n, f, c) = (spec.samples, spec.features, spec.classes);
    let mut rng = keyed_rng(spec.seed, PURPOSE_SYNTHETIC, 0);
    // Centres uniform in [-r, r]^F with r = 8/sqrt(F) are on average 8*sqrt(2/3) ~ 6.5 noise
    // standard deviations apart whatever F is, so difficulty depends on `noise`, not on F.
    let r = 8.0 / (f as f64).sqrt();
    let centres: Vec<f32> = (0..c * f)
        .map(|_| ((unit_f64(&mut rng) * 2.0 - 1.0) * r) as f32)
        .collect();
    let mut features = Vec::with_capacity(n * f);
    let mut labels = Vec::with_capacity(n);
    for row in 0..n {
        let class = row % c;
        labels.push(class as u32);
        let centre = &centres[class * f..(class + 1) * f];
        features.extend(
            centre
                .iter()
                .map(|&m| m + spec.noise * approx_normal(&mut rng)),
        );
    }
    let side = (f as f64).sqrt().round() as usize;
    let image = (side * side == f).then_some(ImageShape {
        channels: 1,
        height: side,
        width: side,
    });
    Dataset {
        name: "synthetic".into(),
        features,
        labels,
        num_features: f,
        num_classes: c,
        image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_deterministic_for_a_seed() {
        let spec = SyntheticSpec {
            samples: 200,
            features: 5,
            classes: 3,
            seed: 9,
            noise: 1.0,
        };
        let a = generate(&spec);
        let b = generate(&spec);
        assert_eq!(a.features(), b.features());
        assert_eq!(a.labels(), b.labels());
        let c = generate(&SyntheticSpec { seed: 10, ..spec });
        assert_ne!(a.features(), c.features());
        assert_eq!(
            (a.len(), a.num_features(), a.num_classes(), a.image_shape()),
            (200, 5, 3, None)
        );
    }

    #[test]
    fn synthetic_classes_are_separable_and_square_features_are_images() {
        let spec = SyntheticSpec {
            samples: 300,
            features: 16,
            classes: 3,
            seed: 1,
            noise: 1.0,
        };
        let ds = generate(&spec);
        assert_eq!(
            ds.image_shape(),
            Some(ImageShape {
                channels: 1,
                height: 4,
                width: 4
            })
        );
        // Nearest class mean classifies most examples: the data are learnable.
        let f = ds.num_features();
        let mut means = vec![0f32; 3 * f];
        for (row, &y) in ds.features().chunks(f).zip(ds.labels()) {
            for (m, v) in means[y as usize * f..][..f].iter_mut().zip(row) {
                *m += v / 100.0;
            }
        }
        let nearest = |row: &[f32]| {
            (0..3)
                .min_by(|&a: &usize, &b: &usize| {
                    let d = |c: usize| {
                        row.iter()
                            .zip(&means[c * f..][..f])
                            .map(|(x, m)| (x - m).powi(2))
                            .sum::<f32>()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap()
        };
        let correct = ds
            .features()
            .chunks(f)
            .zip(ds.labels())
            .filter(|(r, y)| nearest(r) == **y as usize)
            .count();
        assert!(correct > 270, "{correct}/300");
        let wide = SyntheticSpec {
            samples: 2,
            features: 784,
            classes: 2,
            seed: 0,
            noise: 1.0,
        };
        assert_eq!(
            generate(&wide).image_shape(),
            Some(ImageShape {
                channels: 1,
                height: 28,
                width: 28
            })
        );
    }
}
