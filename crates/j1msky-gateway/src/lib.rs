//! The model gateway: every model call is routed by the cost policy, admitted against
//! hourly caps and budgets, sent with retries, fallbacks and a circuit breaker, and
//! written to the cost ledger.

mod admission;
pub mod breaker;
mod builder;
pub mod chat;
pub mod controls;
mod error;
pub mod escalation;
mod gateway;
pub mod inprocess;
pub mod leases;
pub mod ledger;
pub mod limits;
pub mod panel;
pub mod policy;
pub mod providers;
mod roundtrip;
mod settler;
mod stream;
mod terms;

pub use admission::BUSINESS_DAY;
pub use builder::{GatewayBuilder, Limits};
pub use error::GatewayError;
pub use gateway::{CallContext, Completed, Gateway, ProviderOverride, RetryPolicy, TERMS_TTL};
pub use stream::GatewayStream;
