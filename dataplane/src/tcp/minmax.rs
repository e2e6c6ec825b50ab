//! A windowed minimum (Kathleen Nichols' algorithm, as Linux's
//! lib/win_minmax.c): the least value seen within the last `window`,
//! kept as three samples so that an old minimum ages out without a scan.
//! TCP's min_rtt is one, over Linux's tcp_min_rtt_wlen (300 s). Times
//! and values are u32 as Linux keeps them (a connection holds one): times
//! wrap and are compared by wrapping difference.

/// A sample: its time and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    t: u32,
    v: u32,
}

/// The best, second-best and third-best minimum of the window, each
/// newer than the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowedMin {
    s: [Sample; 3],
}

impl Default for WindowedMin {
    /// No sample yet: the minimum is u32::MAX (Linux starts at ~0U).
    fn default() -> Self {
        WindowedMin { s: [Sample { t: 0, v: u32::MAX }; 3] }
    }
}

impl WindowedMin {
    pub fn get(&self) -> u32 {
        self.s[0].v
    }

    /// minmax_running_min: `v` measured at `t`, in a window of `window`.
    pub fn update(&mut self, window: u32, t: u32, v: u32) -> u32 {
        let val = Sample { t, v };
        if v <= self.s[0].v || t.wrapping_sub(self.s[2].t) > window {
            // A new minimum, or nothing left in the window.
            self.s = [val; 3];
            return v;
        }
        if v <= self.s[1].v {
            self.s[1] = val;
            self.s[2] = val;
        } else if v <= self.s[2].v {
            self.s[2] = val;
        }
        self.subwin_update(window, val)
    }

    /// minmax_subwin_update: as the window passes, the second and third
    /// best move up, and quarter- and half-window old samples are
    /// refreshed so that the window always holds three.
    fn subwin_update(&mut self, window: u32, val: Sample) -> u32 {
        let dt = val.t.wrapping_sub(self.s[0].t);
        if dt > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = val;
            if val.t.wrapping_sub(self.s[0].t) > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
                self.s[2] = val;
            }
        } else if self.s[1].t == self.s[0].t && dt > window / 4 {
            self.s[1] = val;
            self.s[2] = val;
        } else if self.s[2].t == self.s[1].t && dt > window / 2 {
            self.s[2] = val;
        }
        self.s[0].v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_least_and_forgets_it_after_the_window() {
        let mut m = WindowedMin::default();
        assert_eq!(m.get(), u32::MAX);
        assert_eq!(m.update(100, 0, 50), 50);
        assert_eq!(m.update(100, 10, 80), 50);
        assert_eq!(m.update(100, 30, 40), 40);
        assert_eq!(m.update(100, 60, 70), 40);
        assert_eq!(m.update(100, 90, 90), 40);
        // 40 (t=30) is older than the window at t=140: a later sample
        // takes its place.
        let now = m.update(100, 140, 95);
        assert!(now > 40 && now <= 95, "{now}");
        // Nothing at all within the window: the new sample alone.
        assert_eq!(m.update(100, 1000, 120), 120);
        // Across the wrap of the clock.
        let mut m = WindowedMin::default();
        m.update(100, u32::MAX - 10, 30);
        assert_eq!(m.update(100, 20, 60), 30);
        assert_eq!(m.update(100, 200, 60), 60);
    }
}
