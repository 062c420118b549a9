//! Short ASCII text appended to a `String` without a variable-length copy.
//!
//! In a wasm guest every copy whose length is not a compile-time constant (`push_str`,
//! `extend_from_slice`) becomes a `memory.copy`, which wasmtime runs as a call out of the guest
//! into the host, and every loop iteration and call pays a fuel and an interruption check. A log
//! line of numbers and metric names paid both per digit and per field. Here the usual numbers
//! (up to eight integer digits) are composed in a `u64`, two digits at a time from a table, and
//! appended with one 8-byte store of which only the text's length is kept ([`push_word`]);
//! longer ones are composed in a small buffer ([`Ascii`]) appended with one fixed-size copy; a
//! short name is copied with two overlapping fixed-size copies ([`push_short`]).

/// `"00"` to `"99"`, each as a little-endian `u16` (the first digit in the low byte), so that a
/// pair of digits is one load.
const PAIRS: &[u16; 100] = &{
    let mut table = [0u16; 100];
    let mut n = 0;
    while n < 100 {
        table[n] = (b'0' + (n / 10) as u8) as u16 | ((b'0' + (n % 10) as u8) as u16) << 8;
        n += 1;
    }
    table
};

/// `n` (< 10,000) as four ASCII digits, zero-padded, the first in the low byte.
#[inline(always)]
pub(crate) fn digits4(n: u32) -> u32 {
    let pair = |n: u32| u32::from(PAIRS[n as usize % 100]);
    pair(n / 100) | pair(n % 100) << 16
}

/// `n` (< 10^8) in decimal, the first digit in the low byte, and its length in digits.
#[inline(always)]
pub(crate) fn digits8(n: u32) -> (u64, usize) {
    debug_assert!(n < 100_000_000);
    let len = decimal_len(n);
    let padded = u64::from(digits4(n / 10_000)) | u64::from(digits4(n % 10_000)) << 32;
    // Little-endian: the leading zeros are the low bytes.
    (padded >> (8 * (8 - len)), len)
}

/// Appends the first `len` (at most 8) bytes of `text`, ASCII with the first character in the
/// low byte, with one 8-byte store.
#[inline(always)]
pub(crate) fn push_word(out: &mut String, text: u64, len: usize) {
    debug_assert!(len <= 8 && text.to_le_bytes()[..len].is_ascii());
    // SAFETY: the bytes kept are ASCII (the callers build `text` from literals and digits),
    // valid UTF-8 on their own, so `out` stays valid UTF-8.
    #[allow(unsafe_code)]
    let vec = unsafe { out.as_mut_vec() };
    vec.reserve(8);
    let old = vec.len();
    copy_fixed::<8>(&mut vec.spare_capacity_mut()[..8], &text.to_le_bytes());
    // SAFETY: the 8 bytes after `old` were just initialized, and `len.min(8)` of them are kept.
    #[allow(unsafe_code)]
    unsafe {
        vec.set_len(old + len.min(8))
    };
}

/// ASCII text of at most `N` bytes, written left to right: the general case, for numbers too
/// long for [`push_word`].
pub(crate) struct Ascii<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Ascii<N> {
    pub(crate) fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// One ASCII byte (the callers write only literals and digits).
    pub(crate) fn push(&mut self, b: u8) {
        debug_assert!(b.is_ascii());
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `n` in decimal, zero-padded to exactly `width` digits (`n < 10^width`).
    pub(crate) fn uint_width(&mut self, mut n: u32, width: usize) {
        let mut end = self.len + width;
        self.len = end;
        for _ in 0..width / 2 {
            end -= 2;
            self.put_pair(end, n % 100);
            n /= 100;
        }
        if width % 2 == 1 {
            self.buf[end - 1] = b'0' + (n % 10) as u8;
        }
    }

    /// `n` in decimal, at least one digit. Numbers under 100, the usual epoch or integer part,
    /// take no loop iteration.
    pub(crate) fn uint(&mut self, mut n: u32) {
        let mut end = self.len + decimal_len(n);
        self.len = end;
        while n >= 100 {
            end -= 2;
            self.put_pair(end, n % 100);
            n /= 100;
        }
        if n >= 10 {
            self.put_pair(end - 2, n);
        } else {
            self.buf[end - 1] = b'0' + n as u8;
        }
    }

    /// `n` in decimal, at least one digit; `N` must leave room for 20.
    pub(crate) fn uint64(&mut self, n: u64) {
        match u32::try_from(n) {
            Ok(n) => self.uint(n),
            Err(_) => self.uint64_wide(n),
        }
    }

    /// [`Ascii::uint64`] from 2^32 up.
    fn uint64_wide(&mut self, n: u64) {
        // Eight digits at a time in 32 bits; only the splits divide a u64.
        const E8: u64 = 100_000_000;
        let low = (n % E8) as u32;
        let rest = n / E8;
        match u32::try_from(rest) {
            Ok(middle) => self.uint(middle),
            Err(_) => {
                // n >= 2^32 * 10^8 > 10^17: the top holds at most four digits.
                self.uint((rest / E8) as u32);
                self.uint_width((rest % E8) as u32, 8);
            }
        }
        self.uint_width(low, 8);
    }

    fn put_pair(&mut self, at: usize, n: u32) {
        let [first, second] = PAIRS[n as usize % 100].to_le_bytes();
        self.buf[at] = first;
        self.buf[at + 1] = second;
    }

    /// Appends the text: reserves `N` bytes, copies the whole buffer (a constant-size copy) and
    /// keeps the first `len` of them.
    pub(crate) fn append_to(&self, out: &mut String) {
        // SAFETY: only ASCII is ever written to `buf` (see `push`, and digits from `PAIRS`),
        // and ASCII bytes are valid UTF-8 on their own, so `out` stays valid UTF-8.
        #[allow(unsafe_code)]
        let vec = unsafe { out.as_mut_vec() };
        vec.reserve(N);
        let old = vec.len();
        for (slot, &b) in vec.spare_capacity_mut()[..N].iter_mut().zip(&self.buf) {
            slot.write(b);
        }
        // SAFETY: the first `len` (<= N) bytes after `old` were just initialized.
        #[allow(unsafe_code)]
        unsafe {
            vec.set_len(old + self.len)
        };
    }
}

/// Decimal digits in `n`, at least one.
#[inline(always)]
pub(crate) fn decimal_len(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `s` to `out`, as `push_str` does, but text of up to 16 bytes (a metric's name, a
/// label) without a `memory.copy`: with two overlapping fixed-size copies (see the module).
#[inline]
pub fn push_short(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len();
    if n == 0 || n > 16 {
        out.push_str(s);
        return;
    }
    // SAFETY: `s` is a `&str`, so appending its bytes whole keeps `out` valid UTF-8.
    #[allow(unsafe_code)]
    let vec = unsafe { out.as_mut_vec() };
    vec.reserve(16);
    let old = vec.len();
    let spare = &mut vec.spare_capacity_mut()[..16];
    if n >= 8 {
        copy_fixed::<8>(&mut spare[..8], &bytes[..8]);
        copy_fixed::<8>(&mut spare[n - 8..n], &bytes[n - 8..]);
    } else if n >= 4 {
        copy_fixed::<4>(&mut spare[..4], &bytes[..4]);
        copy_fixed::<4>(&mut spare[n - 4..n], &bytes[n - 4..]);
    } else {
        // One to three bytes: the first, the middle and the last cover them all.
        spare[0].write(bytes[0]);
        spare[n / 2].write(bytes[n / 2]);
        spare[n - 1].write(bytes[n - 1]);
    }
    // SAFETY: bytes `old..old + n` were just initialized (the copies cover `0..n`).
    #[allow(unsafe_code)]
    unsafe {
        vec.set_len(old + n)
    };
}

/// Copies exactly `K` bytes: a constant size, so a few plain loads and stores.
#[inline(always)]
fn copy_fixed<const K: usize>(to: &mut [std::mem::MaybeUninit<u8>], from: &[u8]) {
    let from: &[u8; K] = from.try_into().expect("K bytes");
    let to: &mut [std::mem::MaybeUninit<u8>; K] = to.try_into().expect("K bytes");
    for (slot, &b) in to.iter_mut().zip(from) {
        slot.write(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uint64(n: u64) -> String {
        let mut text = Ascii::<24>::new();
        text.uint64(n);
        let mut out = String::from(">");
        text.append_to(&mut out);
        out
    }

    #[test]
    fn integers_match_core_formatting_at_every_length() {
        let mut values = vec![0, 1, 9, 10, 99, 100, u64::from(u32::MAX), u64::MAX];
        for digits in 1..=19 {
            let p = 10u64.pow(digits);
            values.extend([p - 1, p, p + 1, p / 2 + 7]);
        }
        values.extend([
            u64::from(u32::MAX) + 1,
            u64::from(u32::MAX) * 100_000_000 + 99_999_999,
            u64::from(u32::MAX) * 100_000_000 + 100_000_000,
        ]);
        for n in values {
            assert_eq!(uint64(n), format!(">{n}"), "{n}");
        }
    }

    #[test]
    fn words_hold_up_to_eight_digits() {
        for n in [
            0, 1, 9, 10, 42, 99, 100, 999, 1000, 9999, 10_000, 123_456, 9_999_999, 99_999_999,
        ] {
            let (text, len) = digits8(n);
            let mut out = String::from("=");
            push_word(&mut out, text, len);
            assert_eq!(out, format!("={n}"));
        }
        let mut out = String::new();
        push_word(&mut out, u64::from(digits4(7)), 4);
        push_word(&mut out, u64::from(b'.'), 1);
        assert_eq!(out, "0007.");
    }

    #[test]
    fn padded_widths_keep_leading_zeros() {
        for (n, width, text) in [
            (7, 4, "0007"),
            (1234, 4, "1234"),
            (5, 3, "005"),
            (0, 1, "0"),
        ] {
            let mut a = Ascii::<16>::new();
            a.uint_width(n, width);
            let mut out = String::new();
            a.append_to(&mut out);
            assert_eq!(out, text);
        }
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(9), 1);
        assert_eq!(decimal_len(10), 2);
        assert_eq!(decimal_len(u32::MAX), 10);
    }

    #[test]
    fn appending_keeps_what_was_there_and_only_the_text() {
        let mut out = String::with_capacity(3);
        out.push_str("abc");
        let mut a = Ascii::<16>::new();
        a.push(b'-');
        a.uint(42);
        a.append_to(&mut out);
        a.append_to(&mut out);
        assert_eq!(out, "abc-42-42");
    }

    #[test]
    fn short_text_of_every_length_is_appended_whole() {
        let source = "ab\u{e9}defghijklmnopqrstuvwxyz0123456789";
        for end in 0..=source.len() {
            let Some(s) = source.get(..end) else { continue };
            for prefix in ["", "x", "0123456789abcdef01"] {
                let mut out = String::from(prefix);
                push_short(&mut out, s);
                assert_eq!(out, format!("{prefix}{s}"));
            }
        }
    }
}
