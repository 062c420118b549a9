//! Short ASCII text appended to a `String` without a variable-length copy.
//!
//! In a wasm guest every copy whose length is not a compile-time constant (`push_str`,
//! `extend_from_slice`) becomes a `memory.copy`, which wasmtime runs as a call out of the guest
//! into the host, and every loop iteration and call pays a fuel and an interruption check. A log
//! line of numbers and metric names paid both per digit and per field. Here the usual numbers
//! (up to eight integer digits) are composed in a `u64`, two digits at a time from a table, and
//! appended with one 8-byte store of which only the text's length is kept
//! ([`TextWriter::push_word`]); longer ones are composed in a small buffer ([`Ascii`]) appended
//! with one fixed-size copy; a short name is copied with two overlapping fixed-size copies
//! ([`TextWriter::push_str`]). A [`TextWriter`] keeps a line's length in a register while the
//! line is built.

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

/// ASCII text of at most `N` bytes, written left to right: the general case, for numbers too
/// long for [`TextWriter::push_word`].
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
/// label) without a `memory.copy`: see [`TextWriter::push_str`].
#[inline]
pub fn push_short(out: &mut String, s: &str) {
    TextWriter::new(out).push_str(s);
}

/// Appends to a `String` with the write position, the buffer's address and its capacity in
/// local variables, so that a line built from many short pieces keeps them in registers.
///
/// Through `&mut String`, each piece of a line (a name, `=`, a number) reloads the string's
/// length and capacity from memory and stores the length back: the string lives in linear
/// memory once a function it is passed to is not inlined, and in a fuel-metered guest those
/// loads and stores, the capacity check and the call around each piece were most of the cost of
/// a logger's epoch line. A `TextWriter` checks the room left against a register, writes with
/// fixed-size stores ([`TextWriter::push_str`], the numbers), and gives the string its length
/// back once, when dropped. Pieces that do not fit the fast paths (long text, scientific
/// notation) go through the `String` as before.
///
/// ```
/// use trainrt_guest::TextWriter;
///
/// let mut line = String::from("epoch ");
/// {
///     let mut w = TextWriter::new(&mut line);
///     w.push_uint(3);
///     w.push_str(": loss=");
///     w.push_metric(0.1234);
/// }
/// assert_eq!(line, "epoch 3: loss=0.1234");
/// ```
pub struct TextWriter<'a> {
    out: &'a mut String,
    /// `out`'s buffer, valid for `cap` bytes; reloaded whenever `out` may have reallocated.
    ptr: *mut u8,
    /// Bytes written: `out`'s length once the writer is dropped. `len <= cap`, and the first
    /// `len` bytes are initialized, valid UTF-8.
    len: usize,
    cap: usize,
}

impl<'a> TextWriter<'a> {
    /// A writer appending to `out`.
    #[inline(always)]
    pub fn new(out: &'a mut String) -> Self {
        // SAFETY: the writer only ever appends whole `&str`s and ASCII, so `out` stays valid
        // UTF-8; the vector is used for its buffer, length and capacity only.
        #[allow(unsafe_code)]
        let vec = unsafe { out.as_mut_vec() };
        let (ptr, len, cap) = (vec.as_mut_ptr(), vec.len(), vec.capacity());
        Self { out, ptr, len, cap }
    }

    /// Makes room for `n` more bytes after `len`.
    #[inline(always)]
    fn reserve(&mut self, n: usize) {
        if self.cap - self.len < n {
            // SAFETY: `self.len` satisfies the writer's invariant.
            #[allow(unsafe_code)]
            let (ptr, cap) = unsafe { grow(self.out, self.len, n) };
            (self.ptr, self.cap) = (ptr, cap);
        }
    }

    /// Runs `f` on the `String` itself, with its length up to date, and reloads the buffer: for
    /// text the writer has no fast path for.
    #[inline(always)]
    pub(crate) fn with_string(&mut self, f: impl FnOnce(&mut String)) {
        // SAFETY: `self.len` satisfies the writer's invariant.
        #[allow(unsafe_code)]
        let (ptr, len, cap) = unsafe { through_string(self.out, self.len, f) };
        (self.ptr, self.len, self.cap) = (ptr, len, cap);
    }

    /// Gives `out` its length.
    #[inline(always)]
    fn sync(&mut self) {
        // SAFETY: `len <= cap` and the first `len` bytes are initialized (the invariant).
        #[allow(unsafe_code)]
        unsafe {
            self.out.as_mut_vec().set_len(self.len)
        };
    }

    /// Writes the 8 bytes of `text` at the write position and keeps the first `len` of them:
    /// one store for up to eight ASCII characters, the first in the low byte.
    #[inline(always)]
    pub(crate) fn push_word(&mut self, text: u64, len: usize) {
        debug_assert!(len <= 8 && text.to_le_bytes()[..len].is_ascii());
        self.reserve(8);
        // SAFETY: `reserve(8)` left at least 8 bytes of capacity after `len`; the `len` bytes
        // kept are ASCII (the callers build `text` from literals and digits).
        #[allow(unsafe_code)]
        unsafe {
            self.ptr
                .add(self.len)
                .cast::<u64>()
                .write_unaligned(text.to_le());
        }
        self.len += len.min(8);
    }

    /// Appends one character; ASCII without a call.
    #[inline(always)]
    pub fn push(&mut self, c: char) {
        if c.is_ascii() {
            self.reserve(1);
            // SAFETY: one byte of capacity after `len` (reserved); an ASCII byte is UTF-8.
            #[allow(unsafe_code)]
            unsafe {
                self.ptr.add(self.len).write(c as u8);
            }
            self.len += 1;
        } else {
            self.with_string(|out| out.push(c));
        }
    }

    /// Appends `s`. Up to 16 bytes, the usual name or label, with two overlapping fixed-size
    /// copies (no `memory.copy`); longer text through `String::push_str`.
    #[inline(always)]
    pub fn push_str(&mut self, s: &str) {
        let n = s.len();
        if n > 16 {
            self.with_string(|out| out.push_str(s));
            return;
        }
        if n == 0 {
            return;
        }
        self.reserve(16);
        let from = s.as_ptr();
        // SAFETY: 16 bytes of capacity after `len` (reserved), and `n` (1..=16) bytes readable
        // at `from`: every copy below reads within `from..from + n` and writes within
        // `to..to + n`, and together they cover `to..to + n`. Whole `&str`s keep `out` UTF-8.
        #[allow(unsafe_code)]
        unsafe {
            let to = self.ptr.add(self.len);
            if n >= 8 {
                copy_fixed::<8>(from, to);
                copy_fixed::<8>(from.add(n - 8), to.add(n - 8));
            } else if n >= 4 {
                copy_fixed::<4>(from, to);
                copy_fixed::<4>(from.add(n - 4), to.add(n - 4));
            } else {
                // One to three bytes: the first, the middle and the last cover them all.
                to.write(*from);
                to.add(n / 2).write(*from.add(n / 2));
                to.add(n - 1).write(*from.add(n - 1));
            }
        }
        self.len += n;
    }

    /// Appends `n` in decimal (see [`crate::push_uint`]).
    #[inline(always)]
    pub fn push_uint(&mut self, n: u64) {
        match u32::try_from(n) {
            Ok(n) if n < 100_000_000 => {
                let (text, len) = digits8(n);
                self.push_word(text, len);
            }
            _ => self.with_string(|out| push_uint_wide(out, n)),
        }
    }

    /// Appends a metric value as [`crate::format_metric`] prints it.
    #[inline(always)]
    pub fn push_metric(&mut self, v: f64) {
        super::write_metric(self, v);
    }
}

impl Drop for TextWriter<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.sync();
    }
}

// The writer's slow paths take and return its fields by value: were `&mut TextWriter` passed to
// a function that is not inlined, the writer would have to live in (linear) memory, and every
// piece would load and store its length there again.

/// [`TextWriter::reserve`]'s slow path: gives `out` its length `len`, makes room for `n` more
/// bytes and returns the (maybe moved) buffer and its capacity.
///
/// # Safety
///
/// As [`through_string`].
#[allow(unsafe_code)]
#[cold]
#[inline(never)]
unsafe fn grow(out: &mut String, len: usize, n: usize) -> (*mut u8, usize) {
    // SAFETY: the caller's contract.
    let (ptr, len, cap) = unsafe { through_string(out, len, |out| out.reserve(n)) };
    debug_assert!(cap - len >= n);
    (ptr, cap)
}

/// Gives `out` its length `len`, runs `f` on it and returns its buffer, length and capacity.
///
/// # Safety
///
/// `len` must be at most `out`'s capacity, and `out`'s first `len` bytes initialized and valid
/// UTF-8: a [`TextWriter`]'s `len` for its `out`.
#[allow(unsafe_code)]
#[inline(never)]
unsafe fn through_string(
    out: &mut String,
    len: usize,
    f: impl FnOnce(&mut String),
) -> (*mut u8, usize, usize) {
    // SAFETY: the caller's contract.
    unsafe { out.as_mut_vec().set_len(len) };
    f(out);
    // SAFETY: as in `TextWriter::new`.
    #[allow(unsafe_code)]
    let vec = unsafe { out.as_mut_vec() };
    (vec.as_mut_ptr(), vec.len(), vec.capacity())
}

/// `n` from 10^8 up, in decimal, out of line.
#[inline(never)]
fn push_uint_wide(out: &mut String, n: u64) {
    let mut text = Ascii::<24>::new();
    text.uint64(n);
    text.append_to(out);
}

/// Copies exactly `K` bytes: a constant size, so plain loads and stores, not a `memory.copy`.
///
/// # Safety
///
/// `from` must be readable and `to` writable for `K` bytes.
#[allow(unsafe_code)]
#[inline(always)]
unsafe fn copy_fixed<const K: usize>(from: *const u8, to: *mut u8) {
    // SAFETY: the caller's contract; unaligned reads and writes of `[u8; K]` need no alignment.
    unsafe {
        to.cast::<[u8; K]>()
            .write_unaligned(from.cast::<[u8; K]>().read_unaligned())
    };
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
            TextWriter::new(&mut out).push_word(text, len);
            assert_eq!(out, format!("={n}"));
        }
        let mut out = String::new();
        {
            let mut w = TextWriter::new(&mut out);
            w.push_word(u64::from(digits4(7)), 4);
            w.push_word(u64::from(b'.'), 1);
        }
        assert_eq!(out, "0007.");
    }

    /// A line built piece by piece, from an empty string (every piece may have to grow it) and
    /// from one with room, equals the same line built with `String`'s own methods.
    #[test]
    fn writer_builds_the_same_text_as_string_methods() {
        let long = "a name longer than sixteen bytes";
        // (text, then an integer, a metric and a character, each if present)
        type Piece = (&'static str, Option<u64>, Option<f64>, Option<char>);
        let pieces: Vec<Piece> = vec![
            ("epoch ", Some(3), None, Some(':')),
            ("loss", None, Some(0.1234), Some(' ')),
            (long, Some(123_456_789_012), Some(-2.5e7), Some('\u{e9}')),
            ("", Some(0), Some(f64::NAN), Some('x')),
            (
                "\u{e9}t\u{e9}",
                Some(u64::MAX),
                Some(-0.5),
                Some('\u{1f600}'),
            ),
            ("val_accuracy", Some(99_999_999), Some(1e-4), None),
        ];
        for capacity in [0, 1, 7, 8, 16, 17, 1024] {
            let mut ours = String::with_capacity(capacity);
            let mut expected = String::new();
            for round in 0..20 {
                let mut w = TextWriter::new(&mut ours);
                for &(text, n, v, c) in &pieces {
                    w.push_str(text);
                    expected.push_str(text);
                    if let Some(n) = n {
                        w.push_uint(n.wrapping_add(round));
                        expected.push_str(&(n.wrapping_add(round)).to_string());
                    }
                    if let Some(v) = v {
                        w.push_metric(v);
                        expected.push_str(&crate::format_metric(v));
                    }
                    if let Some(c) = c {
                        w.push(c);
                        expected.push(c);
                    }
                }
            }
            assert_eq!(ours, expected, "capacity {capacity}");
        }
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
