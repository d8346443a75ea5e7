//! Testing bindery applications and binders.
//!
//! - [`TestApp`] starts an app's functions in process on a private memory
//!   binder, like Spring's test binder: send to input destinations, receive
//!   from output and dead-letter destinations, with timeouts.
//! - [`conformance`] is the suite every binder must pass, generic over a
//!   [`conformance::BinderHarness`]; [`conformance_suite!`] expands it into
//!   one named test per case.
//! - [`fault`] wraps any binder in a [`fault::FaultyBinder`] that fails
//!   binds, sends and confirms, delays confirms, loses the connection or
//!   panics a consumer on cue, and counts every send, ack and nack.
//!
//! ```
//! use bindery_testkit::TestApp;
//!
//! async fn shout(text: String) -> String {
//!     text.to_uppercase()
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut app = TestApp::builder()
//!     .function("shout", shout)
//!     .config(r#"
//!         [bindings.shout-in-0]
//!         destination = "words"
//!         content-type = "text/plain"
//!         [bindings.shout-out-0]
//!         destination = "loud"
//!         content-type = "text/plain"
//!     "#)
//!     .start()
//!     .await
//!     .unwrap();
//! app.send("words", "hello").await.unwrap();
//! let loud = app.receive("loud").await.unwrap();
//! assert_eq!(&loud.payload()[..], b"HELLO");
//! app.shutdown().await.unwrap();
//! # });
//! ```

pub mod conformance;
pub mod fault;
mod names;
mod test_app;

pub use names::unique_name;
pub use test_app::{TestApp, TestAppBuilder, TestAppError};

/// Installs a test log subscriber honouring `RUST_LOG` (once per process).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
