//! CSV parsing, and the embedded digits dataset (itself a CSV file).

use std::io::Read;
use std::path::Path;

use super::{DataError, Dataset, ImageShape, LabelColumn};

/// The UCI digits data (CC BY 4.0, see `runtime/assets/README.md`), embedded in the binary.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../assets/digits.csv.gz");

pub(super) fn load_digits() -> Result<Dataset, DataError> {
    let file = "digits.csv.gz (embedded)";
    let text = gunzip(DIGITS_CSV_GZ).map_err(|e| DataError::Parse {
        file: file.into(),
        line: 1,
        reason: e,
    })?;
    let raw = parse_csv(file, &text, LabelColumn::Last)?;
    if raw.num_features != 64 {
        return Err(DataError::Invalid(format!(
            "{file} has {} features, expected 64",
            raw.num_features
        )));
    }
    let features = raw.features.iter().map(|v| v / 16.0).collect();
    let image = Some(ImageShape {
        channels: 1,
        height: 8,
        width: 8,
    });
    Dataset::new("digits", features, raw.labels, 64, raw.num_classes, image)
}

fn gunzip(bytes: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    Ok(text)
}

pub(super) fn load_csv(path: &Path, label: LabelColumn) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = path.display().to_string();
    let text = if path.extension().is_some_and(|e| e == "gz") {
        gunzip(&bytes).map_err(|reason| DataError::Parse {
            file: file.clone(),
            line: 1,
            reason,
        })?
    } else {
        String::from_utf8(bytes).map_err(|e| DataError::Parse {
            file: file.clone(),
            line: 1,
            reason: format!("not UTF-8 text: {e}"),
        })?
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let raw = parse_csv(&file, &text, label)?;
    Dataset::new(
        name,
        raw.features,
        raw.labels,
        raw.num_features,
        raw.num_classes,
        None,
    )
}

struct RawCsv {
    features: Vec<f32>,
    labels: Vec<u32>,
    num_features: usize,
    num_classes: usize,
}

/// Parses comma-separated numeric rows; `file` only names the source in errors.
fn parse_csv(file: &str, text: &str, label: LabelColumn) -> Result<RawCsv, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parse_err = |line: usize, reason: String| DataError::Parse {
        file: file.to_string(),
        line,
        reason,
    };
    let mut columns: Option<(usize, usize, usize)> = None; // (count, label index, defining line)
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (count, label_at, first_line) = match columns {
            Some(c) => c,
            None => {
                if fields.len() < 2 {
                    return Err(parse_err(
                        line_no,
                        "needs at least two columns (features and a label)".into(),
                    ));
                }
                let label_at = match label {
                    LabelColumn::First => 0,
                    LabelColumn::Last => fields.len() - 1,
                    LabelColumn::Index(n) if n < fields.len() => n,
                    LabelColumn::Index(n) => {
                        return Err(parse_err(
                            line_no,
                            format!(
                                "label column {n} does not exist in {} columns",
                                fields.len()
                            ),
                        ));
                    }
                };
                columns = Some((fields.len(), label_at, line_no));
                if fields.iter().any(|f| f.parse::<f32>().is_err()) {
                    continue; // A header row: the first row with a non-numeric field.
                }
                (fields.len(), label_at, line_no)
            }
        };
        if fields.len() != count {
            return Err(parse_err(
                line_no,
                format!(
                    "expected {count} fields (as on line {first_line}), found {}",
                    fields.len()
                ),
            ));
        }
        for (col, field) in fields.iter().enumerate() {
            let value: f32 = field.parse().map_err(|_| {
                parse_err(
                    line_no,
                    format!("column {}: `{field}` is not a number", col + 1),
                )
            })?;
            if !value.is_finite() {
                return Err(parse_err(
                    line_no,
                    format!("column {}: `{field}` is not finite", col + 1),
                ));
            }
            if col == label_at {
                if value < 0.0 || value.fract() != 0.0 || value >= u32::MAX as f32 {
                    return Err(parse_err(
                        line_no,
                        format!(
                            "column {}: label `{field}` is not a non-negative integer",
                            col + 1
                        ),
                    ));
                }
                labels.push(value as u32);
            } else {
                features.push(value);
            }
        }
    }
    let Some((count, _, _)) = columns.filter(|_| !labels.is_empty()) else {
        return Err(DataError::Empty {
            file: file.to_string(),
        });
    };
    let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Ok(RawCsv {
        features,
        labels,
        num_features: count - 1,
        num_classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataSpec;

    fn load(text: &str) -> Result<Dataset, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, text).unwrap();
        load_csv(&path, LabelColumn::Last)
    }

    fn error_text(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn csv_with_header_loads_and_the_label_column_is_chosen() {
        let ds = load("a,b,label\n1,2,0\n\n3.5,-4,2\n").unwrap();
        assert_eq!((ds.len(), ds.num_features(), ds.num_classes()), (2, 2, 3));
        assert_eq!(ds.features(), [1.0, 2.0, 3.5, -4.0]);
        assert_eq!(ds.labels(), [0, 2]);
        assert_eq!(ds.name(), "d");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("first.csv");
        std::fs::write(&path, "1,0.5,0.25\n0,1,1\n").unwrap();
        let spec: DataSpec = format!("csv:{},label=first", path.display())
            .parse()
            .unwrap();
        let ds = spec.load().unwrap();
        assert_eq!(
            (ds.features(), ds.labels()),
            (&[0.5, 0.25, 1.0, 1.0][..], &[1, 0][..])
        );
    }

    #[test]
    fn csv_errors_name_the_file_and_line() {
        let ragged = error_text("1,2,0\n3,4,1\n5,1\n");
        assert!(
            ragged.contains("d.csv:3: expected 3 fields (as on line 1), found 2"),
            "{ragged}"
        );
        let text = error_text("x,y\n1,0\n2,zero\n");
        assert!(
            text.contains("d.csv:3: column 2: `zero` is not a number"),
            "{text}"
        );
        let label = error_text("1,0\n1,1.5\n");
        assert!(
            label.contains("d.csv:2: column 2: label `1.5` is not a non-negative integer"),
            "{label}"
        );
        let nan = error_text("1,0\nNaN,1\n");
        assert!(
            nan.contains("d.csv:2: column 1: `NaN` is not finite"),
            "{nan}"
        );
        assert!(error_text("").ends_with("d.csv: no data rows"));
        assert!(error_text("a,b\n\n").ends_with("d.csv: no data rows"));
        let missing = load_csv(Path::new("/nonexistent/data.csv"), LabelColumn::Last)
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read data file /nonexistent/data.csv:"),
            "{missing}"
        );
    }
}
