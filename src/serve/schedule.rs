//! When `crmsync serve` starts a run: a fixed interval (`every = "15m"`) or a cron expression
//! (`cron = "*/15 * * * *"`), always in UTC.
//!
//! Cron expressions have the five classic fields (minute, hour, day of month, month, day of
//! week) or six with a leading seconds field; each field takes `*`, numbers, ranges `a-b`,
//! steps `*/n`, `a/n` and `a-b/n`, lists `a,b`, and month and weekday names (`JAN`, `MON`; 0
//! and 7 are both Sunday). As in Vixie cron, when both day fields are restricted a day matching
//! either one fires; when either starts with `*`, a day must match both. `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly` stand for their usual
//! expressions.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// Why an expression is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), found {found}"
    )]
    FieldCount { found: usize },
    #[error("cron field {field} ({name}): {problem}")]
    Field {
        field: usize,
        name: &'static str,
        problem: String,
    },
    #[error("the cron expression never fires (no such date in the next {YEARS_AHEAD} years)")]
    Never,
}

/// How far ahead a next firing is looked for; an expression with none there never fires
/// (e.g. `0 0 30 2 *`, 30 February).
const YEARS_AHEAD: i16 = 8;

/// When runs start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A run this long after the previous one started (a run that overruns is followed at
    /// once by the next).
    Every(SignedDuration),
    Cron(Cron),
}

impl Schedule {
    /// The first start strictly after `after`, or `None` if there is none (a cron expression
    /// that never fires is refused when parsed, so only far-future overflow gives `None`).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(interval) => after.checked_add(*interval).ok(),
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }

    /// The longest wait between two starts from `from` over `span` (the wait past the span's
    /// end to the next start included; at most 100,000 starts are looked at): a bound on how
    /// long a healthy daemon goes between runs.
    pub fn longest_gap_within(&self, from: Timestamp, span: SignedDuration) -> SignedDuration {
        let end = from.checked_add(span).unwrap_or(from);
        let mut longest = SignedDuration::ZERO;
        let mut at = from;
        for _ in 0..100_000 {
            let Some(next) = self.next_after(at) else {
                break;
            };
            longest = longest.max(next.duration_since(at));
            // At least one whole wait between two starts is measured, however long.
            if next >= end && at != from {
                break;
            }
            at = next;
        }
        longest
    }

    /// The schedule in words, for logs.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(interval) => format!("every {interval:#}"),
            Schedule::Cron(cron) => format!("cron \"{}\" (UTC)", cron.source),
        }
    }
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECONDS: FieldSpec = FieldSpec {
    name: "seconds",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTES: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAYS: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// 7 is Sunday as well as 0; folded onto 0 after parsing.
const WEEKDAYS: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl std::str::FromStr for Cron {
    type Err = ScheduleError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        let expanded = match source.trim().to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            _ => source.trim().to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            found => return Err(ScheduleError::FieldCount { found }),
        };
        let offset = usize::from(fields.len() == 6);
        let field = |index: usize, text: &str, spec: &FieldSpec| {
            parse_field(text, spec).map_err(|problem| ScheduleError::Field {
                field: index + 1,
                name: spec.name,
                problem,
            })
        };
        let seconds_bits = if offset == 1 {
            field(0, seconds, &SECONDS)?
        } else {
            1
        };
        let mut weekdays = field(offset + 4, rest[4], &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let cron = Cron {
            source: source.trim().to_string(),
            seconds: seconds_bits,
            minutes: field(offset, rest[0], &MINUTES)?,
            hours: field(offset + 1, rest[1], &HOURS)?,
            days: field(offset + 2, rest[2], &DAYS)?,
            months: field(offset + 3, rest[3], &MONTHS)?,
            weekdays,
            days_restricted: !is_unrestricted_day(rest[2]),
            weekdays_restricted: !is_unrestricted_day(rest[4]),
        };
        if cron.next_after(Timestamp::UNIX_EPOCH).is_none()
            && cron.next_after(Timestamp::now()).is_none()
        {
            return Err(ScheduleError::Never);
        }
        Ok(cron)
    }
}

fn is_star(field: &str) -> bool {
    field == "*" || field == "?"
}

/// Whether a day field counts as unrestricted for the either-day rule: as in Vixie cron, one
/// that starts with `*` (so `*/2` too, which still limits the days).
fn is_unrestricted_day(field: &str) -> bool {
    field.starts_with('*') || field == "?"
}

/// The values a field allows, as bits.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step, stepped) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|step| *step > 0)
                    .ok_or_else(|| format!("step {step:?} is not a whole number above 0"))?;
                (range, step, true)
            }
            None => (part, 1, false),
        };
        let (low, high) = if is_star(range) {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, spec)?, value(high, spec)?)
        } else {
            let low = value(range, spec)?;
            // `a/n` runs from a to the end of the field.
            (low, if stepped { spec.max } else { low })
        };
        if low > high {
            return Err(format!("range {range:?} runs backwards"));
        }
        let mut at = low;
        while at <= high {
            bits |= 1 << at;
            match at.checked_add(step) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    Ok(bits)
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(index) = spec.names.iter().position(|name| *name == upper) {
        return Ok(spec.min + index as u32);
    }
    let number: u32 = text.parse().map_err(|_| {
        if spec.names.is_empty() {
            format!("{text:?} is not a number")
        } else {
            format!(
                "{text:?} is neither a number nor one of {}",
                spec.names.join(", ")
            )
        }
    })?;
    if number < spec.min || number > spec.max {
        return Err(format!("{number} is outside {}–{}", spec.min, spec.max));
    }
    Ok(number)
}

fn has(bits: u64, value: i8) -> bool {
    value >= 0 && bits & (1 << value) != 0
}

impl Cron {
    /// As in Vixie cron: when either day field starts with `*` a day must match both (a bare
    /// `*` matches every day, so the other decides); when both are restricted, either will do.
    fn day_matches(&self, date: Date) -> bool {
        let day = has(self.days, date.day());
        let weekday = has(self.weekdays, date.weekday().to_sunday_zero_offset());
        if self.days_restricted && self.weekdays_restricted {
            day || weekday
        } else {
            day && weekday
        }
    }

    /// The first second strictly after `after` the expression matches, in UTC.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(TimeZone::UTC).datetime();
        let mut at = start
            .checked_add(1.second())
            .ok()?
            .with()
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        let horizon = start.date().year().checked_add(YEARS_AHEAD)?;
        while at.date().year() <= horizon {
            let date = at.date();
            if !has(self.months, date.month()) {
                at = DateTime::from_parts(
                    date.first_of_month().checked_add(1.month()).ok()?,
                    Time::midnight(),
                );
                continue;
            }
            if !self.day_matches(date) {
                at = DateTime::from_parts(date.tomorrow().ok()?, Time::midnight());
                continue;
            }
            if !has(self.hours, at.hour()) {
                at = at
                    .with()
                    .minute(0)
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(self.minutes, at.minute()) {
                at = at
                    .with()
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(1.minute())
                    .ok()?;
                continue;
            }
            if !has(self.seconds, at.second()) {
                at = at.checked_add(1.second()).ok()?;
                continue;
            }
            return at
                .to_zoned(TimeZone::UTC)
                .ok()
                .map(|zoned| zoned.timestamp());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn next(expression: &str, after: &str) -> String {
        let cron: Cron = expression.parse().expect("a valid expression");
        cron.next_after(at(after))
            .expect("a next start")
            .to_string()
    }

    #[test]
    fn fields_steps_ranges_lists_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2026-12-07T08:07:31Z"),
            "2026-12-07T08:15:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-07T08:15:00Z"),
            "2026-12-07T08:30:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-12-07T13:00:00Z"),
            "2026-12-07T17:00:00Z"
        );
        assert_eq!(
            next("30 2 * * MON-FRI", "2026-12-04T03:00:00Z"),
            "2026-12-07T02:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-02-01T00:00:00Z"),
            "2026-07-01T00:00:00Z"
        );
        assert_eq!(
            next("0 12 * * 7", "2026-12-07T00:00:00Z"),
            "2026-12-13T12:00:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-12-07T08:26:00Z"),
            "2026-12-07T08:45:00Z"
        );
        assert_eq!(
            next("@daily", "2026-12-31T23:59:59Z"),
            "2027-01-01T00:00:00Z"
        );
        // Six fields: seconds first.
        assert_eq!(
            next("*/10 * * * * *", "2026-12-07T08:00:01.5Z"),
            "2026-12-07T08:00:10Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_fire_on_either() {
        // The 13th, or any Friday: Friday 11 December 2026 comes first.
        assert_eq!(
            next("0 0 13 * 5", "2026-12-07T00:00:00Z"),
            "2026-12-11T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2026-12-11T00:00:00Z"),
            "2026-12-13T00:00:00Z"
        );
        // A day field starting with `*` limits the days but joins the other with AND:
        // odd days that are Fridays (11 December, then 25 December).
        assert_eq!(
            next("0 0 */2 * FRI", "2026-12-07T00:00:00Z"),
            "2026-12-11T00:00:00Z"
        );
        assert_eq!(
            next("0 0 */2 * FRI", "2026-12-11T00:00:00Z"),
            "2026-12-25T00:00:00Z"
        );
        // `a/1` runs from a to the end of the field.
        assert_eq!(
            next("50/1 * * * *", "2026-12-07T08:55:30Z"),
            "2026-12-07T08:56:00Z"
        );
        // Only the day of month: 29 February comes in a leap year.
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
    }

    #[test]
    fn bad_expressions_say_which_field_and_why() {
        let error = |text: &str| text.parse::<Cron>().expect_err("refused").to_string();
        assert!(error("* * *").contains("5 fields"));
        assert_eq!(
            error("61 * * * *"),
            "cron field 1 (minute): 61 is outside 0–59"
        );
        assert!(error("* * * FOO *").contains("field 4 (month)"));
        assert!(error("*/0 * * * *").contains("step"));
        assert!(error("0 0 30 2 *").contains("never fires"));
        assert!(error("10-5 * * * *").contains("backwards"));
    }

    #[test]
    fn intervals_and_the_longest_gap() {
        let every = Schedule::Every(SignedDuration::from_mins(15));
        assert_eq!(
            every.next_after(at("2026-12-07T08:00:00Z")),
            Some(at("2026-12-07T08:15:00Z"))
        );
        let weekdays = Schedule::Cron("0 9 * * 1-5".parse().expect("valid"));
        // Friday 9:00 to Monday 9:00.
        assert_eq!(
            weekdays
                .longest_gap_within(at("2026-12-07T00:00:00Z"), SignedDuration::from_hours(192)),
            SignedDuration::from_hours(72)
        );
        // A wait longer than the span still counts whole: January to February.
        let monthly = Schedule::Cron("@monthly".parse().expect("valid"));
        assert_eq!(
            monthly.longest_gap_within(at("2026-12-20T00:00:00Z"), SignedDuration::from_hours(192)),
            SignedDuration::from_hours(31 * 24)
        );
        // Every minute in office hours: the night and the weekend are the longest waits.
        let office = Schedule::Cron("* 9-17 * * 1-5".parse().expect("valid"));
        assert_eq!(
            office.longest_gap_within(at("2026-12-07T00:00:00Z"), SignedDuration::from_hours(192)),
            SignedDuration::from_hours(63) + SignedDuration::from_mins(1)
        );
    }
}
