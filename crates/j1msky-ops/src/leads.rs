//! From lead to trial: the public lead form, qualification, the trial start with an
//! invite link, pilot mode and its waiting list.
