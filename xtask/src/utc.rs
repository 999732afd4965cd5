//! Times in UTC as the xtask prints and records them (`2024-01-31 12:00:00 UTC`),
//! and calendar dates as seconds since the epoch, without a date library: the
//! proleptic Gregorian calendar both ways (H. Hinnant's day-count algorithms).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, e.g. `2026-11-24 06:49:05 UTC`.
pub fn now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format(seconds)
}

/// `seconds` since the epoch, e.g. `2024-01-31 12:00:00 UTC`.
pub fn format(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // The inverse of days_from_civil.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Seconds since the epoch of a UTC date and time; `None` for an impossible month,
/// day or time of day, or a date before 1970.
pub fn seconds_since_epoch(
    (year, month, day): (u64, u64, u64),
    (hour, minute, second): (u64, u64, u64),
) -> Option<u64> {
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_seconds() {
        assert_eq!(format(1795503576), "2026-11-24 06:59:36 UTC");
        assert_eq!(format(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn dates_become_seconds_and_back() {
        assert_eq!(
            seconds_since_epoch((2026, 11, 24), (6, 59, 36)),
            Some(1795503576)
        );
        assert_eq!(seconds_since_epoch((1970, 1, 1), (0, 0, 0)), Some(0));
        for seconds in [951_782_400, 4_102_444_799] {
            let text = format(seconds);
            let n = |range: std::ops::Range<usize>| text[range].parse::<u64>().unwrap();
            assert_eq!(
                seconds_since_epoch(
                    (n(0..4), n(5..7), n(8..10)),
                    (n(11..13), n(14..16), n(17..19))
                ),
                Some(seconds),
                "{text}"
            );
        }
        assert_eq!(seconds_since_epoch((2026, 13, 1), (0, 0, 0)), None);
        assert_eq!(seconds_since_epoch((1969, 12, 31), (0, 0, 0)), None);
        assert_eq!(seconds_since_epoch((2026, 1, 1), (24, 0, 0)), None);
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        assert!(now().as_str() > "2026-", "{}", now());
    }
}
