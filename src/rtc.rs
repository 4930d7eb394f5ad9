//! The wall clock against the machine's RTC. The appliance runs no NTP client (it boots with no
//! network access), so the system clock is the kernel's: set from the RTC at boot, then
//! advanced by its clocksource. When that clocksource is miscalibrated the clock runs off: under
//! qemu TCG on a loaded host, the kernel's early TSC calibration can read a PIT value 20 times
//! too small (measured in `make demo`: "tsc: PIT calibration deviates from HPET: 115237
//! 2594138"), the clock gains seconds before the watchdog drops the TSC, and Flower's SuperNode
//! authentication, whose signed timestamps the SuperLink accepts within a few seconds, then
//! answers 401 to every request of that node. The RTC (qemu's follows the host; OpenNebula's
//! libvirt domains keep it in UTC) is right to the second: PID 1 compares the two and steps
//! the system clock to the RTC when they differ by [`MAX_SKEW_S`] or more.

use crate::error::{Ctx, Error, Result};
use std::path::Path;

/// The skew from which the clock is stepped: the RTC has a resolution of one second.
pub const MAX_SKEW_S: i64 = 2;

/// `struct rtc_time` of `linux/rtc.h` (the fields of `struct tm`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RtcTime {
    sec: libc::c_int,
    min: libc::c_int,
    hour: libc::c_int,
    mday: libc::c_int,
    mon: libc::c_int,
    year: libc::c_int,
    wday: libc::c_int,
    yday: libc::c_int,
    isdst: libc::c_int,
}

nix::ioctl_read!(rtc_rd_time, b'p', 0x09, RtcTime);

/// Seconds since the epoch of a UTC calendar time (`mon` 0-11, `year` since 1900), by the
/// days-from-civil algorithm (proleptic Gregorian).
fn epoch_of(t: &RtcTime) -> Option<i64> {
    let (y, m, d) = (t.year as i64 + 1900, t.mon as i64 + 1, t.mday as i64);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(0..24).contains(&t.hour) || !(0..60).contains(&t.min) || !(0..=60).contains(&t.sec) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t.hour as i64 * 3600 + t.min as i64 * 60 + t.sec as i64)
}

/// The RTC's time (UTC) in seconds since the epoch.
pub fn read(dev: &Path) -> Result<i64> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dev).with_ctx(|| format!("open {}", dev.display()))?;
    let mut t = RtcTime::default();
    // SAFETY: RTC_RD_TIME writes one `struct rtc_time` (this layout, 9 ints) into `t`, which
    // lives across the call; the descriptor is open.
    unsafe { rtc_rd_time(f.as_raw_fd(), &mut t) }.with_ctx(|| format!("read the time of {}", dev.display()))?;
    epoch_of(&t).ok_or_else(|| Error::msg(format!("read the time of {}", dev.display()), format!("not a valid time: {t:?}")))
}

/// The step to bring `now` to `rtc` (seconds), or `None` within [`MAX_SKEW_S`].
pub fn step_needed(now: i64, rtc: i64) -> Option<i64> {
    let d = rtc - now;
    (d.abs() >= MAX_SKEW_S).then_some(d)
}

/// Compare the system clock with `dev` and step it to the RTC when they differ by
/// [`MAX_SKEW_S`] or more. Returns the step made (seconds; `None`: none needed). PID 1 only.
pub fn sync_from(dev: &Path) -> Result<Option<i64>> {
    use nix::time::{ClockId, clock_gettime, clock_settime};
    let rtc = read(dev)?;
    let now = clock_gettime(ClockId::CLOCK_REALTIME).ctx("read the system clock")?;
    let Some(step) = step_needed(now.tv_sec(), rtc) else {
        return Ok(None);
    };
    // The RTC's second has begun somewhere in the last second: half a second in, on average.
    let to = nix::sys::time::TimeSpec::new(rtc, 500_000_000);
    clock_settime(ClockId::CLOCK_REALTIME, to).ctx("set the system clock from the RTC")?;
    Ok(Some(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(year: i32, mon: i32, mday: i32, hour: i32, min: i32, sec: i32) -> RtcTime {
        RtcTime { sec, min, hour, mday, mon, year: year - 1900, ..Default::default() }
    }

    #[test]
    fn calendar_times_convert_like_timegm() {
        assert_eq!(epoch_of(&tm(1970, 0, 1, 0, 0, 0)), Some(0));
        // `date -u -d 2026-12-04T23:44:12 +%s`, the RTC line of the demo's console.
        assert_eq!(epoch_of(&tm(2026, 11, 4, 23, 44, 12)), Some(1_796_427_852));
        assert_eq!(epoch_of(&tm(2000, 1, 29, 12, 0, 0)), Some(951_825_600)); // a leap day
        assert_eq!(epoch_of(&tm(2038, 0, 19, 3, 14, 8)), Some(2_147_483_648));
        assert_eq!(epoch_of(&tm(2026, 12, 1, 0, 0, 0)), None, "month 13");
        assert_eq!(epoch_of(&tm(2026, 0, 0, 0, 0, 0)), None, "day 0");
    }

    #[test]
    fn only_a_skew_of_two_seconds_or_more_is_stepped() {
        assert_eq!(step_needed(100, 101), None, "the RTC's resolution");
        assert_eq!(step_needed(100, 99), None);
        assert_eq!(step_needed(107, 100), Some(-7), "the demo's SuperNode ran 7 s ahead");
        assert_eq!(step_needed(100, 102), Some(2));
    }

    #[test]
    fn a_missing_rtc_is_an_error_naming_it() {
        let e = read(Path::new("/nonexistent/rtc0")).unwrap_err().to_string();
        assert!(e.starts_with("open /nonexistent/rtc0"), "{e}");
    }
}
