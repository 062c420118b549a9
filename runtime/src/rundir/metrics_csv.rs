//! `metrics.csv`: the epoch metrics in the layout of Keras' `CSVLogger`, for spreadsheets and
//! pandas: a header row `epoch,<the other columns, sorted>`, then one row per epoch.
//!
//! `metrics.jsonl` stays the record; this file is derived from it. A column that first appears in
//! a later epoch (a callback's custom metric) rewrites the file with the column added (earlier
//! rows leave it empty), atomically, instead of failing as Keras does. A resumed run rebuilds the
//! file from `metrics.jsonl` when it opens, so the two always agree.

use std::path::Path;

use serde_json::{Map, Value};

use super::{AppendFile, RunDirError, atomic_write, read_json_lines};

/// The run's `metrics.csv`, appended an epoch at a time.
#[derive(Debug)]
pub struct MetricsCsv {
    /// `epoch` first, then the other columns in sorted order.
    columns: Vec<String>,
    /// Every row so far, kept to rewrite the file when a column is added (epochs x metrics:
    /// kilobytes).
    rows: Vec<Map<String, Value>>,
    file: AppendFile,
}

impl MetricsCsv {
    /// Writes `path` afresh from the lines of `jsonl` (missing: none yet), then opens it for
    /// appending.
    pub fn open(path: &Path, jsonl: &Path) -> Result<Self, RunDirError> {
        let rows: Vec<Map<String, Value>> = if jsonl.exists() {
            read_json_lines(jsonl)?
        } else {
            Vec::new()
        };
        let mut columns = Vec::new();
        for row in &rows {
            add_columns(&mut columns, row);
        }
        write_all(path, &columns, &rows)?;
        Ok(Self {
            columns,
            rows,
            file: AppendFile::open(path, false)?,
        })
    }

    /// Appends an epoch's metrics line; a new column rewrites the file with it.
    pub fn append(&mut self, line: &Value) -> Result<(), RunDirError> {
        let row = line.as_object().cloned().unwrap_or_default();
        let known = self.columns.len();
        add_columns(&mut self.columns, &row);
        self.rows.push(row);
        if self.columns.len() != known {
            self.file.flush()?;
            let path = self.file.path().to_path_buf();
            write_all(&path, &self.columns, &self.rows)?;
            self.file = AppendFile::open(&path, false)?;
            return Ok(());
        }
        let text = format_row(&self.columns, self.rows.last().expect("just pushed"));
        self.file.write(text.as_bytes())
    }

    /// Hands buffered rows to the operating system.
    pub fn flush(&mut self) -> Result<(), RunDirError> {
        self.file.flush()
    }

    /// Flushes and waits until the rows are on disk.
    pub fn sync(&mut self) -> Result<(), RunDirError> {
        self.file.sync()
    }
}

/// Adds the keys of `row` missing from `columns`, keeping `epoch` first and the rest sorted.
fn add_columns(columns: &mut Vec<String>, row: &Map<String, Value>) {
    let mut added = false;
    for key in row.keys() {
        if !columns.contains(key) {
            columns.push(key.clone());
            added = true;
        }
    }
    if added {
        columns.sort_by(|a, b| (a != "epoch", a).cmp(&(b != "epoch", b)));
    }
}

/// The whole file: the header, then every row.
fn write_all(
    path: &Path,
    columns: &[String],
    rows: &[Map<String, Value>],
) -> Result<(), RunDirError> {
    let mut text = String::new();
    if !columns.is_empty() {
        text.push_str(
            &columns
                .iter()
                .map(|c| quoted(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        text.push('\n');
    }
    for row in rows {
        text.push_str(&format_row(columns, row));
    }
    atomic_write(path, text.as_bytes())
}

/// One row, newline included: numbers as JSON writes them (shortest round-trip), the non-finite
/// ones as Python spells them (`nan`, `inf`, `-inf`, which `float()` and pandas read), a missing
/// value as an empty cell.
fn format_row(columns: &[String], row: &Map<String, Value>) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|c| match row.get(c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => match s.as_str() {
                "NaN" => "nan".into(),
                "inf" | "-inf" => s.clone(),
                other => quoted(other),
            },
            Some(other) => quoted(&other.to_string()),
        })
        .collect();
    let mut line = cells.join(",");
    line.push('\n');
    line
}

/// A cell as CSV needs it: quoted (with quotes doubled) when it holds a comma, quote or newline.
fn quoted(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keras_layout_with_late_columns_and_non_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let (csv, jsonl) = (
            dir.path().join("metrics.csv"),
            dir.path().join("metrics.jsonl"),
        );
        let mut m = MetricsCsv::open(&csv, &jsonl).unwrap();
        m.append(&json!({"epoch": 0, "step": 10, "loss": 0.5, "val_loss": "NaN"}))
            .unwrap();
        m.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "epoch,loss,step,val_loss\n0,0.5,10,nan\n"
        );
        // A custom metric from epoch 1 on: the file is rewritten with its column.
        m.append(&json!({"epoch": 1, "step": 20, "loss": 0.25, "val_loss": 1.0, "wait": 1.0}))
            .unwrap();
        m.append(&json!({"epoch": 2, "step": 30, "loss": "inf", "val_loss": 0.75, "wait": 2.0}))
            .unwrap();
        m.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "epoch,loss,step,val_loss,wait\n0,0.5,10,nan,\n1,0.25,20,1.0,1.0\n2,inf,30,0.75,2.0\n"
        );
    }

    #[test]
    fn reopening_rebuilds_the_file_from_metrics_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let (csv, jsonl) = (
            dir.path().join("metrics.csv"),
            dir.path().join("metrics.jsonl"),
        );
        std::fs::write(
            &jsonl,
            "{\"epoch\":0,\"loss\":0.5}\n{\"epoch\":1,\"loss\":0.25}\n",
        )
        .unwrap();
        std::fs::write(&csv, "stale\n").unwrap();
        let mut m = MetricsCsv::open(&csv, &jsonl).unwrap();
        m.append(&json!({"epoch": 2, "loss": 0.125})).unwrap();
        m.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "epoch,loss\n0,0.5\n1,0.25\n2,0.125\n"
        );
    }

    #[test]
    fn cells_with_commas_or_quotes_are_quoted() {
        assert_eq!(quoted("a,b"), "\"a,b\"");
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quoted("plain"), "plain");
    }
}
