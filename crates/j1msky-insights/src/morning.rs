//! The morning review: errors, queue depth and waits, rate-limit hits, alerts, failed
//! payments and staff to-dos on one list, worst first. (Being built: stub.)
