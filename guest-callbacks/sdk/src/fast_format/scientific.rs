//! `format!("{v:.3e}")` for finite, non-zero `v`, exactly, without `core`'s float formatter.
//!
//! `core` formats floats with Grisu and a Dragon4 fallback: about 20 KiB of wasm code, compiled
//! by Cranelift for every callback that prints a number in scientific notation, although it only
//! ever prints four significant digits of a learning rate or an unusually large metric. This is
//! the textbook exact method instead, at under a fifth of the size: write `|v| * 10^(3 - k)` as a
//! fraction `N / D` of big integers, adjust `k` until `1000 <= N / D < 10000`, divide, and round
//! the remainder to nearest, ties to even. It is a slow path (tens of big-integer operations per
//! value); the usual range of metrics never reaches it.

use super::decompose;
use super::text_writer::Ascii;
use std::cmp::Ordering;

/// 40 x 32 bits = 1280 bits. The largest numbers formed stay under 1,100 bits: a numerator
/// `m * 10^(3 - k)` for the smallest magnitudes (`m * 2^e >= 2^-1074`, so at most about
/// `2^1074 * 10^4`, doubled once to round), or a denominator `2^1074 * 10^4`.
const LIMBS: usize = 40;

/// An unsigned big integer, little-endian 32-bit limbs; `limbs[len..]` are zero. Its operations
/// are kept out of line: this is a slow path, and its size is compile time for every callback.
#[derive(Clone)]
struct Big {
    limbs: [u32; LIMBS],
    len: usize,
}

impl Big {
    fn from_u64(n: u64) -> Self {
        let mut big = Big {
            limbs: [0; LIMBS],
            len: 2,
        };
        big.limbs[0] = n as u32;
        big.limbs[1] = (n >> 32) as u32;
        big.trim();
        big
    }

    fn trim(&mut self) {
        while self.len > 0 && self.limbs[self.len - 1] == 0 {
            self.len -= 1;
        }
    }

    #[inline(never)]
    fn mul_small(&mut self, k: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs[..self.len] {
            let product = u64::from(*limb) * u64::from(k) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry > 0 {
            self.limbs[self.len] = carry as u32;
            self.len += 1;
        }
    }

    fn mul_pow10(&mut self, mut n: u32) {
        while n >= 9 {
            self.mul_small(1_000_000_000);
            n -= 9;
        }
        self.mul_small(10u32.pow(n));
    }

    #[inline(never)]
    fn shl(&mut self, bits: u32) {
        let (limbs, bits) = ((bits / 32) as usize, bits % 32);
        if self.len == 0 {
            return;
        }
        if bits > 0 {
            let mut carry = 0;
            for limb in &mut self.limbs[..self.len] {
                let next = *limb >> (32 - bits);
                *limb = (*limb << bits) | carry;
                carry = next;
            }
            if carry > 0 {
                self.limbs[self.len] = carry;
                self.len += 1;
            }
        }
        if limbs > 0 {
            self.limbs.copy_within(..self.len, limbs);
            self.limbs[..limbs].fill(0);
            self.len += limbs;
        }
    }

    #[inline(never)]
    fn shr1(&mut self) {
        let mut carry = 0;
        for limb in self.limbs[..self.len].iter_mut().rev() {
            let next = *limb << 31;
            *limb = (*limb >> 1) | carry;
            carry = next;
        }
        self.trim();
    }

    #[inline(never)]
    fn cmp(&self, other: &Big) -> Ordering {
        self.len.cmp(&other.len).then_with(|| {
            let (a, b) = (&self.limbs[..self.len], &other.limbs[..other.len]);
            a.iter().rev().cmp(b.iter().rev())
        })
    }

    /// `self -= other`, where `other <= self`.
    #[inline(never)]
    fn sub(&mut self, other: &Big) {
        let mut borrow = false;
        for (limb, &o) in self.limbs[..self.len].iter_mut().zip(&other.limbs) {
            let (d, b1) = limb.overflowing_sub(o);
            let (d, b2) = d.overflowing_sub(u32::from(borrow));
            *limb = d;
            borrow = b1 || b2;
        }
        debug_assert!(!borrow, "Big::sub underflowed");
        self.trim();
    }
}

/// Appends `format!("{v:.3e}")` for a finite, non-zero `v` to `out`.
#[inline(never)]
pub(crate) fn push_sci3(out: &mut String, v: f64) {
    debug_assert!(v.is_finite() && v != 0.0);
    let (m, e) = decompose(v);
    // floor(log10 |v|) is within one of floor(floor(log2 |v|) * log10(2)); the loops below
    // settle it exactly.
    let log2 = e + 63 - m.leading_zeros() as i32;
    let mut k = ((i64::from(log2) * 78_913) >> 18) as i32;

    // N / D = |v| * 10^(3 - k).
    let (mut n, mut d) = (Big::from_u64(m), Big::from_u64(1));
    if e >= 0 {
        n.shl(e as u32);
    } else {
        d.shl(e.unsigned_abs());
    }
    let q = 3 - k;
    if q >= 0 {
        n.mul_pow10(q as u32);
    } else {
        d.mul_pow10(q.unsigned_abs());
    }
    loop {
        let mut d1000 = d.clone();
        d1000.mul_small(1000);
        if n.cmp(&d1000) == Ordering::Less {
            n.mul_small(10);
            k -= 1;
            continue;
        }
        let mut d10000 = d1000;
        d10000.mul_small(10);
        if n.cmp(&d10000) != Ordering::Less {
            d.mul_small(10);
            k += 1;
            continue;
        }
        break;
    }

    // 1000 <= N / D < 10000 < 2^14: long division, one bit at a time.
    let mut digits = 0u32;
    let mut shifted = d.clone();
    shifted.shl(13);
    for bit in (0..14).rev() {
        if n.cmp(&shifted) != Ordering::Less {
            n.sub(&shifted);
            digits |= 1 << bit;
        }
        shifted.shr1();
    }
    // Round the remainder N / D to nearest, ties to even.
    n.shl(1);
    let round_up = match n.cmp(&d) {
        Ordering::Greater => true,
        Ordering::Equal => digits % 2 == 1,
        Ordering::Less => false,
    };
    if round_up {
        digits += 1;
        if digits == 10_000 {
            digits = 1000;
            k += 1;
        }
    }

    // Sign, leading digit, point, three decimals, 'e', exponent (-324..=308): 11 bytes at most.
    let mut text = Ascii::<16>::new();
    if v.is_sign_negative() {
        text.push(b'-');
    }
    text.uint(digits / 1000);
    text.push(b'.');
    text.uint_width(digits % 1000, 3);
    text.push(b'e');
    if k < 0 {
        text.push(b'-');
    }
    text.uint(k.unsigned_abs());
    text.append_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sci3(v: f64) -> String {
        let mut s = String::new();
        push_sci3(&mut s, v);
        s
    }

    fn check(v: f64) {
        for v in [v, -v] {
            assert_eq!(sci3(v), format!("{v:.3e}"), "{:#x}", v.to_bits());
        }
    }

    #[test]
    fn edges_of_the_range() {
        for v in [
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE * (1.0 - f64::EPSILON), // the largest subnormal
            f64::from_bits(1),                        // the smallest subnormal
            f64::from_bits(2),
            1e-3 * (1.0 - f64::EPSILON),
            1e6,
            1e-5,
            1.0,
            9.9995e-5, // rounds up into the next decade
            9.99949e-5,
            1e22,
            1e23, // not exactly representable
            123_456_789.0,
        ] {
            check(v);
        }
        assert_eq!(sci3(1e-5), "1.000e-5");
        assert_eq!(sci3(-2.5e7), "-2.500e7");
    }

    /// Exact ties at the fourth significant digit only exist for integers (a tie below 1 would
    /// need the binary value to end in a five); they round to even, as `core` does.
    #[test]
    #[cfg_attr(miri, ignore)] // fifteen thousand values: most of an hour under Miri
    fn ties_round_to_even_as_core_does() {
        for lead in (1000..10_000).step_by(7) {
            for power in 0..=11 {
                let v = f64::from(lead * 10 + 5) * 10f64.powi(power);
                check(v);
            }
        }
        assert_eq!(sci3(1_000_500.0), "1.000e6");
        assert_eq!(sci3(1_001_500.0), "1.002e6");
    }

    /// Every exponent, subnormals included, with pseudo-random mantissas (xorshift; no
    /// dependencies).
    #[test]
    #[cfg_attr(miri, ignore)] // hundreds of thousands of values: hours under Miri
    fn sweep_matches_core_formatting() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut checked = 0;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x >> 1);
            if v.is_finite() && v != 0.0 {
                check(v);
                checked += 1;
            }
        }
        for biased in 0..2047u64 {
            for fraction in [0, 1, (1 << 52) - 1, 0x8_0000_0000_0000, x & ((1 << 52) - 1)] {
                let v = f64::from_bits(biased << 52 | fraction);
                if v != 0.0 {
                    check(v);
                    checked += 1;
                }
            }
        }
        assert!(checked > 300_000, "only {checked} values checked");
    }
}
