//! Where tensors live: `cpu`, or `cuda[:N]` in builds with the `cuda` feature.

use candle_core::Device;

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
}

/// Parses `cpu`, `cuda` or `cuda:N`. Asking for CUDA in a build without it is an error that
/// says how to get a build with it.
pub fn parse(s: &str) -> Result<DeviceSpec, String> {
    let spec = match s {
        "cpu" => DeviceSpec::Cpu,
        "cuda" => DeviceSpec::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => DeviceSpec::Cuda(n),
            _ => {
                return Err(format!(
                    "'{s}' is not a device: expected cpu, cuda or cuda:N"
                ));
            }
        },
    };
    if matches!(spec, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
        return Err(format!(
            "'{s}' needs CUDA, but this trainrt was built without it; rebuild with \
             `cargo build --release -p trainrt --features cuda` (needs the CUDA toolkit), or use --device cpu"
        ));
    }
    Ok(spec)
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s)
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Opens the device.
pub fn open(spec: DeviceSpec) -> candle_core::Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => Device::new_cuda(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(parse("cpu"), Ok(DeviceSpec::Cpu));
        assert!(
            parse("gpu")
                .unwrap_err()
                .contains("expected cpu, cuda or cuda:N")
        );
        assert!(parse("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse("cuda:1").unwrap_err().contains("--features cuda"));
        #[cfg(feature = "cuda")]
        assert_eq!(parse("cuda:1"), Ok(DeviceSpec::Cuda(1)));
    }
}
