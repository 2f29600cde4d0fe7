//! CronJob schedules: standard five-field cron lines and `@hourly`-style names (a sixth, leading seconds field
//! is accepted as a wasmkube extension), evaluated in a time zone with croner.

use croner::Cron;
use std::str::FromStr;

/// More missed start times than this are not counted one by one (Kubernetes' limit too).
pub const MAX_MISSED: usize = 100;

/// A schedule in a time zone.
pub struct Schedule {
    cron: Cron,
    zone: jiff::tz::TimeZone,
}

impl Schedule {
    /// Parses a CronJob's schedule and time zone.
    pub fn new(schedule: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let cron = Cron::from_str(schedule)
            .map_err(|e| format!("unparseable schedule {schedule:?}: {e}"))?;
        let zone = match time_zone {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map_err(|e| format!("unknown time zone {name:?}: {e}"))?,
            None => jiff::tz::TimeZone::UTC,
        };
        Ok(Self { cron, zone })
    }

    /// The first scheduled time after `after`.
    pub fn next_after(&self, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let from = after.to_zoned(self.zone.clone());
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest scheduled time in (`after`, `now`], and how many there were (at most [`MAX_MISSED`] + 1).
    pub fn latest_due(
        &self,
        after: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> (Option<jiff::Timestamp>, usize) {
        let (mut latest, mut count, mut cursor) = (None, 0, after);
        while let Some(next) = self.next_after(cursor).filter(|t| *t <= now) {
            latest = Some(next);
            count += 1;
            cursor = next;
            if count > MAX_MISSED {
                // Jump to the last window before now instead of walking through years of misses.
                let back = now
                    .checked_sub(jiff::SignedDuration::from_hours(24))
                    .unwrap_or(now);
                if back > cursor {
                    cursor = back;
                }
            }
        }
        (latest, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_latest_due_time_and_the_next_one_follow_the_schedule() {
        let hourly = Schedule::new("0 * * * *", None).unwrap();
        let (due, count) =
            hourly.latest_due(at("2026-01-01T00:30:00Z"), at("2026-01-01T03:10:00Z"));
        assert_eq!((due, count), (Some(at("2026-01-01T03:00:00Z")), 3));
        assert_eq!(
            hourly.latest_due(at("2026-01-01T03:00:00Z"), at("2026-01-01T03:10:00Z")),
            (None, 0)
        );
        assert_eq!(
            hourly.next_after(at("2026-01-01T03:10:00Z")),
            Some(at("2026-01-01T04:00:00Z"))
        );
        let named = Schedule::new("@daily", None).unwrap();
        assert_eq!(
            named.next_after(at("2026-01-01T03:10:00Z")),
            Some(at("2026-01-02T00:00:00Z"))
        );
        let zoned = Schedule::new("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(
            zoned.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T08:00:00Z"))
        );
        assert!(Schedule::new("every now and then", None).is_err());
        assert!(Schedule::new("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn years_of_missed_times_are_not_walked_one_by_one() {
        let every_minute = Schedule::new("* * * * *", None).unwrap();
        let (due, count) =
            every_minute.latest_due(at("2020-01-01T00:00:00Z"), at("2026-01-01T00:00:30Z"));
        assert_eq!(due, Some(at("2026-01-01T00:00:00Z")));
        assert!(count > MAX_MISSED);
    }
}
