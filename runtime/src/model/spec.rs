//! Model specs (`--model`) and the parameter plan each one implies.

use std::fmt;
use std::str::FromStr;

use super::ModelError;
use crate::data::{DatasetShape, ImageShape};

/// Largest hidden width or channel count a spec may ask for.
const MAX_WIDTH: usize = 1 << 16;

/// Which network to train, as given to `--model`.
///
/// - `mlp` (default): one hidden layer of 128; `mlp:256,128` gives the hidden widths. ReLU between.
/// - `cnn`: for image data; `cnn:16,32` (the default) gives the channels of each 3x3 conv
///   (padding 1, ReLU, then 2x2 max-pool while both sides are >= 4), then one linear layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A multi-layer perceptron with these hidden widths.
    Mlp {
        /// Hidden layer widths, input side first.
        hidden: Vec<usize>,
    },
    /// A small convolutional network.
    Cnn {
        /// Output channels of each conv layer.
        channels: Vec<usize>,
    },
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Mlp { hidden: vec![128] }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        let err = |reason: String| ModelError::Spec {
            spec: s.to_string(),
            reason,
        };
        let (kind, widths) = match s.split_once(':') {
            Some((kind, list)) => {
                let widths = list
                    .split(',')
                    .map(|w| {
                        w.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|&w| (1..=MAX_WIDTH).contains(&w))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        err(format!(
                            "`{list}` must be comma-separated widths in 1..={MAX_WIDTH}"
                        ))
                    })?;
                (kind, Some(widths))
            }
            None => (s, None),
        };
        match kind {
            "mlp" => Ok(ModelSpec::Mlp {
                hidden: widths.unwrap_or_else(|| vec![128]),
            }),
            "cnn" => match widths {
                Some(w) if w.len() > 4 => Err(err("a cnn has at most 4 conv layers".into())),
                w => Ok(ModelSpec::Cnn {
                    channels: w.unwrap_or_else(|| vec![16, 32]),
                }),
            },
            _ => Err(err(
                "expected `mlp`, `mlp:W1,W2,...`, `cnn` or `cnn:C1,C2,...`".into(),
            )),
        }
    }
}

/// The spec as a user would write it: the widths only where they differ from the default
/// (`mlp`, `mlp:256,128`), so it parses back to the same spec.
impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, widths, default): (&str, &[usize], &[usize]) = match self {
            ModelSpec::Mlp { hidden } => ("mlp", hidden, &[128]),
            ModelSpec::Cnn { channels } => ("cnn", channels, &[16, 32]),
        };
        f.write_str(kind)?;
        if widths != default {
            let list: Vec<String> = widths.iter().map(usize::to_string).collect();
            write!(f, ":{}", list.join(","))?;
        }
        Ok(())
    }
}

/// One parameter to create: its name, shape and PyTorch fan-in.
pub(super) struct ParamPlan {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    pub(super) fan_in: usize,
}

/// Parameter shapes in creation order, and the model's description.
pub(super) fn plan(
    spec: &ModelSpec,
    shape: &DatasetShape,
) -> Result<(Vec<ParamPlan>, String), ModelError> {
    let mut params = Vec::new();
    let linear = |params: &mut Vec<ParamPlan>, name: String, fan_in: usize, out: usize| {
        params.push(ParamPlan {
            name: format!("{name}.weight"),
            shape: vec![out, fan_in],
            fan_in,
        });
        params.push(ParamPlan {
            name: format!("{name}.bias"),
            shape: vec![out],
            fan_in,
        });
    };
    let description = match spec {
        ModelSpec::Mlp { hidden } => {
            let widths: Vec<usize> = std::iter::once(shape.features)
                .chain(hidden.iter().copied())
                .collect();
            for (i, pair) in widths.windows(2).enumerate() {
                linear(&mut params, format!("fc{i}"), pair[0], pair[1]);
            }
            linear(
                &mut params,
                format!("fc{}", hidden.len()),
                widths[widths.len() - 1],
                shape.classes,
            );
            let all: Vec<String> = widths
                .iter()
                .chain([&shape.classes])
                .map(usize::to_string)
                .collect();
            format!("mlp({})", all.join("-"))
        }
        ModelSpec::Cnn { channels } => {
            let (image, stages) = cnn_stages(spec, shape, channels)?;
            let mut desc = format!("cnn({image}");
            let mut in_ch = image.channels;
            for (i, &(out, pool)) in stages.iter().enumerate() {
                let fan_in = in_ch * 9;
                params.push(ParamPlan {
                    name: format!("conv{i}.weight"),
                    shape: vec![out, in_ch, 3, 3],
                    fan_in,
                });
                params.push(ParamPlan {
                    name: format!("conv{i}.bias"),
                    shape: vec![out],
                    fan_in,
                });
                desc.push_str(&format!("-conv{out}{}", if pool { "-pool" } else { "" }));
                in_ch = out;
            }
            let (_, h, w) = cnn_output(image, &stages);
            linear(&mut params, "fc".into(), in_ch * h * w, shape.classes);
            format!("{desc}-{})", shape.classes)
        }
    };
    Ok((params, description))
}

/// For each conv layer: (output channels, whether a 2x2 max-pool follows).
pub(super) fn cnn_stages(
    spec: &ModelSpec,
    shape: &DatasetShape,
    channels: &[usize],
) -> Result<(ImageShape, Vec<(usize, bool)>), ModelError> {
    let image = shape.image.ok_or_else(|| ModelError::NoImageShape {
        model: spec.to_string(),
    })?;
    let (mut h, mut w) = (image.height, image.width);
    let stages = channels
        .iter()
        .map(|&c| {
            let pool = h >= 4 && w >= 4;
            if pool {
                (h, w) = (h / 2, w / 2);
            }
            (c, pool)
        })
        .collect();
    Ok((image, stages))
}

/// (channels, height, width) after all conv stages.
pub(super) fn cnn_output(image: ImageShape, stages: &[(usize, bool)]) -> (usize, usize, usize) {
    stages.iter().fold(
        (image.channels, image.height, image.width),
        |(_, h, w), &(c, pool)| {
            if pool { (c, h / 2, w / 2) } else { (c, h, w) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use candle_core::Device;

    fn digits_shape() -> DatasetShape {
        DatasetShape {
            features: 64,
            classes: 10,
            image: Some(ImageShape {
                channels: 1,
                height: 8,
                width: 8,
            }),
        }
    }
    #[test]
    fn specs_parse_and_describe_the_network() {
        assert_eq!("mlp".parse::<ModelSpec>().unwrap(), ModelSpec::default());
        assert_eq!(
            "mlp:256,128".parse::<ModelSpec>().unwrap(),
            ModelSpec::Mlp {
                hidden: vec![256, 128]
            }
        );
        assert_eq!(
            "cnn".parse::<ModelSpec>().unwrap(),
            ModelSpec::Cnn {
                channels: vec![16, 32]
            }
        );
        for bad in ["resnet", "mlp:", "mlp:0", "mlp:a", "cnn:1,2,3,4,5"] {
            assert!(
                bad.parse::<ModelSpec>()
                    .unwrap_err()
                    .to_string()
                    .contains(&format!("`{bad}`"))
            );
        }
        let model = Model::new(&ModelSpec::default(), digits_shape(), 0, &Device::Cpu).unwrap();
        assert_eq!(model.describe(), "mlp(64-128-10)");
        assert_eq!(model.parameter_count(), 64 * 128 + 128 + 128 * 10 + 10);
        let names: Vec<String> = model.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["fc0.bias", "fc0.weight", "fc1.bias", "fc1.weight"]);
        let deep = Model::new(
            &"mlp:32,16".parse().unwrap(),
            digits_shape(),
            0,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(deep.describe(), "mlp(64-32-16-10)");
    }
}
