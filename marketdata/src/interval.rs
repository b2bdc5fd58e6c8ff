//! Kline intervals and UTC calendar arithmetic (no time-zone database: everything is UTC).

/// Seconds per day.
const DAY: u64 = 86_400;

/// A kline interval, as named by Backpack (`1m` … `1month`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KlineInterval {
    /// A fixed number of seconds, buckets aligned on the epoch (1m … 3d).
    Seconds(u64),
    /// Calendar weeks starting Monday 00:00 UTC.
    Week,
    /// Calendar months starting on the 1st, 00:00 UTC.
    Month,
}

impl KlineInterval {
    /// Every interval name accepted, in Backpack's spelling.
    pub const NAMES: [&'static str; 15] =
        ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1month"];

    /// Parses a Backpack interval name (`1month`; `1M` is accepted as a synonym).
    pub fn parse(name: &str) -> Option<Self> {
        let seconds = match name {
            "1m" => 60,
            "3m" => 180,
            "5m" => 300,
            "15m" => 900,
            "30m" => 1_800,
            "1h" => 3_600,
            "2h" => 7_200,
            "4h" => 14_400,
            "6h" => 21_600,
            "8h" => 28_800,
            "12h" => 43_200,
            "1d" => DAY,
            "3d" => 3 * DAY,
            "1w" => return Some(Self::Week),
            "1month" | "1M" => return Some(Self::Month),
            _ => return None,
        };
        Some(Self::Seconds(seconds))
    }

    /// The interval's name in Backpack's spelling (`1month` for a month).
    pub fn name(self) -> &'static str {
        match self {
            Self::Week => "1w",
            Self::Month => "1month",
            Self::Seconds(seconds) => {
                let fallback = if seconds % 86_400 == 0 { "1d" } else { "1m" };
                Self::NAMES.iter().find(|name| Self::parse(name) == Some(self)).copied().unwrap_or(fallback)
            }
        }
    }

    /// Start (seconds since the epoch) of the bucket containing `time`.
    pub fn bucket_start(self, time: u64) -> u64 {
        match self {
            Self::Seconds(length) => time - time % length,
            // 1970-01-05 (day 4) was a Monday.
            Self::Week => {
                let days = time / DAY;
                let monday = if days >= 4 { days - (days - 4) % 7 } else { 0 };
                monday * DAY
            }
            Self::Month => {
                let (year, month, _) = civil_from_days(time / DAY);
                days_from_civil(year, month, 1) * DAY
            }
        }
    }

    /// End (exclusive, seconds) of the bucket starting at `start`.
    pub fn bucket_end(self, start: u64) -> u64 {
        match self {
            Self::Seconds(length) => start + length,
            Self::Week => start + 7 * DAY,
            Self::Month => {
                let (year, month, _) = civil_from_days(start / DAY);
                let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                days_from_civil(year, month, 1) * DAY
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (years from 1970).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Howard Hinnant's algorithm, restricted to dates after the epoch.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month 1–12, day 1–31) of a day number since 1970-01-01.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD<separator>HH:MM:SS` (UTC) of seconds since the epoch.
pub fn format_datetime(seconds: u64, separator: char) -> String {
    let (year, month, day) = civil_from_days(seconds / DAY);
    let time = seconds % DAY;
    format!("{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}", time / 3_600, time / 60 % 60, time % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        for days in (0..40_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_datetime(1_700_000_000, ' '), "2023-11-14 22:13:20");
        assert_eq!(format_datetime(951_782_400, 'T'), "2000-02-29T00:00:00");
    }

    #[test]
    fn buckets() {
        let t = 1_700_000_000; // Tuesday 2023-11-14 22:13:20
        assert_eq!(KlineInterval::parse("1m").unwrap().bucket_start(t), 1_699_999_980);
        assert_eq!(KlineInterval::parse("1h").unwrap().bucket_start(t), 1_699_999_200);
        let week = KlineInterval::Week.bucket_start(t);
        assert_eq!(format_datetime(week, ' '), "2023-11-13 00:00:00", "Monday");
        assert_eq!(format_datetime(KlineInterval::Week.bucket_end(week), ' '), "2023-11-20 00:00:00");
        let month = KlineInterval::Month.bucket_start(t);
        assert_eq!(format_datetime(month, ' '), "2023-11-01 00:00:00");
        assert_eq!(format_datetime(KlineInterval::Month.bucket_end(month), ' '), "2023-12-01 00:00:00");
        let december = days_from_civil(2023, 12, 5) * DAY;
        assert_eq!(format_datetime(KlineInterval::Month.bucket_end(december), ' '), "2024-01-01 00:00:00");
        assert_eq!(KlineInterval::parse("1M"), Some(KlineInterval::Month));
        assert_eq!(KlineInterval::parse("2m"), None);
        assert!(KlineInterval::NAMES.iter().all(|n| KlineInterval::parse(n).is_some()));
        assert!(KlineInterval::NAMES.iter().all(|n| KlineInterval::parse(n).unwrap().name() == *n));
    }
}
