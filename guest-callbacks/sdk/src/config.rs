//! A callback's `key=value` parameters, read with typed getters that explain bad values.

use std::fmt::Display;

/// One parameter as given, and whether the callback has read it.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    read: bool,
}

/// The parameters a callback was started with, e.g. `--callback early-stopping:patience=3`.
///
/// Each getter takes the key and the default used when the key is absent, and returns
/// `Err(message)` for a value of the wrong shape. Every key asked for becomes a *known*
/// parameter, so [`Config::finish`] can list them when it rejects a key nobody read.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<Entry>,
    /// Keys the callback asked for, in the order it asked.
    known: Vec<String>,
}

/// The message for a parameter whose value is not what the callback expects, e.g.
/// `parameter patience=abc: expected a non-negative integer`.
pub fn param_error(key: &str, value: impl Display, expected: &str) -> String {
    format!("parameter {key}={value}: expected {expected}")
}

impl Config {
    /// Builds a config from `(key, value)` pairs; a key given twice or an empty key is an error.
    pub fn from_entries(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (key, value) in pairs {
            if key.is_empty() {
                return Err(format!("parameter ={value}: the parameter name is empty"));
            }
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                return Err(format!(
                    "parameter {key} is given twice ({key}={} and {key}={value})",
                    first.value
                ));
            }
            entries.push(Entry {
                key,
                value,
                read: false,
            });
        }
        Ok(Config {
            entries,
            known: Vec::new(),
        })
    }

    /// Builds a config from string pairs, as tests do: `Config::from_pairs(&[("patience", "3")])`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, String> {
        Self::from_entries(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        )
    }

    /// Whether `key` was given at all (does not count as reading it).
    pub fn is_set(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// Marks `key` known and read, and returns its value if given.
    fn take(&mut self, key: &str) -> Option<String> {
        if !self.known.iter().any(|k| k == key) {
            self.known.push(key.to_string());
        }
        let entry = self.entries.iter_mut().find(|e| e.key == key)?;
        entry.read = true;
        Some(entry.value.clone())
    }

    /// Reads `key` with `parse`, which returns `None` for a bad value; `expected` describes a
    /// good one for the error message.
    fn parse<T>(
        &mut self,
        key: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, String> {
        match self.take(key) {
            None => Ok(default),
            Some(raw) => parse(raw.trim()).ok_or_else(|| param_error(key, &raw, expected)),
        }
    }

    /// A finite number, e.g. `min_delta=0.001` or `min_delta=1e-3`.
    pub fn f64(&mut self, key: &str, default: f64) -> Result<f64, String> {
        self.f64_where(key, default, "a finite number", |_| true)
    }

    /// A finite number that satisfies `valid`; `expected` describes such a number, e.g.
    /// `"a number between 0 and 1 (exclusive)"`.
    pub fn f64_where(
        &mut self,
        key: &str,
        default: f64,
        expected: &str,
        valid: impl Fn(f64) -> bool,
    ) -> Result<f64, String> {
        self.parse(key, default, expected, |s| {
            s.parse::<f64>().ok().filter(|v| v.is_finite() && valid(*v))
        })
    }

    /// An optional finite number: absent or `none` gives `None`, e.g. `baseline=0.5`.
    pub fn opt_f64(&mut self, key: &str) -> Result<Option<f64>, String> {
        self.parse(key, None, "a finite number or none", |s| {
            if s == "none" {
                return Some(None);
            }
            s.parse::<f64>().ok().filter(|v| v.is_finite()).map(Some)
        })
    }

    /// A non-negative integer that fits in 32 bits, e.g. `patience=3`.
    pub fn u32(&mut self, key: &str, default: u32) -> Result<u32, String> {
        self.u32_where(key, default, "a non-negative integer", |_| true)
    }

    /// A non-negative 32-bit integer that satisfies `valid`; `expected` describes such a number,
    /// e.g. `"a positive integer"`.
    pub fn u32_where(
        &mut self,
        key: &str,
        default: u32,
        expected: &str,
        valid: impl Fn(u32) -> bool,
    ) -> Result<u32, String> {
        self.parse(key, default, expected, |s| {
            s.parse::<u32>().ok().filter(|v| valid(*v))
        })
    }

    /// A non-negative integer that fits in 64 bits (step counts), e.g. `warmup=500`.
    pub fn u64(&mut self, key: &str, default: u64) -> Result<u64, String> {
        self.parse(key, default, "a non-negative integer", |s| s.parse().ok())
    }

    /// An optional positive 64-bit integer: absent or `none` gives `None`, e.g. `t_max=100`.
    pub fn opt_positive_u64(&mut self, key: &str) -> Result<Option<u64>, String> {
        self.parse(key, None, "a positive integer or none", |s| {
            if s == "none" {
                return Some(None);
            }
            s.parse::<u64>().ok().filter(|v| *v > 0).map(Some)
        })
    }

    /// `true` or `false` (also `1` or `0`), e.g. `restore_best=true`.
    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool, String> {
        self.parse(key, default, "true or false", |s| match s {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        })
    }

    /// A non-empty string, used as given, e.g. `monitor=val_accuracy`.
    pub fn str(&mut self, key: &str, default: &str) -> Result<String, String> {
        match self.take(key) {
            None => Ok(default.to_string()),
            Some(raw) if raw.is_empty() => Err(param_error(key, "", "a non-empty value")),
            Some(raw) => Ok(raw),
        }
    }

    /// One of `allowed`, e.g. `mode=max`; returns the matching element of `allowed`, so the
    /// result can be matched against string literals.
    pub fn choice<'a>(
        &mut self,
        key: &str,
        default: &'a str,
        allowed: &[&'a str],
    ) -> Result<&'a str, String> {
        let expected = format!("one of {}", allowed.join(", "));
        self.parse(key, default, &expected, |s| {
            allowed.iter().copied().find(|a| *a == s)
        })
    }

    /// Rejects parameters that no getter asked for, naming the known ones; call it after
    /// reading every parameter.
    pub fn finish(&self) -> Result<(), String> {
        let Some(unknown) = self.entries.iter().find(|e| !e.read) else {
            return Ok(());
        };
        if self.known.is_empty() {
            return Err(format!(
                "unknown parameter '{}'; this callback takes no parameters",
                unknown.key
            ));
        }
        Err(format!(
            "unknown parameter '{}'; known parameters: {}",
            unknown.key,
            self.known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_give_defaults() -> Result<(), String> {
        let mut c = Config::from_pairs(&[])?;
        assert_eq!(c.f64("min_delta", 0.5)?, 0.5);
        assert_eq!(c.u32("patience", 3)?, 3);
        assert_eq!(c.u64("warmup", 7)?, 7);
        assert!(c.bool("restore_best", true)?);
        assert_eq!(c.str("monitor", "val_loss")?, "val_loss");
        assert_eq!(c.choice("mode", "auto", &["auto", "min", "max"])?, "auto");
        assert_eq!(c.opt_f64("baseline")?, None);
        assert_eq!(c.opt_positive_u64("t_max")?, None);
        c.finish()
    }

    #[test]
    fn given_values_are_parsed() -> Result<(), String> {
        let mut c = Config::from_pairs(&[
            ("min_delta", "1e-3"),
            ("patience", " 4 "),
            ("restore_best", "1"),
            ("monitor", "val_accuracy"),
            ("mode", "max"),
            ("baseline", "0.25"),
            ("t_max", "none"),
        ])?;
        assert_eq!(c.f64("min_delta", 0.0)?, 0.001);
        assert_eq!(c.u32("patience", 0)?, 4);
        assert!(c.bool("restore_best", false)?);
        assert_eq!(c.str("monitor", "val_loss")?, "val_accuracy");
        assert_eq!(c.choice("mode", "auto", &["auto", "min", "max"])?, "max");
        assert_eq!(c.opt_f64("baseline")?, Some(0.25));
        assert_eq!(c.opt_positive_u64("t_max")?, None);
        c.finish()
    }

    #[test]
    fn bad_values_name_the_parameter_value_and_expectation() -> Result<(), String> {
        let mut c = Config::from_pairs(&[
            ("patience", "abc"),
            ("min_delta", "nan"),
            ("restore_best", "yes"),
            ("mode", "biggest"),
            ("every_n_epochs", "0"),
            ("factor", "1.5"),
            ("monitor", ""),
            ("t_max", "0"),
        ])?;
        let cases = [
            (
                c.u32("patience", 0).map(|_| ()),
                "parameter patience=abc: expected a non-negative integer",
            ),
            (
                c.f64("min_delta", 0.0).map(|_| ()),
                "parameter min_delta=nan: expected a finite number",
            ),
            (
                c.bool("restore_best", false).map(|_| ()),
                "parameter restore_best=yes: expected true or false",
            ),
            (
                c.choice("mode", "auto", &["auto", "min", "max"])
                    .map(|_| ()),
                "parameter mode=biggest: expected one of auto, min, max",
            ),
            (
                c.u32_where("every_n_epochs", 1, "a positive integer", |n| n > 0)
                    .map(|_| ()),
                "parameter every_n_epochs=0: expected a positive integer",
            ),
            (
                c.f64_where("factor", 0.1, "a number between 0 and 1 (exclusive)", |f| {
                    f > 0.0 && f < 1.0
                })
                .map(|_| ()),
                "parameter factor=1.5: expected a number between 0 and 1 (exclusive)",
            ),
            (
                c.str("monitor", "val_loss").map(|_| ()),
                "parameter monitor=: expected a non-empty value",
            ),
            (
                c.opt_positive_u64("t_max").map(|_| ()),
                "parameter t_max=0: expected a positive integer or none",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result, Err(message.to_string()));
        }
        Ok(())
    }

    #[test]
    fn u32_overflow_is_rejected() -> Result<(), String> {
        let mut c = Config::from_pairs(&[("patience", "4294967296")])?;
        assert!(c.u32("patience", 0).is_err());
        Ok(())
    }

    #[test]
    fn finish_names_the_unknown_key_and_the_known_ones() -> Result<(), String> {
        let mut c = Config::from_pairs(&[("patiense", "3"), ("monitor", "loss")])?;
        c.str("monitor", "val_loss")?;
        c.u32("patience", 0)?;
        assert_eq!(
            c.finish(),
            Err("unknown parameter 'patiense'; known parameters: monitor, patience".to_string())
        );
        let none = Config::from_pairs(&[("x", "1")])?;
        assert_eq!(
            none.finish(),
            Err("unknown parameter 'x'; this callback takes no parameters".to_string())
        );
        Ok(())
    }

    #[test]
    fn duplicate_and_empty_keys_are_rejected() {
        let dup = Config::from_pairs(&[("patience", "3"), ("patience", "5")]);
        assert_eq!(
            dup.err().as_deref(),
            Some("parameter patience is given twice (patience=3 and patience=5)")
        );
        let empty = Config::from_pairs(&[("", "5")]);
        assert_eq!(
            empty.err().as_deref(),
            Some("parameter =5: the parameter name is empty")
        );
    }

    #[test]
    fn is_set_does_not_mark_a_key_read() -> Result<(), String> {
        let c = Config::from_pairs(&[("gamma", "0.5")])?;
        assert!(c.is_set("gamma"));
        assert!(!c.is_set("step_size"));
        assert!(c.finish().is_err());
        Ok(())
    }
}
