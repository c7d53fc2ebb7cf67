//! Sync schedules: 5-field cron, `@hourly`-style macros, and the short forms `every 15m`, `every 2h`,
//! `daily 05:00,17:00`.
//!
//! All forms are evaluated in the instance time zone, so `daily 05:00` means 05:00 local time on both
//! sides of a DST change. `every N` intervals are anchored at local midnight: `every 15m` fires at :00,
//! :15, :30 and :45 of every hour; an interval that does not divide the day restarts at midnight.

use chrono::{DateTime, Duration, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron expression (or macro), kept with its text for display. Shared: thousands of tables
    /// often use one expression, and a parsed one takes kilobytes.
    Cron(std::sync::Arc<Cron>, String),
    Every(Duration),
    Daily(Vec<NaiveTime>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    pub hint: &'static str,
}

const HINT: &str = "use 5-field cron (\"*/15 * * * *\"), @hourly/@daily/@weekly/@monthly/@yearly, \
                    \"every 15m\" / \"every 2h\", or \"daily 05:00,17:00\"";

fn err(message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        message: message.into(),
        hint: HINT,
    }
}

impl Schedule {
    /// [`Schedule::parse`], memoised: an instance repeats a handful of schedule strings across thousands
    /// of tables, and parsing a cron expression costs tens of microseconds.
    pub fn parse_cached(text: &str) -> Result<Schedule, ScheduleError> {
        static CACHE: OnceLock<Mutex<HashMap<String, Result<Schedule, ScheduleError>>>> =
            OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(hit) = cache.lock().ok().and_then(|c| c.get(text).cloned()) {
            return hit;
        }
        let parsed = Schedule::parse(text);
        if let Ok(mut c) = cache.lock() {
            c.insert(text.to_owned(), parsed.clone());
        }
        parsed
    }

    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("every ") {
            return parse_every(rest.trim());
        }
        if let Some(rest) = t.strip_prefix("daily ") {
            return parse_daily(rest.trim());
        }
        if t.starts_with('@') {
            let known = [
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@midnight",
                "@hourly",
            ];
            if !known.contains(&t) {
                return Err(err(format!("unknown schedule macro `{t}`")));
            }
        } else {
            let fields = t.split_whitespace().count();
            if fields != 5 {
                return Err(err(format!(
                    "a cron expression has 5 fields (minute hour day month weekday), this one has {fields}"
                )));
            }
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        parser
            .parse(t)
            .map(|c| Schedule::Cron(std::sync::Arc::new(c), t.to_owned()))
            .map_err(|e| err(format!("invalid cron expression `{t}`: {e}")))
    }

    /// The first fire time strictly after `after`, in zone `tz`.
    pub fn next_after(&self, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Schedule::Cron(c, _) => c.find_next_occurrence(&after, false).ok(),
            Schedule::Every(step) => {
                let tz = after.timezone();
                let mut day = after.date_naive();
                for _ in 0..3 {
                    let midnight = at_local(tz, day.and_time(NaiveTime::MIN))?;
                    let elapsed = after.signed_duration_since(midnight);
                    let n = if elapsed < Duration::zero() {
                        0
                    } else {
                        elapsed.num_seconds() / step.num_seconds() + 1
                    };
                    let candidate = midnight + *step * n as i32;
                    if candidate.date_naive() == day {
                        return Some(candidate);
                    }
                    day = day.succ_opt()?;
                }
                None
            }
            Schedule::Daily(times) => {
                let tz = after.timezone();
                let mut day = after.date_naive();
                for _ in 0..3 {
                    for t in times {
                        if let Some(at) = at_local(tz, day.and_time(*t)).filter(|at| *at > after) {
                            return Some(at);
                        }
                    }
                    day = day.succ_opt()?;
                }
                None
            }
        }
    }
}

impl Schedule {
    /// The last fire time at or before `at`, in zone `at`'s: when a sync was last due. None only
    /// for a cron expression with no time in the last five years.
    pub fn previous_at_or_before(&self, at: DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Schedule::Cron(c, _) => c
                .find_previous_occurrence(&at, true)
                .ok()
                .filter(|t| at.signed_duration_since(*t) < Duration::days(5 * 366)),
            Schedule::Every(step) => {
                // Fire times are local midnight + k × step, k ≥ 0, within the day.
                let tz = at.timezone();
                let midnight = at_local(tz, at.date_naive().and_time(NaiveTime::MIN))?;
                if midnight > at {
                    // `at` is in a gap before a midnight skipped by DST: yesterday's last.
                    let day = at.date_naive().pred_opt()?;
                    return self.previous_at_or_before(at_local(tz, day.and_hms_opt(23, 59, 59)?)?);
                }
                let elapsed = at.signed_duration_since(midnight).num_seconds();
                let k = elapsed / step.num_seconds();
                Some(midnight + *step * k as i32)
            }
            Schedule::Daily(times) => {
                let tz = at.timezone();
                let mut day = at.date_naive();
                for _ in 0..3 {
                    for t in times.iter().rev() {
                        if let Some(fire) = at_local(tz, day.and_time(*t)).filter(|f| *f <= at) {
                            return Some(fire);
                        }
                    }
                    day = day.pred_opt()?;
                }
                None
            }
        }
    }
}

/// How a table's last successful sync compares with its schedule (`pipeline status`,
/// `GET /api/status`, `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Freshness {
    /// No scheduled time has passed since the last successful sync.
    Fresh,
    /// The schedule fired at `expected_at` (RFC 3339, UTC) and no sync has succeeded since.
    Late {
        expected_at: String,
        late_by_seconds: i64,
    },
    /// It has a schedule and has never synced successfully.
    NeverSynced,
    /// No schedule: synced only when asked.
    Unscheduled,
}

impl Freshness {
    /// `schedule` (as resolved at apply) evaluated in `tz`; `last_ok` is when the last successful
    /// sync started.
    pub fn of(
        schedule: Option<&str>,
        last_ok: Option<DateTime<chrono::Utc>>,
        now: DateTime<chrono::Utc>,
        tz: Tz,
    ) -> Freshness {
        let Some(schedule) = schedule.and_then(|s| Schedule::parse_cached(s).ok()) else {
            return Freshness::Unscheduled;
        };
        let Some(last_ok) = last_ok else {
            return Freshness::NeverSynced;
        };
        match schedule.previous_at_or_before(now.with_timezone(&tz)) {
            // Schedules fire on the second; a sync that started within it counts.
            Some(expected) if last_ok.timestamp() < expected.timestamp() => Freshness::Late {
                expected_at: crate::timestamp::rfc3339(expected.with_timezone(&chrono::Utc)),
                late_by_seconds: now.signed_duration_since(expected).num_seconds().max(0),
            },
            _ => Freshness::Fresh,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Late { .. } => "late",
            Freshness::NeverSynced => "never_synced",
            Freshness::Unscheduled => "unscheduled",
        }
    }
}

/// The instant of a local time; a time skipped by a DST change (some zones skip midnight itself) is
/// taken at the first instant after the gap, a repeated one at its first occurrence.
fn at_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Tz>> {
    tz.from_local_datetime(&local).earliest().or_else(|| {
        tz.from_local_datetime(&(local + Duration::hours(1)))
            .earliest()
    })
}

fn parse_every(rest: &str) -> Result<Schedule, ScheduleError> {
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (num, unit) = rest.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        err(format!(
            "`every {rest}`: expected a number and a unit, e.g. `every 15m`"
        ))
    })?;
    let step = match unit.trim() {
        "m" | "min" | "mins" | "minute" | "minutes" => Duration::minutes(n),
        "h" | "hour" | "hours" => Duration::hours(n),
        other => {
            return Err(err(format!(
                "`every {rest}`: unknown unit `{other}` (use m or h)"
            )))
        }
    };
    if step < Duration::minutes(1) || step > Duration::hours(24) {
        return Err(err(format!(
            "`every {rest}`: the interval must be between 1 minute and 24 hours"
        )));
    }
    Ok(Schedule::Every(step))
}

fn parse_daily(rest: &str) -> Result<Schedule, ScheduleError> {
    let mut times = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        let t = NaiveTime::parse_from_str(part, "%H:%M")
            .map_err(|_| err(format!("`daily {rest}`: `{part}` is not a time as HH:MM")))?;
        times.push(t);
    }
    times.sort();
    times.dedup();
    Ok(Schedule::Daily(times))
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(_, text) => f.write_str(text),
            Schedule::Every(d) if d.num_minutes() % 60 == 0 => {
                write!(f, "every {}h", d.num_hours())
            }
            Schedule::Every(d) => write!(f, "every {}m", d.num_minutes()),
            Schedule::Daily(times) => {
                let list: Vec<String> = times
                    .iter()
                    .map(|t| t.format("%H:%M").to_string())
                    .collect();
                write!(f, "daily {}", list.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Prague;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Tz> {
        Prague.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn accepted_forms() {
        for s in [
            "*/15 * * * *",
            "0 5 * * 1-5",
            "@daily",
            "@hourly",
            "every 15m",
            "every 2h",
            "daily 05:00,17:00",
        ] {
            assert!(Schedule::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejected_forms_say_why() {
        let e = Schedule::parse("0 5 * *").unwrap_err();
        assert!(e.message.contains("5 fields"), "{}", e.message);
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("@fortnightly").is_err());
        assert!(Schedule::parse("every 15s").is_err());
        assert!(Schedule::parse("daily 25:00").is_err());
        assert!(Schedule::parse("0 0 * * * *").is_err(), "6 fields");
    }

    #[test]
    fn every_is_anchored_at_local_midnight() {
        let s = Schedule::parse("every 15m").unwrap();
        assert_eq!(
            s.next_after(at(2026, 3, 1, 10, 7)),
            Some(at(2026, 3, 1, 10, 15))
        );
        assert_eq!(
            s.next_after(at(2026, 3, 1, 23, 50)),
            Some(at(2026, 3, 2, 0, 0))
        );
        let s = Schedule::parse("every 7h").unwrap();
        assert_eq!(
            s.next_after(at(2026, 3, 1, 22, 0)),
            Some(at(2026, 3, 2, 0, 0))
        );
    }

    #[test]
    fn every_survives_a_zone_that_skips_midnight() {
        // Santiago moves clocks from 00:00 to 01:00 on 2026-09-06: that day has no midnight.
        let tz = chrono_tz::America::Santiago;
        let s = Schedule::parse("every 15m").unwrap();
        let before = tz.with_ymd_and_hms(2026, 9, 5, 23, 50, 0).unwrap();
        let after_gap = tz.with_ymd_and_hms(2026, 9, 6, 1, 0, 0).unwrap();
        assert_eq!(s.next_after(before), Some(after_gap));
    }

    #[test]
    fn daily_follows_local_time_across_dst() {
        let s = Schedule::parse("daily 05:00,17:00").unwrap();
        // Prague switches to summer time on 2026-03-29.
        assert_eq!(
            s.next_after(at(2026, 3, 28, 18, 0)),
            Some(at(2026, 3, 29, 5, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 3, 29, 5, 0)),
            Some(at(2026, 3, 29, 17, 0))
        );
        let cron = Schedule::parse("0 5 * * *").unwrap();
        assert_eq!(
            cron.next_after(at(2026, 3, 28, 18, 0)),
            Some(at(2026, 3, 29, 5, 0))
        );
    }

    #[test]
    fn the_previous_fire_time_is_the_last_one_at_or_before() {
        let now = at(2026, 3, 29, 5, 7);
        let prev = |text: &str| Schedule::parse(text).unwrap().previous_at_or_before(now);
        assert_eq!(prev("every 15m"), Some(at(2026, 3, 29, 5, 0)));
        assert_eq!(prev("daily 05:00,17:00"), Some(at(2026, 3, 29, 5, 0)));
        assert_eq!(prev("daily 06:00"), Some(at(2026, 3, 28, 6, 0)));
        assert_eq!(prev("0 5 * * *"), Some(at(2026, 3, 29, 5, 0)));
        assert_eq!(prev("@hourly"), Some(at(2026, 3, 29, 5, 0)));
        // A fire time exactly now counts.
        assert_eq!(prev("7 5 * * *"), Some(now));
        assert_eq!(prev("every 1m"), Some(now));
    }

    #[test]
    fn freshness_measures_the_last_successful_sync_against_the_schedule() {
        use chrono::Utc;
        let tz = chrono_tz::Europe::Prague;
        let now = at(2026, 3, 29, 5, 7).with_timezone(&Utc);
        let fire = at(2026, 3, 29, 5, 0).with_timezone(&Utc);
        let daily = Some("daily 05:00");
        assert_eq!(
            Freshness::of(daily, Some(fire), now, tz),
            Freshness::Fresh,
            "synced at the fire time"
        );
        let before = fire - Duration::minutes(30);
        assert_eq!(
            Freshness::of(daily, Some(before), now, tz),
            Freshness::Late {
                expected_at: "2026-03-29T03:00:00.000Z".into(),
                late_by_seconds: 7 * 60
            }
        );
        assert_eq!(Freshness::of(daily, None, now, tz), Freshness::NeverSynced);
        assert_eq!(
            Freshness::of(None, Some(before), now, tz),
            Freshness::Unscheduled
        );
        let json = serde_json::to_value(Freshness::of(daily, Some(before), now, tz)).unwrap();
        assert_eq!(json["state"], "late");
        assert_eq!(json["late_by_seconds"], 420);
    }
}
