//! Exponential backoff for retrying a failed batch or a lost connection.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Option<Duration>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, current: None }
    }

    /// The delay before the next attempt: `min`, then doubling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let next = match self.current {
            None => self.min,
            Some(d) => (d * 2).min(self.max),
        };
        self.current = Some(next);
        next
    }

    /// Call after a success: the next failure starts again from `min`.
    pub fn reset(&mut self) {
        self.current = None;
    }

    pub fn is_backing_off(&self) -> bool {
        self.current.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![500, 1000, 2000, 3000, 3000]);
        assert!(b.is_backing_off());
        b.reset();
        assert!(!b.is_backing_off());
        assert_eq!(b.next_delay().as_millis(), 500);
    }
}
