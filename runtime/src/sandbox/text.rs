//! Guest text made safe to show: every string a callback hands the host (log lines, reasons,
//! tags, names) passes through here before it reaches a terminal or a file.

/// Makes guest text safe for a terminal and a log file: control characters are escaped and the
/// result is cut to at most `max_bytes` (on a character boundary, marked with `…`).
pub(crate) fn printable(text: &str, max_bytes: usize) -> String {
    if is_printable_within(text, max_bytes) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        let escaped = c.is_control().then(|| c.escape_default());
        let len = escaped
            .as_ref()
            .map_or(c.len_utf8(), ExactSizeIterator::len);
        if out.len() + len > max_bytes {
            out.push('…');
            break;
        }
        match escaped {
            Some(e) => out.extend(e),
            None => out.push(c),
        }
    }
    out
}

/// Whether [`printable`] would return `text` unchanged.
pub(crate) fn is_printable_within(text: &str, max_bytes: usize) -> bool {
    // Printable ASCII, the usual log line, is checked by bytes; anything else is decoded to find
    // control characters, C1 controls (U+0080..U+009F) included.
    text.len() <= max_bytes
        && (is_printable_ascii(text.as_bytes()) || !text.chars().any(char::is_control))
}

/// Whether every byte is printable ASCII (0x20..=0x7E). Checked in fixed-size blocks without an
/// early exit, which the compiler turns into a few vector compares instead of a branch per byte;
/// the tail is the last whole block again (overlapping the one before), not a loop per byte.
fn is_printable_ascii(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn block_ok<const N: usize>(block: &[u8; N]) -> bool {
        block.iter().fold(true, |ok, &b| ok & is_printable_byte(b))
    }
    #[inline(always)]
    fn blocks_ok<const N: usize>(bytes: &[u8]) -> bool {
        let (blocks, _) = bytes.as_chunks::<N>();
        blocks.iter().all(block_ok) && bytes.last_chunk::<N>().is_none_or(block_ok)
    }
    match bytes.len() {
        32.. => blocks_ok::<32>(bytes),
        8.. => blocks_ok::<8>(bytes),
        _ => bytes.iter().all(|&b| is_printable_byte(b)),
    }
}

/// Whether `b` is printable ASCII (0x20..=0x7E).
#[inline(always)]
fn is_printable_byte(b: u8) -> bool {
    b.wrapping_sub(0x20) < 0x5f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_and_caps_length() {
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(50);
        let cut = printable(&long, 10);
        assert!(
            cut.starts_with("xxxxxxxxxx") && cut.ends_with('…') && cut.len() <= 13,
            "{cut}"
        );
        assert_eq!(printable("ééé", 3), "é…");
        // Nothing to escape or cut: the text as it came.
        assert_eq!(
            printable("epoch 3: loss=0.1234 ✓", 100),
            "epoch 3: loss=0.1234 ✓"
        );
        assert_eq!(printable("exactly10!", 10), "exactly10!");
        // DEL and the C1 controls (two bytes in UTF-8) are escaped too.
        assert_eq!(printable("a\u{7f}b\u{85}c", 100), "a\\u{7f}b\\u{85}c");
        // An escape that does not fit is cut whole, never split.
        assert_eq!(printable("abcdefgh\n", 9), "abcdefgh…");
    }

    #[test]
    fn the_ascii_check_finds_any_unprintable_byte_at_any_position() {
        // Every length up to three blocks of 32, and so every way a tail can overlap.
        for len in 0..=96 {
            let line = vec![b'a'; len];
            assert!(is_printable_ascii(&line), "{len}");
            for at in 0..len {
                for bad in [0x00, b'\n', 0x1f, 0x7f, 0x80, 0xff] {
                    let mut with = line.clone();
                    with[at] = bad;
                    assert!(!is_printable_ascii(&with), "{bad:#x} at {at} of {len}");
                }
            }
        }
        let all: Vec<u8> = (0x20..=0x7e).collect();
        assert!(is_printable_ascii(&all));
    }
}
