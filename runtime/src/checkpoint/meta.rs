//! Checkpoint metadata, stored as JSON in the safetensors header.

use serde::{Deserialize, Serialize};

/// Opaque state of one callback; stored in the metadata JSON as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackState {
    /// The callback's name.
    pub name: String,
    /// The state bytes.
    #[serde(with = "hex_bytes")]
    pub state: Vec<u8>,
}

/// Serde adapter: bytes as a lowercase hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let hex = String::deserialize(d)?;
        if hex.len() % 2 != 0 {
            return Err(D::Error::custom("callback state hex has an odd length"));
        }
        hex.as_bytes()
            .chunks(2)
            .map(|pair| {
                let digit = |c: u8| {
                    (c as char)
                        .to_digit(16)
                        .ok_or_else(|| D::Error::custom("callback state is not hex"))
                };
                Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
            })
            .collect()
    }
}

/// What a checkpoint records besides tensors. Resume at epoch `epoch`, skipping its first
/// `step - epoch * steps_per_epoch` batches.
///
/// The checkpoint's tag is not here: it is the file's name (`<tag>.safetensors`), so the same
/// state saved under two tags in one epoch (`best` and `last`) is the same bytes, which the
/// writer stores once. Files that still carry a `tag` field load as before; it is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format of the file; [`save`] always writes [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Epochs completed, which is also the 0-based index of the epoch in progress.
    pub epoch: u32,
    /// Optimizer steps completed since the start of the run.
    pub step: u64,
    /// The learning rate in effect for the next step.
    pub lr: f64,
    /// The model, as [`crate::model::Model::describe`] gives it.
    pub model: String,
    /// The optimizer spec, as its `Display` gives it.
    pub optimizer: String,
    /// The run's seed.
    pub seed: u64,
    /// Each callback's saved state.
    #[serde(default)]
    pub callback_states: Vec<CallbackState>,
    /// Anything else the trainer wants to keep (free-form JSON).
    #[serde(default)]
    pub extra: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_state_is_hex_in_json_and_round_trips() {
        let state = CallbackState {
            name: "cb".into(),
            state: vec![0, 1, 0xab, 0xff],
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, r#"{"name":"cb","state":"0001abff"}"#);
        assert_eq!(serde_json::from_str::<CallbackState>(&json).unwrap(), state);
        for bad in [
            r#"{"name":"cb","state":"abc"}"#,
            r#"{"name":"cb","state":"zz"}"#,
        ] {
            assert!(serde_json::from_str::<CallbackState>(bad).is_err(), "{bad}");
        }
    }
}
