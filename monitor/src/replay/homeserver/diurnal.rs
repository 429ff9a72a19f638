//! How busy each kind of user is by local hour of day: office workers behind the ministries'
//! gateways, people at home in the evening, phones all day. Values in [0, 1] by local hour,
//! interpolated within the hour.

/// Ministry offices: 08:00 to 18:00 on weekdays, a lunch dip; nearly nothing at night.
const OFFICE: [f64; 24] = [
    0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.04, 0.15, 0.65, 0.97, 1.0, 0.96, 0.72, 0.78, 0.97, 1.0,
    0.93, 0.62, 0.22, 0.08, 0.05, 0.03, 0.02, 0.02,
];
/// Office traffic on weekends, against a weekday (on-call staff, a few keen users).
pub const WEEKEND_OFFICE: f64 = 0.07;

/// Home users: a little in the morning and at lunch, most in the evening.
const HOME: [f64; 24] = [
    0.18, 0.08, 0.04, 0.02, 0.02, 0.03, 0.10, 0.28, 0.32, 0.25, 0.25, 0.30, 0.45, 0.42, 0.30, 0.30,
    0.35, 0.50, 0.75, 0.92, 1.0, 0.92, 0.62, 0.32,
];

/// Phones: all day, peaks on the commute, at lunch and in the evening.
const MOBILE: [f64; 24] = [
    0.10, 0.05, 0.03, 0.02, 0.02, 0.05, 0.20, 0.65, 0.85, 0.65, 0.60, 0.62, 0.92, 0.80, 0.60, 0.60,
    0.70, 0.92, 1.0, 0.90, 0.80, 0.70, 0.48, 0.25,
];

fn at(table: &[f64; 24], hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    let i = h as usize % 24;
    let frac = h - h.floor();
    table[i] * (1.0 - frac) + table[(i + 1) % 24] * frac
}

pub fn office(hour: f64, weekday: bool) -> f64 {
    let v = at(&OFFICE, hour);
    if weekday { v } else { v * WEEKEND_OFFICE }
}

pub fn home(hour: f64, weekday: bool) -> f64 {
    let v = at(&HOME, hour);
    if weekday {
        v
    } else {
        // Weekends: later mornings, busier afternoons.
        (v * 0.8 + 0.25 * at(&OFFICE, hour - 1.0)).min(1.0)
    }
}

pub fn mobile(hour: f64) -> f64 {
    at(&MOBILE, hour)
}

/// Federation follows everyone's activity, with a floor (other servers' users never sleep).
pub fn federation(hour: f64, weekday: bool) -> f64 {
    (0.25 + 0.45 * office(hour, weekday) + 0.3 * home(hour, weekday)).min(1.0)
}
