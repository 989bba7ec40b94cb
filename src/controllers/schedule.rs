//! Reading a schedule (`schedule` + `timeZone` of BackupSchedule and RestoreDrill) as soon as the
//! object is seen: the API server checks the cron expression's shape, not its values (`61 * * * *`) or
//! the time zone's name, so a schedule that could never fire is reported `Stalled` here with what to fix.

use std::str::FromStr;

use croner::Cron;

use super::Error;

/// A schedule that can fire.
#[derive(Debug)]
pub struct Schedule {
    pub cron: Cron,
    pub time_zone: chrono_tz::Tz,
}

/// Parses `expression` in `time_zone` (default UTC); `field` names the spec field in messages.
pub fn parse(expression: &str, time_zone: Option<&str>, field: &str) -> Result<Schedule, Error> {
    let time_zone = match time_zone {
        None => chrono_tz::UTC,
        Some(name) => chrono_tz::Tz::from_str(name).map_err(|_| Error::InvalidSpec {
            reason: "InvalidTimeZone",
            message: format!(
                "spec.timeZone {name:?} is not an IANA time zone name (for example UTC or Europe/Berlin)"
            ),
        })?,
    };
    let cron = Cron::from_str(expression.trim()).map_err(|e| Error::InvalidSpec {
        reason: "InvalidSchedule",
        message: format!(
            "{field} {expression:?} is not a valid cron expression ({e}); use five fields, minute (0-59) hour (0-23) day-of-month (1-31) month (1-12) day-of-week (0-7), or a macro such as @daily"
        ),
    })?;
    Ok(Schedule { cron, time_zone })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_schedules_parse() {
        for (expr, tz) in [
            ("0 3 * * *", None),
            ("*/15 * * * 1-5", Some("Europe/Berlin")),
            ("@daily", Some("UTC")),
            ("@weekly", Some("America/New_York")),
        ] {
            let s = parse(expr, tz, "spec.schedule").unwrap();
            assert_eq!(s.time_zone.name(), tz.unwrap_or("UTC"));
        }
    }

    #[test]
    fn impossible_values_and_unknown_zones_are_refused_clearly() {
        for expr in ["61 * * * *", "0 24 * * *", "0 0 32 * *", "0 0 * 13 *"] {
            let e = parse(expr, None, "spec.schedule").unwrap_err();
            assert_eq!(e.reason(), "InvalidSchedule", "{expr}");
            assert!(e.to_string().contains(expr), "{e}");
        }
        let e = parse("0 3 * * *", Some("Mars/Olympus"), "spec.schedule").unwrap_err();
        assert_eq!(e.reason(), "InvalidTimeZone");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    }
}
