//! Guest text made safe to show: every string a callback hands the host (log lines, reasons,
//! tags, names) passes through here before it reaches a terminal or a file.

/// Makes guest text safe for a terminal and a log file: control characters and invisible
/// formatting characters (bidirectional overrides such as U+202E, zero-width characters, line
/// and paragraph separators; see [`is_unsafe_char`]) are escaped as `\u{...}`, and the result is
/// cut to at most `max_bytes` (on a character boundary, marked with `…`).
pub(crate) fn printable(text: &str, max_bytes: usize) -> String {
    if is_printable_within(text, max_bytes) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        let escaped = is_unsafe_char(c).then(|| c.escape_default());
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
    // control characters, C1 controls (U+0080..U+009F) included, and formatting characters.
    text.len() <= max_bytes
        && (is_printable_ascii(text.as_bytes()) || !text.chars().any(is_unsafe_char))
}

/// Whether `c` must be escaped before guest text reaches a terminal or a file: a control
/// character, or an invisible character that changes how the text around it is shown or read:
/// Unicode's format characters (category Cf: bidirectional embeddings, overrides and isolates
/// such as U+202E, which make a line read backwards; zero-width spaces and joiners; the byte
/// order mark; invisible tag characters) and the line and paragraph separators (U+2028, U+2029),
/// which some viewers break lines at.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
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
    fn printable_escapes_invisible_formatting_characters() {
        // A right-to-left override would make the rest of the line read backwards.
        assert_eq!(printable("ok \u{202E}exe.txt", 100), "ok \\u{202e}exe.txt");
        for c in [
            '\u{200B}',
            '\u{200F}',
            '\u{2028}',
            '\u{2029}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{E0041}',
        ] {
            let text = format!("a{c}b");
            assert!(!is_printable_within(&text, 100), "{c:?}");
            assert_eq!(printable(&text, 100), format!("a{}b", c.escape_default()));
        }
        // Visible non-ASCII text is left alone.
        assert_eq!(printable("λ=0.5 → ✓ 学习", 100), "λ=0.5 → ✓ 学习");
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
