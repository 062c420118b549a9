//! The SDK's performance machinery for text: metric values, integers and short names appended
//! to a line without `core`'s float formatter, a loop per digit or a variable-length copy, each
//! of which is costly in a fuel-metered guest. The text is exactly what the matching `format!`
//! (`{:.4}`, `{:.3e}`, `{}`) prints: the tests compare them on hundreds of thousands of values.
//!
//! What it buys (BENCHMARKS.md): a callback that prints numbers does not carry `core`'s float
//! formatter, ~20 KiB of wasm that Cranelift compiles on a callback's first run on a machine (the
//! six bundled callbacks compile in 23% fewer instructions without it), and a value costs a few
//! hundred instructions instead of ~1.5 µs. In a training run the per-event part is small next
//! to an epoch (the bundled logger formats six values per epoch); the compile-time part is what a
//! user waits for. [`text_writer`] appends with the line's length in a register; [`scientific`]
//! is the exact `{:.3e}` for values outside the fixed-point range.

pub(crate) mod scientific;
pub(crate) mod text_writer;

use text_writer::{TextWriter, digits4};

/// Formats a metric value for people: 4 decimals in the usual range (`0.1234`), scientific
/// notation for tiny or huge magnitudes (`1.000e-5`), so learning rates stay readable.
pub fn format_metric(v: f64) -> String {
    let mut out = String::new();
    push_metric(&mut out, v);
    out
}

/// Appends [`format_metric`]'s text for `v` to `out`, without a temporary `String`.
///
/// Values in the usual range and zero take a fast path: the same text as `format!("{v:.4}")`,
/// digit for digit (rounded to nearest, ties to even, from the exact binary value), computed with
/// 64-bit integer arithmetic. `core`'s general float formatter costs ~1.5 µs per value in a
/// fuel-metered wasm guest, most of a logger's epoch-end call. The others print what
/// `format!("{v:.3e}")` prints (`NaN` and `inf` as `{v:.4}` does) without `core`'s formatter
/// either, so a callback that prints metrics does not carry its code. To print several values
/// into one line, [`TextWriter::push_metric`] is cheaper still.
pub fn push_metric(out: &mut String, v: f64) {
    TextWriter::new(out).push_metric(v);
}

/// [`push_metric`] through a [`TextWriter`].
#[inline(always)]
pub(crate) fn write_metric(w: &mut TextWriter<'_>, v: f64) {
    let magnitude = v.abs();
    if (1e-3..1e6).contains(&magnitude) || v == 0.0 {
        write_fixed4(w, v);
    } else if v.is_nan() {
        w.push_str("NaN");
    } else if v.is_infinite() {
        w.push_str(if v < 0.0 { "-inf" } else { "inf" });
    } else {
        w.with_string(|out| scientific::push_sci3(out, v));
    }
}

/// `(m, e)` with `|v| = m * 2^e` exactly, `m < 2^53`, for a finite `v`.
pub(crate) fn decompose(v: f64) -> (u64, i32) {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    if biased == 0 {
        (fraction, -1074) // zero and subnormals
    } else {
        (fraction | (1 << 52), biased - 1075)
    }
}

/// `format!("{v:.4}")` for a finite `v` with `|v| < 2^48`, in 64-bit integer arithmetic only
/// (wasm has no 128-bit multiply or divide; those are slow library calls there). Inlined into
/// its callers: a call in a fuel-metered guest costs tens of instructions of its own.
#[inline(always)]
fn write_fixed4(w: &mut TextWriter<'_>, v: f64) {
    let bits = v.to_bits();
    let (mantissa, exponent) = decompose(v);
    // v * 10^4 = mantissa * 625 * 2^(exponent + 4), and mantissa * 625 < 2^53 * 2^10 fits a
    // u64. Below 2^48 the power of two is a right shift: round to nearest, ties to even.
    let scaled = mantissa * 625;
    let shift = -(exponent + 4);
    debug_assert!(shift > 0, "push_fixed4 takes |v| < 2^48");
    let units = match u32::try_from(shift) {
        Ok(shift @ 1..=63) => {
            let whole = scaled >> shift;
            let rest = scaled & ((1u64 << shift) - 1);
            let half = 1u64 << (shift - 1);
            whole + u64::from(rest > half || (rest == half && whole & 1 == 1))
        }
        // Under half a unit (scaled < 2^63, so a shift of 64 or more leaves less than half).
        _ => 0,
    };
    let negative = bits >> 63 == 1;
    let decimals = u64::from(digits4((units % 10_000) as u32));
    match u32::try_from(units / 10_000) {
        // |v| < 10, most metrics: `d.dddd` with its sign in one 8-byte store.
        Ok(whole @ 0..10) => {
            let text = (u64::from(b'0') + u64::from(whole)) | u64::from(b'.') << 8 | decimals << 16;
            if negative {
                w.push_word(text << 8 | u64::from(b'-'), 7);
            } else {
                w.push_word(text, 6);
            }
        }
        // Larger magnitudes: the integer part as `push_uint` writes it (one store under 10^8).
        _ => {
            if negative {
                w.push('-');
            }
            w.push_uint(units / 10_000);
            w.push_word(u64::from(b'.') | decimals << 8, 5);
        }
    }
}

/// Appends `n` in decimal, without `core::fmt` (its machinery is most of the cost of a small
/// integer in a guest) and, under 10^8, composed in a register and appended with one store (no
/// loop per digit and no `memory.copy`, both costly in a fuel-metered guest).
pub fn push_uint(out: &mut String, n: u64) {
    TextWriter::new(out).push_uint(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path must print exactly what `format!("{v:.4}")` prints.
    #[test]
    #[cfg_attr(miri, ignore)] // hundreds of thousands of values: hours under Miri
    fn fixed_point_path_matches_core_formatting() {
        let mut values = vec![
            1e-3,
            0.00105,
            0.03125, // 312.5 units: a tie, to even
            0.03135,
            0.5,
            0.99995,
            0.999949999,
            1.0,
            1.00005,
            2.00015,
            0.1234,
            123.45675,
            999_999.999_95,
            999_999.999_9,
            0.1 + 0.2,
        ];
        // A deterministic sweep over magnitudes and mantissas (xorshift; no dependencies).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let exponent = (x >> 58) as i32 - 10; // 2^-10 .. 2^53 before the range filter
            let v = (1.0 + (x >> 12) as f64 / (1u64 << 52) as f64) * 2f64.powi(exponent);
            values.push(v);
            // Exact ties at the fourth decimal: k / 10^4 + 1 / 2 / 10^4 for small k.
            values.push(((x % 2_000_000) as f64 + 0.5) / 10_000.0);
        }
        // Exact ties in binary: (2k + 1) / 32 is (2k + 1) * 312.5 units.
        values.extend((0..5_000).map(|k| f64::from(2 * k + 1) / 32.0));
        let mut checked = 0;
        for v in values {
            for v in [v, -v] {
                // push_fixed4's whole domain: above 1e6 `push_metric` switches to scientific
                // notation, but the wide path (from 10^8 whole units) must be right too.
                if !(1e-3..2f64.powi(48)).contains(&v.abs()) {
                    continue;
                }
                let mut ours = String::new();
                write_fixed4(&mut TextWriter::new(&mut ours), v);
                assert_eq!(ours, format!("{v:.4}"), "{v:e} ({:#x})", v.to_bits());
                checked += 1;
            }
        }
        assert!(checked > 500_000, "only {checked} values in range");
    }

    #[test]
    fn push_uint_matches_display() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            99_999_999,
            100_000_000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut s = String::from("n=");
            push_uint(&mut s, n);
            assert_eq!(s, format!("n={n}"));
        }
    }

    #[test]
    fn push_metric_appends() {
        let mut line = String::from("loss=");
        push_metric(&mut line, 0.25);
        line.push_str(" lr=");
        push_metric(&mut line, 1e-4);
        assert_eq!(line, "loss=0.2500 lr=1.000e-4");
    }

    #[test]
    fn format_metric_keeps_small_values_readable() {
        assert_eq!(format_metric(0.123456), "0.1235");
        assert_eq!(format_metric(0.0), "0.0000");
        assert_eq!(format_metric(-0.0), format!("{:.4}", -0.0));
        assert_eq!(format_metric(1e-5), "1.000e-5");
        assert_eq!(format_metric(-2.5e7), "-2.500e7");
        assert_eq!(format_metric(f64::NAN), "NaN");
        assert_eq!(format_metric(f64::INFINITY), "inf");
        assert_eq!(format_metric(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_metric(-f64::NAN), format!("{:.4}", -f64::NAN));
    }
}
