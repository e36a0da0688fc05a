//! `tracing` output for tests.

/// Installs a `tracing` subscriber that writes through the test harness (shown for failing
/// tests, or with `--nocapture`), filtered by `RANGEKV_TEST_LOG` (`EnvFilter` syntax, e.g.
/// `raftstore=debug`; default `warn`). Safe to call from every test: only the first call in a
/// process installs it.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RANGEKV_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
