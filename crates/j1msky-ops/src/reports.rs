//! The morning and evening reviews as mail to operators at the business's local times,
//! and as text for `j1msky report morning|evening`.
