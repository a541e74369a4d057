//! The one shutdown signal of every long-running command (`ingest`, `serve`,
//! `simulate`): Ctrl-C or SIGTERM, what `docker stop` and systemd send. Services take
//! it as a future ([`crate::ingest::run`], [`crate::api::serve`]), so tests stop
//! them with any future of their own.

/// Completes on Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
