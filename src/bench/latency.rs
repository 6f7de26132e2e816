//! How latencies are recorded: the bounds and units of the bench's
//! HdrHistograms (shared by the load threads, the progress lines, the
//! report and the merge of reports).

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The generator's own send lateness is recorded in nanoseconds (it is
/// often below a microsecond), up to an hour.
pub fn new_histogram_ns() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}
