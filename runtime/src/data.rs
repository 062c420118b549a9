//! Datasets: loading (`digits`, `csv:PATH`, `synthetic:...`), seeded train/validation splits,
//! and epoch batches on a candle device.
//!
//! All randomness comes from [`ChaCha8Rng`], whose output is value-stable across versions and
//! platforms, and every draw is hand-written integer/float arithmetic rather than a `rand`
//! distribution (whose algorithms may change between releases). A seed therefore names the same
//! synthetic data, split and batch order everywhere, and the batch order of an epoch is a pure
//! function of `(seed, epoch)`, so a resumed run sees exactly the batches an uninterrupted one would.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

mod csv;
mod device;
mod shuffle;
mod synthetic;

pub use device::{Batches, DeviceData};
pub(crate) use shuffle::{PURPOSE_INIT, keyed_rng, unit_f64};
pub use shuffle::{epoch_permutation, split};
pub use synthetic::SyntheticSpec;

/// Errors loading, splitting or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A `--data` spec could not be parsed.
    #[error("invalid data spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A data file could not be read.
    #[error("cannot read data file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a CSV file is malformed.
    #[error("{file}:{line}: {reason}")]
    Parse {
        /// The file, as shown to the user.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A CSV file has no data rows.
    #[error("{file}: no data rows")]
    Empty {
        /// The file, as shown to the user.
        file: String,
    },
    /// Parts of a dataset disagree with each other (sizes, labels, image shape).
    #[error("invalid dataset: {0}")]
    Invalid(String),
    /// A split or batch request cannot be satisfied.
    #[error("{0}")]
    Request(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The shape of one example as an image, for convolutional models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// Channels.
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageShape {
    /// Number of values in one image.
    pub fn elem_count(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// What a model needs to know about its data: input size, class count, image shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetShape {
    /// Features per example.
    pub features: usize,
    /// Number of classes; labels are `0..classes`.
    pub classes: usize,
    /// The image shape of an example, when it is one.
    pub image: Option<ImageShape>,
}

/// An in-memory classification dataset: row-major f32 features and u32 labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    name: String,
    features: Vec<f32>,
    labels: Vec<u32>,
    num_features: usize,
    num_classes: usize,
    image: Option<ImageShape>,
}

impl Dataset {
    /// Builds a dataset, checking that sizes, labels and image shape agree.
    pub fn new(
        name: impl Into<String>,
        features: Vec<f32>,
        labels: Vec<u32>,
        num_features: usize,
        num_classes: usize,
        image: Option<ImageShape>,
    ) -> Result<Self, DataError> {
        if num_features == 0 || num_classes == 0 {
            return Err(DataError::Invalid(
                "needs at least one feature and one class".into(),
            ));
        }
        if Some(features.len()) != labels.len().checked_mul(num_features) {
            return Err(DataError::Invalid(format!(
                "{} feature values do not make {} rows of {num_features}",
                features.len(),
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(DataError::Invalid(format!(
                "label {bad} is not below the class count {num_classes}"
            )));
        }
        if let Some(img) = image.filter(|img| img.elem_count() != num_features) {
            return Err(DataError::Invalid(format!(
                "image shape {img} does not hold {num_features} features"
            )));
        }
        Ok(Self {
            name: name.into(),
            features,
            labels,
            num_features,
            num_classes,
            image,
        })
    }

    /// A short name for logs, e.g. `digits` or `digits/train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per example.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The image shape of an example, if the data are images.
    pub fn image_shape(&self) -> Option<ImageShape> {
        self.image
    }

    /// Feature count, class count and image shape together.
    pub fn shape(&self) -> DatasetShape {
        DatasetShape {
            features: self.num_features,
            classes: self.num_classes,
            image: self.image,
        }
    }

    /// All features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The examples at `indices`, in that order, under a new name.
    fn subset(&self, indices: &[usize], name: String) -> Dataset {
        let f = self.num_features;
        let mut features = Vec::with_capacity(indices.len() * f);
        for &i in indices {
            features.extend_from_slice(&self.features[i * f..(i + 1) * f]);
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Dataset {
            name,
            features,
            labels,
            num_features: f,
            num_classes: self.num_classes,
            image: self.image,
        }
    }
}

/// Which column of a CSV file holds the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelColumn {
    /// The first column.
    First,
    /// The last column (the default).
    #[default]
    Last,
    /// A 0-based column index.
    Index(usize),
}

/// Where the data come from, as given to `--data`.
///
/// - `digits` (default): the embedded UCI digits set, 1797 8x8 images scaled to [0, 1], 10 classes.
/// - `csv:PATH[,label=first|last|N]`: numeric columns, one of them (default the last) an integer
///   label `0..K`; the class count is the largest label + 1. A first row with any non-numeric
///   field is a header. A `.gz` path is decompressed. Blank lines are skipped.
/// - `synthetic[:samples=N,features=F,classes=C,seed=S,noise=X]`: Gaussian blobs around class
///   centres drawn uniformly from [-8/sqrt(F), 8/sqrt(F)]^F, about 6.5 noise standard deviations
///   apart for any F (so `noise` alone sets the difficulty); example `i` has class `i % C`. When
///   `F` is a perfect square `s*s` the examples are also `1 x s x s` images, so `features=784`
///   mimics MNIST.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum DataSpec {
    /// The embedded UCI digits dataset.
    #[default]
    Digits,
    /// A CSV file.
    Csv {
        /// The file.
        path: PathBuf,
        /// Which column holds the label.
        label: LabelColumn,
    },
    /// Generated Gaussian blobs.
    Synthetic(SyntheticSpec),
}

impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        let err = |reason: String| DataError::Spec {
            spec: s.to_string(),
            reason,
        };
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match (kind, rest) {
            ("digits", None) => Ok(DataSpec::Digits),
            ("csv", Some(rest)) => {
                let option = rest
                    .rsplit_once(',')
                    .and_then(|(p, o)| Some((p, o.strip_prefix("label=")?)));
                let (path, label) = match option {
                    Some((path, value)) => (path, parse_label_column(value, &err)?),
                    None => (rest, LabelColumn::Last),
                };
                if path.is_empty() {
                    return Err(err("missing file path, expected csv:PATH".into()));
                }
                Ok(DataSpec::Csv {
                    path: PathBuf::from(path),
                    label,
                })
            }
            ("synthetic", rest) => {
                synthetic::parse_options(rest.unwrap_or(""), &err).map(DataSpec::Synthetic)
            }
            _ => Err(err(
                "expected `digits`, `csv:PATH[,label=first|last|N]` or \
                 `synthetic[:samples=N,features=F,classes=C,seed=S,noise=X]`"
                    .into(),
            )),
        }
    }
}

fn parse_label_column(
    v: &str,
    err: &impl Fn(String) -> DataError,
) -> Result<LabelColumn, DataError> {
    match v {
        "first" => Ok(LabelColumn::First),
        "last" => Ok(LabelColumn::Last),
        n => n.parse().map(LabelColumn::Index).map_err(|_| {
            err(format!(
                "label=`{n}` must be `first`, `last` or a 0-based column index"
            ))
        }),
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Digits => f.write_str("digits"),
            DataSpec::Csv { path, label } => {
                write!(f, "csv:{}", path.display())?;
                match label {
                    LabelColumn::Last => Ok(()),
                    LabelColumn::First => f.write_str(",label=first"),
                    LabelColumn::Index(i) => write!(f, ",label={i}"),
                }
            }
            DataSpec::Synthetic(s) => write!(
                f,
                "synthetic:samples={},features={},classes={},seed={},noise={:?}",
                s.samples, s.features, s.classes, s.seed, s.noise
            ),
        }
    }
}

impl DataSpec {
    /// Loads or generates the dataset.
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DataSpec::Digits => csv::load_digits(),
            DataSpec::Csv { path, label } => csv::load_csv(path, *label),
            DataSpec::Synthetic(spec) => Ok(synthetic::generate(spec)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_is_the_default_and_loads_1797_images_of_64_pixels() {
        let ds = DataSpec::default().load().unwrap();
        assert_eq!(
            (ds.len(), ds.num_features(), ds.num_classes()),
            (1797, 64, 10)
        );
        assert_eq!(
            ds.image_shape(),
            Some(ImageShape {
                channels: 1,
                height: 8,
                width: 8
            })
        );
        assert!(ds.features().iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(
            ds.features().contains(&1.0),
            "pixels of 16 scale to exactly 1"
        );
        for class in 0..10 {
            assert!(ds.labels().iter().filter(|&&l| l == class).count() > 150);
        }
    }

    #[test]
    fn specs_parse_and_display_round_trip() {
        for text in [
            "digits",
            "csv:data/x.csv",
            "csv:a,b.csv,label=first",
            "csv:x.csv,label=2",
        ] {
            let spec: DataSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        let spec: DataSpec = "synthetic:samples=60000,features=784,classes=10,seed=3"
            .parse()
            .unwrap();
        let DataSpec::Synthetic(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            (s.samples, s.features, s.classes, s.seed, s.noise),
            (60000, 784, 10, 3, 1.0)
        );
        assert_eq!(spec.to_string().parse::<DataSpec>().unwrap(), spec);
        assert_eq!(
            "synthetic".parse::<DataSpec>().unwrap(),
            DataSpec::Synthetic(SyntheticSpec::default())
        );
        for bad in [
            "mnist",
            "csv:",
            "digits:x",
            "csv:x.csv,label=middle",
            "synthetic:classes=1",
            "synthetic:size=3",
        ] {
            let err = bad.parse::<DataSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
