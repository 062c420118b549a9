//! A cheap clock for timing guest calls.
//!
//! Every guest call is timed for the per-callback statistics, so the clock sits on the hottest
//! path there is: on the 2-vCPU VM we benchmark on, the two `Instant::now()` around a call cost
//! ~60 ns, about 15% of an empty component call. On x86-64 with an invariant time-stamp counter
//! (constant rate, not stopped in sleep states: what Linux reports as `constant_tsc` and
//! `nonstop_tsc`) the counter is read instead: ~12 ns a read on the AMD VM of BENCHMARKS.md,
//! 22-23 ns on the slowest Intel VM there (38-43 ns for `clock_gettime` on that one). Call times
//! are summed in ticks and converted to nanoseconds only when read, at the rate the counter ran
//! against `Instant` since the clock was first used, so no start-up calibration is needed.
//! Elsewhere `Instant` is used.

use std::sync::OnceLock;
use std::time::Instant;

/// A point in time from [`now`]: counter ticks, or nanoseconds where there is no usable counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(u64);

/// The reference point: the same moment by `Instant` and by the counter.
struct Origin {
    instant: Instant,
    ticks: u64,
    counter: bool,
}

fn origin() -> &'static Origin {
    static ORIGIN: OnceLock<Origin> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        let counter = invariant_tsc();
        let (instant, ticks) = if counter {
            paired_read()
        } else {
            (Instant::now(), 0)
        };
        Origin {
            instant,
            ticks,
            counter,
        }
    })
}

/// `Instant` and the counter read at (nearly) the same moment: the counter is read on both sides
/// of `Instant::now()` and the pair kept only if nothing (a preemption, an interrupt) came
/// between them, up to a few tries. A skewed pair would skew every conversion by its gap over
/// the span measured.
fn paired_read() -> (Instant, u64) {
    const CLOSE: u64 = 20_000; // ticks: ~10 µs at 2 GHz
    let read = || {
        let before = read_tsc();
        let instant = Instant::now();
        let gap = read_tsc().saturating_sub(before);
        (instant, before + gap / 2, gap)
    };
    let mut best = read();
    for _ in 1..8 {
        if best.2 < CLOSE {
            break;
        }
        let next = read();
        if next.2 < best.2 {
            best = next;
        }
    }
    (best.0, best.1)
}

/// The current time.
#[inline]
pub(crate) fn now() -> Stamp {
    let origin = origin();
    if origin.counter {
        Stamp(read_tsc())
    } else {
        Stamp(u64::try_from(origin.instant.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

impl Stamp {
    /// Ticks from `self` to now; sum them and convert once with [`ticks_to_ns`].
    #[inline]
    pub(crate) fn ticks_since(self) -> u64 {
        now().0.saturating_sub(self.0)
    }
}

/// Converts a sum of ticks from [`Stamp::ticks_since`] to nanoseconds.
pub(crate) fn ticks_to_ns(ticks: u64) -> u64 {
    let origin = origin();
    if !origin.counter {
        return ticks;
    }
    let (instant, ticks_now) = paired_read();
    let span_ticks = ticks_now.saturating_sub(origin.ticks);
    let span_ns = instant.saturating_duration_since(origin.instant).as_nanos();
    if span_ticks == 0 {
        return 0;
    }
    let ns = u128::from(ticks) * span_ns / u128::from(span_ticks);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    use std::arch::x86_64::__cpuid;
    // CPUID 0x8000_0007, EDX bit 8: the TSC runs at a constant rate in every power state. The
    // extended leaf is read only if the CPU has it.
    __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn invariant_tsc() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn read_tsc() -> u64 {
    // SAFETY: RDTSC has no preconditions; `invariant_tsc` decided that its value means time.
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_tsc() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn measures_a_known_span_in_nanoseconds() {
        let _ = now(); // fix the origin first, as a run does long before it reads its totals
        std::thread::sleep(Duration::from_millis(20));
        // `Instant` brackets the timed span from outside and from inside, so a preemption
        // between the reads cannot make the test fail, only widen the bracket.
        let outer = Instant::now();
        let start = now();
        let inner = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let inner_ns = inner.elapsed().as_nanos() as f64;
        let ticks = start.ticks_since();
        let outer_ns = outer.elapsed().as_nanos() as f64;
        let ns = ticks_to_ns(ticks) as f64;
        assert!(ns >= 30e6, "measured {ns} ns for a 30 ms sleep");
        // The conversion's own error is the reference pairs' gap over a 50+ ms span: far under 1%.
        assert!(
            inner_ns * 0.99 <= ns && ns <= outer_ns * 1.01,
            "{ns} ns, outside [{inner_ns}, {outer_ns}] ns by Instant"
        );
    }

    #[test]
    fn sums_of_short_spans_convert_like_one_span() {
        let mut total = 0;
        let wall = Instant::now();
        for _ in 0..1000 {
            let start = now();
            std::hint::black_box((0..100).sum::<u64>());
            total += start.ticks_since();
        }
        let ns = ticks_to_ns(total);
        assert!(ns > 0, "1000 timed spans summed to zero");
        assert!(
            u128::from(ns) <= wall.elapsed().as_nanos(),
            "the parts ({ns} ns) exceed the whole"
        );
    }
}
