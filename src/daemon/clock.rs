//! The daemon's clock: wall time, optionally sped up for tests.
//!
//! `PIPELINE_CLOCK_SCALE=60` makes a minute of schedule pass in one real second, so a test can watch
//! an `every 1m` schedule fire several times in a few seconds. It is read once at start and is not
//! meant for production (the log says so when it is set).

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Clock {
    origin_wall: DateTime<Utc>,
    origin: Instant,
    scale: f64,
}

impl Clock {
    pub fn from_env() -> Clock {
        let scale = std::env::var("PIPELINE_CLOCK_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 1.0)
            .unwrap_or(1.0);
        Clock::scaled(scale)
    }

    pub fn scaled(scale: f64) -> Clock {
        Clock {
            origin_wall: Utc::now(),
            origin: Instant::now(),
            scale,
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The schedule's notion of now.
    pub fn now(&self) -> DateTime<Utc> {
        if self.scale == 1.0 {
            return Utc::now();
        }
        let elapsed = self.origin.elapsed().mul_f64(self.scale);
        self.origin_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    /// Real time until the schedule's `at` (zero when it has passed).
    pub fn until(&self, at: DateTime<Utc>) -> Duration {
        let ahead = (at - self.now()).to_std().unwrap_or_default();
        ahead.div_f64(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_faster_and_shortens_waits() {
        let c = Clock::scaled(60.0);
        let at = c.now() + chrono::Duration::minutes(1);
        let wait = c.until(at);
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        let ahead = c.now() - c.origin_wall;
        assert!(ahead >= chrono::Duration::seconds(3), "{ahead:?}");
    }

    #[test]
    fn the_real_clock_is_wall_time() {
        let c = Clock::scaled(1.0);
        assert!((c.now() - Utc::now()).num_milliseconds().abs() < 50);
        assert_eq!(
            c.until(Utc::now() - chrono::Duration::seconds(5)),
            Duration::ZERO
        );
    }
}
